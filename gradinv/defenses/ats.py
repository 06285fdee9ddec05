"""ATS (Gao, Guo, Zhang, Qiu, Wen & Liu, "Privacy-preserving Collaborative Learning with Automatic Transformation
Search", CVPR 2021): the client trains on its images transformed by a searched augmentation policy, so the update
the server inverts is the update of transformed images.

A policy is a sequence of sub-policies from the paper's pool of 50 (AutoAugment operations at fixed magnitudes,
:data:`POLICIES`), written as their indices joined by ``-``: ``"3-1-7"`` (translateX 9, contrast 6, translateY 2)
and ``"43-18-18"`` (translateY 3, contrast 7, contrast 7) are the paper's searched policies for CIFAR-100 (its
benchmark script), ``"3-1-7+43-18-18"`` the hybrid, one of the two drawn per image. Each operation picks its sign
at random per image (``+-`` magnitude), as the authors' ``SubPolicy`` does; its probability is not used there
either (every operation is applied).

The operations follow PIL's semantics on 8-bit images (the authors transform PIL images before ``ToTensor``): the
image is quantised to 256 levels first; ``translateX/Y`` shift by ``magnitude x size`` pixels with black fill;
``rotate`` turns by the magnitude in degrees (nearest neighbour, grey 128 fill); ``shearX/Y`` shear (bicubic, black
fill: torch's bicubic, PIL's differs by a few levels); ``contrast``, ``color``, ``brightness``, ``sharpness``
blend with PIL's degenerate image (the mean grey level, the grey image, black, the 3x3 smoothed image) by
``1 +- magnitude``; ``autocontrast``, ``equalize``, ``invert``, ``solarize``, ``posterize`` as ``ImageOps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gradinv.defenses.base import Defense
from gradinv.validation import check_arguments


def _levels(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> the 256 integer levels of an 8-bit image (as floats)."""
    return (image.clamp(0.0, 1.0) * 255.0).round()


