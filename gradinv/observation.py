"""What the attacker sees: the threat model, the observation it grants, and the reconstruction an attack returns.

The vocabulary follows breaching (Geiping et al.) and the SoK of Carletti et al. (USENIX Security 2025): the server is
honest-but-curious or malicious; the client shares one gradient (FedSGD) or a FedAvg update after local steps; side
information (labels, batch size, BatchNorm statistics, input normalisation) is granted or withheld one switch at a time.
"""

from __future__ import annotations

import copy
import json
import math
import os
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gradinv import models
from gradinv.validation import (
    check_device,
    check_model_spec,
    check_observation_fields,
    check_update,
    check_value,
)

Normalization = tuple[tuple[float, ...], tuple[float, ...]]

UNKNOWN_LABEL = -1
"""The label of a returned image whose class the attack could not tell (``Reconstruction.labels``)."""


@dataclass(frozen=True)
class ThreatModel:
    """What the server is, what the client shares, and which side information the attacker has.

    Attributes:
        server: ``"honest"`` (honest-but-curious, follows the protocol) or ``"malicious"`` (may alter the model).
        update: ``"gradient"`` (one gradient of the mean batch loss, FedSGD) or ``"fedavg"`` (the weight difference
            ``w_before - w_after`` after ``local_steps`` SGD steps of size ``local_lr``).
        local_steps: SGD steps the client takes when ``update == "fedavg"``.
        local_lr: the client's learning rate when ``update == "fedavg"``.
        local_batch_size: mini-batch size of the local steps (``None``: the whole batch each step). Step ``t`` uses
            mini-batch ``t mod ceil(N / local_batch_size)`` in data order, or, with ``local_shuffle``, of that epoch's
            order.
        local_shuffle: the client reshuffles its data before each pass over it (each local epoch), with a private
            seed, as data loaders do: which images made up which mini-batch is unknown to the attacker (Dimitrov et
            al., TMLR 2022; ``fedavg_leakage``).
        knows_labels: the attacker is given the batch's labels.
        knows_batch_size: the attacker is given the number of samples in the batch.
        bn_mode: the client's BatchNorm (and dropout) mode, ``"train"`` or ``"eval"``.
        knows_bn_stats: the attacker is given the batch's BatchNorm statistics (mean, variance of each BN input).
        normalization: the client's input normalisation ``((mean per channel), (std per channel))``, or ``None`` for
            none; the model is fed ``(x - mean) / std`` of pixel images ``x`` in [0, 1].
        shares_buffers: the client also sends its buffers after training (BatchNorm's running mean and variance), as
            frameworks that average the whole state dict do. With BatchNorm in train mode and one shared gradient they
            carry the batch's own statistics (:func:`gradinv.attacks.objectives.statistics_from_buffers`).
        knows_training: the attacker knows the client's training details (local steps, learning rate, mini-batches):
            needed to interpret a FedAvg update (the SoK's "training details", threat models C and above).
        augmentation: the client augments its images before each pass over them, with private draws, as training
            pipelines do (:mod:`gradinv.fl.augmentation`): ``"none"``; ``"flip"``, a horizontal flip with probability
            1/2; ``"crop_flip"``, that flip and a random crop of the image zero-padded by an eighth of its size (He et
            al.'s CIFAR augmentation). A FedAvg client draws afresh for every local epoch. The attacker knows the
            family, not the draws.
        sok: the threat model of Carletti et al.'s SoK (USENIX Security 2025) this one was built from
            (:meth:`preset`), ``"A"``-``"H"``; ``None``: set field by field. With a letter, the knowledge fields
            must be the letter's (:data:`SOK_PRESETS`) and attacks the SoK grades above it are refused.
    """

    server: Literal["honest", "malicious"] = "honest"
    update: Literal["gradient", "fedavg"] = "gradient"
    local_steps: int = 5
    local_lr: float = 1e-4
    local_batch_size: int | None = None
    local_shuffle: bool = False
    knows_labels: bool = False
    knows_batch_size: bool = True
    bn_mode: Literal["train", "eval"] = "train"
    knows_bn_stats: bool = False
    normalization: Normalization | None = None
    knows_training: bool = True
    shares_buffers: bool = False
    augmentation: Literal["none", "flip", "crop_flip"] = "none"
    sok: Literal["A", "B", "C", "D", "E", "F", "G", "H"] | None = None

    @classmethod
    def preset(cls, letter: str, **client: Any) -> ThreatModel:
        """The SoK's threat model ``letter`` (Carletti et al., USENIX Security 2025, Sec. 3; :data:`SOK_PRESETS`).

        The letter sets what the attacker knows: ``server`` (malicious with active manipulation, F-H),
        ``knows_training`` (training details, C and above), ``knows_bn_stats`` and ``knows_labels`` (the client
        data's distribution, E only); the batch size is known in all (FedAvg weighs clients by it). ``client`` sets
        how the client trains, which no letter fixes: ``update``, ``local_steps``, ``local_lr``,
        ``local_batch_size``, ``local_shuffle``, ``bn_mode``, ``normalization``, ``shares_buffers``, ``augmentation``.

        Raises:
            ValueError: an unknown letter, or ``client`` naming a field the letter sets.
        """
        if letter not in SOK_PRESETS:
            raise ValueError(f"unknown SoK threat model {letter!r}; available: {', '.join(SOK_PRESETS)}")
        fixed = sok_fields(letter)
        clash = sorted(set(client) & (set(fixed) | {"sok"}))
        if clash:
            raise ValueError(
                f"threat model {letter} ({SOK_PRESETS[letter][0]}) sets {', '.join(clash)} itself; "
                "pass only how the client trains (update, local_steps, local_lr, local_batch_size, local_shuffle, "
                "bn_mode, normalization, shares_buffers, augmentation) or build the ThreatModel field by field"
            )
        return cls(sok=letter, **fixed, **client)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(ThreatModel)
        for f in fields(self):
            if f.name != "normalization":
                check_value(f"ThreatModel.{f.name}", getattr(self, f.name), hints[f.name])
        if self.local_steps < 1:
            raise ValueError(f"ThreatModel.local_steps must be an integer >= 1, got {self.local_steps!r}")
        if not self.local_lr > 0:
            raise ValueError(f"ThreatModel.local_lr must be > 0, got {self.local_lr!r}")
        if self.local_batch_size is not None and self.local_batch_size < 1:
            raise ValueError(f"ThreatModel.local_batch_size must be None or >= 1, got {self.local_batch_size!r}")
        if self.update == "gradient":
            local = {
                f.name: getattr(self, f.name)
                for f in fields(self)
                if f.name in ("local_steps", "local_lr", "local_batch_size", "local_shuffle")
                and getattr(self, f.name) != f.default
            }
            if local:
                raise ValueError(
                    f"ThreatModel: {', '.join(f'{k}={v!r}' for k, v in local.items())} describe FedAvg local training, "
                    'but update="gradient" shares one gradient; set update="fedavg" or leave them out'
                )
        if self.normalization is not None:
            object.__setattr__(self, "normalization", _check_normalization(self.normalization))
        if self.sok is not None:
            wrong = {k: v for k, v in sok_fields(self.sok).items() if getattr(self, k) != v}
            if wrong:
                raise ValueError(
                    f"ThreatModel.sok={self.sok!r} ({SOK_PRESETS[self.sok][0]}) means "
                    f"{', '.join(f'{k}={v!r}' for k, v in wrong.items())}; build it with ThreatModel.preset("
                    f"{self.sok!r}) or drop sok to set the fields one by one"
                )

    def as_gradient(self) -> ThreatModel:
        """The same threat model for a client that shares its gradient (the local-training fields reset)."""
        defaults: dict[str, Any] = {f.name: f.default for f in fields(self) if f.name.startswith("local_")}
        return replace(self, update="gradient", **defaults)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ThreatModel:
        """The inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ThreatModel fields {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**data)


SOK_KNOWLEDGE = {
    "updates": "the client's updates (and the model it trained)",
    "basic": "basic knowledge of the data domain (pixel range, input normalisation, image priors such as TV)",
    "training": "the client's training details (local steps, learning rate, mini-batches)",
    "surrogate": "surrogate data from the client's domain (to train a generative prior, place imprint bins)",
    "distribution": "the client data's distribution (its batch's BatchNorm statistics, its labels)",
    "active": "active manipulation (the server alters the model it sends)",
    "selection": "client selection (the server picks or injects clients)",
}
"""The columns of the SoK's threat-model table (Carletti et al., USENIX Security 2025, Table 1)."""

