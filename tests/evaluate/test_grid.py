"""The grid file: expanded into cells, and rejected before anything runs, with the line and the reason."""

from pathlib import Path

import pytest
import torch

import gradinv as gi
from gradinv.evaluate import GridError, load_grid
from gradinv.evaluate.grid import attack_label
from tests.helpers import grid_file

EXAMPLES = Path(__file__).parents[2] / "examples"
BASE = """[grid]
images = 4
batch_sizes = [1, 4]

[[models]]
name = "mlp"
hidden = [32]

[[attacks]]
name = "bias_trick"
"""


def test_tiny_example_expands_into_its_cells() -> None:
    grid = load_grid(EXAMPLES / "tiny.toml")
    # 2 attacks x 2 threats x 2 seeds x (3 defense settings at batch 1 and 4, InstaHide at batch 4 only)
    assert len(grid.cells) == 2 * 2 * 2 * (3 * 2 + 1)
    assert len({cell.key for cell in grid.cells}) == len(grid.cells)
    labels = {cell.config["defense_label"] for cell in grid.cells}
    assert labels == {"none", "prune(ratio=0.5)", "prune(ratio=0.99)", "instahide(k=4)"}
    instahide = [c for c in grid.cells if c.config["defense_label"] == "instahide(k=4)"]
    assert {c.config["batch_size"] for c in instahide} == {4}
    assert grid.settings["utility"]["epochs"] == 2


def test_sweeps_chains_and_threats(tmp_path: Path) -> None:
    text = (
        BASE
        + """
[[threats]]
label = "known"
knows_labels = true

[[defenses]]
label = "pruned"
name = "prune"
sweep = { ratio = [0.5, 0.9, 0.99] }

[[defenses]]
chain = [{ name = "prune", ratio = 0.9 }, { name = "mixup", k = 4 }]
batch_sizes = [4]
"""
    )
    grid = load_grid(grid_file(tmp_path, text))
    labels = sorted({c.config["defense_label"] for c in grid.cells})
    assert labels == ["prune(ratio=0.9)+mixup(k=4)", "pruned (ratio=0.5)", "pruned (ratio=0.9)", "pruned (ratio=0.99)"]
    assert len(grid.cells) == 3 * 2 + 1
    assert all(c.config["threat"]["knows_labels"] for c in grid.cells)
    chain = next(c for c in grid.cells if "mixup" in c.config["defense_label"]).config["defenses"]
    assert chain == [["prune", {"ratio": 0.9}], ["mixup", {"k": 4}]]


@pytest.mark.parametrize(
    ("extra", "line", "reason"),
    [
        ('\n[[defenses]]\nname = "prune"\nratio = "high"\n', 14, "'ratio' must be a float, got a string"),
        ('\n[[defenses]]\nname = "prune"\nratio = 1.5\n', 14, "ratio"),
        ('\n[[defenses]]\nname = "shield"\n', 13, "unknown defense 'shield'"),
        ('\n[[defenses]]\nname = "none"\n[[attacks]]\nname = "idlg"\n', 14, "batches up to 1, not 4"),
        ('\n[[defenses]]\nname = "mixup"\npool = "batch"\n', 12, "batch size 1 is too small"),
        ('\n[[defenses]]\nname = "none"\n[[attacks]]\nname = "imprint"\nbatch_sizes = [1]\n', 14, "malicious"),
        ('\n[[defenses]]\nname = "none"\n[[threats]]\nknows_labels = "yes"\n', 15, "must be a boolean"),
        ('\n[[defenses]]\nname = "none"\n[[threats]]\nbn_mode = "frozen"\n', 14, "bn_mode"),
        ('\n[[defenses]]\nname = "none"\n[[attacks]]\nname = "dlg"\nsteps = 2.5\n', 16, "'steps' must be an integer"),
        ('\n[[defenses]]\nname = "none"\n[[attacks]]\nname = "dlg"\nstep = 2\n', 16, "unknown option 'step'"),
        ('\n[[defenses]]\nname = "none"\n[extras]\n', 14, "unknown section"),
        ('\n[[defenses]]\nname = "prune"\nsweep = { ratio = 0.5 }\n', 14, "sweep must be"),
    ],
)
def test_bad_grids_are_rejected_with_line_and_reason(tmp_path: Path, extra: str, line: int, reason: str) -> None:
    path = grid_file(tmp_path, BASE + extra)
    with pytest.raises(GridError, match=rf"grid.toml:{line}:.*{reason}"):
        load_grid(path)


