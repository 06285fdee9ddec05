"""Regenerate the README's screenshot, ``docs/report.png``, from the current code.

Runs ``gradinv demo`` (the README's first command) into a temporary folder, or takes an existing run folder with
``--run``, and photographs the top of its ``report.html`` in headless Chromium at 1280 px (``gradinv.report.browser``;
Debian: ``apt-get install chromium``)::

    .venv/bin/python docs/report_png.py                 # about a minute on 2 CPU cores
    .venv/bin/python docs/report_png.py --run runs/demo # reuse a finished demo
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from gradinv.report.browser import screenshot

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished run folder (default: run the demo now)")
    parser.add_argument("--out", type=Path, default=HERE / "report.png", help="the PNG to write")
    parser.add_argument("--steps", type=int, default=100, help="the demo's --steps")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gradinv-demo-") as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "demo"
            command = [sys.executable, "-m", "gradinv", "demo", "--out", str(run), "--steps", str(args.steps)]
            subprocess.run(command, check=True)
        page = run / "report.html"
        if not page.is_file():
            parser.error(f"{run} holds no report.html")
        shot = screenshot(page, args.out, width=args.width, height=args.height)
    print(f"wrote {shot}")
    return shot


if __name__ == "__main__":
    main()
