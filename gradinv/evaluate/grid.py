"""The evaluation grid of Huang et al. (NeurIPS 2021, Sec. 3-6) as a TOML file: models x threat-model relaxations x
attacks x defenses (with parameter sweeps) x batch sizes x seeds, each combination one :class:`Cell`.

A grid is checked completely before anything runs: an unknown name, an option of the wrong type, a value a
constructor rejects or an impossible combination raises :class:`GridError` naming the file, the line and the reason.

Sections (see ``examples/tiny.toml``)::

    [grid]        name, data, root, size, channels, num_classes, normalization, images, batch_sizes, seeds,
                  client_images (the client's dataset size, for cost estimates; default: images), device ("cpu",
                  "cuda", "cuda:N", "mps": where the cells compute; not part of a cell's key)
    [utility]     dataset, epochs, n, batch_size, lr, seed (optional: without it no accuracy is measured)
    [[models]]    name, then the model's options
    [[threats]]   label, then ThreatModel fields (knows_labels, knows_bn_stats, bn_mode, update, local_steps, ...)
    [[attacks]]   name, then the attack's options; optional label (default: the name, with the options when
                  several entries share the name)
    [[defenses]]  name ("none" for none) and its parameters, ``sweep = { parameter = [values] }``, or
                  ``chain = [{ name = "prune", ratio = 0.9 }, { name = "mixup", k = 4 }]``; optional label
    [vertical]    parties (4), iterations (0: twice the images), lr (0.0: the model stays fixed): the vertical FL
                  training that vertical attacks (CAFE) observe
    [text]        data (a bundled corpus, "rotten_tomatoes", or the path of your sentences: a CSV with text and
                  label columns, a text file or folder, one per line), sentences (8: the text client's, all
                  attacked), max_length (32 tokens): the sentences text attacks (dager, tag, lamp) observe
    [[text_models]] name (gpt2, bert, minilm), task ("classification" or "causal_lm"), num_labels (2),
                  lora_rank (0: the whole model trains), label, then Hugging Face configuration overrides
                  (n_layer, n_embd, n_head; num_hidden_layers, hidden_size, ...)

File paths in attack options (GIAS's ``generator = "my_gan.py:Generator"`` and ``generator_weights``) are read
relative to the grid file.

A text attack (``dager``, ``tag``, ``lamp``) makes one cell per text model, threat, batch size, defense and seed
(:mod:`gradinv.evaluate.text_cells`): the text client's sentences in batches of the cell's size, each batch's
gradient attacked and every sentence scored (ROUGE-1/2/L, token accuracy, exact, certified); only gradient
defenses and DP-SGD apply, no utility is measured. A grid of text attacks alone needs no [[models]].
``protected_rouge`` (default 0.3) is where the report's text ranking calls a defense protective.

A vertical attack (``cafe``) makes one cell per threat, batch size, defense and seed (not per model): the grid's
``images`` are the samples the parties hold (all attacked), split into ``parties`` vertical strips, trained for
``iterations`` batches of the cell's batch size (:func:`gradinv.fl.vertical.train_vertical`); only defenses of the
shared gradient apply, no utility is measured, and the pixels are not normalised.

An attack entry with ``adaptive = true`` (:mod:`gradinv.attacks.adaptive`) runs only against the defense settings it
adapts to (every defense but MixUp and InstaHide); list the attack twice, plain and adaptive, and the report's
ranking takes the stronger per defense.

Any [[attacks]] or [[defenses]] entry may take ``batch_sizes = [...]`` (drawn from [grid]) and ``threats = [...]``
(labels of [[threats]]) to run only there. ``pretrain_epochs`` in [grid] attacks the model after that many epochs of
clean training on the [utility] dataset (Huang et al. attack a model in training, not at its initialisation); a
[[models]] entry's own ``pretrain_epochs`` replaces it for that model, and its ``label`` names it in the results (two
entries of one model, trained and not, need labels).
``protected_psnr`` (dB, default 20) is where the report's ranking calls a defense protective: set it from the data
(e.g. a few dB above what guessing each image's mean grey level scores).
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradinv import attacks, data, defenses, models
from gradinv.attacks.adaptive import ADAPTABLE
from gradinv.attacks.base import Attack, threat_conflict
from gradinv.data import NORMALIZATIONS
from gradinv.defenses.mixup import MixUp
from gradinv.evaluate.text_cells import PROTECTED_ROUGE, TEXT_KEYS, TEXT_MODEL_KEYS, TEXT_RANGES, text_conflict
from gradinv.fl.client import client_trainer
from gradinv.fl.vertical import check_vertical_defenses
from gradinv.observation import ThreatModel
from gradinv.text import CORPORA, TASKS, make_text_model, read_sentences, sentences
from gradinv.text.models import TEXT_MODELS

GRID_KEYS = {
    "name": "grid",
    "data": "digits",
    "root": None,
    "size": 16,
    "channels": 1,
    "num_classes": 10,
    "normalization": "none",
    "images": 8,
    "batch_sizes": [1],
    "seeds": [0],
    "client_images": None,
    "pretrain_epochs": 0,
    "protected_psnr": 20.0,
    "protected_rouge": PROTECTED_ROUGE,
    "device": "cpu",
}
UTILITY_KEYS = {"dataset": None, "epochs": 1, "n": 1000, "batch_size": 32, "lr": 0.05, "seed": 0}
GRID_RANGES = {
    "size": (8, 512),  # the smallest bundled images are 8x8; SSIM's window and the zoo's convolutions need some room
    "channels": (1, 3),
    "num_classes": (2, 100_000),
    "images": (1, 100_000),
    "client_images": (1, 10**12),
    "pretrain_epochs": (0, 1000),
    "protected_psnr": (0.0, 1000.0),
    "protected_rouge": (0.0, 1.0),
}
UTILITY_RANGES = {
    "epochs": (1, 1000),
    "n": (2, 10**7),
    "batch_size": (1, 10**6),
    "lr": (1e-12, 100.0),
    "seed": (0, 2**63 - 1),
}
VERTICAL_KEYS = {"parties": 4, "iterations": 0, "lr": 0.0}
VERTICAL_RANGES = {"parties": (1, 512), "iterations": (0, 10**7), "lr": (0.0, 100.0)}
SECTIONS = ("grid", "utility", "models", "threats", "attacks", "defenses", "vertical", "text", "text_models")


class GridError(ValueError):
    """A grid file that cannot run, with where and why."""


def config_key(config: dict[str, Any]) -> str:
    """A stable identifier of a configuration: a hash of its canonical JSON."""
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def attack_label(config: dict[str, Any]) -> str:
    """A cell's attack as the grid names it (entries of one attack with different options differ)."""
    return str(config.get("attack_label", config["attack"]))  # results of grids from before labels: the name