def test_grid_level_errors(tmp_path: Path) -> None:
    with pytest.raises(GridError, match="grid.toml:3:.*batch size 3 must be a positive integer dividing images = 4"):
        load_grid(grid_file(tmp_path, BASE.replace("[1, 4]", "[1, 3]") + '[[defenses]]\nname = "none"\n'))
    with pytest.raises(GridError, match="not valid TOML"):
        load_grid(grid_file(tmp_path, "[grid\nimages = 4\n"))
    with pytest.raises(GridError, match=r"\[grid\] unknown key 'imgs'"):
        load_grid(
            grid_file(tmp_path, BASE.replace("images = 4", "images = 4\nimgs = 2") + '[[defenses]]\nname = "none"\n')
        )
    with pytest.raises(GridError, match="at least one \\[\\[defenses\\]\\]"):
        load_grid(grid_file(tmp_path, BASE))
    with pytest.raises(GridError, match="unknown model 'vgg'"):
        load_grid(grid_file(tmp_path, BASE.replace('"mlp"', '"vgg"') + '[[defenses]]\nname = "none"\n'))
    assert issubclass(GridError, ValueError) and gi.evaluate.GridError is GridError


def test_huang2021_example_restricts_entries_to_threats_and_batch_sizes() -> None:
    grid = load_grid(EXAMPLES / "huang2021.toml")
    # per attack (IG with and without the BN prior): none under 3 threats at batch 1 and 4; pruning (4 ratios) at
    # batch 1 and 4 and the 4 other defense settings at batch 4, under the strongest threat; 3 seeds each
    assert len(grid.cells) == 2 * 3 * (3 * 2 + 4 * 2 + 4)
    assert all(c.config["pretrain_epochs"] == 1 for c in grid.cells)
    assert {c.config["attack_label"] for c in grid.cells} == {"IG + BN prior", "IG"}
    defended = [c for c in grid.cells if c.config["defense_label"] != "none"]
    assert {c.config["threat_label"] for c in defended} == {"BN stats + labels"}
    assert {c.config["batch_size"] for c in defended if not c.config["defense_label"].startswith("prune(")} == {4}
    prior = {c.config["threat_label"]: c.config["attack_options"].get("bn_reg") for c in grid.cells
             if c.config["attack_label"] == "IG + BN prior"}  # fmt: skip
    assert prior == {"BN stats + labels": 0.005, "labels only": 0.001, "neither": 0.001}


def test_attack_entries_of_one_attack_are_told_apart(tmp_path: Path) -> None:
    text = (
        BASE.replace("images = 4", "images = 4\nsize = 8").replace('name = "bias_trick"', 'name = "dlg"\nsteps = 2')
        + '\n[[attacks]]\nname = "dlg"\n'
    )
    grid = load_grid(grid_file(tmp_path, text + '[[defenses]]\nname = "none"\n'))
    assert {attack_label(c.config) for c in grid.cells} == {"dlg(steps=2)", "dlg"}


@pytest.mark.parametrize(
    ("extra", "line", "reason"),
    [
        ('[[threats]]\nlabel = "a"\n[[defenses]]\nname = "none"\nthreats = ["b"]\n', 16, "threats must be a non-empty"),
        ('[[threats]]\nlabel = "a"\n[[threats]]\nlabel = "a"\n[[defenses]]\nname = "none"\n', 12, "must differ"),
    ],
)
def test_threat_restrictions_are_checked(tmp_path: Path, extra: str, line: int, reason: str) -> None:
    with pytest.raises(GridError, match=rf"grid.toml:{line}:.*{reason}"):
        load_grid(grid_file(tmp_path, BASE + "\n" + extra))


def test_pretraining_needs_a_utility_dataset(tmp_path: Path) -> None:
    text = BASE.replace("images = 4", "images = 4\npretrain_epochs = 1") + '[[defenses]]\nname = "none"\n'
    with pytest.raises(GridError, match="grid.toml:3:.*needs a \\[utility\\] dataset"):
        load_grid(grid_file(tmp_path, text))


