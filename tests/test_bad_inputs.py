"""A battery of malformed inputs across the public API: each must raise ValueError, TypeError or FileNotFoundError
whose message names what is wrong, never return a result, raise a raw torch/KeyError/AttributeError, or hang.
Valid controls beside them still work."""

from __future__ import annotations

import inspect
import json
import math
import typing
from pathlib import Path

import pytest
import torch
from torch import nn

import gradinv as gi
from gradinv.evaluate import GridError, load_grid

NAN, INF = math.nan, math.inf
CLEAR = (ValueError, TypeError, FileNotFoundError)


def _bad_values(hint: object) -> list[object]:
    """Values of the wrong kind for an annotation: a string for a number, a float for an integer, NaN and
    infinities for a float, a number for a string or a flag."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if len(args) == 1 else hint
    if base is int:
        return ["3", 2.5, True]
    if base is float:
        return ["0.1", NAN, INF, -INF, True]
    if base is bool:
        return ["yes", 1]
    if base is str:
        return [5, 1.0]
    return []


def _option_cases(registry: dict[str, type], make: typing.Callable[..., object]) -> list[tuple]:
    cases = []
    for name, cls in registry.items():
        hints = typing.get_type_hints(cls.__init__)
        for option in inspect.signature(cls.__init__).parameters:
            for value in _bad_values(hints.get(option)):
                cases.append(pytest.param(make, name, option, value, id=f"{name}.{option}={value!r}"))
    return cases


ATTACK_OPTIONS = _option_cases(gi.attacks.REGISTRY, gi.attacks.make)
DEFENSE_OPTIONS = _option_cases({n: e[0] for n, e in gi.defenses.REGISTRY.items()}, gi.defenses.make)


@pytest.mark.parametrize("make, name, option, value", ATTACK_OPTIONS + DEFENSE_OPTIONS)
def test_every_option_of_the_wrong_kind_is_named(make, name, option, value) -> None:
    with pytest.raises(CLEAR, match=rf"{name}'?: option {option} "):
        make(name, **{option: value})


RANGE_CASES = [
    ("dlg", {"steps": 0}, "steps"),
    ("dlg", {"history_size": -1}, "history_size"),
    ("dlg", {"batch_size": 0}, "batch_size"),
    ("dlg", {"seed": -1}, "seed"),
    ("dlg", {"line_search": "armijo"}, "line_search"),
    ("idlg", {"lr": -1.0}, "lr"),
    ("inverting_gradients", {"tv": -0.1}, "tv"),
    ("inverting_gradients", {"bn_reg": -1.0}, "bn_reg"),
    ("inverting_gradients", {"bn_prior": "batch"}, "bn_prior"),
    ("inverting_gradients", {"label_strategy": "magic"}, "label_strategy"),
    ("inverting_gradients", {"restarts": 0}, "restarts"),
    ("bias_trick", {"tol": 0.0}, "tol"),
    ("bias_trick", {"batch_size": -2}, "batch_size"),
    ("spear", {"zero_tol": 1.5}, "zero_tol"),
    ("spear", {"max_seconds": -1.0}, "max_seconds"),
    ("spear", {"min_sparsity": 0.0}, "min_sparsity"),
    ("imprint", {"bins": 1}, "bins"),
    ("imprint", {"bins": 10**9}, "bins"),
    ("imprint", {"std": 0.0}, "std"),
    ("trap_weights", {"scale": 1.5}, "scale"),
    ("trap_weights", {"seed": 2**64}, "seed"),
    ("rgap", {"rcond": 0.0}, "rcond"),
]
DEFENSE_RANGES = [
    ("noise", {"std": -1.0}, "std"),
    ("noise", {"distribution": "cauchy"}, "distribution"),
    ("prune", {"ratio": 1.0}, "ratio"),
    ("quantize", {"bits": 0}, "bits"),
    ("topk", {"fraction": 0.0}, "fraction"),
    ("topk", {"scope": "layer"}, "scope"),
    ("dropout", {"p": 1.0}, "p"),
    ("dropout", {"where": "head"}, "where"),
    ("mixup", {"k": 0}, "k"),
    ("mixup", {"upper_bound": 2.0}, "upper_bound"),
    ("instahide", {"k": -1}, "k"),
    ("soteria", {"pruning_rate": 100.0}, "pruning_rate"),
    ("dpsgd", {"noise_multiplier": -1.0}, "noise_multiplier"),
    ("dpsgd", {"sample_rate": 0.0}, "sample_rate"),
    ("dpsgd", {"delta": 1.0}, "delta"),
]


@pytest.mark.parametrize("name, options, word", RANGE_CASES)
def test_attack_options_out_of_range_are_named(name, options, word) -> None:
    with pytest.raises(CLEAR, match=rf"\b{word}\b"):
        gi.attacks.make(name, **options)


@pytest.mark.parametrize("name, options, word", DEFENSE_RANGES)
def test_defense_options_out_of_range_are_named(name, options, word) -> None:
    with pytest.raises(CLEAR, match=rf"\b{word}\b"):
        gi.defenses.make(name, **options)


def test_unknown_options_and_names_are_named() -> None:
    with pytest.raises(TypeError, match="attack 'idlg': unknown option stepz; valid options: steps, lr"):
        gi.attacks.make("idlg", stepz=3)
    with pytest.raises(TypeError, match="defense 'prune': unknown option ratios; valid options: ratio"):
        gi.defenses.make("prune", ratios=0.5)
    with pytest.raises(ValueError, match="unknown attack"):
        gi.attacks.make("dlgg")
    with pytest.raises(ValueError, match="unknown defense"):
        gi.defenses.make("prunee")


def test_valid_controls_construct() -> None:
    for name in gi.attacks.names():
        assert gi.attacks.make(name).name == name
    for name in gi.defenses.names():
        assert gi.defenses.make(name).name == name


THREATS = [
    ({"server": "evil"}, "server"),
    ({"update": "weights"}, "update"),
    ({"bn_mode": "inference"}, "bn_mode"),
    ({"knows_labels": "no"}, "knows_labels"),
    ({"knows_labels": 1}, "knows_labels"),
    ({"knows_batch_size": None}, "knows_batch_size"),
    ({"knows_bn_stats": "True"}, "knows_bn_stats"),
    ({"update": "fedavg", "local_steps": True}, "local_steps"),
    ({"update": "fedavg", "local_steps": 2.0}, "local_steps"),
    ({"update": "fedavg", "local_steps": 0}, "local_steps"),
    ({"update": "fedavg", "local_lr": NAN}, "local_lr"),
    ({"update": "fedavg", "local_lr": INF}, "local_lr"),
    ({"update": "fedavg", "local_lr": -0.1}, "local_lr"),
    ({"update": "fedavg", "local_lr": "0.1"}, "local_lr"),
    ({"update": "fedavg", "local_batch_size": 0}, "local_batch_size"),
    ({"update": "fedavg", "local_batch_size": 1.5}, "local_batch_size"),
    ({"local_steps": 50}, "local_steps"),
    ({"local_lr": 0.5}, "local_lr"),
    ({"local_batch_size": 4}, "local_batch_size"),
    ({"normalization": ((0.5,), (INF,))}, "normalization"),
    ({"normalization": ((0.5,), (0.0,))}, "normalization"),
    ({"normalization": ((NAN,), (0.5,))}, "normalization"),
    ({"normalization": ((0.5, 0.5), (0.5,))}, "normalization"),
    ({"normalization": "imagenet"}, "normalization"),
]


@pytest.mark.parametrize("fields, word", THREATS)
def test_threat_models_that_cannot_be_are_refused(fields, word) -> None:
    with pytest.raises(CLEAR, match=word):
        gi.ThreatModel(**fields)
    with pytest.raises(CLEAR, match=word):
        gi.ThreatModel.from_dict({**gi.ThreatModel().to_dict(), **fields})


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return gi.data.load("skimage", n=2, size=8, seed=0)


def _mlp(**kwargs: object) -> nn.Module:
    return gi.models.make("mlp", image_shape=(3, 8, 8), hidden=(16,), seed=0, **kwargs)


class _NoParams(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10]


class _Vector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(192, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)).sum(dim=1)


def _frozen() -> nn.Module:
    model = _mlp()
    model.net[1].weight.requires_grad_(False)
    return model


MODELS = [
    (lambda: lambda x: x, TypeError, "torch.nn.Module"),
    (_NoParams, ValueError, "no parameters"),
    (_frozen, ValueError, "frozen"),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(100, 10)), ValueError, "does not accept inputs"),
    (_Vector, ValueError, "logits"),
    (lambda: _mlp().double(), TypeError, "float64"),
]


@pytest.mark.parametrize("factory, error, word", MODELS)
def test_models_a_client_cannot_train_are_named(batch, factory, error, word) -> None:
    images, labels = batch
    with pytest.raises(error, match=word):
        gi.observe(factory(), images, labels)


def test_bad_images_labels_and_arguments_of_observe(batch) -> None:
    images, labels = batch
    model = _mlp()
    cases = [
        (images.double(), labels, {}, TypeError, "float64"),
        (images * 2, labels, {}, ValueError, r"\[0, 1\]"),
        (images[0], labels, {}, ValueError, "images must have shape"),
        (images.numpy(), labels, {}, TypeError, "images must be a torch.Tensor"),
        (images.clone().fill_(NAN), labels, {}, ValueError, "NaN"),
        (images, labels.float(), {}, TypeError, "labels must be integer"),
        (images, labels[:1], {}, ValueError, "labels must have shape"),
        (images, labels + 100, {}, ValueError, r"labels must lie in \[0, 10\)"),
        (images, labels, {"seed": -1}, ValueError, "seed"),
        (images, labels, {"seed": 1.5}, ValueError, "seed"),
        (images, labels, {"threat": "honest"}, TypeError, "gi.ThreatModel"),
        (images, labels, {"defenses": ["prune"]}, TypeError, "gi.defenses"),
        (images, labels, {"defenses": gi.defenses.make("prune")}, TypeError, "defenses must be a list"),
    ]
    for x, y, kwargs, error, word in cases:
        with pytest.raises(error, match=word):
            gi.observe(model, x, y, **kwargs)
    assert gi.observe(model, images, labels).batch_size == 2  # the valid control


def test_attacks_refuse_observations_they_cannot_read(batch) -> None:
    images, labels = batch
    zero = gi.observe(_mlp(), images[:1], labels[:1])
    zero.update = {k: torch.zeros_like(v) for k, v in zero.update.items()}
    with pytest.raises(ValueError, match="zero"):
        gi.attacks.labels.recover("idlg", zero, 1)
    honest = gi.observe(_mlp(), images, labels)
    with pytest.raises(ValueError, match="malicious"):
        gi.attacks.make("trap_weights").reconstruct(honest)
    with pytest.raises(TypeError, match="gi.Observation"):
        gi.attacks.make("bias_trick").reconstruct({"update": {}})  # type: ignore[arg-type]


def test_score_refuses_labels_and_images_that_do_not_fit(batch) -> None:
    images, labels = batch
    rec = gi.Reconstruction(images=images, labels=labels, trace=[], seconds=0)
    cases = [
        ((rec, images, torch.arange(5)), ValueError, "labels must have shape"),
        ((rec, images, labels.float()), TypeError, "integer"),
        ((rec, images[:, :1], labels), ValueError, "shape"),
        ((images, images, labels), TypeError, "gi.Reconstruction"),
        ((rec, images + 1, labels), ValueError, r"\[0, 1\]"),
    ]
    for args, error, word in cases:
        with pytest.raises(error, match=word):
            gi.metrics.score(*args)
    with pytest.raises(ValueError, match="certified"):
        gi.Reconstruction(images=images, labels=None, trace=[], seconds=0, certified=[True])


@pytest.fixture(scope="module")
def saved(batch, tmp_path_factory) -> Path:
    images, labels = batch
    folder = tmp_path_factory.mktemp("obs") / "observation"
    threat = gi.ThreatModel(knows_labels=True)
    gi.observe(_mlp(), images, labels, threat=threat).save(folder)
    return folder


def _edited(saved: Path, tmp_path: Path, edit: typing.Callable[[dict], object]) -> Path:
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "tensors.safetensors").write_bytes((saved / "tensors.safetensors").read_bytes())
    meta = json.loads((saved / "observation.json").read_text())
    changed = edit(meta)
    (folder / "observation.json").write_text(json.dumps(meta if changed is None else changed))
    return folder


def _set(key: str, value: object) -> typing.Callable[[dict], None]:
    return lambda meta: meta.__setitem__(key, value)


SAVED = [
    (_set("image_shape", "abc"), "image_shape"),
    (_set("image_shape", [3, 8]), "image_shape"),
    (_set("image_shape", [3, -8, 8]), "image_shape"),
    (_set("num_classes", 7), "num_classes"),
    (_set("num_classes", "ten"), "num_classes"),
    (_set("batch_size", -5), "batch_size"),
    (_set("batch_size", 3), "labels has 2 entries"),
    (_set("model_spec", {"name": "mlp", "hidden": [10**11], "image_shape": [3, 8, 8]}), "model_spec"),
    (_set("model_spec", "mlp"), "model_spec"),
    (_set("format", "other/1"), "not a gradinv observation"),
    (_set("bn_names", ["missing"]), "missing"),
    (_set("defenses", "none"), "defenses"),
    (lambda meta: meta.pop("threat") and None, "threat"),
    (lambda meta: meta["threat"].__setitem__("knows_labels", "yes"), "knows_labels"),
    (lambda meta: [1, 2, 3], "not a gradinv observation"),
]


@pytest.mark.parametrize("edit, word", SAVED)
def test_a_damaged_observation_file_is_named(saved, tmp_path, edit, word) -> None:
    with pytest.raises(ValueError, match=word):
        gi.Observation.load(_edited(saved, tmp_path, edit))


def test_missing_or_unreadable_observation_files(saved, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="observation.json"):
        gi.Observation.load(tmp_path / "nowhere")
    broken = _edited(saved, tmp_path, lambda meta: None)
    data = (broken / "tensors.safetensors").read_bytes()
    (broken / "tensors.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="tensors.safetensors"):
        gi.Observation.load(broken)
    (broken / "observation.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        gi.Observation.load(broken)
    assert gi.Observation.load(saved).batch_size == 2  # the valid control


GRID = """
[grid]
images = 2
batch_sizes = [1]
{grid}
{utility}
[[models]]
name = "mlp"
hidden = [8]
[[attacks]]
name = "bias_trick"
[[defenses]]
name = "none"
"""

GRIDS = [
    ("images = 1000000000", "", "images"),
    ("size = 2", "", "size"),
    ("channels = 2", "", "channels"),
    ("num_classes = 1", "", "num_classes"),
    ("client_images = -5", "", "client_images"),
    ("protected_psnr = nan", "", "protected_psnr"),
    ("seeds = [-1]", "", "seeds"),
    ("pretrain_epochs = -1", "", "pretrain_epochs"),
    ("", '[utility]\ndataset = "digits"\nepochs = 1000000000', "epochs"),
    ("", '[utility]\ndataset = "digits"\nlr = nan', "lr"),
    ("", '[utility]\ndataset = "digits"\nlr = inf', "lr"),
    ("", '[utility]\ndataset = "digits"\nn = 1', "n"),
    ("", '[utility]\ndataset = "digits"\nbatch_size = 0', "batch_size"),
    ("", '[utility]\ndataset = "digits"\nseed = -3', "seed"),
    ("batch_sizes = [0]", "", "batch size"),
]


@pytest.mark.parametrize("grid, utility, word", GRIDS)
def test_grid_values_out_of_range_stop_the_grid_before_it_runs(tmp_path, grid, utility, word) -> None:
    path = tmp_path / "grid.toml"
    text = GRID.format(grid=grid, utility=utility)
    for key in ("batch_sizes", "images"):  # the template's own value makes way
        if grid.startswith(key):
            text = text.replace(f"{key} = {'[1]' if key == 'batch_sizes' else '2'}\n", "", 1)
    path.write_text(text)
    with pytest.raises(GridError, match=word):
        load_grid(path)


def test_grid_attack_options_that_cannot_run_are_caught(tmp_path) -> None:
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(grid="", utility="").replace('name = "bias_trick"', 'name = "dlg"\nlr = inf'))
    with pytest.raises(GridError, match="lr"):
        load_grid(path)
    path.write_text(GRID.format(grid="", utility=""))
    assert len(load_grid(path).cells) == 1  # the valid control


@pytest.mark.parametrize(
    "body, word",
    [
        ("import sys\nsys.exit(3)\n", "SystemExit"),
        ("import argparse\nargparse.ArgumentParser().parse_args(['--nope'])\n", "SystemExit"),
        ("raise RuntimeError('boom')\n", "boom"),
        ("from torch import nn\nclass Net(nn.Module):\n    def __init__(self):\n        raise SystemExit(1)\n", "Net"),
    ],
)
def test_audit_model_files_that_exit_or_fail_are_named(tmp_path, body, word) -> None:
    from gradinv.audit import load_model

    path = tmp_path / "user_model.py"
    path.write_text(body)
    with pytest.raises(ValueError, match=word):
        load_model(f"{path}:Net")


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"n": -1}, "n must"),
        ({"size": 2.5}, "size"),
        ({"channels": 2}, "channels"),
        ({"indices": [99]}, "indices"),
        ({"seed": -1}, "seed"),
        ({"n": "3"}, "n must"),
        ({"name": "nope"}, "unknown dataset"),
        ({"name": "folder"}, "root"),
        ({"name": "digits", "n": 10**9}, "1797 images"),
    ],
)
def test_data_requests_that_cannot_be_met_are_named(kwargs, word) -> None:
    kwargs = {"name": "skimage", **kwargs}
    with pytest.raises(CLEAR, match=word):
        gi.data.load(kwargs.pop("name"), **kwargs)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"lr": NAN}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"momentum": INF}, "momentum"),
        ({"momentum": 1.0}, "momentum"),
        ({"batch_size": "32"}, "batch_size"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_utility_settings_that_cannot_train_are_named(kwargs, word) -> None:
    def factory() -> nn.Module:
        return gi.models.make("mlp", image_shape=(1, 8, 8), hidden=(8,))

    with pytest.raises(CLEAR, match=word):
        gi.evaluate.utility(factory, "digits", [], size=8, n=100, **kwargs)
