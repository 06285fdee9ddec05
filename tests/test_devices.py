"""``device=`` end to end: a device name is checked before anything runs (one this machine lacks is refused,
saying so), the observation stays device-independent, and naming the CPU changes nothing (bit for bit). CUDA and
MPS runs are measured by ``benchmarks/devices.py`` on a machine that has them."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import gradinv as gi
from gradinv.cli import app
from gradinv.evaluate import GridError, evaluate, load_grid
from gradinv.evaluate.utility import utility
from gradinv.validation import check_device

CUDA = torch.cuda.is_available()


def _observation(**kwargs):
    model = gi.models.make("lenet", num_classes=10, image_shape=(3, 16, 16), seed=0)
    images, labels = gi.data.load("skimage", indices=[1], size=16)
    threat = gi.ThreatModel(update="gradient", knows_labels=False, knows_bn_stats=False)
    return gi.observe(model, images, labels, threat=threat, seed=0, **kwargs), images, labels


def test_device_names_are_checked() -> None:
    assert check_device(None) == torch.device("cpu") == check_device("cpu") == check_device(torch.device("cpu"))
    for bad in ("gpu", "tpu", "cuda:x", "xla"):
        with pytest.raises(ValueError, match="device"):
            check_device(bad)
    with pytest.raises(TypeError, match="device must be a string"):
        check_device(0)


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_a_missing_gpu_is_refused_clearly(tmp_path) -> None:
    with pytest.raises(ValueError, match="CUDA is not available here"):
        check_device("cuda:1")
    observation, _, _ = _observation()
    with pytest.raises(ValueError, match="CUDA is not available"):
        gi.attacks.make("idlg", steps=1).reconstruct(observation, device="cuda")
    model = gi.models.make("mlp", num_classes=10, image_shape=(1, 8, 8), hidden=[8], seed=0)
    images, labels = gi.data.load("digits", n=1, size=8, channels=1)
    with pytest.raises(ValueError, match="CUDA is not available"):
        gi.observe(model, images, labels, device="cuda")
    # the command line: exit 2, the reason in CLI spelling, no folder left behind
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["attack", "--out", str(out), "--attack", "idlg", "--device", "cuda"])
    assert result.exit_code == 2 and "CUDA is not available" in result.output and "--device cpu" in result.output
    assert not out.exists()


def test_naming_the_cpu_changes_nothing() -> None:
    plain, images, labels = _observation()
    named, _, _ = _observation(device="cpu")
    assert all(torch.equal(plain.update[k], named.update[k]) for k in plain.update)
    attack = gi.attacks.make("dlg", steps=3, line_search="strong_wolfe")
    a, b = attack.reconstruct(plain), attack.reconstruct(plain, device=torch.device("cpu"))
    assert torch.equal(a.images, b.images) and a.trace == b.trace and b.info["device"] == "cpu"
    exact = gi.attacks.make("rgap").reconstruct(plain, device="cpu")
    assert exact.info["device"] == "cpu" and exact.images.device.type == "cpu"


def test_an_observation_moves_as_a_copy() -> None:
    observation, _, _ = _observation()
    moved = observation.to("cpu")
    assert moved is not observation and moved.model is not observation.model
    assert all(torch.equal(moved.update[k], observation.update[k]) for k in observation.update)
    with pytest.raises(ValueError, match="device"):
        observation.to("gpu")


def test_utility_on_a_named_device_is_the_same_training() -> None:
    def factory() -> torch.nn.Module:
        return gi.models.make("mlp", num_classes=10, image_shape=(1, 8, 8), hidden=[16], seed=0)

    kwargs = {"n": 200, "size": 8, "channels": 1, "batch_size": 20, "seed": 0}
    a = utility(factory, "digits", [gi.defenses.make("noise", std=1e-3)], 1, **kwargs)
    b = utility(factory, "digits", [gi.defenses.make("noise", std=1e-3)], 1, device="cpu", **kwargs)
    assert a.accuracy == b.accuracy and a.train_loss == b.train_loss


GRID = """[grid]
data = "digits"
size = 8
channels = 1
images = 1
device = "{device}"

[[models]]
name = "mlp"
hidden = [16]

[[attacks]]
name = "bias_trick"

[[defenses]]
name = "none"
"""


def test_the_grid_names_its_device(tmp_path) -> None:
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(device="tpu"))
    with pytest.raises(GridError, match="device must be 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        load_grid(path)
    path.write_text(GRID.format(device="cuda:0"))
    grid = load_grid(path)  # whether this machine has it is checked when the grid runs
    if not CUDA:
        with pytest.raises(ValueError, match="CUDA is not available"):
            evaluate(grid, tmp_path / "out")
    out = evaluate(grid, tmp_path / "cpu", device="cpu")  # --device overrides the grid's
    assert (out / "results.sqlite").exists()


@pytest.mark.parametrize(
    "given, code, expected",
    [
        (None, "import gradinv", "PASSIVE"),  # sleeping OpenMP threads by default (benchmarks/contention.py)
        ("ACTIVE", "import gradinv", "ACTIVE"),  # the user's choice wins
        (None, "import torch, gradinv", "unset"),  # torch loaded first: too late to act, so nothing is claimed
    ],
)
def test_openmp_threads_sleep_unless_told_otherwise(given: str | None, code: str, expected: str) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    script = f"{code}; import os; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == expected
