"""Top-k gradient sparsification (Aji & Heafield, EMNLP 2017, Sec. 2 "gradient dropping"; Lin et al., ICLR 2018,
"Deep Gradient Compression"): the client sends only the largest-magnitude entries of its update."""

from __future__ import annotations

import math

import torch

from gradinv.defenses.base import Defense
from gradinv.defenses.prune import prune_smallest
from gradinv.validation import check_arguments


def keep_top(update: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """Keep the ``fraction`` of entries with the largest magnitude over the *whole* update (one threshold for all
    tensors, as Aji & Heafield select it), zeroing the rest. Ties at the threshold are all kept."""
    flat = torch.cat([v.abs().flatten() for v in update.values()])
    k = max(1, math.ceil(fraction * flat.numel() - 1e-9))  # 3/7 of 7 entries is 3, not 4
    threshold = flat.topk(k).values.min()
    return {name: torch.where(v.abs() >= threshold, v, torch.zeros_like(v)) for name, v in update.items()}


class TopK(Defense):
    """Share only the top ``fraction`` of update entries by magnitude (sparse communication).

    ``scope="global"`` ranks all entries of the update together (Aji & Heafield 2017: a single threshold dropping
    99% of the gradient); ``scope="tensor"`` keeps the top fraction of each tensor separately (DGC's layer-wise
    selection; the same as ``prune`` with ``ratio = 1 - fraction``). Error feedback (the dropped residual added to the
    next round's update) spans rounds and does not change what a single round reveals, so it is not modelled.

    Args:
        fraction: the share of entries sent, in (0, 1]; 0.01 is Aji & Heafield's 99% drop.
        scope: ``"global"`` or ``"tensor"``.
    """

    name = "topk"

    def __init__(self, *, fraction: float = 0.01, scope: str = "global") -> None:
        check_arguments(self, locals())
        if not 0 < fraction <= 1:
            raise ValueError(f"topk fraction must lie in (0, 1], got {fraction}")
        if scope not in ("global", "tensor"):
            raise ValueError(f"topk scope must be 'global' or 'tensor', got {scope!r}")
        self.fraction, self.scope = fraction, scope

    def apply(self, update: dict[str, torch.Tensor], *, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.scope == "tensor":
            return prune_smallest(update, 1 - self.fraction)
        return keep_top(update, self.fraction)
