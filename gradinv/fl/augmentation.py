"""Client-side data augmentation: the random flips and crops a training pipeline applies before each pass over the
data (Krizhevsky et al. 2012; He et al., CVPR 2016, Sec. 4.2: "4 pixels are padded on each side, and a 32x32 crop is
randomly sampled from the padded image or its horizontal flip"). The client draws them in private: the attacker may
know the family (``ThreatModel.augmentation``) but not the draw, so what it inverts is an update of images it never
saw in that position or orientation (realistic clients, Carletti et al.'s SoK; Valadi et al. 2025)."""

from __future__ import annotations

import torch

from gradinv.observation import ThreatModel
from gradinv.update import local_epochs

SEED_SALT = 0x5DEECE66D
"""Mixed into the observation's seed for the augmentation's own generator, so adding augmentation leaves every other
draw of the client (dropout, defense noise, shuffles) as it was."""


def padding(size: int) -> int:
    """The crop's padding for images of height/width ``size``: an eighth of it (He et al.'s 4 pixels at 32)."""
    return max(1, size // 8)


def augment(images: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """One augmentation draw per image of ``(N, C, H, W)`` pixel ``images``: ``"flip"``, a horizontal flip with
    probability 1/2; ``"crop_flip"``, that flip, then a crop of the image zero-padded by :func:`padding` on each side,
    at an offset drawn uniformly in ``[-pad, pad]`` along each axis (torchvision's ``RandomCrop(size, padding=pad)``
    and ``RandomHorizontalFlip``). ``"none"``: the images unchanged. Draws come from ``generator`` (on the CPU)."""
    if kind == "none":
        return images
    if kind not in ("flip", "crop_flip"):
        raise ValueError(f"augmentation must be 'none', 'flip' or 'crop_flip', got {kind!r}")
    n, _, height, width = images.shape
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.where(flips.to(images.device)[:, None, None, None], images.flip(-1), images)
    if kind == "flip":
        return out
    pad = padding(min(height, width))
    offsets = torch.randint(-pad, pad + 1, (n, 2), generator=generator)
    padded = torch.nn.functional.pad(out, (pad, pad, pad, pad))
    crops = [
        padded[i, :, pad + int(dy) : pad + int(dy) + height, pad + int(dx) : pad + int(dx) + width]
        for i, (dy, dx) in enumerate(offsets)
    ]
    return torch.stack(crops)


def _generator(seed: int) -> torch.Generator:
    """The augmentation's own generator for the observation's ``seed`` (mixed with :data:`SEED_SALT`)."""
    return torch.Generator().manual_seed((seed ^ SEED_SALT) % 2**63)


def augmented_epochs(images: torch.Tensor, threat: ThreatModel, seed: int) -> tuple[torch.Tensor, int]:
    """What an augmenting client trains on: for each pass over its data a fresh draw of every image
    (:func:`augment`), stacked epoch after epoch (``(E * N, C, H, W)``), and ``E``. Seeded by the observation's
    ``seed`` (mixed with :data:`SEED_SALT`), so evaluation code gets the client's very draws."""
    if threat.augmentation == "none":
        return images, 1
    epochs, generator = local_epochs(images.shape[0], threat), _generator(seed)
    return torch.cat([augment(images, threat.augmentation, generator) for _ in range(epochs)]), epochs


def augmented_batch(images: torch.Tensor, threat: ThreatModel, seed: int) -> torch.Tensor:
    """The images as the client's first pass (its only one for a gradient) saw them, the first draw of
    :func:`augmented_epochs`: for evaluation, to score a reconstruction against what the client actually trained on
    as well as against its data."""
    return augment(images, threat.augmentation, _generator(seed))
