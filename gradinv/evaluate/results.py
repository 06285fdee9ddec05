"""A grid's results read back from its output folder: the table of grid points, as rows, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from gradinv.evaluate.store import Store

COLUMNS = ("model", "threat_label", "batch_size", "attack", "defense_label", "images", "failed", "matched", "psnr",
           "psnr_std", "ssim", "label_acc", "exact", "certified", "encoding_psnr", "accuracy", "seconds", "inversions",
           "cost_seconds")  # fmt: skip


def load_table(folder: str | Path) -> list[dict[str, Any]]:
    """One row per grid point (seeds pooled), as in ``report.html``."""
    from gradinv.report.grid import table

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
