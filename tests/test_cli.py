import json

import pytest
from typer.testing import CliRunner

import gradinv as gi
from gradinv.cli import app

runner = CliRunner()


def test_list_names_every_attack_model_and_dataset() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    for name in [
        *gi.attacks.names(),
        *gi.attacks.names("text"),
        *gi.defenses.names(),
        *gi.models.names(),
        *gi.data.names(),
    ]:
        assert name in result.output


def test_help_everywhere() -> None:
    for args in (
        ["--help"],
        ["attack", "--help"],
        ["audit", "--help"],
        ["demo", "--help"],
        ["list", "--help"],
        ["vertical", "--help"],
        ["text", "--help"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Usage" in result.output


def test_attack_writes_a_complete_run_folder(tmp_path) -> None:
    # Execute
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "attack",
            "--out",
            str(out),
            "--attack",
            "idlg",
            "--attack",
            "inverting_gradients",
            "--opt",
            "steps=3",
            "--opt",
            "inverting_gradients.tv=0.01",
            "--size",
            "16",
            "--normalize",
            "cifar10",
            "--seed",
            "1",
        ],
    )
    # Assert
    assert result.exit_code == 0, result.output
    for name in ("metrics.json", "reconstruction.png", "loss.png", "report.html", "ground_truth.safetensors"):
        assert (out / name).is_file(), name
    record = json.loads((out / "metrics.json").read_text())
    assert set(record["attacks"]) == {"idlg", "inverting_gradients"}
    assert record["attacks"]["inverting_gradients"]["config"]["tv"] == 0.01
    assert record["threat"]["normalization"][0][0] == 0.4914 and record["versions"]["torch"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "PSNR" in html
    loaded = gi.Observation.load(out / "observation")  # the capture can be attacked again later
    assert loaded.batch_size == 1


def test_defenses_are_applied_and_recorded(tmp_path) -> None:
    out = tmp_path / "run"
    args = [
        "attack",
        "--out",
        str(out),
        "--attack",
        "idlg",
        "--opt",
        "steps=2",
        "--size",
        "16",
        "--defense",
        "prune:ratio=0.9",
        "--defense",
        "noise:std=0.001,distribution=laplacian",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    assert record["defenses"] == [
        {"name": "prune", "ratio": 0.9},
        {"name": "noise", "std": 0.001, "distribution": "laplacian"},
    ]
    assert gi.Observation.load(out / "observation").defenses == record["defenses"]
    assert "prune, noise" in (out / "report.html").read_text()
    bad = runner.invoke(app, ["attack", "--out", str(tmp_path / "bad"), "--defense", "prune:ratio=1.5"])
    assert bad.exit_code == 2 and "ratio" in bad.output and not (tmp_path / "bad").exists()


def test_existing_output_is_never_overwritten_silently(tmp_path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["attack", "--out", str(tmp_path), "--opt", "steps=1", "--size", "16"])
    assert result.exit_code == 2 and "not empty" in result.output
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_bad_options_give_clear_errors(tmp_path) -> None:
    cases = [
        (["--attack", "nope"], "unknown attack"),
        (["--opt", "nonsense=1"], "takes the option 'nonsense'; valid options: inverting_gradients: steps, "),
        (["--model", "vgg"], "unknown model"),
        (["--update", "weights"], "update"),
        (["--normalize", "fancy"], "normalize"),
    ]
    for index, (extra, message) in enumerate(cases):
        result = runner.invoke(app, ["attack", "--out", str(tmp_path / str(index)), "--size", "16", *extra])
        assert result.exit_code == 2, result.output
        assert message in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["attack", "--data", "skimage", "--index", "99"],
        ["attack", "--attack", "rgap", "--model", "convnet", "--opt", "rcond=0.5"],
        ["audit", "--model", "missing.py:Net", "--data", "nowhere", "-b", "1"],
    ],
)
def test_a_failed_start_leaves_no_output_folder(tmp_path, args) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code != 0 and not out.exists(), result.output


