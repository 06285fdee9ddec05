"""Label-recovery accuracy."""

from __future__ import annotations

from collections import Counter

import torch


def label_accuracy(predicted: torch.Tensor, true: torch.Tensor) -> float:
    """Fraction of positions where the (already matched) labels agree (an unknown label, -1, never does)."""
    if predicted.shape != true.shape:
        raise ValueError(f"label shapes differ: {tuple(predicted.shape)} vs {tuple(true.shape)}")
    return float((predicted.long() == true.long()).double().mean())


def label_count_accuracy(predicted: torch.Tensor, true: torch.Tensor) -> float:
    """Order-free accuracy of the label multiset: ``|pred ∩ true| / |true|`` (counts matter)."""
    common = Counter(predicted.tolist()) & Counter(true.tolist())
    return sum(common.values()) / max(len(true), 1)
