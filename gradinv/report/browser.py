"""Look at a report page the way a reader does: in headless Chromium, at a given window width.

``layout`` loads a page with a small script appended that measures it once loaded (how wide the document is against
the window, each table's cells per row, each picture's natural and shown size) and reads the measurements back from
the DOM Chromium dumps. ``screenshot`` saves what the window shows. Both need a Chromium or Chrome binary
(``chromium`` on ``PATH``, or ``GRADINV_CHROMIUM``); nothing here is needed to write a report.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
"""Names tried on ``PATH``, in order."""

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)
"""Headless, offline and quiet: no background connections, no first-run work, no scrollbar taking width."""

MEASURE = """<script>
window.addEventListener("load", () => {
  const doc = document.documentElement;
  const box = (e) => e.getBoundingClientRect();
  const tables = [...document.querySelectorAll("table")].map((t) => ({
    cells: [...t.rows].map((r) => [...r.cells].reduce((n, c) => n + c.colSpan, 0)),
    right: box(t).right,
    scrolls: t.scrollWidth > t.clientWidth,
  }));
  const images = [...document.images].map((i) => ({
    natural: [i.naturalWidth, i.naturalHeight], shown: [box(i).width, box(i).height], right: box(i).right,
  }));
  const out = {
    window: window.innerWidth, width: doc.scrollWidth, height: doc.scrollHeight, body_right: box(document.body).right,
    tables, images,
  };
  const node = document.createElement("pre");
  node.id = "gradinv-layout";
  node.textContent = JSON.stringify(out);
  document.body.appendChild(node);
});
</script>"""
"""Appended to a copy of the page; writes its measurements into ``<pre id="gradinv-layout">``."""


def find_chromium() -> str | None:
    """The Chromium binary: ``GRADINV_CHROMIUM`` if set, else the first of ``BINARIES`` on ``PATH``; None if none."""
    chosen = os.environ.get("GRADINV_CHROMIUM")
    if chosen:
        return chosen
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _chromium(binary: str | None) -> str:
    binary = binary or find_chromium()
    if binary is None:
        raise FileNotFoundError(
            "no Chromium found: install it (Debian: apt-get install chromium) or set GRADINV_CHROMIUM to its path"
        )
    return binary


def _run(binary: str, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="gradinv-chromium-") as profile:
        return subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def layout(page: str | Path, *, width: int = 1280, height: int = 900, binary: str | None = None) -> dict[str, Any]:
    """Measure ``page`` (an HTML file) as laid out in a ``width`` x ``height`` window.

    Returns:
        ``window`` (its inner width), ``width``/``height`` (the document's scroll size: wider than ``window`` means
        the page scrolls sideways), ``body_right``, and per table the cells of each row (colspans counted), its right
        edge and whether it scrolls inside its own box; per picture its natural and shown size and right edge.
    """
    page = Path(page)
    if not page.is_file():
        raise FileNotFoundError(f"no page at {page}")
    binary = _chromium(binary)
    with tempfile.TemporaryDirectory(prefix="gradinv-page-") as tmp:
        copy = Path(tmp) / page.name
        text = page.read_text(encoding="utf-8")
        copy.write_text(text.replace("</body>", MEASURE + "</body>") if "</body>" in text else text + MEASURE)
        done = _run(
            binary,
            [f"--window-size={width},{height}", "--virtual-time-budget=10000", "--dump-dom", copy.as_uri()],
            timeout=120,
        )
    found = re.search(r'<pre id="gradinv-layout">(.*?)</pre>', done.stdout, re.S)
    if found is None:
        raise RuntimeError(f"Chromium did not lay out {page} (exit {done.returncode}): {done.stderr[-800:]}")
    return dict(json.loads(html.unescape(found.group(1))))


def screenshot(
    page: str | Path, out: str | Path, *, width: int = 1280, height: int = 1600, binary: str | None = None
) -> Path:
    """Save the top ``width`` x ``height`` pixels of ``page`` as it shows in Chromium, as the PNG ``out``."""
    page, out = Path(page), Path(out)
    if not page.is_file():
        raise FileNotFoundError(f"no page at {page}")
    binary = _chromium(binary)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    done = _run(binary, [f"--window-size={width},{height}", f"--screenshot={tmp}", page.resolve().as_uri()], 120)
    if not tmp.is_file():
        raise RuntimeError(f"Chromium took no screenshot of {page} (exit {done.returncode}): {done.stderr[-800:]}")
    os.replace(tmp, out)
    return out