def test_an_adaptive_attack_runs_only_against_the_defenses_it_adapts_to(tmp_path: Path) -> None:
    defenses = """
[[attacks]]
name = "inverting_gradients"
label = "ig adaptive"
adaptive = true
steps = 5

[[defenses]]
name = "none"

[[defenses]]
name = "prune"
sweep = { ratio = [0.5, 0.9] }

[[defenses]]
name = "noise"
std = 0.01

[[defenses]]
name = "noise"
label = "laplacian"
std = 0.01
distribution = "laplacian"

[[defenses]]
name = "mixup"
k = 2
pool = "batch"
batch_sizes = [4]
"""
    grid = load_grid(grid_file(tmp_path, BASE + defenses))
    pairs = {(attack_label(c.config), c.config["defense_label"]) for c in grid.cells}
    # noise has its noise-aware counterpart; MixUp has none (its encodings have their own decoding attack)
    adapted = {d for a, d in pairs if a == "ig adaptive"}
    assert adapted == {"prune(ratio=0.5)", "prune(ratio=0.9)", "noise(std=0.01)", "laplacian"}
    mixup = {d for a, d in pairs if a == "bias_trick"} - adapted - {"none"}
    assert len(mixup) == 1 and next(iter(mixup)).startswith("mixup")
    only_mixup = (
        BASE
        + defenses.split("[[defenses]]")[0]
        + '[[defenses]]\nname = "mixup"\nk = 2\npool = "batch"\nbatch_sizes = [4]\n'
    )
    with pytest.raises(GridError, match="'ig adaptive' is adaptive, but no defense of the grid has an adaptive"):
        load_grid(grid_file(tmp_path, only_mixup))


def test_the_vertical_example_makes_one_cell_per_setting_not_per_model() -> None:
    grid = load_grid(EXAMPLES / "vertical.toml")
    # 2 attack entries x 2 batch sizes x 3 defense settings x 1 seed, whatever the [[models]]
    assert len(grid.cells) == 2 * 2 * 3
    for cell in grid.cells:
        assert cell.config["model"] == "vertical" and cell.config["utility"] is None
        assert cell.config["vertical"] == {"parties": 4, "iterations": 40, "lr": 0.0}
    assert {c.config["defense_label"] for c in grid.cells} == {"none", "noise(std=0.0001)", "noise(std=0.01)"}


VERTICAL = """[grid]
data = "mnist_subset"
size = 16
images = 8
batch_sizes = [4]

[[models]]
name = "mlp"

[[threats]]
label = "labels"
knows_labels = true

[[attacks]]
name = "cafe"
"""


@pytest.mark.parametrize(
    "extra, reason",
    [
        ('[[defenses]]\nname = "mixup"\n', "defense 'mixup' changes the client's encode"),
        ('[vertical]\nparties = 3\n[[defenses]]\nname = "none"\n', "3 parties cannot split 16-pixel rows"),
        ('[[threats]]\nlabel = "no labels"\n[[defenses]]\nname = "none"\n', "holds the labels"),
        (
            '[[threats]]\nlabel = "fedavg"\nknows_labels = true\nupdate = "fedavg"\n[[defenses]]\nname = "none"\n',
            "honest server observing",
        ),
        (
            '[[threats]]\nlabel = "flips"\nknows_labels = true\naugmentation = "flip"\n[[defenses]]\nname = "none"\n',
            "augmentation does not apply",
        ),
    ],
)
def test_impossible_vertical_cells_are_rejected(tmp_path: Path, extra: str, reason: str) -> None:
    with pytest.raises(GridError, match=reason):
        load_grid(grid_file(tmp_path, VERTICAL + extra))


def test_a_vertical_cell_recovers_the_parties_samples_and_its_defense_bites(tmp_path: Path) -> None:
    from gradinv.evaluate.cells import run_cell

    defended = '[vertical]\niterations = 24\n[[defenses]]\nname = "none"\n[[defenses]]\nname = "noise"\nstd = 0.01\n'
    grid = load_grid(grid_file(tmp_path, VERTICAL + defended))
    by_defense = {
        c.config["defense_label"]: run_cell({**c.config, "attack_options": {"passes": 6}}) for c in grid.cells
    }
    clean, noisy = by_defense["none"], by_defense["noise(std=0.01)"]
    assert len(clean["rows"]) == 8 and [r["image"] for r in clean["rows"]] == list(range(8))
    assert clean["summary"]["psnr"]["mean"] > 40.0 and clean["summary"]["label_acc"] == 1.0
    assert clean["summary"]["cost"]["inversions"] == 1  # one run recovers the whole record
    assert noisy["summary"]["psnr"]["mean"] < clean["summary"]["psnr"]["mean"] - 20.0
    assert noisy["summary"]["defenses"] == [{"name": "noise", "std": 0.01, "distribution": "gaussian"}]
    # the attack's pictures are the parties' samples, in order
    originals = gi.data.load("mnist_subset", n=8, size=16, channels=1, seed=0)[0]
    assert torch.equal(clean["originals"], originals)
    assert gi.metrics.psnr(clean["reconstructions"], originals).min() > 30.0


