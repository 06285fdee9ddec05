"""What the attacker sees: the threat model, the observation it grants, and the reconstruction an attack returns.

The vocabulary follows breaching (Geiping et al.) and the SoK of Carletti et al. (USENIX Security 2025): the server is
honest-but-curious or malicious; the client shares one gradient (FedSGD) or a FedAvg update after local steps; side
information (labels, batch size, BatchNorm statistics, input normalisation) is granted or withheld one switch at a time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gradinv.validation import check_update

Normalization = tuple[tuple[float, ...], tuple[float, ...]]

_SERVERS = ("honest", "malicious")
_UPDATES = ("gradient", "fedavg")
_BN_MODES = ("train", "eval")


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
            mini-batch ``t mod ceil(N / local_batch_size)`` in data order.
        knows_labels: the attacker is given the batch's labels.
        knows_batch_size: the attacker is given the number of samples in the batch.
        bn_mode: the client's BatchNorm (and dropout) mode, ``"train"`` or ``"eval"``.
        knows_bn_stats: the attacker is given the batch's BatchNorm statistics (mean, variance of each BN input).
        normalization: the client's input normalisation ``((mean per channel), (std per channel))``, or ``None`` for
            none; the model is fed ``(x - mean) / std`` of pixel images ``x`` in [0, 1].
    """

    server: Literal["honest", "malicious"] = "honest"
    update: Literal["gradient", "fedavg"] = "gradient"
    local_steps: int = 5
    local_lr: float = 1e-4
    local_batch_size: int | None = None
    knows_labels: bool = False
    knows_batch_size: bool = True
    bn_mode: Literal["train", "eval"] = "train"
    knows_bn_stats: bool = False
    normalization: Normalization | None = None

    def __post_init__(self) -> None:
        _check_choice("server", self.server, _SERVERS)
        _check_choice("update", self.update, _UPDATES)
        _check_choice("bn_mode", self.bn_mode, _BN_MODES)
        if not isinstance(self.local_steps, int) or self.local_steps < 1:
            raise ValueError(f"ThreatModel.local_steps must be an integer >= 1, got {self.local_steps!r}")
        if not float(self.local_lr) > 0:
            raise ValueError(f"ThreatModel.local_lr must be > 0, got {self.local_lr!r}")
        if self.local_batch_size is not None and (
            not isinstance(self.local_batch_size, int) or self.local_batch_size < 1
        ):
            raise ValueError(f"ThreatModel.local_batch_size must be None or >= 1, got {self.local_batch_size!r}")
        if self.normalization is not None:
            object.__setattr__(self, "normalization", _check_normalization(self.normalization))

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


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"ThreatModel.{name} must be one of {choices}, got {value!r}")


def _check_normalization(norm: Any) -> Normalization:
    try:
        mean, std = (tuple(float(v) for v in part) for part in norm)
    except (TypeError, ValueError) as err:
        raise ValueError(f"normalization must be ((mean, ...), (std, ...)), got {norm!r}") from err
    if len(mean) != len(std) or not mean:
        raise ValueError(f"normalization mean and std must have the same non-zero length, got {norm!r}")
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
        model_spec: ``{"name": ..., **kwargs}`` when the model came from ``gi.models.make`` (lets ``load`` rebuild it).
        defenses: the configuration of each defense the client applied, in order.
    """

    model: nn.Module
    update: dict[str, torch.Tensor]
    threat: ThreatModel
    image_shape: tuple[int, int, int]
    num_classes: int
    labels: torch.Tensor | None = None
    batch_size: int | None = None
    bn_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
    model_spec: dict[str, Any] | None = None
    defenses: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_update(self.model, self.update)
        if self.labels is not None and not self.threat.knows_labels:
            raise ValueError("the threat model withholds labels, yet the observation carries them")
        if self.batch_size is not None and not self.threat.knows_batch_size:
            raise ValueError("the threat model withholds the batch size, yet the observation carries it")
        if self.bn_stats is not None and not self.threat.knows_bn_stats:
            raise ValueError("the threat model withholds BatchNorm statistics, yet the observation carries them")

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
        meta = json.loads((folder / "observation.json").read_text())
        if meta.get("format") != "gradinv.observation/1":
            raise ValueError(f"{folder} is not a gradinv observation (format {meta.get('format')!r})")
        tensors = load_file(str(folder / "tensors.safetensors"))
        threat = ThreatModel.from_dict(_tuples(meta["threat"]))
        if model is None:
            if meta["model_spec"] is None:
                raise ValueError("this observation's model is not from gi.models.make: pass model=<your nn.Module>")
            from gradinv import models

            spec = dict(meta["model_spec"])
            model = models.make(spec.pop("name"), **_tuples(spec))
        state = {k[len("state/") :]: v for k, v in tensors.items() if k.startswith("state/")}
        model.load_state_dict(state)
        model.train(threat.bn_mode == "train")
        update = {k[len("update/") :]: v for k, v in tensors.items() if k.startswith("update/")}
        bn = {n: (tensors[f"bn_mean/{n}"], tensors[f"bn_var/{n}"]) for n in meta["bn_names"]}
        return cls(
            model=model,
            update=update,
            threat=threat,
            image_shape=tuple(meta["image_shape"]),  # type: ignore[arg-type]
            num_classes=int(meta["num_classes"]),
            labels=tensors.get("labels"),
            batch_size=meta["batch_size"],
            bn_stats=bn or None,
            model_spec=meta["model_spec"],
            defenses=meta.get("defenses", []),
        )


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
        labels: ``(N,)`` int64 recovered labels, or ``None`` if the attack recovers none.
        trace: the attack's objective per step.
        seconds: wall time of the attack.
        residual: the reconstruction's own update recomputed under the observed model, against the observed update:
            ``cosine`` similarity and ``rel_l2`` (``||u' - u|| / ||u||``). Needs no ground truth; ~0 ``rel_l2``
            certifies an exact reconstruction.
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


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` fill a temporary file beside ``path`` (same suffix), then rename it into place, so a reader
    never sees half a file."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text))
