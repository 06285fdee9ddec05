"""The bias trick: exact inputs from a fully connected first layer (Phong et al., IEEE TIFS 2018, Sec. 3;
stated in general as Geiping et al., NeurIPS 2020, Prop. 3.1)."""

from __future__ import annotations

import torch

from gradinv.attacks import labels as label_recovery
from gradinv.attacks.base import Attack, Callback, Result, gradient_residual
from gradinv.attacks.certify import CERTIFIED_RESIDUAL, certify_samples, obstacle
from gradinv.attacks.exact import check_single_step, classifier_targets, first_linear, group_identical, row_candidates
from gradinv.fl.client import denormalize
from gradinv.observation import UNKNOWN_LABEL, Observation
from gradinv.validation import check_arguments, check_positive_int


class BiasTrick(Attack):
    """Read the client's inputs off the first linear layer's gradient: ``x = (dL/dW_i) / (dL/db_i)``.

    For one sample every row with ``dL/db_i != 0`` gives the input exactly. For a batch, row ``i`` gives
    ``sum_n delta_{n,i} x_n / sum_n delta_{n,i}``: exact when one sample alone drives the row (after a ReLU, rows
    that only one sample activates), a mixture otherwise. Rows that agree to ``tol`` are grouped; a group is one
    returned image.

    An image is **certified** (``Reconstruction.certified``) by one-sample consistency
    (:func:`gradinv.attacks.certify.certify_samples`): the observed bias gradient of its rows equals the gradient
    that image alone gives them, with one label, at the update's scale ``1/B``. That label is the image's own. A
    mixture of two samples fails this check, including two samples of one class whose rows agree with each other
    (which the old "two rows agree" rule let through). It needs per-sample gradients (no train-mode BatchNorm, no
    active dropout), the batch size granted and no defense on the update; otherwise the batch is certified only
    when all ``B`` images come back and their update reproduces the observed one (whole-batch residual), with
    labels from the classifier's gradient. Images with neither evidence get label ``-1``, and the batch's label
    counts (LLG) come in ``Reconstruction.label_counts``. Uncertified images are returned by decreasing number of
    rows, after the certified ones.

    Args:
        tol: relative L2 agreement under which two rows count as the same input (gradinv's own: float32 rows of one
            sample agree to ~1e-6).
        label_strategy: label recovery for the label counts of a batch not recovered whole.
        batch_size: the batch size to assume when the threat model withholds it (default: the number of certified
            images, else of groups of two or more rows). A guessed size never certifies.
    """

    name = "bias_trick"
    # not in the SoK's attack table (Carletti et al. 2025): graded B like the closed-form attacks it lists (R-GAP,
    # SPEAR)
    sok = "B"
    exact = True
    requires = frozenset()

    def __init__(self, *, tol: float = 1e-4, label_strategy: str = "auto", batch_size: int | None = None) -> None:
        check_arguments(self, locals())
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        check_positive_int("batch_size", batch_size)
        if label_strategy not in label_recovery.names():
            raise ValueError(f"unknown label_strategy {label_strategy!r}; available: {label_recovery.names()}")
        self.tol, self.label_strategy, self.batch_size = tol, label_strategy, batch_size

    def run(self, observation: Observation, callback: Callback | None) -> Result:
        check_single_step(observation, self.name)
        name, _ = first_linear(observation.model, observation.image_shape)
        weight, bias = observation.update[f"{name}.weight"], observation.update[f"{name}.bias"]
        candidates, rows = row_candidates(weight, bias)
        if candidates.shape[0] == 0:
            raise ValueError("the first layer's bias gradient is zero: no row carries an input")
        weights = bias.abs()[rows]
        groups = sorted(group_identical(candidates, tol=self.tol), key=len, reverse=True)
        means = torch.stack([(candidates[g] * weights[g, None]).sum(0) / weights[g].sum() for g in groups])
        # a sample whose rows are nearly, not exactly, alone can split into close groups: keep the largest of each
        distinct = [cluster[0] for cluster in group_identical(means, tol=100 * self.tol)]
        groups, means = [groups[i] for i in distinct], means[distinct].reshape(-1, *observation.image_shape)
        entries = [rows[g] for g in groups]
        certified, labels, errors, evidence = certify_samples(
            observation, name, means, [bias[e] for e in entries], entries
        )
        # certified first, then images one row's gradient explains (consistent, too weak to certify), then by rows
        order = sorted(range(len(groups)), key=lambda i: (not certified[i], labels[i] < 0, -len(groups[i])))
        n = observation.batch_size or self.batch_size or sum(certified) or max(sum(len(g) >= 2 for g in groups), 1)
        chosen = order[:n]
        result = read_off(observation, means, (certified, labels, errors), evidence, chosen, self.label_strategy)
        if callback is not None:
            callback(1, 1, 0.0)
        result.info.update(rows_used=[len(groups[i]) for i in chosen], groups=len(groups))
        return result