GENERATOR = """
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.latent_shape = (4,)
        self.fc = nn.Linear(4, 64)

    def forward(self, z):
        return torch.sigmoid(self.fc(z)).view(-1, 1, 8, 8)
"""


def test_a_grid_names_its_own_generator_for_gias_relative_to_the_grid_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from gradinv.evaluate.cells import run_cell

    (tmp_path / "gen.py").write_text(GENERATOR)
    torch.manual_seed(3)
    weights = {"fc.weight": torch.randn(64, 4), "fc.bias": torch.randn(64)}
    save_file(weights, str(tmp_path / "tiny.safetensors"))
    entry = 'name = "gias"\nsteps = 4\nrestarts = 1\ngenerator = "gen.py:Tiny"\ngenerator_weights = "tiny.safetensors"'
    text = BASE.replace("images = 4", "images = 4\nsize = 8").replace('name = "bias_trick"', entry)
    grid = load_grid(grid_file(tmp_path, text + '[[defenses]]\nname = "none"\n'))
    options = grid.cells[0].config["attack_options"]
    assert options["generator"] == f"{tmp_path.resolve() / 'gen.py'}:Tiny"
    assert options["generator_weights"] == str(tmp_path.resolve() / "tiny.safetensors")
    # the attack's generator is the file's class with the saved weights
    attack = gi.attacks.make("gias", **options)
    z = torch.randn(2, 4)
    expected = torch.sigmoid(z @ weights["fc.weight"].T + weights["fc.bias"]).view(-1, 1, 8, 8)
    assert torch.allclose(attack._generator(z), expected, atol=1e-6)
    result = run_cell(grid.cells[0].config)
    assert result["summary"]["psnr"]["mean"] is not None and len(result["rows"]) == 4
    with pytest.raises(GridError, match="generator_weights is for a generator given as"):
        load_grid(grid_file(tmp_path, text.replace('"gen.py:Tiny"', '"digits16"') + '[[defenses]]\nname = "none"\n'))
    with pytest.raises(GridError, match="generator: file .*nope.py does not exist"):
        load_grid(grid_file(tmp_path, text.replace("gen.py", "nope.py") + '[[defenses]]\nname = "none"\n'))


def test_realistic_example_crosses_presets_training_and_batchnorm() -> None:
    grid = load_grid(EXAMPLES / "realistic.toml")
    # 8 threats (A-D x BN eval/train), each with its letter's attack, x 2 models (untrained, trained)
    assert len(grid.cells) == 8 * 2
    points = {(c.config["model_label"], c.config["threat"]["sok"], c.config["threat"]["bn_mode"]) for c in grid.cells}
    assert len(points) == 16
    epochs = {c.config["model_label"]: c.config.get("pretrain_epochs", 0) for c in grid.cells}
    assert epochs == {"untrained": 0, "trained": 2}
    attack = {c.config["threat"]["sok"]: c.config["attack"] for c in grid.cells}
    assert attack == {"A": "idlg", "B": "inverting_gradients", "C": "inverting_gradients", "D": "gias"}
    assert {c.config["threat"]["update"] for c in grid.cells if c.config["threat"]["sok"] == "C"} == {"fedavg"}


