"""The attack contract: ``Attack.reconstruct(observation) -> Reconstruction``.

An attack sees one :class:`~gradinv.observation.Observation` and nothing else; it never reads ground truth.
"""

from __future__ import annotations

import contextlib
import copy
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from gradinv.attacks.certify import CERTIFIED_RESIDUAL
from gradinv.fl.client import compute_update, normalize
from gradinv.observation import (
    SOK_KNOWLEDGE,
    SOK_PRESETS,
    UNKNOWN_LABEL,
    Observation,
    Reconstruction,
    ThreatModel,
    sok_missing,
)
from gradinv.validation import check_device

Callback = Callable[[int, int, float], None]
"""Called as ``callback(step, total_steps, loss)`` after each step of an attack."""


@dataclass
class Result:
    """What an attack's algorithm hands back to :meth:`Attack.reconstruct`.

    ``certified`` (exact attacks only) flags the images the attack's own uniqueness condition proves, with the
    evidence in ``certificate``; ``whole_batch`` says those flags also need the whole batch's residual (checked by
    :meth:`Attack.reconstruct`). ``labels`` may hold :data:`~gradinv.observation.UNKNOWN_LABEL` where an image's
    class is unknown; ``label_counts`` then gives the batch's label counts.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    trace: list[float]
    info: dict[str, Any] = field(default_factory=dict)
    certified: list[bool] | None = None
    certificate: str = ""
    whole_batch: bool = False
    label_counts: torch.Tensor | None = None


class Attack(ABC):
    """Base class: subclasses set ``name`` and ``requires`` and implement :meth:`run`.

    ``requires`` names the side information the attack cannot do without: ``"batch_size"`` (unless the attack
    was given a ``batch_size`` guess) and ``"labels"``. ``sok`` is the weakest threat model of Carletti et al.'s SoK
    (USENIX Security 2025) the attack's paper runs under, as that SoK grades it; under a threat built from a letter
    (``ThreatModel.preset``) an attack graded above it is refused.
    """

    name: ClassVar[str]
    kind: ClassVar[str] = "attack"
    requires: ClassVar[frozenset[str]] = frozenset()
    max_batch: ClassVar[int | None] = None
    """The largest batch the attack is defined for (``None``: any)."""
    exact: ClassVar[bool] = False
    """Analytic: where its conditions hold the answer is the data itself, whatever the seed."""
    sok: ClassVar[str | None] = None
    """The SoK's grade of the attack's paper (``"A"``-``"H"``; ``None``: not graded)."""
    setting: ClassVar[str] = "horizontal"
    """What it attacks: ``"horizontal"``, a :class:`~gradinv.Observation` of one client's update; ``"vertical"``, a
    :class:`~gradinv.fl.vertical.VerticalObservation` of a vertical FL run (CAFE)."""

    def reconstruct(
        self,
        observation: Observation,
        *,
        callback: Callback | None = None,
        device: str | torch.device | None = None,
    ) -> Reconstruction:
        """Reconstruct the client's images (and labels) from what the server observed.

        Args:
            observation: all the attacker sees.
            callback: optional ``callback(step, total_steps, loss)`` for progress.
            device: where the optimisation attacks run their model (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``;
                default the CPU). Exact attacks do their algebra in float64 on the CPU whatever ``device`` says
                (their cost is linear algebra, not model evaluations); ``info["device"]`` records where it ran.
                The reconstruction comes back on the CPU either way.

        Raises:
            ValueError: the observation lacks side information this attack needs, or ``device`` is not available.
        """
        if not isinstance(observation, Observation):
            raise TypeError(f"reconstruct expects a gi.Observation, got {type(observation).__name__}")
        chosen = check_device(device)
        self.check(observation)
        on = torch.device("cpu") if self.exact else chosen
        work = observation if attacker_device(observation) == on else observation.to(on)
        start = time.perf_counter()
        result = self.run(work, callback)
        seconds = time.perf_counter() - start
        images = result.images.detach().clamp(0.0, 1.0)
        labels = None if result.labels is None else result.labels.detach()
        known = labels is not None and (labels.dim() == 2 or bool((labels != UNKNOWN_LABEL).all()))
        residual = gradient_residual(work, images.to(on), labels.to(on)) if known and labels is not None else {}
        certified, certificate = self._certify(work, result, residual, images.shape[0])
        return Reconstruction(
            images=images.cpu(),
            # soft (N, K) targets (known labels of MixUp encodings) name no class per image: not reported as labels
            labels=None if labels is None or labels.dim() != 1 else labels.long().cpu(),
            trace=result.trace,
            seconds=seconds,
            residual=residual,
            attack=self.name,
            config=self.config(),
            info={**result.info, "device": str(on)},
            certified=certified,
            certificate=certificate,
            label_counts=None if result.label_counts is None else result.label_counts.cpu(),
        )

    def _certify(
        self, observation: Observation, result: Result, residual: dict[str, float], n: int
    ) -> tuple[list[bool], str]:
        """The attack's per-image certificates, withdrawn where the whole batch's residual contradicts them."""
        if not self.exact:
            return [False] * n, "optimisation attack: never certified (the residual says how consistent it is)"
        flags = list(result.certified) if result.certified is not None else [False] * n
        text = result.certificate or "no certificate"
        if not any(flags):
            return flags, text
        rel = residual.get("rel_l2")
        if result.whole_batch and (observation.batch_size != n or rel is None or rel >= CERTIFIED_RESIDUAL):
            why = (
                "the batch size is not granted"
                if observation.batch_size is None
                else f"{n} images for a batch of {observation.batch_size}"
                if observation.batch_size != n
                else "no residual (a label is unknown)"
                if rel is None
                else f"the batch's residual {rel:.2g} is not below {CERTIFIED_RESIDUAL:g}"
            )
            return [False] * n, f"{text}; withdrawn: {why}"
        if all(flags) and n == observation.batch_size and rel is not None and rel >= CERTIFIED_RESIDUAL:
            return [False] * n, f"{text}; withdrawn: the certified batch's residual is {rel:.2g}"
        return flags, text

    def check(self, observation: Observation) -> None:
        """Raise ``ValueError`` if the observation lacks what this attack needs."""
        problem = threat_conflict(self, observation.threat)
        if problem:
            raise ValueError(problem)
        if "labels" in self.requires and observation.labels is None:
            raise ValueError(f"attack {self.name!r} needs the labels, which the threat model withholds")
        guess = getattr(self, "batch_size", None)
        if "batch_size" in self.requires and observation.batch_size is None and guess is None:
            raise ValueError(
                f"attack {self.name!r} needs the batch size, which the threat model withholds; "
                f"pass batch_size=<guess> to the attack"
            )

    def prepare_model(self, model: torch.nn.Module, threat: ThreatModel) -> torch.nn.Module:
        """The model the server broadcasts. An honest server sends ``model`` as it is; malicious attacks override
        this to return a modified model (and require ``threat.server == "malicious"``)."""
        return model

    def config(self) -> dict[str, Any]:
        """The attack's hyperparameters (its public attributes)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    @abstractmethod
    def run(self, observation: Observation, callback: Callback | None) -> Result:
        """The algorithm."""

    def batch_size_of(self, observation: Observation) -> int:
        """The batch size the threat model grants, else the attack's ``batch_size`` guess."""
        size = observation.batch_size if observation.batch_size is not None else getattr(self, "batch_size", None)
        if size is None:
            raise ValueError(f"attack {self.name!r} needs the batch size; pass batch_size=<guess>")
        return int(size)