def grey(levels: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert("L")``: ``(299 R + 587 G + 114 B) / 1000`` rounded, shape ``(1, H, W)``."""
    if levels.shape[0] == 1:
        return levels
    r, g, b = levels[0], levels[1], levels[2]
    return ((r * 299 + g * 587 + b * 114) / 1000).round()[None]


def _blend(degenerate: torch.Tensor, levels: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ``ImageEnhance`` (``Image.blend``): ``degenerate + factor (image - degenerate)``, truncated to an integer
    level as PIL's C code casts it, then clipped."""
    return (degenerate + factor * (levels - degenerate)).trunc().clamp(0, 255)


def contrast(levels: torch.Tensor, factor: float) -> torch.Tensor:
    mean = float(grey(levels).mean())
    return _blend(torch.full_like(levels, float(int(mean + 0.5))), levels, factor)


def color(levels: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(grey(levels).expand_as(levels), levels, factor)


def brightness(levels: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(torch.zeros_like(levels), levels, factor)


def smooth(levels: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter (kernel ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13``), the border kept: the degenerate
    image of ``sharpness``."""
    kernel = torch.ones(3, 3, dtype=levels.dtype)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13.0).expand(levels.shape[0], 1, 3, 3)
    out = levels.clone()
    out[:, 1:-1, 1:-1] = F.conv2d(levels[None], kernel, groups=levels.shape[0])[0].round()
    return out


def sharpness(levels: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with :func:`smooth`."""
    return _blend(smooth(levels), levels, factor)


def autocontrast(levels: torch.Tensor) -> torch.Tensor:
    """Per channel, stretch ``[min, max]`` to ``[0, 255]`` (PIL's lookup table, no cutoff)."""
    out = levels.clone()
    for c in range(levels.shape[0]):
        low, high = float(levels[c].min()), float(levels[c].max())
        if high > low:
            scale = 255.0 / (high - low)
            offset = -low * scale
            table = [min(255, max(0, int(i * scale + offset))) for i in range(256)]
            out[c] = torch.tensor(table, dtype=levels.dtype)[levels[c].long()]
    return out


def equalize(levels: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.equalize`` per channel: a lookup table from the histogram."""
    out = levels.clone()
    for c in range(levels.shape[0]):
        histogram = torch.bincount(levels[c].long().flatten(), minlength=256).tolist()
        used = [h for h in histogram if h]
        step = (sum(used) - used[-1]) // 255 if used else 0
        if not step:
            continue
        table, n = [], step // 2
        for h in histogram:
            table.append(min(255, n // step))
            n += h
        out[c] = torch.tensor(table, dtype=levels.dtype)[levels[c].long()]
    return out


def invert(levels: torch.Tensor) -> torch.Tensor:
    return 255.0 - levels


def solarize(levels: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.where(levels >= threshold, 255.0 - levels, levels)


def posterize(levels: torch.Tensor, bits: int) -> torch.Tensor:
    mask = ~(2 ** (8 - bits) - 1) & 255
    return (levels.long() & mask).to(levels.dtype)


def _affine(levels: torch.Tensor, matrix: tuple[float, ...], fill: float, mode: str) -> torch.Tensor:
    """PIL's ``Image.transform(AFFINE, (a, b, c, d, e, f))``: output pixel ``(x, y)`` takes the input at
    ``(a x + b y + c, d x + e y + f)`` (pixel centres at ``+0.5``), outside the image ``fill``."""
    _, h, w = levels.shape
    a, b, c, d, e, f = matrix
    ys, xs = torch.meshgrid(torch.arange(h, dtype=levels.dtype) + 0.5, torch.arange(w, dtype=levels.dtype) + 0.5,
                            indexing="ij")  # fmt: skip
    src_x = a * xs + b * ys + c
    src_y = d * xs + e * ys + f
    grid = torch.stack([src_x / w * 2 - 1, src_y / h * 2 - 1], dim=-1)[None]
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    sampled = F.grid_sample(levels[None], grid, mode=mode, padding_mode="border", align_corners=False)[0]
    return torch.where(inside, sampled, torch.full_like(sampled, fill)).clamp(0, 255).round()


def translate_x(levels: torch.Tensor, fraction: float) -> torch.Tensor:
    return _affine(levels, (1, 0, fraction * levels.shape[2], 0, 1, 0), 0.0, "nearest")


def translate_y(levels: torch.Tensor, fraction: float) -> torch.Tensor:
    return _affine(levels, (1, 0, 0, 0, 1, fraction * levels.shape[1]), 0.0, "nearest")


def shear_x(levels: torch.Tensor, shear: float) -> torch.Tensor:
    return _affine(levels, (1, shear, 0, 0, 1, 0), 0.0, "bicubic")


def shear_y(levels: torch.Tensor, shear: float) -> torch.Tensor:
    return _affine(levels, (1, 0, 0, shear, 1, 0), 0.0, "bicubic")


def rotate(levels: torch.Tensor, degrees: float) -> torch.Tensor:
    """Counter-clockwise about the centre (PIL's ``rotate``), nearest neighbour, grey 128 outside."""
    _, h, w = levels.shape
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = w / 2, h / 2
    # output (x, y) -> input: rotate by +angle about the centre (image y axis points down)
    matrix = (cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)
    return _affine(levels, matrix, 128.0, "nearest")


SIGNED: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "shearX": shear_x,
    "shearY": shear_y,
    "translateX": translate_x,
    "translateY": translate_y,
    "rotate": rotate,
    "color": lambda x, m: color(x, 1 + m),
    "contrast": lambda x, m: contrast(x, 1 + m),
    "sharpness": lambda x, m: sharpness(x, 1 + m),
    "brightness": lambda x, m: brightness(x, 1 + m),
}
"""Operations whose magnitude takes a random sign (per image)."""

UNSIGNED: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "posterize": lambda x, m: posterize(x, int(m)),
    "solarize": solarize,
    "autocontrast": lambda x, m: autocontrast(x),
    "equalize": lambda x, m: equalize(x),
    "invert": lambda x, m: invert(x),
}


def _linspace(start: float, stop: float) -> list[float]:
    return [start + (stop - start) * i / 9 for i in range(10)]


RANGES: dict[str, list[float]] = {
    "shearX": _linspace(0, 0.3),
    "shearY": _linspace(0, 0.3),
    "translateX": _linspace(0, 150 / 331),
    "translateY": _linspace(0, 150 / 331),
    "rotate": _linspace(0, 30),
    "color": _linspace(0, 0.5),
    "posterize": [float(round(v)) for v in _linspace(8, 4)],
    "solarize": _linspace(256, 0),
    "contrast": _linspace(0, 0.5),
    "sharpness": _linspace(0, 0.5),
    "brightness": _linspace(0, 0.5),
    "autocontrast": [0.0] * 10,
    "equalize": [0.0] * 10,
    "invert": [0.0] * 10,
}
"""The magnitude of each operation at levels 0-9 (AutoAugment's ranges, as the ATS authors set them)."""

POLICIES: tuple[tuple[str, int], ...] = (
    ("invert", 7), ("contrast", 6), ("rotate", 2), ("translateX", 9), ("sharpness", 1),
    ("sharpness", 3), ("shearY", 2), ("translateY", 2), ("autocontrast", 5), ("equalize", 2),
    ("shearY", 5), ("posterize", 5), ("color", 3), ("brightness", 5), ("sharpness", 9),
    ("brightness", 9), ("equalize", 5), ("equalize", 1), ("contrast", 7), ("sharpness", 5),
    ("color", 5), ("translateX", 5), ("equalize", 7), ("autocontrast", 8), ("translateY", 3),
    ("sharpness", 6), ("brightness", 6), ("color", 8), ("solarize", 0), ("invert", 0),
    ("equalize", 0), ("autocontrast", 0), ("equalize", 8), ("equalize", 4), ("color", 5),
    ("equalize", 5), ("autocontrast", 4), ("solarize", 4), ("brightness", 3), ("color", 0),
    ("solarize", 1), ("autocontrast", 0), ("translateY", 3), ("translateY", 3), ("autocontrast", 1),
    ("solarize", 1), ("equalize", 5), ("invert", 0), ("translateY", 3), ("autocontrast", 1),
)  # fmt: skip
"""The paper's pool of 50 sub-policies (operation, magnitude level), indexed as in the authors' ``policy.py``."""


def parse_policy(policy: str) -> list[list[int]]:
    """``"3-1-7+43-18-18"`` -> ``[[3, 1, 7], [43, 18, 18]]`` (alternatives separated by ``+``).

    Raises:
        ValueError: an empty policy or an index outside ``[0, 50)``.
    """
    if not isinstance(policy, str) or not policy.strip():
        raise ValueError(f"an ATS policy is sub-policy indices like '3-1-7', got {policy!r}")
    out = []
    for part in policy.split("+"):
        try:
            indices = [int(i) for i in part.split("-")]
        except ValueError as err:
            raise ValueError(f"an ATS policy is sub-policy indices like '3-1-7', got {policy!r}") from err
        if any(not 0 <= i < len(POLICIES) for i in indices):
            raise ValueError(f"ATS sub-policy indices lie in [0, {len(POLICIES)}), got {policy!r}")
        out.append(indices)
    return out


def transform(image: torch.Tensor, indices: list[int], signs: list[int]) -> torch.Tensor:
    """One image ``(C, H, W)`` in [0, 1] through the sub-policies ``indices`` with the given ``+-1`` signs (used by
    the signed operations only); returns the 8-bit result in [0, 1]."""
    levels = _levels(image.detach().float().cpu())
    for index, sign in zip(indices, signs, strict=True):
        name, level = POLICIES[index]
        magnitude = RANGES[name][level]
        levels = SIGNED[name](levels, sign * magnitude) if name in SIGNED else UNSIGNED[name](levels, magnitude)
    return (levels / 255.0).to(image)


class ATS(Defense):
    """The client trains on its images through an ATS policy (one of its ``+``-alternatives drawn per image, each
    signed operation's sign drawn per image); labels unchanged.

    Args:
        policy: sub-policy indices into :data:`POLICIES` (``"3-1-7"``, the paper's best for CIFAR-100, by default).
    """

    name = "ats"

    def __init__(self, *, policy: str = "3-1-7") -> None:
        check_arguments(self, locals())
        parse_policy(policy)
        self.policy = policy

    def encode(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        *,
        generator: torch.Generator,
        client_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        alternatives = parse_policy(self.policy)
        out = []
        for image in images:
            chosen = alternatives[int(torch.randint(len(alternatives), (1,), generator=generator))]
            signs = (torch.randint(2, (len(chosen),), generator=generator) * 2 - 1).tolist()
            out.append(transform(image, chosen, signs))
        return torch.stack(out), targets
