"""Certificates for exact attacks: evidence, without ground truth, that a returned image *is* one client sample.

A small gradient residual says an answer is consistent with the observed update, not that it is the data: where
the update does not determine the input, other inputs reproduce it as well (R-GAP on a rank-deficient layer; a
bias-trick row that mixes two samples of one class). Exact attacks therefore certify each image by a condition that
a wrong answer fails:

- **one-sample consistency** (bias trick, trap weights, imprint, SPEAR): the observed gradient of the rows, bins or
  units an image was read from equals the gradient that this image alone, with one label, would give them, at the
  scale the threat model fixes (``1 / B``, or ``local_lr / B`` for one local step). A row driven by one sample
  passes; a row mixing two samples ``sum_n delta_n x_n / sum_n delta_n`` gives the gradient of the mixture, which
  is not the sum of the two samples' gradients (for two samples of one class it is about half of it). The label
  that fits is the image's own label. This needs per-sample gradients that do not depend on the rest of the batch
  (no train-mode BatchNorm, no active dropout), the batch size granted by the threat model (a guessed size lets a
  two-sample mixture pass at half the size), and an update no defense has transformed.
- **the whole batch** (any exact attack that returns every sample): the batch's own update reproduces the observed
  one (:data:`CERTIFIED_RESIDUAL`), checked by :meth:`gradinv.attacks.base.Attack.reconstruct`, together with the
  attack's own uniqueness condition (R-GAP: every layer's system has full rank at the answer; SPEAR: every sample
  passes the ReLU consistency check and the factorisation found all ``B`` directions).
"""

from __future__ import annotations

import torch
from torch import nn

from gradinv.models import classifier
from gradinv.observation import Observation

CERTIFIED_RESIDUAL = 1e-4
"""A whole batch is certified only if its own update reproduces the observed one to this relative L2 distance."""

CONSISTENCY_TOL = 1e-4
"""One-sample consistency holds when the predicted and observed gradients agree to this relative L2 distance."""


def coupling(model: nn.Module, training: bool | None = None) -> str | None:
    """Why a sample's gradient through ``model`` depends on the rest of the batch or on randomness, or ``None`` when
    it does not. ``training``: the mode the client runs every module in (``None``: each module's own mode)."""
    for name, module in model.named_modules():
        active = module.training if training is None else training
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (active or module.running_mean is None):
            return f"BatchNorm {name!r} normalises with the batch's statistics (train mode)"
        if isinstance(module, nn.modules.dropout._DropoutNd) and active and module.p > 0:
            return f"dropout {name!r} is active (train mode): the client's masks are private"
        drawing = active or getattr(module, "draws_in_eval", False)
        if getattr(module, "private_randomness", False) and drawing and getattr(module, "p", 1) > 0:
            mode = "" if getattr(module, "draws_in_eval", False) else " in train mode"
            return f"{type(module).__name__} {name!r} draws at random{mode}: the client's draw is private"
    return None


def update_scale(observation: Observation) -> float | None:
    """The factor between one sample's loss gradient and its share of the observed update, or ``None`` when the
    threat model withholds the batch size. Gradient: ``1 / B`` (the mean loss); one local step of size ``lr`` on
    the first mini-batch of ``b`` samples: ``lr / b``."""
    size = observation.batch_size
    if size is None:
        return None
    threat = observation.threat
    if threat.update == "gradient":
        return 1.0 / size
    used = size if threat.local_batch_size is None else min(threat.local_batch_size, size)
    return threat.local_lr / used


def obstacle(observation: Observation) -> str | None:
    """Why one-sample consistency cannot certify anything in this observation, or ``None``."""
    if observation.defenses:
        names = ", ".join(str(d.get("name")) for d in observation.defenses)
        return f"the client's defenses ({names}) changed the update or the data: no image is certified"
    if observation.batch_size is None:
        return "the threat model withholds the batch size, which fixes each sample's share of the update"
    threat = observation.threat
    if threat.update == "fedavg" and threat.local_steps > 1:
        return f"{threat.local_steps} local steps mix several weight states"
    return coupling(observation.model, observation.threat.bn_mode == "train")


SHARE_BUDGET = 1 << 25
"""Elements (float32) of predicted gradients held at once: candidates are processed in chunks that fit."""


LABEL_CANDIDATES = 64
"""Labels tried per image: all of them up to this many classes; beyond, the ``max(64, 4 B)`` likeliest."""


def label_candidates(observation: Observation) -> torch.Tensor:
    """The classes tried as an image's label: every class when there are at most ``max(64, 4 B)``; otherwise those
    whose classifier bias gradient (without a bias: weight-row sum) is smallest. ``(1/B) sum_n (p_nk - y_nk)`` is lower
    by ``1/B`` per sample of class ``k`` than it would be without them, so the batch's classes come first whenever the
    outputs are not far from uniform. Leaving a class out can only make a consistency check fail, never pass: it
    saves time on large label sets (ImageNet's 1000) without risking a false certificate."""
    keep = max(LABEL_CANDIDATES, 4 * (observation.batch_size or 1))
    if observation.num_classes <= keep:
        return torch.arange(observation.num_classes)
    weight_name, bias_name = classifier(observation.model)
    scores = observation.update[bias_name] if bias_name else observation.update[weight_name].sum(dim=1)
    return scores.argsort()[:keep].sort().values