def read_off(
    observation: Observation,
    inputs: torch.Tensor,
    checks: tuple[list[bool], list[int], list[float]],
    evidence: str,
    chosen: list[int],
    label_strategy: str,
) -> Result:
    """The :class:`Result` of the ``chosen`` candidates (normalised ``inputs``) with their one-sample ``checks``
    (certified, label, error), finished by :class:`ReadOff`; ``info["consistency_error"]`` per returned image."""
    certified, labels, errors = checks
    picked = ReadOff(
        inputs[chosen],
        [certified[i] for i in chosen],
        [labels[i] for i in chosen],
        evidence,
        observation.batch_size,
        checked=obstacle(observation) is None,
    )
    result = picked.complete(observation, label_strategy)
    # NaN (not checked) -> None, JSON-safe
    result.info["consistency_error"] = [None if errors[i] != errors[i] else float(f"{errors[i]:.3g}") for i in chosen]
    return result


class ReadOff:
    """Images read off rows or bins, each certified by one-sample consistency or not, and how to finish them into a
    :class:`Result`.

    When the whole batch came back without a per-image certificate for every image, the classifier's gradient gives
    each image's label (:func:`~gradinv.attacks.exact.classifier_targets`) and the batch's residual certifies them
    all (``whole``: the attack's own condition for the whole batch holds, e.g. SPEAR's ReLU consistency of every
    sample). Where per-image checks were impossible (``checked`` False: train-mode BatchNorm, ...), images still without
    a label get the least-squares assignment of the classifier's gradient with the true batch size (approximate
    when part of the batch is missing, and poorly conditioned when the classifier has few features: 88 of 110 exact
    images labelled right on 9 partial batches of 16 faces, width-4 ResNet-20 in train mode, where the imprint
    attack's own route, :mod:`gradinv.attacks.imprint_labels`, gets 95); where they were possible, an image that
    failed its check keeps ``-1``.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        certified: list[bool],
        labels: list[int],
        evidence: str,
        batch_size: int | None,
        checked: bool,
        *,
        whole: bool = True,
    ) -> None:
        self.inputs, self.certified, self.labels = inputs, certified, labels
        self.evidence, self.batch_size, self.checked, self.whole = evidence, batch_size, checked, whole

    def complete(self, observation: Observation, label_strategy: str) -> Result:
        """Labels, certificates and label counts of the returned images (pixel space)."""
        images = denormalize(self.inputs, observation.threat.normalization)
        labels = torch.tensor(self.labels, dtype=torch.long)
        certified, evidence, whole = list(self.certified), self.evidence, False
        source = "one-sample consistency" if self.checked else "none"
        if not all(certified):
            targets = classifier_targets(observation, self.inputs, self.batch_size or len(labels))
            guess = targets.argmax(dim=1)
            one_hot = (targets - torch.nn.functional.one_hot(guess, targets.shape[1]).double()).abs().max() <= 0.1
            if self.whole and len(labels) == self.batch_size and bool(one_hot):
                residual = gradient_residual(observation, images, guess)["rel_l2"]
                if residual < CERTIFIED_RESIDUAL:
                    labels, certified, whole = guess, [True] * len(certified), True
                    evidence = (
                        f"whole batch: all {len(certified)} images read off the update, labels from the classifier's "
                        f"gradient, and their own update reproduces the observed one (residual {residual:.2g})"
                    )
                    source = "classifier gradient"
            if not whole and not self.checked:
                labels = torch.where(labels == UNKNOWN_LABEL, guess, labels)
                source = "least squares on the classifier's gradient (not certified)"
        counts = (
            None
            if all(certified)
            else label_recovery.label_counts(observation, self.batch_size or len(labels), label_strategy)
        )
        info = {"label_source": source}
        return Result(images, labels, [], info, certified, evidence, whole, counts)