def attacker_device(observation: Observation) -> torch.device:
    """The device an attack computes on: where its (already moved) observation's model lives (the CPU for a model
    without parameters)."""
    first = next(observation.model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def attacker_model(observation: Observation) -> torch.nn.Module:
    """A private copy of the broadcast model for the attacker to run (its BN buffers may move; the original stays)."""
    model = copy.deepcopy(observation.model)
    model.train(observation.threat.bn_mode == "train")
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def threat_conflict(attack: Attack | type[Attack], threat: ThreatModel) -> str | None:
    """Why ``attack`` cannot run under what ``threat`` lets the attacker know, or ``None``: a FedAvg update without
    the client's training details (no attack here can interpret it), or an attack the SoK grades above the threat's
    letter."""
    if threat.update == "fedavg" and not threat.knows_training:
        return (
            f"attack {attack.name!r}: the client shares a FedAvg update but the threat model withholds its training "
            "details (local steps, learning rate, mini-batches), which interpreting the update needs "
            "(knows_training; SoK threat models C and above)"
        )
    if threat.sok is None or attack.sok is None:
        return None
    missing = sok_missing(threat.sok, attack.sok)
    if not missing:
        return None
    return (
        f"attack {attack.name!r} assumes SoK threat model {attack.sok} ({SOK_PRESETS[attack.sok][0]}): it needs "
        f"{'; '.join(SOK_KNOWLEDGE[m] for m in missing)}, which threat model {threat.sok} "
        f"({SOK_PRESETS[threat.sok][0]}) does not grant"
    )


PRECISIONS = ("float32", "bfloat16", "float16")
"""What the trial's forward and backward passes may compute in (``precision=`` of the optimisation attacks)."""


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def mixed_precision(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """The autocast region of the attacker's trial passes: convolutions and matrix products in ``precision``
    (``torch.autocast``), everything autocast keeps in float32 (losses, normalisations, the objective) as it is.

    ``"float32"`` is no region at all. ``"bfloat16"`` runs on every device (on CPUs with AVX-512 BF16 or AMX the
    convolutions run in it natively); ``"float16"`` needs a GPU (``ValueError`` on the CPU, where it has no fast path).
    """
    check_precision(precision)
    if precision == "float32":
        return contextlib.nullcontext()
    if precision == "float16" and device.type == "cpu":
        raise ValueError("precision='float16' needs a GPU; on the CPU use 'bfloat16' or 'float32'")
    return torch.autocast(device.type, dtype=getattr(torch, precision))


def target_update(observation: Observation, model: torch.nn.Module) -> list[torch.Tensor]:
    """The observed update as a list in ``model.named_parameters()`` order."""
    return [observation.update[n].detach() for n, _ in model.named_parameters()]


def gradient_residual(observation: Observation, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Recompute the update of ``(images, labels)`` under the observed model and compare it with the observed one.

    Args:
        labels: ``(N,)`` class indices, or ``(N, K)`` soft targets (MixUp/InstaHide encodings), used as they are.

    Returns ``{"cosine": <u', u> / (|u'| |u|), "rel_l2": |u' - u| / |u|}``; needs no ground truth.
    """
    model = attacker_model(observation)
    inputs = normalize(images, observation.threat.normalization)
    targets = labels.long() if labels.dim() == 1 else labels.to(inputs.dtype)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        mine = compute_update(model, inputs, targets, observation.threat)
    target = target_update(observation, model)
    a = torch.cat([m.detach().flatten() for m in mine]).double()
    b = torch.cat([t.flatten() for t in target]).double()
    norm_b = float(b.norm())
    cosine = float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))
    rel = float((a - b).norm() / max(norm_b, 1e-30))
    return {"cosine": cosine, "rel_l2": rel}
