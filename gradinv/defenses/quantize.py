"""Uniform gradient quantisation (as in QSGD-style compression; Alistarh et al., NeurIPS 2017, deterministic)."""

from __future__ import annotations

import torch

from gradinv.defenses.base import Defense
from gradinv.validation import check_arguments


def quantize_uniform(update: dict[str, torch.Tensor], bits: int) -> dict[str, torch.Tensor]:
    """Round each tensor to ``2^bits - 1`` evenly spaced levels symmetric about zero over ``[-max|g|, max|g|]``.

    Zero is a level, so entries that are exactly zero (dead units) stay zero. One bit keeps ``sign(g) * max|g|``.
    """
    half = 2 ** (bits - 1) - 1  # levels on each side of zero
    out = {}
    for name, value in update.items():
        top = value.abs().max()
        if top == 0:
            out[name] = value.clone()
        elif half == 0:
            out[name] = torch.sign(value) * top
        else:
            step = top / half
            out[name] = torch.round(value / step) * step
    return out


class Quantize(Defense):
    """Share each gradient tensor quantised to ``bits`` bits per entry (its scale sent alongside).

    Args:
        bits: bits per entry, 1 to 16.
    """

    name = "quantize"

    def __init__(self, *, bits: int = 4) -> None:
        check_arguments(self, locals())
        if not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ValueError(f"bits must be an integer in [1, 16], got {bits!r}")
        self.bits = bits

    def apply(self, update: dict[str, torch.Tensor], *, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return quantize_uniform(update, self.bits)
