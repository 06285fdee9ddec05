"""The README's command-line examples stay valid: each parses, and its attacks, options and defenses construct
(``benchmarks/readme_examples.py`` runs them in full and re-measures the numbers the README states)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from gradinv import attacks, cli, defenses
from gradinv.pipeline import RunConfig, TextRunConfig, split_options

ROOT = Path(__file__).parents[1]


def _examples() -> list[list[str]]:
    spec = importlib.util.spec_from_file_location("readme_examples", ROOT / "benchmarks" / "readme_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.commands(ROOT / "README.md"))


EXAMPLES = _examples()


def test_the_readme_has_its_examples() -> None:
    assert [c[0] for c in EXAMPLES].count("attack") >= 3
    assert ["demo", "--out", "runs/demo", "--steps", "300"] in EXAMPLES


@pytest.mark.parametrize("command", EXAMPLES, ids=lambda c: " ".join(c[:4]))
def test_each_readme_example_parses_and_builds(command: list[str], tmp_path, monkeypatch) -> None:
    built: list[RunConfig] = []

    def build_only(config: RunConfig, out: Any, **_: Any) -> None:
        per_attack = split_options(config.attacks, config.attack_options)
        for name in config.attacks:
            attacks.make(name, **per_attack[name])
        for name, kwargs in config.defenses:
            defenses.make(name, **kwargs)
        built.append(config)
        raise typer.Exit(0)

    monkeypatch.setattr(cli, "run", build_only)
    args = list(command)
    args[args.index("--out") + 1] = str(tmp_path / "out")
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert len(built) == 1


def _text_examples() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Text:", 1)[1].split("\n## ", 1)[0]
    found = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            args = shlex.split(line, comments=True)
            if args[:2] == ["gradinv", "text"]:
                found.append(args[1:])
    return found


TEXT_EXAMPLES = _text_examples()


def test_the_readme_has_text_examples() -> None:
    assert len(TEXT_EXAMPLES) >= 2


@pytest.mark.parametrize("command", TEXT_EXAMPLES, ids=lambda c: " ".join(c[:4]))
def test_each_readme_text_example_parses_and_builds(command: list[str], tmp_path, monkeypatch) -> None:
    built: list[TextRunConfig] = []

    def build_only(config: TextRunConfig, out: Any, **_: Any) -> None:
        per_attack = split_options(config.attacks, config.attack_options, attacks.TEXT_REGISTRY)
        for name in config.attacks:
            attacks.make(name, **per_attack[name])
        built.append(config)
        raise typer.Exit(0)

    monkeypatch.setattr(cli, "run_text", build_only)
    args = list(command)
    args[args.index("--out") + 1] = str(tmp_path / "out")
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert len(built) == 1
