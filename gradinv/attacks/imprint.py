"""Robbing the Fed: a malicious server's imprint module (Fowl, Geiping, Czaja, Goldblum & Goldstein, ICLR 2022)."""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
from torch import nn

from gradinv.attacks import labels as label_recovery
from gradinv.attacks.base import Attack, Callback, Result
from gradinv.attacks.bias_trick import read_off
from gradinv.attacks.certify import Shares, best_label, obstacle
from gradinv.attacks.exact import check_single_step, classifier_targets, malicious_input_shape
from gradinv.attacks.imprint_labels import coupled_labels, observed_input_gradients
from gradinv.fl.client import denormalize, normalize
from gradinv.observation import UNKNOWN_LABEL, Normalization, Observation, ThreatModel
from gradinv.validation import check_arguments, check_positive_int


class ImprintBlock(nn.Module):
    """Fowl et al. 2022, Sec. 3: ``k`` ReLU units that each compare one image statistic with a threshold.

    Unit ``j`` computes ``relu(h(x) - b_j)`` for the mean brightness ``h`` (in pixel space, read off the
    normalised input) and increasing thresholds ``b_j``; a sample whose ``h`` lies in ``[b_j, b_{j+1})`` switches
    on units ``0..j``. The units feed back through one shared weight ``scale`` added to every input coordinate (a
    residual, so the model behind still sees its input), hence every active unit of a sample receives the same
    backward signal, and the gradient difference of units ``j`` and ``j + 1`` holds the samples of bin ``j`` alone.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        thresholds: torch.Tensor,
        normalization: Normalization | None,
        scale: float = 1e-3,
    ) -> None:
        super().__init__()
        dim = math.prod(image_shape)
        channels = image_shape[0]
        mean, std = normalization or ((0.0,) * channels, (1.0,) * channels)
        per_pixel = torch.tensor(std).repeat_interleave(dim // channels) / dim  # h = sum_d std_c x'_d / D + mean(m)
        self.image_shape = image_shape
        self.register_buffer("thresholds", thresholds.clone().float())
        self.linear0 = nn.Linear(dim, len(thresholds))
        self.linear1 = nn.Linear(len(thresholds), dim)
        with torch.no_grad():
            self.linear0.weight.copy_(per_pixel.expand(len(thresholds), dim))
            self.linear0.bias.copy_(sum(mean) / channels - thresholds)
            self.linear1.weight.fill_(scale)
            self.linear1.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return x + self.linear1(torch.relu(self.linear0(flat))).view_as(x)


IMPRINT_TOL = 1e-2
"""Relative tolerance of the per-bin check: the observed term is a small difference of float32 sums over the
batch (measured error of exact images: 1e-5 to a few 1e-3 with 128 samples in 256 bins); a two-sample mixture's is
of order 1, on a vector the size of the image."""


def gaussian_thresholds(bins: int, mean: float, std: float) -> torch.Tensor:
    """``bins`` thresholds at the ``j / bins`` quantiles of N(mean, std) (the first one far below the mass)."""
    normal = NormalDist(mu=mean, sigma=std)
    return torch.tensor([mean - 10 * std] + [normal.inv_cdf(j / bins) for j in range(1, bins)])


class Imprint(Attack):
    """Robbing the Fed (Fowl et al., ICLR 2022, Sec. 3-4): exact recovery of many samples of a large batch.

    Two steps. :meth:`prepare_model` (the malicious server) puts an :class:`ImprintBlock` with ``bins`` units in
    front of the model it broadcasts; thresholds sit at quantiles of the brightness distribution, a Gaussian fitted
    to ``public_images`` the server holds (default: N(0.45, 0.12), natural images). :meth:`reconstruct` takes the
    differences of consecutive units' gradients, ``(dW_j - dW_{j+1}) / (db_j - db_{j+1})``: exact for every bin that
    caught one sample. Candidates whose brightness falls outside their own bin mix several samples and are dropped;
    ``info["bins_hit"]`` counts the bins that caught samples.

    Args:
        bins: number of imprint units (the paper uses about as many as, or more than, the batch size; 64 is gradinv's
            own).
        mean: mean brightness the thresholds centre on (pixel space; gradinv's own default for natural images, or
            :meth:`fit` on the server's images as the paper does).
        std: spread of the brightness (as ``mean``).
        scale: the shared weight feeding the units back into the input (gradinv's own: small, so the model behind
            sees nearly its input).
        label_strategy: label recovery for the recovered images.
        batch_size: how many images to return when the threat model withholds the batch size.
    """

    name = "imprint"
    # the SoK's grade (Carletti et al. 2025, attack table): Fowl et al. 2022: G (surrogate data places the bins)
    sok = "G"
    exact = True
    requires = frozenset()

    def __init__(
        self,
        *,
        bins: int = 64,
        mean: float = 0.45,
        std: float = 0.12,
        scale: float = 1e-3,
        label_strategy: str = "auto",
        batch_size: int | None = None,
    ) -> None:
        check_arguments(self, locals())
        if not 2 <= bins <= 1_000_000 or std <= 0 or scale <= 0:
            raise ValueError(f"bins must be >= 2, std and scale > 0; got bins={bins}, std={std}, scale={scale}")
        check_positive_int("batch_size", batch_size)
        if label_strategy not in label_recovery.names():
            raise ValueError(f"unknown label_strategy {label_strategy!r}; available: {label_recovery.names()}")
        self.bins, self.mean, self.std, self.scale = bins, mean, std, scale
        self.label_strategy, self.batch_size = label_strategy, batch_size

    def fit(self, public_images: torch.Tensor) -> Imprint:
        """Centre the thresholds on the brightness of images the server holds; returns ``self``."""
        brightness = public_images.flatten(1).mean(dim=1)
        self.mean, self.std = float(brightness.mean()), max(float(brightness.std()), 1e-3)
        return self

    def prepare_model(
        self, model: nn.Module, threat: ThreatModel, *, image_shape: tuple[int, int, int] | None = None
    ) -> nn.Module:
        """The model the malicious server sends: ``ImprintBlock`` then the original model.

        ``image_shape`` ``(C, H, W)`` is needed unless the model comes from ``gi.models.make``.
        """
        image_shape = malicious_input_shape(model, threat, "the imprint attack", image_shape)
        block = ImprintBlock(
            image_shape, gaussian_thresholds(self.bins, self.mean, self.std), threat.normalization, self.scale
        )
        return nn.Sequential(block, model)

    def run(self, observation: Observation, callback: Callback | None) -> Result:
        check_single_step(observation, self.name)
        name, block = _find_block(observation.model)
        weight = observation.update[f"{name}.linear0.weight"].double()
        bias = observation.update[f"{name}.linear0.bias"].double()
        d_weight = weight - torch.cat([weight[1:], torch.zeros_like(weight[:1])])
        d_bias = bias - torch.cat([bias[1:], torch.zeros_like(bias[:1])])
        hit = (d_bias.abs() > 1e-6 * d_bias.abs().max()).nonzero().flatten()
        inputs = (d_weight[hit] / d_bias[hit, None]).float().reshape(-1, *observation.image_shape)
        images = denormalize(inputs, observation.threat.normalization)
        thresholds = torch.as_tensor(block.thresholds).double()
        upper = torch.cat([thresholds[1:], torch.tensor([math.inf], dtype=torch.float64)])
        brightness = images.flatten(1).mean(dim=1)
        in_bin = (brightness >= thresholds[hit] - 1e-5) & (brightness < upper[hit] + 1e-5)
        in_box = (images.amin(dim=(1, 2, 3)) > -1e-3) & (images.amax(dim=(1, 2, 3)) < 1 + 1e-3)
        keep = (in_bin & in_box).nonzero().flatten()
        if len(keep) == 0:
            raise ValueError(f"no imprint bin caught a single sample ({len(hit)} bins hit): use more bins")
        certified, labels, errors, evidence = certify_bins(
            observation, name, thresholds, hit[keep], inputs[keep], brightness[keep]
        )
        coupled = self._coupled_labels(observation, name, thresholds, hit, keep, inputs, brightness)
        if coupled is not None:
            labels = coupled
        n = observation.batch_size or self.batch_size or len(keep)
        # certified bins first, then the strongest remaining bins
        order = sorted(range(len(keep)), key=lambda i: (not certified[i], -float(d_bias[hit[keep[i]]].abs())))[:n]
        checks = (certified, labels, errors)
        result = read_off(observation, inputs[keep], checks, evidence, order, self.label_strategy)
        if callback is not None:
            callback(1, 1, 0.0)
        if coupled is not None and not all(result.certified or []):
            result.info["label_source"] = (
                "each bin's own input gradient, read off the module's second layer, fitted inside an approximate "
                "batch (train-mode BatchNorm couples the samples; not certified)"
            )
        result.info.update(bins_hit=len(hit), single_sample_candidates=len(keep), returned=len(order))
        return result

    def _coupled_labels(
        self,
        observation: Observation,
        name: str,
        thresholds: torch.Tensor,
        hit: torch.Tensor,
        keep: torch.Tensor,
        inputs: torch.Tensor,
        brightness: torch.Tensor,
    ) -> list[int] | None:
        """Where only the batch couples the samples' gradients (train-mode BatchNorm, nothing else in the way), each
        kept image's label from its own input gradient (:mod:`gradinv.attacks.imprint_labels`); ``None`` elsewhere.
        The batch for the fit is the kept images, then the mixed bins' candidates (clamped) standing in for the
        samples not recovered; every place starts from the least-squares labels of the classifier's gradient."""
        threat, size = observation.threat, observation.batch_size
        reason = obstacle(observation)
        if size is None or reason is None or "BatchNorm" not in reason or observation.defenses:
            return None
        if threat.update == "fedavg" and threat.local_batch_size is not None and threat.local_batch_size < size:
            return None
        mixed = [int(i) for i in range(len(hit)) if i not in set(keep.tolist())]
        missing = size - len(keep)
        if missing < 0:
            return None
        normalization = threat.normalization
        fill = [normalize(denormalize(inputs[i : i + 1], normalization).clamp(0, 1), normalization) for i in mixed]
        if missing and not fill:
            fill = [inputs[keep].mean(dim=0, keepdim=True)]
        batch = torch.cat([inputs[keep], *[fill[i % len(fill)] for i in range(missing)]])
        guess = classifier_targets(observation, batch, size).argmax(dim=1)
        observed = observed_input_gradients(observation, name, thresholds, hit[keep], brightness[keep])
        fitted = coupled_labels(observation, name, batch, guess, observed)
        return [int(v) for v in fitted[: len(keep)]]


def certify_bins(
    observation: Observation,
    name: str,
    thresholds: torch.Tensor,
    bins: torch.Tensor,
    inputs: torch.Tensor,
    brightness: torch.Tensor,
) -> tuple[list[bool], list[int], list[float], str]:
    """One-sample consistency of each bin's image, read off the block's *second* layer.

    The gradient of ``linear1``'s column ``j`` is ``A_j = s sum_{n: h_n > b_j} (h_n - b_j) G_n``, with ``G_n`` the
    gradient of sample ``n``'s loss at the block's output and ``s`` the update's scale. With
    ``T_k = s sum_{n: h_n >= b_k} G_n``, ``A_j - A_{j+1} = s sum_{n in bin j} (h_n - b_j) G_n + (b_{j+1} - b_j)
    T_{j+1}``. ``T`` is known above the top bin (0), below every bin (``linear1``'s bias gradient), at every empty
    bin (``(A_j - A_{j+1}) / (b_{j+1} - b_j)``), and across every certified bin (its image's own ``s G``). Where it is
    known on either side of bin ``j``, the bin's own term is observed, a vector the size of the image: for a single
    sample ``x`` it is ``(h_x - b_j) s G_x(y)`` (``T_{j+1}`` known) or ``(h_x - b_{j+1}) s G_x(y)`` (``T_j`` known).
    The image is certified when some label ``y`` makes its own gradient match to :data:`IMPRINT_TOL`; a mixture's
    brightness and gradient do not factor this way (its error is of order 1). Needs per-sample gradients, the batch
    size and an undefended update (see :mod:`gradinv.attacks.certify`).

    Returns:
        ``(certified, labels, errors, evidence)`` per candidate (bins in ``bins``, images ``inputs`` normalised,
        ``brightness`` in pixel space).
    """
    count = len(bins)
    reason = obstacle(observation)
    if reason is not None:
        return [False] * count, [UNKNOWN_LABEL] * count, [float("nan")] * count, reason
    second = observation.update[f"{name}.linear1.weight"].double().T  # (bins, D): row j is A_j
    k = second.shape[0]
    difference = second - torch.cat([second[1:], torch.zeros_like(second[:1])])
    gaps = torch.cat([thresholds[1:] - thresholds[:-1], torch.zeros(1, dtype=torch.float64)])
    shares = Shares(observation, name, inputs)  # shares[i]: (L, D) = s G_x(y) for the candidate labels
    known = {k: torch.zeros(second.shape[1], dtype=torch.float64)}
    known[0] = observation.update[f"{name}.linear1.bias"].double()
    for j in range(k - 1):
        if _empty(observation, name, j):
            known[j] = known[j + 1] = difference[j] / gaps[j]
    certified, labels, errors = [False] * count, [UNKNOWN_LABEL] * count, [float("nan")] * count
    progress = True
    while progress:  # each certified bin carries T across itself, which may open its neighbours' checks
        progress = False
        for i, j in enumerate(bins.tolist()):
            if certified[i] or not (j + 1 in known or j in known):
                continue
            upper = j + 1 in known
            own = difference[j] - gaps[j] * known[j + 1 if upper else j]
            edge = float(thresholds[j]) if upper else float(thresholds[j]) + float(gaps[j])
            share = shares[i]
            position, error = best_label((float(brightness[i]) - edge) * share[None], own[None])
            errors[i] = min(float(error[0]), errors[i]) if errors[i] == errors[i] else float(error[0])
            if errors[i] < IMPRINT_TOL:
                certified[i], labels[i], progress = True, int(shares.labels[position[0]]), True
                step = share[int(position[0])].double()
                known[j] = known[j + 1] + step if upper else known[j]
                known[j + 1] = known[j] - step
    evidence = (
        "one-sample consistency through the imprint block's second layer: each bin's own term of the gradient, "
        f"a vector the size of the image, equals its image's own gradient with its label (to {IMPRINT_TOL:g})"
    )
    return certified, labels, errors, evidence


def _empty(observation: Observation, name: str, j: int) -> bool:
    """Whether no sample fell in bin ``j``: its unit and the next one have equal bias gradients (every sample switched
    on both or neither)."""
    bias = observation.update[f"{name}.linear0.bias"]
    return bool(bias[j] == bias[j + 1])


def _find_block(model: nn.Module) -> tuple[str, ImprintBlock]:
    for name, module in model.named_modules():
        if isinstance(module, ImprintBlock):
            return name, module
    raise ValueError("the broadcast model has no ImprintBlock: build it with Imprint().prepare_model(model, threat)")