def test_a_models_own_pretraining_and_label(tmp_path: Path) -> None:
    utility = '[utility]\ndataset = "digits"\n'
    models = '[[models]]\nname = "mlp"\nhidden = [32]\nlabel = "fresh"\n'
    models += '[[models]]\nname = "mlp"\nhidden = [32]\nlabel = "trained"\npretrain_epochs = 3\n'
    text = BASE.replace('[[models]]\nname = "mlp"\nhidden = [32]\n', utility + models) + '[[defenses]]\nname = "none"\n'
    grid = load_grid(grid_file(tmp_path, text))
    epochs = {(c.config["model_label"], c.config.get("pretrain_epochs")) for c in grid.cells}
    assert epochs == {("fresh", None), ("trained", 3)}
    assert all("label" not in c.config["model_options"] for c in grid.cells)
    # [grid]'s pretrain_epochs applies to models without their own; a model's 0 keeps it at initialisation
    both = text.replace("images = 4", "images = 4\npretrain_epochs = 1").replace(
        'label = "fresh"', 'label = "fresh"\npretrain_epochs = 0'
    )
    assert {
        (c.config["model_label"], c.config.get("pretrain_epochs")) for c in load_grid(grid_file(tmp_path, both)).cells
    } == {
        ("fresh", None),
        ("trained", 3),
    }
    with pytest.raises(GridError, match="need different labels"):
        load_grid(grid_file(tmp_path, text.replace('label = "trained"', 'label = "fresh"')))
    with pytest.raises(GridError, match="needs a \\[utility\\] dataset"):
        load_grid(grid_file(tmp_path, text.replace(utility, "")))
    with pytest.raises(GridError, match="pretrain_epochs must be in"):
        load_grid(grid_file(tmp_path, text.replace("pretrain_epochs = 3", "pretrain_epochs = -1")))
    # results tell the two entries apart by their labels (a grid point per label, not per zoo name)
    from gradinv.evaluate.results import _point

    assert len({_point(c.config) for c in grid.cells}) == len({c.config["model_label"] for c in grid.cells}) * 2


def test_an_augmenting_clients_cell_is_scored_against_what_it_trained_on(tmp_path: Path) -> None:
    from gradinv.evaluate.cells import run_cell

    # the bias trick inverts the MLP's first layer exactly: it returns the image the client trained on
    threats = '[[threats]]\nlabel = "flips"\naugmentation = "flip"\n[[threats]]\nlabel = "plain"\n'
    text = BASE.replace("batch_sizes = [1, 4]", 'batch_sizes = [1]\ndata = "skimage"\nsize = 8')
    grid = load_grid(grid_file(tmp_path, text + threats + '[[defenses]]\nname = "none"\n'))
    cells = {c.config["threat_label"]: c for c in grid.cells}
    assert cells["flips"].config["threat"]["augmentation"] == "flip"
    assert "augmentation" not in cells["plain"].config["threat"]  # quiet: older grids keep their keys
    rows = run_cell(cells["flips"].config)["rows"]
    # against the augmented image: exact; against the photograph: worse wherever the client flipped it
    assert all(r["encoding_psnr"] > 60 for r in rows)
    assert any(r["psnr"] < 40 for r in rows), [r["psnr"] for r in rows]
    # through the store: the grid's table knows the cell's augmentation, and the ranking counts the flipped images
    from gradinv.evaluate.results import load_table
    from gradinv.report.grid import ranking

    by_threat = {r["threat_label"]: r for r in load_table(gi.evaluate.evaluate(grid, tmp_path / "out"))}
    assert by_threat["flips"]["augmentation"] == "flip" and by_threat["plain"]["augmentation"] == "none"
    worst = ranking([by_threat["flips"]], protected=50.0)[0]
    assert worst["status"] == "leaks" and worst["by"].endswith("vs the transformed images")


def test_a_pretrained_cell_records_how_its_model_was_trained(tmp_path: Path) -> None:
    from gradinv.evaluate.cells import run_cell

    text = BASE.replace(
        "images = 4\nbatch_sizes = [1, 4]", 'images = 2\nbatch_sizes = [1]\ndata = "digits"\nsize = 8\nchannels = 1'
    )
    text = text.replace("hidden = [32]\n", 'hidden = [16]\nlabel = "trained"\npretrain_epochs = 1\n')
    text += '[utility]\ndataset = "digits"\nn = 300\n[[defenses]]\nname = "none"\n'
    cell = load_grid(grid_file(tmp_path, text)).cells[0]
    trained = run_cell(cell.config)["summary"]["model_training"]
    fresh = run_cell({**cell.config, "pretrain_epochs": 0})["summary"]["model_training"]
    assert len(trained) == 1 and trained[0]["epochs"] == 1 and trained[0]["n_train"] == 240 and fresh == []