_EAVESDROPPER = frozenset({"updates"})
_INFORMED = _EAVESDROPPER | {"basic"}
_PARAMETERS = _INFORMED | {"training"}
_DATA = _PARAMETERS | {"surrogate"}
_MANIPULATOR = _PARAMETERS | {"active"}

SOK_PRESETS: dict[str, tuple[str, frozenset[str]]] = {
    "A": ("Eavesdropper", _EAVESDROPPER),
    "B": ("Informed Eavesdropper", _INFORMED),
    "C": ("Parameter-Aware Eavesdropper", _PARAMETERS),
    "D": ("Data-Enhanced Eavesdropper", _DATA),
    "E": ("Statistical-Informed Eavesdropper", _DATA | {"distribution"}),
    "F": ("Active Manipulator", _MANIPULATOR),
    "G": ("Data-Enhanced Manipulator", _MANIPULATOR | {"surrogate"}),
    "H": ("Active Client Manipulator", _MANIPULATOR | {"surrogate", "selection"}),
}
"""The SoK's threat models A-H: name and what the attacker has (Carletti et al. 2025, Table 1; the authors' table at
github.com/gparrella12/sok_gias_fl). An attack graded ``X`` runs under ``Y`` when ``Y`` has all that ``X`` has."""


def sok_fields(letter: str) -> dict[str, Any]:
    """The :class:`ThreatModel` knowledge fields that SoK threat model ``letter`` sets."""
    has = SOK_PRESETS[letter][1]
    return {
        "server": "malicious" if "active" in has else "honest",
        "knows_training": "training" in has,
        "knows_bn_stats": "distribution" in has,
        "knows_labels": "distribution" in has,
        "knows_batch_size": True,
    }


