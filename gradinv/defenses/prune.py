"""Gradient pruning (Zhu et al., NeurIPS 2019, Sec. 5.2; Huang et al., NeurIPS 2021, Sec. 4.2 "GradPrune")."""

from __future__ import annotations

import torch

from gradinv.defenses.base import Defense
from gradinv.validation import check_arguments


def prune_smallest(update: dict[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """Zero the ``ratio`` fraction of entries with the smallest magnitude, in each tensor separately."""
    pruned = {}
    for name, value in update.items():
        k = int(ratio * value.numel())
        if k == 0:
            pruned[name] = value.clone()
            continue
        threshold = value.abs().flatten().kthvalue(k).values
        pruned[name] = torch.where(value.abs() > threshold, value, torch.zeros_like(value))
    return pruned


class Prune(Defense):
    """Share only the largest-magnitude entries of each gradient tensor (the rest set to zero).

    DLG finds pruning above 20% needed, and Huang et al. find ratios of 0.9-0.99 needed to stop Inverting Gradients.

    Args:
        ratio: fraction of entries zeroed per tensor, in [0, 1).
    """

    name = "prune"

    def __init__(self, *, ratio: float = 0.9) -> None:
        check_arguments(self, locals())
        if not 0 <= ratio < 1:
            raise ValueError(f"prune ratio must lie in [0, 1), got {ratio}")
        self.ratio = ratio

    def apply(self, update: dict[str, torch.Tensor], *, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return prune_smallest(update, self.ratio)
