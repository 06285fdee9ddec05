"""Trap weights: a malicious server's initialisation of the first layer (Boenisch, Dziedzic, Schuster, Shamsabadi,
Shumailov & Papernot, "When the Curious Abandon Honesty: Federated Learning Is Not Private", IEEE EuroS&P 2023)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from gradinv.attacks.bias_trick import BiasTrick
from gradinv.attacks.exact import first_linear, malicious_input_shape
from gradinv.observation import Normalization, Observation, ThreatModel
from gradinv.validation import check_arguments, check_seed


def trap_rows(out_features: int, in_features: int, scale: float, generator: torch.Generator) -> torch.Tensor:
    """``(out, in)`` trap weights in pixel space (Boenisch et al. 2023, Sec. 4.2).

    Each row draws magnitudes from N(0, 1), makes a random half of its entries negative, and multiplies the
    positive half by ``scale < 1``: on non-negative inputs the negative half dominates, so a neuron fires only for
    the rare inputs that are much brighter where its weights are positive. Few samples of a batch activate each row,
    and a row activated by one sample alone leaks it exactly through ``dL/dW_i / dL/db_i``.
    """
    magnitude = torch.randn(out_features, in_features, generator=generator).abs()
    order = torch.rand(out_features, in_features, generator=generator).argsort(dim=1)
    negative = order < in_features // 2
    return torch.where(negative, -magnitude, scale * magnitude)


def fold_normalization(
    weight: torch.Tensor, normalization: Normalization | None, image_shape: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias acting on normalised inputs ``x' = (x - m) / s`` that compute ``weight @ x`` on pixels."""
    if normalization is None:
        return weight, torch.zeros(weight.shape[0])
    per = math.prod(image_shape[1:])
    mean, std = (torch.tensor(v).repeat_interleave(per) for v in normalization)
    return weight * std, weight @ mean


class TrapWeights(BiasTrick):
    """Curious Abandon Honesty (Boenisch et al., EuroS&P 2023): trap weights in the first linear layer, then the
    bias trick on every row that one sample alone activated.

    :meth:`prepare_model` (the malicious server) replaces the first ``nn.Linear`` layer's weights by
    :func:`trap_rows`; its bias is zero in pixel space (the client's normalisation is folded in). The paper tunes the
    scale factor by hand; :meth:`fit` picks it on the server's own images so that a neuron fires for about one sample
    in ``batch_size`` (the rate that maximises single-sample rows). :meth:`reconstruct` is the bias trick.

    Args:
        scale: factor on the positive weights (smaller: fewer activations; the paper tunes it by hand, 0.95 is
            gradinv's own starting point; :meth:`fit` sets it from the server's images).
        seed: seeds the trap weights.
        tol: relative agreement under which two rows count as the same sample.
        label_strategy: label recovery for images when the batch is not recovered whole.
        batch_size: how many images to return when the threat model withholds the batch size.
    """

    name = "trap_weights"
    # the SoK's grade (Carletti et al. 2025, attack table): Boenisch et al. 2023: G
    sok = "G"

    def __init__(
        self,
        *,
        scale: float = 0.95,
        seed: int = 0,
        tol: float = 1e-4,
        label_strategy: str = "auto",
        batch_size: int | None = None,
    ) -> None:
        check_arguments(self, locals())
        super().__init__(tol=tol, label_strategy=label_strategy, batch_size=batch_size)
        if not 0 < scale <= 1:
            raise ValueError(f"scale must lie in (0, 1], got {scale}")
        check_seed("seed", seed)
        self.scale, self.seed = scale, seed

    def fit(self, public_images: torch.Tensor, batch_size: int, *, rows: int = 256) -> TrapWeights:
        """Choose ``scale`` so that a trap row fires for a fraction ``1 / batch_size`` of the server's own images."""
        x = public_images.flatten(1)
        weights = trap_rows(rows, x.shape[1], 1.0, torch.Generator().manual_seed(self.seed))
        positive, negative = (x @ weights.clamp(min=0).T), (x @ weights.clamp(max=0).T)
        low, high = 0.0, 1.0
        for _ in range(40):  # bisection: the firing rate grows with the scale
            mid = (low + high) / 2
            rate = float((mid * positive + negative > 0).double().mean())
            low, high = (mid, high) if rate < 1 / batch_size else (low, mid)
        self.scale = max(high, 1e-6)
        return self

    def check(self, observation: Observation) -> None:
        """Trap weights exist only in a model a malicious server sent: an honest observation is refused."""
        if observation.threat.server != "malicious":
            raise ValueError(
                "trap_weights reads a model the malicious server built (prepare_model); this observation was made "
                'under server="honest": use bias_trick for an honest server'
            )
        super().check(observation)

    def prepare_model(
        self, model: nn.Module, threat: ThreatModel, *, image_shape: tuple[int, int, int] | None = None
    ) -> nn.Module:
        """A copy of ``model`` whose first linear layer holds trap weights (``image_shape`` unless from the zoo)."""
        image_shape = malicious_input_shape(model, threat, "trap weights", image_shape)
        sent = copy.deepcopy(model)
        _, layer = first_linear(sent, image_shape)
        generator = torch.Generator().manual_seed(self.seed)
        weight = trap_rows(layer.out_features, layer.in_features, self.scale, generator)
        weight, bias = fold_normalization(weight, threat.normalization, image_shape)
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
        return sent