@dataclass(frozen=True)
class Cell:
    """One combination of the grid: everything needed to run it, as JSON-ready values."""

    config: dict[str, Any]

    @property
    def key(self) -> str:
        """A stable identifier: a hash of the canonical JSON of the configuration."""
        return config_key(self.config)


@dataclass
class Grid:
    """A checked grid and its cells."""

    name: str
    path: Path
    cells: list[Cell] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def _line(lines: list[str], table: str, index: int, key: str | None) -> int:
    """The 1-based line of ``key`` in the ``index``-th ``[[table]]`` (or of ``[table]``), best effort."""
    header = re.compile(rf"^\s*\[\[?\s*{re.escape(table)}\s*\]\]?")
    starts = [i for i, text in enumerate(lines) if header.match(text)]
    if index >= len(starts):
        return 1
    start = starts[index]
    if key is None:
        return start + 1
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=|[{{,]\s*{re.escape(key)}\s*=")
    for i in range(start + 1, len(lines)):
        if lines[i].lstrip().startswith("["):
            break
        if pattern.search(lines[i]):
            return i + 1
    return start + 1


def _type_name(value: Any) -> str:
    """``"a boolean"``, ``"an integer"``, ... for error messages."""
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "a list"}
    return names.get(type(value), "a value")


def type_mismatch(key: str, value: Any, default: Any) -> str | None:
    """Why ``value`` cannot stand where ``default`` stands (a float takes an integer, nothing takes a boolean but a
    boolean), or ``None``; a default of ``None`` accepts anything."""
    if default is None:
        return None
    expected: tuple[type, ...] = (
        (bool,)
        if isinstance(default, bool)
        else (int,)
        if isinstance(default, int)
        else (int, float)
        if isinstance(default, float)
        else (str,)
        if isinstance(default, str)
        else (list, tuple)
        if isinstance(default, list | tuple)
        else (object,)
    )
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        return f"{key!r} must be {_type_name(default)}, got {_type_name(value)} {value!r}"
    return None


def check_options(target: Callable[..., Any], options: dict[str, Any]) -> str | None:
    """Why ``options`` do not fit ``target``'s keyword parameters (unknown name, or a type unlike the default's),
    or ``None``."""
    params = inspect.signature(target).parameters
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for name, value in options.items():
        if name not in params:
            if open_kwargs:
                continue
            known = [p for p in params if p not in ("self", "args", "kwargs")]
            return f"unknown option {name!r}; expected one of {', '.join(known)}"
        default = params[name].default
        problem = None if default is inspect.Parameter.empty else type_mismatch(name, value, default)
        if problem:
            return f"option {problem}"
    return None


class _Reader:
    """Reads one grid file, raising :class:`GridError` at the offending line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        text = path.read_text()
        self.lines = text.splitlines()
        try:
            self.doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise GridError(f"{path}: not valid TOML: {err}") from err

    def fail(self, table: str, index: int, key: str | None, reason: str) -> GridError:
        return GridError(f"{self.path}:{_line(self.lines, table, index, key)}: [{table}] {reason}")

    def table(self, name: str, defaults: dict[str, Any]) -> dict[str, Any]:
        given = self.doc.get(name, {})
        if not isinstance(given, dict):
            raise self.fail(name, 0, None, "must be a table [name], not an array [[name]]")
        for key, value in given.items():
            if key not in defaults:
                raise self.fail(name, 0, key, f"unknown key {key!r}; expected one of {', '.join(defaults)}")
            problem = type_mismatch(key, value, defaults[key])
            if problem:
                raise self.fail(name, 0, key, problem)
        return {**defaults, **given}

    def entries(self, name: str) -> list[dict[str, Any]]:
        given = self.doc.get(name)
        if not isinstance(given, list) or not given or not all(isinstance(e, dict) for e in given):
            raise self.fail(name, 0, None, f"the grid needs at least one [[{name}]] entry")
        return given


def _ranges(reader: _Reader, table: str, values: dict[str, Any], ranges: dict[str, tuple[float, float]]) -> None:
    """Every numeric value of ``[table]`` inside its range (NaN and infinities never are), before anything runs."""
    for key, (low, high) in ranges.items():
        value = values.get(key)
        if value is not None and not low <= value <= high:
            raise reader.fail(table, 0, key, f"{key} must lie in [{low:g}, {high:g}], got {value!r}")


def _label(name: str, params: dict[str, Any]) -> str:
    inner = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{name}({inner})" if inner else name


def _models(reader: _Reader, settings: dict[str, Any], utility: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each [[models]] entry: the zoo name and its options, and, when given, its ``label`` (how results name it) and
    its own ``pretrain_epochs`` (in place of [grid]'s: one grid can attack a model at initialisation and trained)."""
    shape = (settings["channels"], settings["size"], settings["size"])
    out = []
    for i, entry in enumerate(reader.entries("models")):
        options = {k: v for k, v in entry.items() if k not in ("name", "label", "pretrain_epochs")}
        name = entry.get("name")
        extra: dict[str, Any] = {}
        if "label" in entry:
            extra["model_label"] = str(entry["label"])
        if "pretrain_epochs" in entry:
            epochs = entry["pretrain_epochs"]
            if isinstance(epochs, bool) or not isinstance(epochs, int) or not 0 <= epochs <= 1000:
                raise reader.fail(
                    "models", i, "pretrain_epochs", f"pretrain_epochs must be in [0, 1000], got {epochs!r}"
                )
            if epochs and utility is None:
                raise reader.fail("models", i, "pretrain_epochs", "pretrain_epochs needs a [utility] dataset")
            extra["pretrain_epochs"] = epochs
        if name not in models.REGISTRY:
            raise reader.fail("models", i, "name", f"unknown model {name!r}; available: {', '.join(models.names())}")
        try:
            models.make(name, num_classes=settings["num_classes"], image_shape=shape, seed=0, **options)
        except (TypeError, ValueError, RuntimeError) as err:
            raise reader.fail("models", i, None, f"model {name!r} with {options} for images {shape}: {err}") from err
        out.append({"model": name, "model_options": options, **extra})
    labels = [m.get("model_label", m["model"]) for m in out]
    if len(set(labels)) < len(labels):
        raise reader.fail("models", 0, None, f"models that share a name need different labels, got {labels}")
    return out


def _text(reader: _Reader) -> dict[str, Any]:
    """The ``[text]`` section, its data checked: a bundled corpus or a file or folder of sentences (relative to the
    grid file) holding at least ``sentences``; ``labelled`` records whether they carry labels."""
    text = reader.table("text", TEXT_KEYS)
    _ranges(reader, "text", text, TEXT_RANGES)
    if not isinstance(text["data"], str) or not text["data"]:
        raise reader.fail("text", 0, "data", "data must be a corpus name or the path of your sentences")
    labels: list[int | None]
    try:
        if text["data"] in CORPORA:
            labels = list(sentences(text["data"], n=text["sentences"])[1])
        else:
            path = Path(text["data"])
            text["data"] = str(path if path.is_absolute() else (reader.path.parent / path).resolve())
            _, labels = read_sentences(text["data"], n=text["sentences"])
    except (ValueError, FileNotFoundError) as err:
        raise reader.fail("text", 0, "data", f"data {text['data']!r}, sentences = {text['sentences']}: {err}") from err
    present = [label for label in labels if label is not None]
    return {**text, "labelled": len(present) == len(labels), "max_label": max(present, default=-1)}


def _text_models(reader: _Reader, text: dict[str, Any]) -> list[dict[str, Any]]:
    """Each ``[[text_models]]`` entry: a text model name, its task and head, LoRA rank, label and configuration
    overrides, each model built once to check them (``make_text_model``)."""
    out = []
    for i, entry in enumerate(reader.entries("text_models")):
        name, task = entry.get("name"), entry.get("task", "classification")
        if name not in TEXT_MODELS:
            raise reader.fail(
                "text_models", i, "name", f"unknown text model {name!r}; available: {', '.join(TEXT_MODELS)}"
            )
        if task not in TASKS:
            raise reader.fail("text_models", i, "task", f"task must be one of {', '.join(TASKS)}, got {task!r}")
        num_labels, rank = entry.get("num_labels", 2), entry.get("lora_rank", 0)
        for key, value, low in (("num_labels", num_labels, 2), ("lora_rank", rank, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 100_000:
                raise reader.fail("text_models", i, key, f"{key} must be an integer in [{low}, 100000], got {value!r}")
        if task == "classification" and not text["labelled"]:
            raise reader.fail(
                "text_models", i, "task", f"a classifier's sentences need labels; {text['data']} has none"
            )
        if task == "classification" and text["max_label"] >= num_labels:
            raise reader.fail(
                "text_models", i, "num_labels", f"the sentences have label {text['max_label']}: num_labels {num_labels}"
            )
        options = {k: v for k, v in entry.items() if k not in TEXT_MODEL_KEYS}
        try:
            make_text_model(name, task=task, num_labels=num_labels, seed=0, **options)
        except (TypeError, ValueError) as err:
            raise reader.fail("text_models", i, None, f"text model {name!r} with {options}: {err}") from err
        model = {"model": name, "model_options": options, "task": task, "num_labels": num_labels, "lora_rank": rank}
        out.append({**model, **({"model_label": str(entry["label"])} if "label" in entry else {})})
    labels = [m.get("model_label", m["model"]) for m in out]
    if len(set(labels)) < len(labels):
        raise reader.fail("text_models", 0, None, f"text models that share a name need different labels, got {labels}")
    return out


def _threats(reader: _Reader, settings: dict[str, Any]) -> list[tuple[str, ThreatModel]]:
    out = []
    for i, entry in enumerate(reader.doc.get("threats") or [{}]):
        fields = {k: v for k, v in entry.items() if k not in ("label", "preset")}
        if "normalization" in fields:
            raise reader.fail("threats", i, "normalization", "the normalisation is set once, in [grid]")
        problem = check_options(ThreatModel, fields)
        if problem:
            key = next((k for k in fields if repr(k) in problem), None)
            raise reader.fail("threats", i, key, problem)
        norm = NORMALIZATIONS[settings["normalization"]]
        try:  # preset = "B": the SoK's threat model B, with the client's training set by the other keys
            if "preset" in entry:
                threat = ThreatModel.preset(entry["preset"], normalization=norm, **fields)
            else:
                threat = ThreatModel(normalization=norm, **fields)
        except (TypeError, ValueError) as err:
            raise reader.fail("threats", i, "preset" if "preset" in entry else None, str(err)) from err
        if "preset" in entry and "label" not in entry:
            fields = {"preset": entry["preset"], **fields}
        out.append((str(entry.get("label", _label("threat", fields))), threat))
    return out


def _only(
    reader: _Reader, table: str, i: int, entry: dict[str, Any], settings: dict[str, Any], threats: list[str]
) -> tuple[set[int], set[str]]:
    """The batch sizes and threat labels an entry is restricted to (``batch_sizes = [...]``, ``threats = [...]`` in
    the entry; default: all)."""
    chosen = entry.pop("batch_sizes", settings["batch_sizes"])
    if not isinstance(chosen, list) or not set(chosen) <= set(settings["batch_sizes"]):
        raise reader.fail(
            table, i, "batch_sizes", f"batch_sizes must be a list drawn from [grid] {settings['batch_sizes']}"
        )
    labels = entry.pop("threats", threats)
    if not isinstance(labels, list) or not labels or not set(labels) <= set(threats):
        raise reader.fail(table, i, "threats", f"threats must be a non-empty list drawn from the labels {threats}")
    return set(chosen), set(labels)


def _attacks(
    reader: _Reader, settings: dict[str, Any], threats: list[str]
) -> list[tuple[str, dict[str, Any], tuple[set[int], set[str]], str]]:
    out = []
    for i, given in enumerate(reader.entries("attacks")):
        entry = dict(given)
        only = _only(reader, "attacks", i, entry, settings, threats)
        label = entry.pop("label", None)
        entry = resolve_paths(entry, reader.path.parent)
        classes = {**attacks.REGISTRY, **attacks.TEXT_REGISTRY}
        name, options = _component(reader, "attacks", i, entry, classes, attacks.make)
        out.append((name, options, only, label))
    names = [name for name, *_ in out]
    return [
        (name, options, only, label or (_label(name, options) if names.count(name) > 1 else name))
        for name, options, only, label in out
    ]


def resolve_paths(options: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Option values naming files (``file.py:ClassName``, ``.safetensors``/``.pt``/``.pth`` weights), relative ones
    read from the grid file's ``folder``, made absolute: cells run wherever the runner starts them."""
    out = {}
    for key, value in options.items():
        if isinstance(value, str):
            path_text, sep, name = value.rpartition(":")
            if sep and path_text.endswith(".py") and not Path(path_text).is_absolute():
                value = f"{(folder / path_text).resolve()}:{name}"
            elif value.endswith((".safetensors", ".pt", ".pth")) and not Path(value).is_absolute():
                value = str((folder / value).resolve())
        out[key] = value
    return out


def _component(
    reader: _Reader,
    table: str,
    i: int,
    spec: dict[str, Any],
    classes: dict[str, type],
    make: Callable[..., Any],
    also: str = "",
) -> tuple[str, dict[str, Any]]:
    """Check one attack or defense entry (a name in ``classes``, option names and types, accepted by ``make``) and
    return its name and options; ``also`` names accepted beyond the registry, for the error message."""
    kind = table.removesuffix("s")
    name = spec.get("name")
    options = {k: v for k, v in spec.items() if k != "name"}
    if name not in classes:
        raise reader.fail(table, i, "name", f"unknown {kind} {name!r}; available: {also}{', '.join(classes)}")
    problem = check_options(classes[name], options)
    if problem:
        raise reader.fail(table, i, next((k for k in options if repr(k) in problem), None), problem)
    try:
        make(name, **options)
    except (TypeError, ValueError) as err:
        raise reader.fail(table, i, next(iter(options), None), f"{kind} {name!r}: {err}") from err
    return name, options


def _defense(reader: _Reader, i: int, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    classes = {name: entry[0] for name, entry in defenses.REGISTRY.items()}
    return _component(reader, "defenses", i, spec, classes, defenses.make, also="none, ")


def _defenses(
    reader: _Reader, settings: dict[str, Any], threats: list[str]
) -> list[tuple[str, list[tuple[str, dict[str, Any]]], tuple[set[int], set[str]], int]]:
    out: list[tuple[str, list[tuple[str, dict[str, Any]]], tuple[set[int], set[str]], int]] = []
    for i, given in enumerate(reader.entries("defenses")):
        entry = dict(given)
        only = _only(reader, "defenses", i, entry, settings, threats)
        label = entry.get("label")
        if "chain" in entry:
            if set(entry) - {"chain", "label"} or not isinstance(entry["chain"], list):
                raise reader.fail(
                    "defenses", i, "chain", "a chain is a list of {name = ..., ...} and takes only a label"
                )
            chain = [_defense(reader, i, dict(spec)) for spec in entry["chain"]]
            out.append((label or "+".join(_label(n, p) for n, p in chain), chain, only, i))
            continue
        if entry.get("name") == "none":
            out.append((label or "none", [], only, i))
            continue
        sweep = entry.get("sweep", {})
        fixed = {k: v for k, v in entry.items() if k not in ("sweep", "label")}
        if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
            raise reader.fail(
                "defenses", i, "sweep", "sweep must be a table of non-empty lists, e.g. { ratio = [0.5, 0.9] }"
            )
        for values in itertools.product(*sweep.values()):
            swept = dict(zip(sweep, values, strict=True))
            name, params = _defense(reader, i, {**fixed, **swept})
            shown = f"{label} ({', '.join(f'{k}={v}' for k, v in swept.items())})" if label and swept else label
            out.append((shown or _label(name, params), [(name, params)], only, i))
    return out


QUIET_THREAT_FIELDS = {
    "local_shuffle": False,
    "knows_training": True,
    "shares_buffers": False,
    "augmentation": "none",
    "sok": None,
}
"""Threat fields a cell records only when they differ from these defaults, so that the keys (and the resumable
results) of grids that do not use them stay as they were."""


def conflict(
    attack: type[Attack], options: dict[str, Any], threat: ThreatModel, batch_size: int, chain: list[Any]
) -> str | None:
    """Why this attack cannot run on this threat model, batch size and defense chain, or ``None``."""
    if "labels" in attack.requires and not threat.knows_labels:
        return f"attack {attack.name!r} needs the labels, which this threat model withholds"
    if "batch_size" in attack.requires and not threat.knows_batch_size and "batch_size" not in options:
        return (
            f"attack {attack.name!r} needs the batch size (or a batch_size option), which this threat model withholds"
        )
    if attack.max_batch is not None and batch_size > attack.max_batch:
        return f"attack {attack.name!r} is defined for batches up to {attack.max_batch}, not {batch_size}"
    if attack.prepare_model is not Attack.prepare_model and threat.server != "malicious":
        return f'attack {attack.name!r} alters the model: it needs server = "malicious"'
    problem = threat_conflict(attack, threat)
    if problem:
        return problem
    made = [defenses.make(name, **params) for name, params in chain]
    for (name, _), defense in zip(chain, made, strict=True):
        if isinstance(defense, MixUp) and defense.pool == "batch" and batch_size < defense.k:
            return f"defense {name!r} mixes k={defense.k} images: batch size {batch_size} is too small"
    try:
        client_trainer(made)
    except ValueError as err:
        return f"defense chain {[n for n, _ in chain]}: {err}"
    return None


def vertical_conflict(threat: ThreatModel, chain: list[Any], normalization: str) -> str | None:
    """Why a vertical attack cannot run on this threat model and defense chain, or ``None``."""
    if not threat.knows_labels:
        return "the server of vertical FL holds the labels: a threat model withholding them does not apply to cafe"
    if threat.server != "honest" or threat.update != "gradient":
        return "vertical FL here has an honest server observing each iteration's gradient (server, update)"
    if normalization != "none":
        return "the vertical parties see raw pixels: the grid's normalization must be 'none'"
    if threat.augmentation != "none":
        return "the vertical parties train on their strips as they are: augmentation does not apply to cafe"
    try:
        check_vertical_defenses([defenses.make(name, **params) for name, params in chain])
    except ValueError as err:
        return str(err)  # "defense ... changes ..."
    return None


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file and expand it into cells.

    Raises:
        GridError: with ``file:line: [section] reason`` for the first problem found.
        FileNotFoundError: the file does not exist.
    """
    reader = _Reader(Path(path))
    for section in reader.doc:
        if section not in SECTIONS:
            raise reader.fail(section, 0, None, f"unknown section; expected some of {', '.join(SECTIONS)}")
    settings = reader.table("grid", GRID_KEYS)
    _ranges(reader, "grid", settings, GRID_RANGES)
    if settings["data"] not in data.REGISTRY:
        raise reader.fail(
            "grid", 0, "data", f"unknown dataset {settings['data']!r}; available: {', '.join(data.names())}"
        )
    if settings["normalization"] not in NORMALIZATIONS:
        raise reader.fail("grid", 0, "normalization", f"unknown normalization; available: {', '.join(NORMALIZATIONS)}")
    images = settings["images"]
    for b in settings["batch_sizes"]:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise reader.fail("grid", 0, "batch_sizes", f"batch size {b!r} must be a positive integer")
    if settings["channels"] == 2:
        raise reader.fail("grid", 0, "channels", "channels must be 1 (grey) or 3 (RGB), got 2")
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", str(settings["device"])):
        # whether this machine has it is checked when the grid runs (gradinv evaluate --device overrides it)
        raise reader.fail(
            "grid", 0, "device", f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {settings['device']!r}"
        )
    seeds = settings["seeds"]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63 for s in seeds):
        raise reader.fail("grid", 0, "seeds", "seeds must be a non-empty list of integers in [0, 2**63)")
    utility = None
    if "utility" in reader.doc:
        utility = reader.table("utility", UTILITY_KEYS)
        _ranges(reader, "utility", utility, UTILITY_RANGES)
        if utility["dataset"] not in data.REGISTRY:
            raise reader.fail("utility", 0, "dataset", f"unknown dataset {utility['dataset']!r}")
        if utility["epochs"] < 1 or utility["n"] < 2 or utility["batch_size"] < 1:
            raise reader.fail("utility", 0, None, "epochs and batch_size must be >= 1, n >= 2")
    if settings["pretrain_epochs"] < 0 or (settings["pretrain_epochs"] and utility is None):
        raise reader.fail("grid", 0, "pretrain_epochs", "pretrain_epochs must be >= 0 and needs a [utility] dataset")
    threats = _threats(reader, settings)
    labels = [label for label, _ in threats]
    if len(set(labels)) < len(labels):
        raise reader.fail("threats", 0, None, f"threat labels must differ, got {labels}")
    attack_list, defense_list = _attacks(reader, settings, labels), _defenses(reader, settings, labels)
    texts = {a for a, (name, *_) in enumerate(attack_list) if name in attacks.TEXT_REGISTRY}
    has_images = len(texts) < len(attack_list)
    model_list = _models(reader, settings, utility) if has_images or "models" in reader.doc else []
    text, text_models = None, []
    if texts or "text" in reader.doc or "text_models" in reader.doc:
        text = _text(reader)
        text_models = _text_models(reader, text)
    for b in settings["batch_sizes"]:
        if has_images and images % b:
            raise reader.fail(
                "grid", 0, "batch_sizes", f"batch size {b} must be a positive integer dividing images = {images}"
            )
        if texts and text is not None and text["sentences"] % b:
            raise reader.fail(
                "grid",
                0,
                "batch_sizes",
                f"batch size {b} must divide the text client's sentences = {text['sentences']}",
            )
    vertical = None
    vertical_attacks = [name for name, *_ in attack_list if name in attacks.REGISTRY]
    if any(attacks.REGISTRY[name].setting == "vertical" for name in vertical_attacks) or "vertical" in reader.doc:
        vertical = reader.table("vertical", VERTICAL_KEYS)
        _ranges(reader, "vertical", vertical, VERTICAL_RANGES)
        if settings["size"] % vertical["parties"]:
            raise reader.fail(
                "vertical", 0, "parties", f"{vertical['parties']} parties cannot split {settings['size']}-pixel rows"
            )
    grid = Grid(name=settings["name"], path=reader.path, settings={**settings, "utility": utility})
    adapted: set[int] = set()
    for (a, (name, options, attack_only, shown)), (threat_label, threat), b in itertools.product(
        enumerate(attack_list), threats, settings["batch_sizes"]
    ):
        for defense_label, chain, defense_only, d in defense_list:
            if any(b not in only[0] or threat_label not in only[1] for only in (attack_only, defense_only)):
                continue
            if options.get("adaptive") and not adaptable(chain):
                continue  # an adaptive attack runs against the defenses it adapts to; the plain entry covers the rest
            adapted.add(a)
            combination = {
                "batch_size": b,
                "threat": _threat_fields(threat),
                "threat_label": threat_label,
                "attack": name,
                "attack_options": options,
                "defenses": [[n, p] for n, p in chain],
                "defense_label": defense_label,
                # only when it says more than the name, so that the keys (and the resumable results) of grids
                # without labels stay as they were; attack_label() reads the label back
                **({"attack_label": shown} if shown != name else {}),
            }
            if a in texts:
                assert text is not None
                for model in text_models:
                    problem = text_conflict(attacks.TEXT_REGISTRY[name], options, threat, model, chain)
                    if problem:
                        where = f"text model {model.get('model_label', model['model'])!r}, threat {threat_label!r}"
                        raise _impossible(reader, a, d, f"{where}, defense {defense_label!r}", problem)
                    for seed in settings["seeds"]:
                        grid.cells.append(
                            Cell(
                                {
                                    "modality": "text",
                                    **model,
                                    "text": {k: text[k] for k in TEXT_KEYS},
                                    **combination,
                                    "seed": seed,
                                    "utility": None,
                                }
                            )
                        )
                continue
            attack_class = attacks.REGISTRY[name]
            if attack_class.setting == "vertical":
                problem = vertical_conflict(threat, chain, settings["normalization"])
            else:
                problem = conflict(attack_class, options, threat, b, chain)
            if problem:
                where = f"threat {threat_label!r}, batch size {b}, defense {defense_label!r}"
                raise _impossible(reader, a, d, where, problem)
            cell_models = model_list
            if attack_class.setting == "vertical" and vertical is not None:
                cell_models = [{"model": "vertical", "model_options": {"parties": vertical["parties"]}}]
            for model, seed in itertools.product(cell_models, settings["seeds"]):
                epochs = model.get("pretrain_epochs", settings["pretrain_epochs"])
                model = {k: v for k, v in model.items() if k != "pretrain_epochs"}
                grid.cells.append(
                    Cell(
                        {
                            **model,
                            **{
                                k: settings[k]
                                for k in ("data", "root", "size", "channels", "num_classes", "normalization")
                            },
                            "images": images,
                            "client_images": settings["client_images"] or images,
                            **combination,
                            "seed": seed,
                            "utility": None if model["model"] == "vertical" else utility,
                            **({"vertical": vertical} if model["model"] == "vertical" else {}),
                            # only when set, so that the keys of grids without pretraining stay as they were
                            **({"pretrain_epochs": epochs} if epochs and model["model"] != "vertical" else {}),
                        }
                    )
                )
    for a, (_name, options, _, shown) in enumerate(attack_list):
        if options.get("adaptive") and a not in adapted:
            raise GridError(
                f"{reader.path}:{_line(reader.lines, 'attacks', a, None)}: [attacks] {shown!r} is adaptive, but no "
                f"defense of the grid has an adaptive counterpart (those exist for {sorted(ADAPTABLE)})"
            )
    return grid


def _impossible(reader: _Reader, attack: int, defense: int, where: str, problem: str) -> GridError:
    """An impossible combination's error, at the line of the defense entry when the defense is the problem, else of
    the attack entry."""
    table, index = ("defenses", defense) if problem.startswith("defense") else ("attacks", attack)
    line = _line(reader.lines, table, index, None)
    return GridError(f"{reader.path}:{line}: impossible combination ({where}): {problem}")


def _threat_fields(threat: ThreatModel) -> dict[str, Any]:
    """A cell's threat: its fields but the normalisation (set once, in [grid]) and the quiet ones at their
    defaults (:data:`QUIET_THREAT_FIELDS`)."""
    return {
        k: v
        for k, v in threat.to_dict().items()
        if k != "normalization" and (k not in QUIET_THREAT_FIELDS or v != QUIET_THREAT_FIELDS[k])
    }


def adaptable(chain: list[tuple[str, dict[str, Any]]]) -> bool:
    """Whether an adaptive attack can account for every defense of ``chain`` (and there is one)."""
    return bool(chain) and all(name in ADAPTABLE for name, _ in chain)
