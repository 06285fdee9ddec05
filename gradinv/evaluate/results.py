"""A grid's results read back from its output folder: the table of grid points, as rows, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from gradinv.evaluate.cells import utility_config
from gradinv.evaluate.grid import attack_label, config_key
from gradinv.evaluate.store import Store
from gradinv.evaluate.summary import present_mean

COLUMNS = ("model", "threat_label", "batch_size", "attack", "defense_label", "images", "failed", "matched", "psnr",
           "psnr_std", "ssim", "label_acc", "exact", "certified", "encoding_psnr", "accuracy", "seconds", "inversions",
           "cost_seconds", "modality", "rouge1", "rouge2", "rougeL", "token_acc", "certified_wrong")  # fmt: skip
TEXT_COLUMNS = ("model", "threat_label", "batch_size", "attack", "defense_label", "images", "failed", "rouge1",
                "rouge2", "rougeL", "token_acc", "exact", "certified", "certified_wrong", "seconds", "inversions",
                "cost_seconds")  # fmt: skip
"""The columns of a text cell's row (``images`` counts its sentences)."""


def load_table(folder: str | Path) -> list[dict[str, Any]]:
    """One row per grid point (seeds pooled), as in ``report.html``."""
    store = Store(Path(folder) / "results.sqlite")
    try:
        return table(store)
    finally:
        store.close()


def export(folder: str | Path, fmt: str) -> str:
    """The table as ``"csv"`` or ``"json"`` text."""
    rows = load_table(folder)
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt != "csv":
        raise ValueError(f"format must be 'csv' or 'json', got {fmt!r}")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


GROUP = ("model", "threat_label", "batch_size", "attack", "defense_label")


def _point(config: dict[str, Any]) -> tuple[Any, ...]:
    """The grid point of a cell: the values of :data:`GROUP`, the attack and the model by their labels."""
    return tuple(
        attack_label(config) if k == "attack" else config.get("model_label", config[k]) if k == "model" else config[k]
        for k in GROUP
    )


def table(store: Store, cells: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per grid point (cells of all seeds pooled): scores over all images, utility, cost.

    ``cells``: ``store.cells()`` when the caller has already read them."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for cell in store.cells() if cells is None else cells:
        groups[_point(cell["config"])].append(cell)
    rows = []
    for key, cells in groups.items():
        done = [c for c in cells if c["status"] == "done"]
        images = [r for c in done for r in store.images(c["key"])]
        psnr = [r["psnr"] for r in images if r["psnr"] is not None]
        setup = utility_config(cells[0]["config"])
        utility = store.utility(config_key(setup)) if setup else None
        row: dict[str, Any] = dict(zip(GROUP, key, strict=True))
        config = cells[0]["config"]
        row.update(
            adaptive=bool(config.get("attack_options", {}).get("adaptive")),
            augmentation=config.get("threat", {}).get("augmentation", "none"),
            defenses=[str(name) for name, _ in config.get("defenses", [])],
            cells=len(cells),
            failed=len(cells) - len(done),
            images=len(images),
            psnr=statistics.fmean(psnr) if psnr else None,
            psnr_std=statistics.pstdev(psnr) if len(psnr) > 1 else None,
            matched=present_mean([r["psnr"] is not None for r in images]),
            ssim=present_mean([r["ssim"] for r in images]),
            label_acc=present_mean([r["label_ok"] for r in images]),
            exact=present_mean([r["exact"] for r in images]),
            certified=present_mean([r.get("certified") for r in images]),
            encoding_psnr=present_mean([r["encoding_psnr"] for r in images]),
            accuracy=None if utility is None else utility["accuracy"],
            seconds=present_mean([c["summary"]["attack_seconds_per_batch"] for c in done]),
            cost_seconds=present_mean([c["summary"]["cost"]["seconds"] for c in done]),
            inversions=done[0]["summary"]["cost"]["inversions"] if done else None,
            modality=config.get("modality", "image"),
            **{key: present_mean([r.get(key) for r in images]) for key in ("rouge1", "rouge2", "rougeL", "token_acc")},
            # certified sentences that are not the client's (text attacks; must be 0), over every cell
            certified_wrong=sum(c["summary"].get("certified_wrong", 0) for c in done)
            if config.get("modality") == "text"
            else None,
            # DAGER accounting for the defense, and in no batch stopped by its own limits (batch too large for the
            # span, a completion over its budget): only then does its failure speak for the defense
            dager_aware=config.get("attack") == "dager"
            and config.get("attack_options", {}).get("noise_aware", True)
            and not any(c["summary"].get("inconclusive") for c in done),
        )
        rows.append(row)
    return rows
