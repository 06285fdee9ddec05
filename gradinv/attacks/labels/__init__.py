"""Label recovery from the last layer's update: ``recover(name, observation, n)``, ``names()``.

Strategies: ``idlg`` (batch 1), ``yin`` (distinct labels), ``llg`` (repeats allowed), ``auto`` (idlg for one
sample, llg otherwise). All read only the observed update of the classifier (the last ``nn.Linear``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gradinv.attacks.labels.idlg import idlg_label, idlg_source
from gradinv.attacks.labels.llg import llg_labels
from gradinv.attacks.labels.yin import yin_labels
from gradinv.models import classifier
from gradinv.observation import Observation

Strategy = Callable[[torch.Tensor, torch.Tensor | None, int], torch.Tensor]


def _idlg(weight: torch.Tensor, bias: torch.Tensor | None, n: int) -> torch.Tensor:
    if n != 1:
        raise ValueError(f"iDLG label recovery is for a single sample, got batch size {n}; use 'llg' or 'yin'")
    return idlg_label(weight, bias)


REGISTRY: dict[str, tuple[Strategy, str]] = {
    "idlg": (_idlg, "iDLG (Zhao et al. 2020): sign of the last layer's gradient, batch 1, exact"),
    "yin": (
        lambda w, b, n: yin_labels(w, n),
        "Yin et al. (CVPR 2021): min of last-layer rows, distinct labels",
    ),
    "llg": (
        lambda w, b, n: llg_labels(w, n),
        "LLG (Wainakh et al. 2022): impact-corrected counts, repeats allowed",
    ),
}


def names() -> list[str]:
    """The label-recovery strategies (plus ``auto``)."""
    return [*REGISTRY, "auto"]


def describe() -> dict[str, str]:
    """One line per strategy."""
    return {name: entry[1] for name, entry in REGISTRY.items()}


def recover(strategy: str, observation: Observation, n: int) -> torch.Tensor:
    """Recover ``n`` labels from the observed update with the named strategy (``auto``: idlg if n == 1 else llg)."""
    return recover_with_source(strategy, observation, n)[0]


def recover_with_source(strategy: str, observation: Observation, n: int) -> tuple[torch.Tensor, str]:
    """:func:`recover`, and where the labels came from in words for a result's ``label_source``: the strategy's
    name, except where iDLG's rule did not decide (:func:`~gradinv.attacks.labels.idlg.idlg_source`: a defense left
    no single negative class, so the label is the most negative class's, a guess, and the source says so)."""
    if strategy == "auto":
        strategy = "idlg" if n == 1 else "llg"
    if strategy not in REGISTRY:
        raise ValueError(f"unknown label strategy {strategy!r}; available: {', '.join(names())}")
    weight_name, bias_name = classifier(observation.model)
    weight = observation.update[weight_name]
    if weight.shape[0] != observation.num_classes:
        raise ValueError(
            f"the last nn.Linear ({weight_name}) has {weight.shape[0]} outputs, the model {observation.num_classes}"
        )
    bias = observation.update[bias_name] if bias_name else None
    if not bool(weight.abs().max() > 0) and (bias is None or not bool(bias.abs().max() > 0)):
        raise ValueError(f"the classifier's update ({weight_name}) is zero: it carries no label information")
    weight, bias = weight.detach(), None if bias is None else bias.detach()
    labels = REGISTRY[strategy][0](weight, bias, n).to(weight.device)
    return labels, idlg_source(weight, bias) if strategy == "idlg" else strategy


def label_counts(observation: Observation, n: int, strategy: str = "auto") -> torch.Tensor:
    """``(K,)`` counts of each class among the batch's ``n`` labels (``auto``: LLG, repeats allowed; iDLG for one
    sample): the batch's labels without saying which image has which."""
    return torch.bincount(recover(strategy, observation, n), minlength=observation.num_classes)


__all__ = [
    "classifier",
    "describe",
    "idlg_label",
    "idlg_source",
    "label_counts",
    "llg_labels",
    "names",
    "recover",
    "recover_with_source",
    "yin_labels",
]
