"""Robbing the Fed: a malicious server's imprint module (Fowl, Geiping, Czaja, Goldblum & Goldstein, ICLR 2022)."""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
from torch import nn

from gradinv.attacks import labels as label_recovery
from gradinv.attacks.base import Attack, Callback, Result
from gradinv.attacks.exact import check_single_step, malicious_input_shape
from gradinv.fl.client import denormalize
from gradinv.observation import Normalization, Observation, ThreatModel


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
        bins: number of imprint units (the paper uses about as many as, or more than, the batch size).
        mean: mean brightness the thresholds centre on (pixel space).
        std: spread of the brightness.
        scale: the shared weight feeding the units back into the input.
        label_strategy: label recovery for the recovered images.
        batch_size: how many images to return when the threat model withholds the batch size.
    """

    name = "imprint"
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
        if bins < 2 or std <= 0 or scale <= 0:
            raise ValueError(f"bins must be >= 2, std and scale > 0; got bins={bins}, std={std}, scale={scale}")
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
        n = observation.batch_size or self.batch_size or len(keep)
        order = keep[d_bias[hit][keep].abs().argsort(descending=True)][:n]
        images = images[order]
        labels = label_recovery.recover(self.label_strategy, observation, max(len(order), 1))[: len(order)]
        if callback is not None:
            callback(1, 1, 0.0)
        info = {"bins_hit": len(hit), "single_sample_candidates": len(keep), "returned": len(order)}
        return Result(images, labels, [], info)


def _find_block(model: nn.Module) -> tuple[str, ImprintBlock]:
    for name, module in model.named_modules():
        if isinstance(module, ImprintBlock):
            return name, module
    raise ValueError("the broadcast model has no ImprintBlock: build it with Imprint().prepare_model(model, threat)")
