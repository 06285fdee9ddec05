"""Run every ``gradinv`` command of the README's "Command line" block and print what each gives.

    python benchmarks/readme_examples.py [--readme README.md]

The README states, under that block, the PSNR each example gives and why; this re-measures them. Each command is
read from the README itself (so the two cannot drift apart), its ``--out`` pointed into a temporary folder, and run
as a user would run it (``python -m gradinv``); the table lists per command and attack the PSNR, SSIM, certified
images and seconds from its ``metrics.json``, and the command's wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands(readme: Path) -> list[list[str]]:
    """The ``gradinv`` commands of the README's "## Command line" code block that write a run folder."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("## Command line", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    if block is None:
        raise ValueError(f"{readme}: no bash block under '## Command line'")
    joined = block.group(1).replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        args = shlex.split(line, comments=True)
        if args[:1] == ["gradinv"] and "--out" in args:
            found.append(args[1:])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args()
    print("| command | attack | PSNR (dB) | SSIM | certified | attack s | command s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="gradinv-readme-") as tmp:
        for i, command in enumerate(commands(args.readme)):
            out = Path(tmp) / f"run{i}"
            shown = " ".join(command)
            command = list(command)
            command[command.index("--out") + 1] = str(out)
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "gradinv", *command], capture_output=True, text=True)
            wall = time.perf_counter() - started
            if done.returncode != 0:
                print(f"| `{shown}` | failed (exit {done.returncode}) | | | | | {wall:.0f} |")
                print(done.stderr[-2000:] or done.stdout[-2000:], file=sys.stderr)
                continue
            record = json.loads((out / "metrics.json").read_text())
            for name, result in record["attacks"].items():
                s = result["scores"]
                certified = f"{sum(result.get('certified', []))}/{record['batch_size']}"
                print(
                    f"| `{shown}` | {name} | {s['psnr']:.1f} | {s['ssim']:.3f} | {certified} | "
                    f"{result['seconds']:.1f} | {wall:.0f} |"
                )


if __name__ == "__main__":
    main()
