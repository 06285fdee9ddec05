"""Summary statistics of a cell's per-image (or per-sentence) rows, shared by the image, vertical and text cells
and the results table."""

from __future__ import annotations

import statistics
from typing import Any


def present_mean(values: list[Any]) -> float | None:
    """The mean of the values that are not ``None`` (``None`` if there are none)."""
    present = [float(v) for v in values if v is not None]
    return statistics.fmean(present) if present else None


def mean_std(values: list[Any]) -> dict[str, float | None]:
    """``{"mean", "std"}`` (population) of the values that are not ``None`` (both ``None`` if there are none)."""
    present = [float(v) for v in values if v is not None]
    return {"mean": present_mean(present), "std": statistics.pstdev(present) if present else None}
