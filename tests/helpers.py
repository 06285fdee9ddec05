"""Small models and data for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

import gradinv as gi


def tiny_mlp(image_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A user-defined model that is not from the zoo."""
    torch.manual_seed(seed)
    c, h, w = image_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(), nn.Linear(16, num_classes))


def rank_mod(matrix: object, modulus: int) -> int:
    """The rank over the prime field ``F_modulus`` (Gauss-Jordan on Python integers)."""
    rows = [[int(v) % modulus for v in row] for row in matrix]  # type: ignore[attr-defined]
    rank, cols = 0, len(rows[0])
    for c in range(cols):
        pivot = next((r for r in range(rank, len(rows)) if rows[r][c]), None)
        if pivot is None:
            continue
        rows[rank], rows[pivot] = rows[pivot], rows[rank]
        inv = pow(rows[rank][c], -1, modulus)
        rows[rank] = [v * inv % modulus for v in rows[rank]]
        for r in range(len(rows)):
            if r != rank and rows[r][c]:
                f = rows[r][c]
                rows[r] = [(a - f * b) % modulus for a, b in zip(rows[r], rows[rank], strict=True)]
        rank += 1
    return rank


def plain_and_adaptive(observation: gi.Observation, attack: str, **options: Any) -> dict[bool, gi.Reconstruction]:
    """``attack`` run on ``observation`` twice from the same seed: ignoring the recorded defenses (``False``) and
    adapted to them (``adaptive=True``)."""
    return {a: gi.attacks.make(attack, adaptive=a, **options).reconstruct(observation) for a in (False, True)}


def psnrs(runs: dict[bool, gi.Reconstruction], images: torch.Tensor, labels: torch.Tensor) -> dict[bool, float]:
    """Each run's PSNR against the private batch."""
    return {a: gi.metrics.score(r, images, labels)["psnr"] for a, r in runs.items()}


def grid_file(folder: Path, text: str) -> Path:
    """``text`` written as ``folder/grid.toml``, for ``load_grid``."""
    path = folder / "grid.toml"
    path.write_text(text)
    return path


def lenet_cat(*defenses: Any) -> tuple[nn.Module, torch.Tensor, torch.Tensor, gi.Observation]:
    """DLG's LeNet on the 16x16 cat photograph and the client's observation under ``defenses`` (seed 0): the setting
    of the adaptive-attack tests."""
    model = gi.models.make("lenet", num_classes=10, image_shape=(3, 16, 16), seed=0)
    images, labels = gi.data.load("skimage", indices=[1], size=16)
    return model, images, labels, gi.observe(model, images, labels, seed=0, defenses=list(defenses))
