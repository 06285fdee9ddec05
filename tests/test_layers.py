"""The layers contract of STYLE.md, checked by import-linter (configured in pyproject.toml): an import only ever
points down (cli > audit/pipeline/flower > report > evaluate/analysis > attacks > fl > defenses/metrics > update >
observation/validation > models/data/figures), and attacks never import metrics (an attack never reads ground
truth)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_imports_follow_the_layers() -> None:
    pytest.importorskip("importlinter")
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; c()"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken" in result.stdout