def sok_missing(threat: str, needed: str) -> list[str]:
    """What SoK threat model ``needed`` has that ``threat`` lacks (empty: an attack graded ``needed`` runs)."""
    return sorted(SOK_PRESETS[needed][1] - SOK_PRESETS[threat][1], key=list(SOK_KNOWLEDGE).index)


def _check_normalization(norm: Any) -> Normalization:
    try:
        mean, std = (tuple(float(v) for v in part) for part in norm)
    except (TypeError, ValueError) as err:
        raise ValueError(f"normalization must be ((mean, ...), (std, ...)), got {norm!r}") from err
    if len(mean) != len(std) or not mean:
        raise ValueError(f"normalization mean and std must have the same non-zero length, got {norm!r}")
    if not all(math.isfinite(v) for v in mean + std):
        raise ValueError(f"normalization must be finite numbers, got {norm!r}")
    if any(s <= 0 for s in std):
        raise ValueError(f"normalization std must be > 0 everywhere, got {std}")
    return mean, std


@dataclass
class Observation:
    """All the attacker sees: the broadcast model, the shared update, and the side information the threat grants.

    Attributes:
        model: the model at the broadcast weights, in the client's ``bn_mode``.
        update: the shared update by parameter name (``model.named_parameters()`` order): a gradient, or
            ``w_before - w_after`` for FedAvg.
        threat: the threat model this observation was made under.
        image_shape: ``(C, H, W)`` of one input, public because the server defines the input format.
        num_classes: the model's number of outputs.
        labels: ``(N,)`` int64 labels, only if ``threat.knows_labels`` (``(N, K)`` soft labels when a defense mixes
            them: MixUp, InstaHide).
        batch_size: ``N``, only if ``threat.knows_batch_size``.
        bn_stats: per BatchNorm module name, the batch ``(mean, var)`` of its input, only if ``threat.knows_bn_stats``.
        buffers: the client's buffers after its training, by name (``model.named_buffers()``), only if
            ``threat.shares_buffers``.
        model_spec: ``{"name": ..., **kwargs}`` when the model came from ``gi.models.make`` (lets ``load`` rebuild it).
        defenses: the configuration of each defense the client applied, in order.
        model_training: how the broadcast model was trained before this round (``gi.evaluate.pretrain``'s records,
            oldest first: dataset, epochs, steps, learning rate, seed, accuracy reached); empty for a model at its
            initialisation or of unknown history.
    """

    model: nn.Module
    update: dict[str, torch.Tensor]
    threat: ThreatModel
    image_shape: tuple[int, int, int]
    num_classes: int
    labels: torch.Tensor | None = None
    batch_size: int | None = None
    bn_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
    buffers: dict[str, torch.Tensor] | None = None
    model_spec: dict[str, Any] | None = None
    defenses: list[dict[str, Any]] = field(default_factory=list)
    model_training: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_update(self.model, self.update)
        if not isinstance(self.model_training, list) or not all(isinstance(r, dict) for r in self.model_training):
            raise TypeError(f"model_training must be a list of records (dicts), got {self.model_training!r}")
        if not isinstance(self.threat, ThreatModel):
            raise TypeError(f"threat must be a gi.ThreatModel, got {type(self.threat).__name__}")
        check_observation_fields(self.image_shape, self.num_classes, self.batch_size, self.labels, self.bn_stats)
        if self.labels is not None and not self.threat.knows_labels:
            raise ValueError("the threat model withholds labels, yet the observation carries them")
        if self.batch_size is not None and not self.threat.knows_batch_size:
            raise ValueError("the threat model withholds the batch size, yet the observation carries it")
        if self.bn_stats is not None and not self.threat.knows_bn_stats:
            raise ValueError("the threat model withholds BatchNorm statistics, yet the observation carries them")
        if (self.buffers is not None) != self.threat.shares_buffers:
            raise ValueError(
                "the observation's buffers must be given exactly when threat.shares_buffers is set "
                f"(shares_buffers={self.threat.shares_buffers}; buffers given: {self.buffers is not None})"
            )
        if self.buffers is not None:
            expected = dict(self.model.named_buffers())
            if set(self.buffers) != set(expected) or any(
                not isinstance(v, torch.Tensor) or v.shape != expected[k].shape for k, v in self.buffers.items()
            ):
                raise ValueError(
                    f"buffers must match the model's named buffers {sorted(expected)} in name and shape, "
                    f"got {sorted(self.buffers)}"
                )

    def to(self, device: str | torch.device | None) -> Observation:
        """A copy of this observation on ``device`` (model, update, labels, BN statistics); ``self`` is unchanged.

        On disk an observation is device-independent (``save`` writes CPU tensors); attacks call this when given a
        ``device``."""
        chosen = check_device(device)
        return replace(
            self,
            model=copy.deepcopy(self.model).to(chosen),
            update={k: v.detach().to(chosen) for k, v in self.update.items()},
            labels=None if self.labels is None else self.labels.to(chosen),
            bn_stats=None
            if self.bn_stats is None
            else {k: (m.to(chosen), v.to(chosen)) for k, (m, v) in self.bn_stats.items()},
            buffers=None if self.buffers is None else {k: v.to(chosen) for k, v in self.buffers.items()},
            defenses=list(self.defenses),
            model_training=list(self.model_training),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``observation.json`` and ``tensors.safetensors`` into folder ``path`` (no pickle: safe to load)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"update/{k}": v for k, v in self.update.items()}
        tensors.update({f"state/{k}": v for k, v in self.model.state_dict().items()})
        if self.labels is not None:
            tensors["labels"] = self.labels
        for name, (mean, var) in (self.bn_stats or {}).items():
            tensors[f"bn_mean/{name}"], tensors[f"bn_var/{name}"] = mean, var
        tensors.update({f"buffer/{k}": v for k, v in (self.buffers or {}).items()})
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
        meta = {
            "format": "gradinv.observation/1",
            "threat": self.threat.to_dict(),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "batch_size": self.batch_size,
            "model_spec": self.model_spec,
            "bn_names": sorted(self.bn_stats or {}),
            "defenses": self.defenses,
            "model_training": self.model_training,
        }
        atomic_write(folder / "tensors.safetensors", lambda tmp: save_file(tensors, str(tmp)))
        atomic_write_text(folder / "observation.json", json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, model: nn.Module | None = None) -> Observation:
        """Read a folder written by :meth:`save`.

        Args:
            path: the folder.
            model: the architecture to load the broadcast weights into; needed unless the observation was made
                with a model from ``gi.models.make`` (then it is rebuilt from ``model_spec``).
        """
        folder = Path(path)
        meta, tensors = _read(folder)
        source = str(folder / "observation.json")
        try:
            threat = ThreatModel.from_dict(_tuples(meta["threat"]))
            spec = check_model_spec(meta["model_spec"], source)
            image_shape = tuple(meta["image_shape"]) if isinstance(meta["image_shape"], list) else meta["image_shape"]
            check_observation_fields(image_shape, meta["num_classes"], meta["batch_size"], tensors.get("labels"), None)
            bn_names, defenses = meta["bn_names"], meta.get("defenses", [])
            if not isinstance(bn_names, list) or not all(isinstance(n, str) for n in bn_names):
                raise ValueError("bn_names must be a list of names")
            if not isinstance(defenses, list) or not all(isinstance(d, dict) for d in defenses):
                raise ValueError("defenses must be a list of objects")
            training = meta.get("model_training", [])
            if not isinstance(training, list) or not all(isinstance(r, dict) for r in training):
                raise ValueError("model_training must be a list of objects")
            bn = {n: (tensors[f"bn_mean/{n}"], tensors[f"bn_var/{n}"]) for n in bn_names}
        except KeyError as err:
            raise ValueError(f"{source} (or its tensors) lacks the entry {err.args[0]!r}") from err
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err
        if model is None:
            if spec is None:
                raise ValueError("this observation's model is not from gi.models.make: pass model=<your nn.Module>")
            spec = dict(spec)
            model = models.make(str(spec.pop("name")), **_tuples(spec))
        state = {k[len("state/") :]: v for k, v in tensors.items() if k.startswith("state/")}
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{folder}: the saved weights do not fit the model: {err}") from err
        model.train(threat.bn_mode == "train")
        update = {k[len("update/") :]: v for k, v in tensors.items() if k.startswith("update/")}
        observation = cls(
            model=model,
            update=update,
            threat=threat,
            image_shape=image_shape,  # type: ignore[arg-type]
            num_classes=int(meta["num_classes"]),
            labels=tensors.get("labels"),
            batch_size=meta["batch_size"],
            bn_stats=bn or None,
            buffers={k[len("buffer/") :]: v for k, v in tensors.items() if k.startswith("buffer/")}
            if threat.shares_buffers
            else None,
            model_spec=spec,
            defenses=defenses,
            model_training=training,
        )
        outputs = models.num_outputs(model, observation.image_shape)
        if outputs != observation.num_classes:
            raise ValueError(f"{source}: num_classes is {observation.num_classes}, the model has {outputs} outputs")
        return observation


