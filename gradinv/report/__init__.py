"""Write a run's results: ``metrics.json``, ``reconstruction.png``, ``loss.png`` and ``report.html``."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradinv import figures
from gradinv.observation import Reconstruction, atomic_write, atomic_write_text
from gradinv.report import html


def prepare_folder(out: str | Path, *, overwrite: bool = False) -> Path:
    """Create the output folder; one that exists and is not empty raises ``FileExistsError`` unless ``overwrite``."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"output folder {folder} exists and is not empty; choose another or pass overwrite=True (--overwrite)"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def versions() -> dict[str, str]:
    """Versions of what produced a result."""
    import gradinv

    return {
        "gradinv": gradinv.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def write_run(
    folder: Path,
    *,
    originals: torch.Tensor,
    results: dict[str, tuple[Reconstruction, dict[str, Any]]],
    config: dict[str, Any],
) -> dict[str, Any]:
    """Write every file of a run into ``folder`` (created by :func:`prepare_folder`) and return the record.

    Args:
        originals: ``(N, C, H, W)`` the private images.
        results: per attack name, its reconstruction and its scores from ``gi.metrics.score``.
        config: model, data, batch size, threat model, seed, ... (stored in ``metrics.json``).
    """
    rows, traces = [], {}
    record: dict[str, Any] = {**config, "versions": versions(), "attacks": {}}
    for name, (rec, scores) in results.items():
        ordered = torch.zeros_like(originals)
        captions = [""] * originals.shape[0]
        for entry in scores["per_image"]:
            ordered[entry["index"]] = rec.images[entry["match"]]
            captions[entry["index"]] = f"{entry['psnr']:.1f} dB"
        rows.append((name, ordered, captions))
        traces[name] = rec.trace
        record["attacks"][name] = {
            "scores": scores,
            "seconds": rec.seconds,
            "config": rec.config,
            "info": rec.info,
            "steps": len(rec.trace),
            "certified": rec.certified,
            "certificate": rec.certificate,
            "labels": None if rec.labels is None else rec.labels.tolist(),
            "label_counts": None if rec.label_counts is None else rec.label_counts.tolist(),
        }
    atomic_write(folder / "reconstruction.png", lambda tmp: figures.reconstruction_grid(originals, rows, tmp))
    traced = {name: trace for name, trace in traces.items() if trace}  # exact attacks have no objective to plot
    if traced:
        atomic_write(folder / "loss.png", lambda tmp: figures.loss_curves(traced, tmp))
    atomic_write_text(folder / "metrics.json", json.dumps(record, indent=2, default=str))
    atomic_write_text(folder / "report.html", html.render(record, folder / "reconstruction.png", folder / "loss.png"))
    return record


def write_text_run(
    folder: Path,
    *,
    tokenizer: Any,
    results: dict[str, tuple[Any, dict[str, Any]]],
    config: dict[str, Any],
) -> dict[str, Any]:
    """Write a text run's ``metrics.json`` and ``report.html`` into ``folder`` and return the record.

    Args:
        tokenizer: the client's tokenizer (to show tokens).
        results: per attack name, its :class:`~gradinv.text.TextReconstruction` and its ``text_score``.
        config: model, task, data, batch size, threat model, the sentences (``texts``), ... (stored as given).
    """
    from gradinv.metrics.text import references
    from gradinv.report.text import render_text

    record: dict[str, Any] = {**config, "versions": versions(), "attacks": {}}
    record["truth"] = references(tokenizer, config["texts"], config["max_length"])
    for name, (rec, scores) in results.items():
        record["attacks"][name] = {
            "scores": {**scores, "pairs": [list(p) for p in scores["pairs"]]},
            "seconds": rec.seconds,
            "config": rec.config,
            "info": {k: v for k, v in rec.info.items() if k != "trace"},
            "trace": rec.info.get("trace", []),
            "texts": rec.texts,
            "token_ids": rec.token_ids,
            "certified": rec.certified,
            "certificate": rec.certificate,
        }
    atomic_write_text(folder / "metrics.json", json.dumps(record, indent=2, default=str))
    atomic_write_text(folder / "report.html", render_text(record, tokenizer))
    return record
