"""Running a grid: cells recorded in SQLite as they finish, failed cells kept with their error, a killed run resumed
without recomputing anything, the same results through Ray, and the report and exports read back."""

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import gradinv as gi
from gradinv import cli
from gradinv.cli import app
from gradinv.evaluate.store import Store
from gradinv.report.grid import write_grid_report

GRID = """[grid]
name = "test"
data = "digits"
size = 8
channels = 1
images = 2
seeds = [0]

[utility]
dataset = "digits"
epochs = 1
n = 1797

[[models]]
name = "mlp"
hidden = [64]

[[threats]]
label = "gradient"

[[threats]]
label = "fedavg 3 steps"
update = "fedavg"
local_steps = 3
local_lr = 0.1

[[attacks]]
name = "bias_trick"

[[attacks]]
name = "inverting_gradients"
steps = 20
restarts = 1

[[defenses]]
name = "none"

[[defenses]]
name = "prune"
ratio = 0.99
"""


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("grid") / "test.toml"
    path.write_text(GRID)
    return path


@pytest.fixture(scope="module")
def finished(grid_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    grid = gi.evaluate.load_grid(grid_file)
    write_grid_report(grid, gi.evaluate.evaluate(grid, out))
    return out


def _psnr(store: Store, attack: str, threat: str, defense: str) -> list[float]:
    cell = next(
        c
        for c in store.cells()
        if (c["config"]["attack"], c["config"]["threat_label"], c["config"]["defense_label"])
        == (attack, threat, defense)
    )
    return [r["psnr"] for r in store.images(cell["key"])]


def test_grid_records_every_cell_and_image(finished: Path) -> None:
    store = Store(finished / "results.sqlite")
    cells = store.cells()
    assert len(cells) == 2 * 2 * 2  # attacks x threats x defenses
    failed = [c for c in cells if c["status"] == "failed"]
    # the bias trick is exact only for one step: after 3 local steps it refuses, and the grid goes on
    assert {(c["config"]["attack"], c["config"]["threat_label"]) for c in failed} == {("bias_trick", "fedavg 3 steps")}
    assert all("local steps" in c["error"] for c in failed)
    assert all(len(store.images(c["key"])) == 2 for c in cells if c["status"] == "done")
    assert min(_psnr(store, "bias_trick", "gradient", "none")) > 60
    assert max(_psnr(store, "bias_trick", "gradient", "prune(ratio=0.99)")) < 30
    done = next(c for c in cells if c["status"] == "done" and c["config"]["attack"] == "inverting_gradients")
    summary = done["summary"]
    assert summary["attack_iterations"] == 20 and summary["attack_seconds_per_batch"] > 0
    assert summary["cost"]["inversions"] == 2 and summary["cost"]["seconds"] > 0
    assert summary["certified_fraction"] == 0 and "never certified" in summary["certificates"][0]
    exact = next(
        c
        for c in cells
        if c["status"] == "done" and c["config"]["attack"] == "bias_trick" and not c["config"]["defenses"]
    )
    assert exact["summary"]["certified_fraction"] == 1.0 and "consistency" in exact["summary"]["certificates"][0]
    assert all(row["certified"] == 1 for row in store.images(exact["key"]))
    accuracies = {
        json.loads(c)["defenses"] and "prune" or "none": a
        for c, a in store.db.execute("SELECT config, accuracy FROM utility")
    }
    assert set(accuracies) == {"none", "prune"} and accuracies["none"] > 0.6
    store.close()


def test_report_and_exports(finished: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = (finished / "report.html").read_text()
    assert "What this means" in page and 'alt="trade-off"' in page and "local steps" in page
    assert (finished / "tradeoff.png").stat().st_size > 1000 and len(list((finished / "cells").glob("*.png"))) == 6
    runner = CliRunner()
    table = runner.invoke(app, ["results", str(finished), "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert table.exit_code == 0 and len(rows) == 8
    assert {r["defense_label"] for r in rows} == {"none", "prune(ratio=0.99)"}
    as_json = json.loads(runner.invoke(app, ["results", str(finished), "--format", "json"]).stdout)
    failed_row = next(r for r in as_json if r["attack"] == "bias_trick" and r["threat_label"] == "fedavg 3 steps")
    assert failed_row["failed"] == 1 and failed_row["psnr"] is None
    # readable at 80 columns: whole labels, nothing cut off, every line within the width
    monkeypatch.setattr(cli, "console", Console(width=80))
    shown = runner.invoke(app, ["results", str(finished)])
    assert shown.exit_code == 0 and "bias_trick" in shown.stdout and "prune(ratio=0.99)" in shown.stdout
    assert "fedavg 3 steps" in shown.stdout and "…" not in shown.stdout and "cost s" in shown.stdout
    # a column with one value moves to the caption
    assert "in every row: model mlp, batch 1" in shown.stdout.replace("\n", " "), shown.stdout
    assert max(len(line) for line in shown.stdout.splitlines()) <= 80


def test_existing_results_need_resume(finished: Path, grid_file: Path) -> None:
    with pytest.raises(FileExistsError, match="resume"):
        gi.evaluate.evaluate(gi.evaluate.load_grid(grid_file), finished)
    result = CliRunner().invoke(app, ["evaluate", str(grid_file), "--out", str(finished)])
    assert result.exit_code == 2 and "resume" in result.stdout


def test_killed_run_resumes_without_recomputing(grid_file: Path, tmp_path: Path) -> None:
    # Prepare: a run in another process, killed (SIGKILL) once two cells are recorded
    out = tmp_path / "out"
    code = f"import gradinv as gi; gi.evaluate.evaluate(gi.evaluate.load_grid({str(grid_file)!r}), {str(out)!r})"
    process = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
    database = out / "results.sqlite"
    deadline = time.time() + 120
    recorded = 0
    while time.time() < deadline and process.poll() is None:
        if database.exists():
            try:
                recorded = sqlite3.connect(database).execute("SELECT COUNT(*) FROM cells").fetchone()[0]
            except sqlite3.OperationalError:
                recorded = 0
            if recorded >= 2:
                break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    store = Store(database)
    before = {c["key"]: c for c in store.cells()}
    store.close()
    assert 2 <= len(before) < 8
    # Execute: resume, counting the jobs that run
    ran: list[tuple[int, int, str]] = []
    gi.evaluate.evaluate(
        gi.evaluate.load_grid(grid_file), out, resume=True, progress=lambda d, t, desc: ran.append((d, t, desc))
    )
    # Assert: only the missing cells ran, the recorded ones are untouched, the grid is complete; the first report
    # says how many jobs there are and the counts end at that total
    store = Store(database)
    after = {c["key"]: c for c in store.cells()}
    cell_jobs = [d for _, _, d in ran[1:] if not d.startswith("utility")]
    assert len(after) == 8 and len(cell_jobs) == 8 - len(before)
    assert ran[0][0] == 0 and f"{8 - len(before)} of 8 cells to run" in ran[0][2] and ran[-1][0] == ran[0][1]
    assert all(after[k] == v for k, v in before.items())
    store.close()
    # a second resume has nothing left and says so
    again: list[str] = []
    gi.evaluate.evaluate(
        gi.evaluate.load_grid(grid_file), out, resume=True, progress=lambda d, t, desc: again.append(desc)
    )
    assert again == ["all 8 cells already done"]


def test_ray_backend_matches_in_process(finished: Path, grid_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    grid = gi.evaluate.load_grid(grid_file)
    write_grid_report(grid, gi.evaluate.evaluate(grid, out, backend="ray", num_cpus=2))
    local, remote = Store(finished / "results.sqlite"), Store(out / "results.sqlite")
    assert len(remote.cells()) == 8 and sum(c["status"] == "failed" for c in remote.cells()) == 2
    for attack, threat, defense in (
        ("bias_trick", "gradient", "none"),
        ("inverting_gradients", "gradient", "prune(ratio=0.99)"),
    ):
        assert _psnr(remote, attack, threat, defense) == pytest.approx(_psnr(local, attack, threat, defense), abs=1e-6)
    assert (out / "report.html").exists()
    local.close()
    remote.close()


def test_pretrained_cells_attack_the_trained_model() -> None:
    from gradinv.evaluate.cells import _model

    setup = {"dataset": "digits", "epochs": 1, "n": 300, "batch_size": 32, "lr": 0.05, "seed": 0}
    config = {"model": "mlp", "model_options": {"hidden": [16]}, "size": 8, "channels": 1, "num_classes": 10,
              "normalization": "none", "seed": 3, "utility": setup, "pretrain_epochs": 1}  # fmt: skip
    trained = gi.evaluate.utility(
        lambda: gi.models.make("mlp", hidden=[16], image_shape=(1, 8, 8), seed=3), "digits", (), 1,
        n=300, size=8, channels=1, batch_size=32, lr=0.05, seed=3,
    ).model  # fmt: skip
    attacked, initial = _model(config), _model({**config, "pretrain_epochs": 0})
    for name, value in trained.state_dict().items():
        assert torch.equal(attacked.state_dict()[name], value)
    assert not torch.equal(attacked.state_dict()["net.1.weight"], initial.state_dict()["net.1.weight"])
    # the cell's observation says the model was trained, and how
    record = attacked.gradinv_training[0]
    assert (record["epochs"], record["n_train"], record["lr"]) == (1, 240, 0.05) and initial.__dict__.get(
        "gradinv_training"
    ) is None


def test_the_ranking_calls_defenses_protective_under_the_grids_threshold() -> None:
    from gradinv.report.grid import ranking

    base = {"attack": "IG", "threat_label": "t", "encoding_psnr": None, "adaptive": False}
    rows = [{**base, "defense_label": "none", "defenses": [], "psnr": 17.0, "accuracy": 0.96},
            {**base, "defense_label": "prune", "defenses": ["prune"], "psnr": 9.0, "accuracy": 0.91},
            {**base, "defense_label": "prune", "defenses": ["prune"], "psnr": 10.0, "accuracy": 0.91,
             "attack": "IG adaptive", "adaptive": True}]  # fmt: skip
    assert [(e["defense"], e["status"]) for e in ranking(rows)] == [("none", "protective"), ("prune", "protective")]
    assert [(e["defense"], e["status"]) for e in ranking(rows, 11.0)] == [("prune", "protective"), ("none", "leaks")]
    # the worst case names the adaptive attack that reached it
    assert next(e for e in ranking(rows) if e["defense"] == "prune")["by"] == "IG adaptive (adaptive)"


def test_a_defense_judged_only_by_attacks_that_ignore_it_is_not_called_protective() -> None:
    from gradinv.report.grid import ranking

    base = {"attack": "IG", "threat_label": "t", "encoding_psnr": None, "adaptive": False, "accuracy": 0.9}
    rows = [{**base, "defense_label": "soteria", "defenses": ["soteria"], "psnr": 7.0},
            {**base, "defense_label": "mixup", "defenses": ["mixup"], "psnr": 8.0}]  # fmt: skip
    # Soteria has an adaptive counterpart that was not run; MixUp has none (its decoding attack is separate)
    verdict = {e["defense"]: (e["status"], e["protective"]) for e in ranking(rows)}
    assert verdict == {"soteria": ("unverified", False), "mixup": ("protective", True)}
    assert [e["defense"] for e in ranking(rows)] == ["mixup", "soteria"]


def test_the_ranking_says_exact_rather_than_a_rounding_figure() -> None:
    from gradinv.report.grid import worst_case

    assert worst_case(578.7) == "exact (PSNR >= 100 dB)" and worst_case(23.456) == "23.46 dB"


def test_an_image_recovered_as_the_client_transformed_it_counts_as_leakage() -> None:
    from gradinv.report.grid import ranking

    base = {"attack": "IG", "threat_label": "t", "adaptive": True, "accuracy": 0.9}
    rows = [{**base, "defense_label": "ats", "defenses": ["ats"], "psnr": 9.6, "encoding_psnr": 60.1},
            {**base, "defense_label": "none", "defenses": [], "psnr": 14.0, "encoding_psnr": 62.0,
             "augmentation": "flip"},
            {**base, "defense_label": "mixup", "defenses": ["mixup"], "psnr": 8.0, "encoding_psnr": 40.0},
            {**base, "defense_label": "flipped mixup", "defenses": ["mixup"], "psnr": 8.0, "encoding_psnr": 40.0,
             "augmentation": "flip"}]  # fmt: skip
    verdict = {e["defense"]: e for e in ranking(rows)}
    # ATS's shifted image and the flipped image are the private images: they leak; MixUp's encodings need decoding
    assert verdict["ats"]["status"] == "leaks" and verdict["ats"]["worst"] == 60.1
    assert verdict["ats"]["by"].endswith("vs the transformed images")
    assert verdict["none"]["status"] == "leaks" and verdict["none"]["worst"] == 62.0
    assert verdict["mixup"]["status"] == "protective" and verdict["mixup"]["encodings"] == 40.0
    # an augmenting MixUp client: its augmented encodings are still mixes, not images
    assert verdict["flipped mixup"]["status"] == "protective" and verdict["flipped mixup"]["encodings"] == 40.0
