"""`gradinv audit`: the user's own model file and image folder, exact attacks first, the verdict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from gradinv.audit import load_model, plan
from gradinv.cli import app
from gradinv.observation import ThreatModel

runner = CliRunner()

MODEL_FILE = '''
import torch
from torch import nn

from gradinv.models.cnn6 import CNN6


class Net(nn.Module):
    """A user's fully connected model: first layer linear with bias, then ReLU (applied functionally)."""

    def __init__(self, hidden: int = 64, classes: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class Narrow(CNN6):
    """R-GAP's CNN6 with a 3-channel first layer: rank-deficient, so its gradient does not determine the image."""

    def __init__(self) -> None:
        super().__init__(num_classes=4, image_shape=(3, 16, 16), channels=(3, 9, 9, 9, 16, 32))


class ConvBN(nn.Module):
    """A user's convolutional model with BatchNorm: no exact attack applies to it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.body(x).flatten(1))
'''


@pytest.fixture
def user(tmp_path: Path) -> tuple[Path, Path]:
    """A model file and a folder of real 8x8 digits in class sub-folders, as a user would have them."""
    from sklearn.datasets import load_digits

    model_file = tmp_path / "my_model.py"
    model_file.write_text(MODEL_FILE)
    digits = load_digits()
    folder = tmp_path / "images"
    for label in range(4):
        (folder / str(label)).mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(digits.target == label)[:3]):
            pixels = (digits.images[index] / 16 * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / str(label) / f"{i}.png")
    return model_file, folder


def _audit(user, out: Path, model: str, *options: str) -> tuple[str, dict]:
    """Run ``gradinv audit`` on the user's model class and images; its output and ``metrics.json``."""
    model_file, folder = user
    result = runner.invoke(
        app, ["audit", "-m", f"{model_file}:{model}", "--data", str(folder), "-o", str(out), *options]
    )
    assert result.exit_code == 0, result.output
    return result.output, json.loads((out / "metrics.json").read_text())


def test_audit_of_a_fully_connected_model_stops_at_the_certified_exact_attack(user, tmp_path) -> None:
    # Arrange / Execute
    out = tmp_path / "audit"
    output, record = _audit(
        user, out, "Net", "-b", "3", "--size", "8", "--channels", "1", "--steps", "5", "--seed", "4"
    )
    # Assert: two images drive rows of their own, the third a single row; together they are the whole batch, whose
    # update they reproduce: the bias trick certifies all three, which ends the audit before SPEAR and IG
    audit = record["audit"]
    assert [s["attack"] for s in audit["plan"]] == ["bias_trick"]
    bias = record["attacks"]["bias_trick"]
    assert bias["scores"]["psnr"] > 100 and bias["certified"] == [True] * 3 and bias["scores"]["label_acc"] == 1.0
    assert audit["verdict"]["leaked"] == 3 and audit["verdict"]["certified_by"] == ["bias_trick"]
    assert any(s["attack"] == "spear" and "certified every image" in s["reason"] for s in audit["skipped"])
    assert any(s["attack"] == "inverting_gradients" and "certified" in s["reason"] for s in audit["skipped"])
    assert any(s["attack"] == "rgap" and "batch size 3" in s["reason"] for s in audit["skipped"])
    assert record["num_classes"] == 4 and "3 of 3 images" in output
    assert "Audit verdict" in (out / "report.html").read_text()


def test_audit_does_not_stop_at_an_uncertified_rgap_answer(user, tmp_path) -> None:
    # Prepare / Execute: a rank-deficient CNN6, batch 1: R-GAP's answer reproduces the gradient but is not the only one
    out = tmp_path / "audit"
    _, record = _audit(user, out, "Narrow", "-b", "1", "--size", "16", "--steps", "3", "--restarts", "1")
    # Assert: R-GAP runs, is not certified, and the optimisation attack runs after it; the verdict says so
    rgap = record["attacks"]["rgap"]
    assert [s["attack"] for s in record["audit"]["plan"]] == ["rgap", "inverting_gradients"]
    assert rgap["certified"] == [False] and "rank-deficient at the answer" in rgap["certificate"]
    assert rgap["scores"]["residual"]["rel_l2"] < 1e-2 and record["audit"]["verdict"]["certified_by"] == []
    assert "3 steps x 1 restarts of Inverting Gradients" in record["audit"]["verdict"]["budget"]
    page = (out / "report.html").read_text()
    assert "rank analysis at the recovered input" in page and "<b>no</b>" in page


def test_audit_of_a_batchnorm_convnet_runs_the_optimisation_attack_with_the_bn_prior(user, tmp_path) -> None:
    model_file, folder = user
    weights = tmp_path / "w.safetensors"
    model = load_model(f"{model_file}:ConvBN")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    out = tmp_path / "audit"
    result = runner.invoke(
        app,
        [
            *("audit", "-m", f"{model_file}:ConvBN", "--data", str(folder), "-b", "2", "--weights", str(weights)),
            *("--size", "8", "--channels", "1", "--out", str(out), "--steps", "3", "--bn-stats", "--labels"),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    assert list(record["attacks"]) == ["inverting_gradients"]
    ig = record["attacks"]["inverting_gradients"]
    assert ig["config"]["bn_reg"] == 0.005 and ig["info"]["bn_target"] == "client batch"
    assert {s["attack"] for s in record["audit"]["skipped"]} >= {"bias_trick", "spear", "trap_weights", "imprint"}


def test_malicious_audit_plans_the_server_side_attacks(user) -> None:
    model_file, _ = user
    steps, skipped = plan(load_model(f"{model_file}:Net"), (1, 8, 8), 4, ThreatModel(server="malicious"))
    assert [s.attack for s in steps] == ["trap_weights", "imprint", "inverting_gradients"]
    assert {s.attack for s in skipped} == {"bias_trick", "spear", "rgap"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("my_model.py", "path/to/file.py:ClassName"),
        ("missing.py:Net", "does not exist"),
        ("{file}:Nope", "defines no 'Nope'; nn.Module classes there: CNN6, Net, Narrow, ConvBN"),
        ("{file}:torch", "not an nn.Module class"),
    ],
)
def test_bad_model_specs_are_named(user, tmp_path, spec, message) -> None:
    model_file, folder = user
    args = ["audit", "-m", spec.format(file=model_file), "--data", str(folder), "-b", "1", "-o", str(tmp_path / "o")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in " ".join(result.output.split())


def test_a_model_file_imports_its_siblings_and_import_errors_are_named(tmp_path) -> None:
    (tmp_path / "blocks.py").write_text("from torch import nn\nWIDTH = 5\n")
    (tmp_path / "net.py").write_text(
        "from torch import nn\nfrom blocks import WIDTH\n"
        "class Head(nn.Linear):\n    def __init__(self):\n        super().__init__(4, WIDTH)\n"
    )
    assert load_model(f"{tmp_path / 'net.py'}:Head").out_features == 5
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(ValueError, match="importing .*broken.py failed: ModuleNotFoundError"):
        load_model(f"{tmp_path / 'broken.py'}:Net")


def test_wrong_image_shape_and_wrong_weights_are_named(user, tmp_path) -> None:
    model_file, folder = user
    base = ["audit", "-m", f"{model_file}:Net", "--data", str(folder), "-b", "1"]
    result = runner.invoke(app, [*base, "--size", "16", "--channels", "1", "-o", str(tmp_path / "a")])
    assert result.exit_code == 2 and "--size/--channels" in result.output
    bad = tmp_path / "bad.pt"
    torch.save({"fc1.weight": torch.zeros(3, 3)}, bad)
    result = runner.invoke(
        app, [*base, "--size", "8", "--channels", "1", "--weights", str(bad), "-o", str(tmp_path / "b")]
    )
    assert result.exit_code == 2 and "do not fit the model" in " ".join(result.output.split())


def test_an_augmenting_clients_audit_counts_the_images_rebuilt_as_the_client_saw_them(user, tmp_path) -> None:
    from gradinv.audit import AuditConfig, audit

    # the bias trick rebuilds the flipped digits exactly; against the digits as they are, the flipped ones look lost
    model_file, folder = user
    threat = ThreatModel(augmentation="flip")
    config = AuditConfig(model=f"{model_file}:Net", data=str(folder), batch_size=3, size=8, channels=1, steps=5,
                         seed=4, threat=threat)  # fmt: skip
    record = audit(config, tmp_path / "audit")
    scores = record["attacks"]["bias_trick"]["scores"]
    assert scores["psnr_vs_augmented"] > 100 and min(e["psnr"] for e in scores["per_image"]) < 40
    assert record["audit"]["verdict"]["leaked"] == 3
    assert "The client augmented its images" in (tmp_path / "audit" / "report.html").read_text()
    assert "initialisation" not in (tmp_path / "audit" / "report.html").read_text()  # the user's model: unknown history