def _read(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``observation.json`` (an object of the right format) and the tensors of a saved observation."""
    meta_path, tensor_path = folder / "observation.json", folder / "tensors.safetensors"
    for path in (meta_path, tensor_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {folder} is not a saved gradinv observation")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{meta_path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != "gradinv.observation/1":
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{meta_path} is not a gradinv observation (format {found!r})")
    try:
        tensors = load_file(str(tensor_path))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        raise ValueError(f"{tensor_path} cannot be read as safetensors: {err}") from err
    return meta, tensors


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; turn nested lists back into tuples."""

    def conv(v: Any) -> Any:
        return tuple(conv(x) for x in v) if isinstance(v, list) else v

    return {k: conv(v) for k, v in data.items()}


@dataclass
class Reconstruction:
    """What an attack returns.

    Attributes:
        images: ``(N, C, H, W)`` reconstructions in pixel space, in [0, 1].
        labels: ``(N,)`` int64 labels, one per returned image and aligned with it (``labels[i]`` is the class the
            attack gives ``images[i]``); :data:`UNKNOWN_LABEL` (-1) for an image whose class the attack could not
            tell. ``None`` if the attack recovers no labels at all.
        trace: the attack's objective per step.
        seconds: wall time of the attack.
        residual: the reconstruction's own update recomputed under the observed model, against the observed update:
            ``cosine`` similarity and ``rel_l2`` (``||u' - u|| / ||u||``). Needs no ground truth. A small ``rel_l2``
            says the answer is *consistent* with what was observed, not that it is the client's data: where the
            update does not determine the input (a rank-deficient layer, a partial batch) other inputs reproduce it
            too. Empty when some returned image has no label.
        certified: one bool per returned image: True only where the attack's own uniqueness condition proves the
            image is the client's (see ``certificate``). Optimisation attacks never certify.
        certificate: the evidence behind ``certified`` (or why nothing is certified), in words.
        label_counts: ``(K,)`` int64 counts of each class in the batch, from the classifier's gradient (LLG), when
            some image's label is unknown: the batch's labels without saying which image has which.
        attack: the attack's registry name.
        config: the attack's hyperparameters.
        info: extra attack-specific results (e.g. how the labels were obtained).
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    trace: list[float]
    seconds: float
    residual: dict[str, float] = field(default_factory=dict)
    attack: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    certified: list[bool] = field(default_factory=list)
    certificate: str = ""
    label_counts: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not self.certified:
            self.certified = [False] * int(self.images.shape[0])
        if len(self.certified) != self.images.shape[0]:
            raise ValueError(f"certified has {len(self.certified)} entries for {self.images.shape[0]} images")


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` fill a temporary file beside ``path`` (same suffix), then rename it into place, so a reader
    never sees half a file."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text))
