"""Figures of a run: originals above reconstructions, and the attacks' loss curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def _show(ax: plt.Axes, image: torch.Tensor) -> None:
    array = image.detach().clamp(0, 1).permute(1, 2, 0).numpy()
    ax.imshow(
        array[..., 0] if array.shape[2] == 1 else array,
        cmap="gray" if array.shape[2] == 1 else None,
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    ax.set_xticks([])
    ax.set_yticks([])


def reconstruction_grid(
    originals: torch.Tensor, rows: list[tuple[str, torch.Tensor, list[str]]], path: Path, *, dpi: int = 110
) -> None:
    """Save a grid: the originals first, then one line per attack (images already matched to the originals).

    Batches of up to 3 images are laid out one image per row, an attack per column; larger batches one attack per
    row (the first 16 images).

    Args:
        originals: ``(N, C, H, W)`` in [0, 1].
        rows: ``(title, images (N, C, H, W), caption per image)`` per attack.
        path: the PNG to write.
        dpi: its resolution (the grid report's per-cell thumbnails use less).
    """
    n = min(originals.shape[0], 16)
    lines = [("original", originals, [""] * n), *rows]
    across = n <= 3  # attacks across, images down
    shape = (n, len(lines)) if across else (len(lines), n)
    fig, axes = plt.subplots(
        *shape, figsize=(1.6 * shape[1] + 0.6, 1.7 * shape[0] + 0.5), squeeze=False, layout="constrained"
    )
    for i, (title, images, captions) in enumerate(lines):
        for j in range(n):
            ax = axes[j, i] if across else axes[i, j]
            _show(ax, images[j])
            label = f"{title}\n{captions[j]}" if across and j == 0 else captions[j]
            ax.set_title(label, fontsize=8)
        if not across:
            axes[i, 0].set_ylabel(title, fontsize=8)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def loss_curves(traces: dict[str, list[float]], path: Path) -> None:
    """Save each attack's objective per step on a log scale, one panel per attack (their steps differ in kind)."""
    names = list(traces) or ["(no attack)"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names) + 0.6, 3.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        trace = traces.get(name, [])
        if trace:
            ax.plot(range(1, len(trace) + 1), [max(t, 1e-12) for t in trace], color="tab:blue")
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("attack objective")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