def test_errors_use_the_command_line_spelling(tmp_path) -> None:
    out = tmp_path / "full"
    out.mkdir()
    (out / "something").write_text("x")
    result = runner.invoke(app, ["attack", "--out", str(out), "--attack", "idlg", "--opt", "steps=1"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "add --overwrite" in text and "overwrite=True" not in text
    assert (out / "something").exists()  # a folder the command did not create is never removed


def test_mixup_draws_its_partners_from_the_clients_training_set(tmp_path) -> None:
    out = tmp_path / "mixup"
    args = ["attack", "--out", str(out), "--attack", "bias_trick", "--model", "mlp", "--data", "digits"]
    args += ["--size", "8", "--channels", "1", "--batch-size", "2", "--defense", "mixup:k=4", "--client-images", "40"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    assert record["defenses"][0]["pool"] == "dataset"  # a batch of 2 mixes with images of the training set


def test_vertical_runs_cafe_and_writes_a_run_folder(tmp_path) -> None:
    # Execute: 12 digits, 3 batches of 4 per epoch, 24 iterations on a fixed model
    out = tmp_path / "vertical"
    args = ["vertical", "--out", str(out), "--samples", "12", "--batch-size", "4", "--passes", "2"]
    result = runner.invoke(app, args)
    # Assert: both attacks ran on all 12 samples, the server's record is consistent with CAFE's answer
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    assert set(record["attacks"]) == {"cafe", "cafe_no_alignment"} and record["batch_size"] == 12
    assert record["iterations"] == 24 and record["training_batch_size"] == 4
    assert (out / "report.html").exists() and (out / "reconstruction.png").exists()
    assert record["attacks"]["cafe"]["scores"]["psnr"] > record["attacks"]["cafe_no_alignment"]["scores"]["psnr"]
    bad = runner.invoke(app, ["vertical", "--out", str(tmp_path / "bad"), "--size", "15"])
    assert bad.exit_code != 0 and "equal strips" in bad.output


def test_preset_sets_the_attackers_knowledge_and_is_recorded(tmp_path) -> None:
    # Execute: iDLG under the SoK's eavesdropper A; then Inverting Gradients under A, and a knowledge flag beside B
    out = tmp_path / "run"
    common = ["--opt", "steps=2", "--size", "16"]
    ok = runner.invoke(app, ["attack", "--out", str(out), "-a", "idlg", "--preset", "A", *common])
    refused = runner.invoke(app, ["attack", "--out", str(tmp_path / "r2"), "--preset", "A", *common])
    clash = runner.invoke(app, ["attack", "--out", str(tmp_path / "r3"), "--preset", "B", "--labels", *common])
    listed = runner.invoke(app, ["list"])
    # Assert
    assert ok.exit_code == 0, ok.output
    threat = json.loads((out / "metrics.json").read_text())["threat"]
    assert threat["sok"] == "A" and threat["knows_training"] is False and threat["knows_labels"] is False
    assert refused.exit_code != 0 and "assumes SoK threat model B" in refused.output
    assert clash.exit_code != 0 and "drop --labels" in clash.output
    assert "Statistical-Informed Eavesdropper" in listed.output and "Active Client Manipulator" in listed.output


def test_pretrained_model_is_recorded_in_the_run_and_its_report(tmp_path) -> None:
    out = tmp_path / "run"
    args = ["attack", "--out", str(out), "-a", "idlg", "--opt", "steps=1", "--size", "16", "--data", "digits"]
    result = runner.invoke(app, [*args, "--channels", "1", "--pretrain-epochs", "1", "--pretrain-images", "400"])
    assert result.exit_code == 0, result.output
    training = json.loads((out / "metrics.json").read_text())["model_training"]
    assert len(training) == 1 and training[0]["epochs"] == 1 and training[0]["n_train"] == 320
    assert "trained before this round" in (out / "report.html").read_text()
    assert json.loads((out / "observation" / "observation.json").read_text())["model_training"] == training
    small = runner.invoke(app, ["attack", "--out", str(tmp_path / "small"), "--size", "16", "--pretrain-epochs", "1"])
    assert small.exit_code != 0 and "--pretrain-images" in small.output and "18 images" in small.output


def test_augmenting_client_is_scored_against_its_data_and_its_augmented_batch(tmp_path) -> None:
    out = tmp_path / "run"
    args = ["attack", "--out", str(out), "-a", "idlg", "--opt", "steps=20", "--size", "16", "--index", "1"]
    result = runner.invoke(app, [*args, "--augmentation", "flip", "--seed", "2"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    scores = record["attacks"]["idlg"]["scores"]
    assert record["threat"]["augmentation"] == "flip" and scores["psnr_vs_augmented"] > scores["psnr"] + 10
    assert "The client augmented its images" in (out / "report.html").read_text()
    bad = runner.invoke(app, [*args[:2], str(tmp_path / "bad"), *args[3:], "--augmentation", "rotate"])
    assert bad.exit_code != 0 and "augmentation" in bad.output