class Shares:
    """Each candidate input's share of the update at the output of ``module_name``, per candidate label: the
    gradient of that one sample's cross-entropy with label ``k``, times :func:`update_scale`.

    Cross-entropy's gradient at the logits is ``p - e_k``, so with ``J`` the Jacobian of the logits by the module's
    output the share is ``scale * (J^T p - J^T e_k)``: per chunk of candidates one backward pass for ``J^T p`` and
    one batched pass over the candidate labels' unit vectors. Chunks hold at most :data:`SHARE_BUDGET` elements;
    ``shares[i]`` computes the chunk holding candidate ``i`` (the last one is kept).

    Raises:
        ValueError: :func:`obstacle` names a reason (callers check it first), or the module runs more than once.
    """

    def __init__(self, observation: Observation, module_name: str, inputs: torch.Tensor) -> None:
        reason = obstacle(observation)
        if reason is not None:
            raise ValueError(reason)
        from gradinv.attacks.base import attacker_model  # base imports this module

        self.model = attacker_model(observation)
        self.module = self.model.get_submodule(module_name)
        self.module_name, self.inputs = module_name, inputs
        self.labels = label_candidates(observation)
        scale = update_scale(observation)
        assert scale is not None  # obstacle() checked the batch size
        self.scale = scale
        width = self._run(inputs[:1])[0].numel()
        self.chunk = max(1, SHARE_BUDGET // max(width * len(self.labels), 1))
        self._held: tuple[int, torch.Tensor] | None = None

    def _run(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []
        hook = self.module.register_forward_hook(lambda _m, _a, out: captured.append(out))
        try:
            logits = self.model(inputs)
        finally:
            hook.remove()
        if len(captured) != 1:
            raise ValueError(f"module {self.module_name!r} ran {len(captured)} times in one forward pass")
        return captured[0], logits

    def compute(self, start: int) -> torch.Tensor:
        """``(c, L, D)`` shares of the candidates ``start .. start + c`` for the ``L`` candidate labels."""
        out, logits = self._run(self.inputs[start : start + self.chunk])
        n = logits.shape[0]
        p = torch.softmax(logits.detach(), dim=1)
        (base,) = torch.autograd.grad(logits, out, grad_outputs=p, retain_graph=True)
        units = torch.zeros(len(self.labels), n, logits.shape[1], dtype=logits.dtype)
        units[torch.arange(len(self.labels)), :, self.labels] = 1.0
        try:
            (jt,) = torch.autograd.grad(logits, out, grad_outputs=units, is_grads_batched=True)
        except RuntimeError:  # an operation without a batching rule: one backward pass per label
            jt = torch.stack([torch.autograd.grad(logits, out, u, retain_graph=True)[0] for u in units])
        return self.scale * (base.flatten(1).unsqueeze(1) - jt.flatten(2).transpose(0, 1)).detach()

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        """``(L, D)``: candidate ``i``'s share for each candidate label (``self.labels``)."""
        start = i - i % self.chunk
        if self._held is None or self._held[0] != start:
            self._held = (start, self.compute(start))
        return self._held[1][i - start]


def best_label(predicted: torch.Tensor, observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each sample, the label whose predicted gradient is closest to the observed one.

    Args:
        predicted: ``(N, K, r)`` one sample's share of the update on ``r`` observed entries, per label.
        observed: ``(N, r)`` the observed entries.

    Returns:
        ``(label positions (N,), relative L2 error (N,))``.
    """
    predicted, observed = predicted.double(), observed.double()
    error = (predicted - observed.unsqueeze(1)).norm(dim=2) / observed.norm(dim=1, keepdim=True).clamp_min(1e-300)
    best, labels = error.min(dim=1)
    return labels, best


def certify_samples(
    observation: Observation,
    module_name: str,
    inputs: torch.Tensor,
    observed: list[torch.Tensor],
    entries: list[torch.Tensor],
    *,
    min_entries: int = 2,
) -> tuple[list[bool], list[int], list[float], str]:
    """One-sample consistency of each input with the entries of the module's output gradient it was read from.

    Args:
        inputs: ``(M, C, H, W)`` candidate inputs, as the model takes them (normalised).
        observed: per candidate, the observed gradient of the module's output on its entries (e.g. the bias gradient
            of the rows it came from), on the update's scale.
        entries: per candidate, the flat indices of those entries.
        min_entries: fewer entries than this never certify, even when consistent (their label is still given).
            One scalar entry is too weak: among hundreds of mixed rows, some mixture matches one row's gradient for
            one of ``K`` labels by chance (measured on the bias trick: 3 of 177 single-row images certified this way
            were mixtures; 0 of 227 with two rows or more).

    Returns:
        ``(certified, labels, errors, evidence)``: per candidate whether some label explains every entry to
        :data:`CONSISTENCY_TOL` (on at least ``min_entries`` entries), that label (``-1`` if none explains them),
        the relative error, and the evidence in words.
    """
    count = inputs.shape[0]
    reason = obstacle(observation)
    if reason is not None or count == 0:
        return [False] * count, [-1] * count, [float("nan")] * count, reason or "nothing to certify"
    shares = Shares(observation, module_name, inputs)
    certified, labels, errors = [], [], []
    for i, (values, index) in enumerate(zip(observed, entries, strict=True)):
        position, error = best_label(shares[i][None, :, index], values[None])
        ok = bool(error[0] < CONSISTENCY_TOL)
        certified.append(ok and len(index) >= min_entries)
        labels.append(int(shares.labels[position[0]]) if ok else -1)
        errors.append(float(error[0]))
    evidence = (
        f"one-sample consistency: the gradient of the {min_entries} or more entries each image was read from equals "
        f"that image's own gradient, with its label, at the update's scale (to {CONSISTENCY_TOL:g} relative)"
    )
    return certified, labels, errors, evidence
