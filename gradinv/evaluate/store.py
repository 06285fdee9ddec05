"""The grid's results in an embedded SQLite database: one row per cell and one per cell and image, written in one
transaction as each cell finishes, so a killed run leaves only whole cells and ``--resume`` skips exactly those."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,            -- 'done' or 'failed'
    config TEXT NOT NULL,            -- the cell's full configuration, JSON
    summary TEXT,                    -- scores (mean, std), timings, cost estimate, JSON
    error TEXT,
    seconds REAL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS images (
    key TEXT NOT NULL REFERENCES cells(key),
    image INTEGER NOT NULL,          -- index over the cell's images (batch after batch)
    batch INTEGER NOT NULL,
    psnr REAL, ssim REAL, mse REAL, lpips REAL,
    label_ok INTEGER,                -- 1/0, NULL when the attack returns no labels
    exact INTEGER,
    encoding_psnr REAL,              -- against the encoding the client trained on (MixUp/InstaHide), else NULL
    certified INTEGER,               -- 1/0: the attack certified the image matched to this original
    rouge1 REAL, rouge2 REAL, rougeL REAL, token_acc REAL,  -- text cells: one row per sentence ("image")
    PRIMARY KEY (key, image)
);
CREATE TABLE IF NOT EXISTS utility (
    key TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    accuracy REAL NOT NULL,
    detail TEXT NOT NULL
);
"""
IMAGE_COLUMNS = (
    "image", "batch", "psnr", "ssim", "mse", "lpips", "label_ok", "exact", "encoding_psnr", "certified", "rouge1",
    "rouge2", "rougeL", "token_acc",
)  # fmt: skip
REAL_COLUMNS = frozenset({"psnr", "ssim", "mse", "lpips", "encoding_psnr", "rouge1", "rouge2", "rougeL", "token_acc"})


class Store:
    """``results.sqlite`` in an output folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        present = {row[1] for row in self.db.execute("PRAGMA table_info(images)")}
        for column in IMAGE_COLUMNS:
            if column not in present:  # a database written by an older gradinv: resumable, the column left NULL
                kind = "REAL" if column in REAL_COLUMNS else "INTEGER"
                self.db.execute(f"ALTER TABLE images ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self.db.close()

    def finished(self) -> set[str]:
        """Keys of cells already recorded (done or failed)."""
        return {row[0] for row in self.db.execute("SELECT key FROM cells")}

    def record(
        self,
        key: str,
        config: dict[str, Any],
        *,
        summary: dict[str, Any] | None = None,
        images: Sequence[dict[str, Any]] = (),
        error: str | None = None,
        seconds: float = 0.0,
    ) -> None:
        """Write one finished cell and its images atomically (one transaction)."""
        with self.db:
            self.db.execute("DELETE FROM images WHERE key = ?", (key,))
            self.db.execute(
                "INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    "failed" if error else "done",
                    json.dumps(config, sort_keys=True),
                    None if summary is None else json.dumps(summary),
                    error,
                    seconds,
                    time.time(),
                ),
            )
            self.db.executemany(
                f"INSERT INTO images VALUES (?, {', '.join('?' * len(IMAGE_COLUMNS))})",
                [(key, *(row.get(c) for c in IMAGE_COLUMNS)) for row in images],
            )

    def utility(self, key: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT accuracy, detail FROM utility WHERE key = ?", (key,)).fetchone()
        return None if row is None else {"accuracy": row[0], **json.loads(row[1])}

    def record_utility(self, key: str, config: dict[str, Any], accuracy: float, detail: dict[str, Any]) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO utility VALUES (?, ?, ?, ?)",
                (key, json.dumps(config, sort_keys=True), accuracy, json.dumps(detail)),
            )

    def cells(self) -> list[dict[str, Any]]:
        """Every recorded cell: key, status, config, summary, error, seconds."""
        rows = self.db.execute("SELECT key, status, config, summary, error, seconds FROM cells ORDER BY finished")
        return [
            {
                "key": key,
                "status": status,
                "config": json.loads(config),
                "summary": json.loads(summary) if summary else None,
                "error": error,
                "seconds": seconds,
            }
            for key, status, config, summary, error, seconds in rows
        ]

    def images(self, key: str | None = None) -> list[dict[str, Any]]:
        """Per-image rows (of one cell, or all)."""
        query = f"SELECT key, {', '.join(IMAGE_COLUMNS)} FROM images"
        rows = self.db.execute(query + " WHERE key = ? ORDER BY image", (key,)) if key else self.db.execute(query)
        return [dict(zip(("key", *IMAGE_COLUMNS), row, strict=True)) for row in rows]
