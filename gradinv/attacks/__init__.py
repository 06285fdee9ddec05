"""The attack registry: ``make(name, **kwargs)``, ``names()``, ``describe()``."""

from __future__ import annotations

from typing import Any

from gradinv.attacks import labels
from gradinv.attacks.base import Attack, Callback, gradient_residual
from gradinv.attacks.bias_trick import BiasTrick
from gradinv.attacks.cafe import CAFE
from gradinv.attacks.dager import DAGER
from gradinv.attacks.dlg import DLG
from gradinv.attacks.fedavg_leakage import FedAvgLeakage
from gradinv.attacks.gias import GIAS
from gradinv.attacks.gradinversion import GradInversion
from gradinv.attacks.idlg import IDLG
from gradinv.attacks.imprint import Imprint
from gradinv.attacks.inverting_gradients import InvertingGradients
from gradinv.attacks.lamp import LAMP
from gradinv.attacks.rgap import RGAP
from gradinv.attacks.spear import SPEAR
from gradinv.attacks.tag import TAG
from gradinv.attacks.trap_weights import TrapWeights
from gradinv.validation import check_known_options

REGISTRY: dict[str, type[Attack]] = {
    "dlg": DLG,
    "idlg": IDLG,
    "inverting_gradients": InvertingGradients,
    "gradinversion": GradInversion,
    "gias": GIAS,
    "fedavg_leakage": FedAvgLeakage,
    "bias_trick": BiasTrick,
    "rgap": RGAP,
    "spear": SPEAR,
    "imprint": Imprint,
    "trap_weights": TrapWeights,
    "cafe": CAFE,
}

# Attacks on text clients (gradinv.text): they take a TextObservation and return a TextReconstruction.
TEXT_REGISTRY: dict[str, type[DAGER] | type[TAG] | type[LAMP]] = {"tag": TAG, "lamp": LAMP, "dager": DAGER}

# name -> (paper, threat model, what it needs), for `gradinv list` and the README table.
SUMMARY: dict[str, tuple[str, str, str]] = {
    "dlg": ("Zhu et al., NeurIPS 2019", "honest server, gradient", "batch size; optimises labels jointly"),
    "idlg": ("Zhao et al., arXiv 2020", "honest server, gradient, batch 1", "nothing: label from last layer"),
    "inverting_gradients": (
        "Geiping et al., NeurIPS 2020",
        "honest server, gradient or FedAvg update",
        "batch size; labels given or recovered (iDLG/LLG)",
    ),
    "gradinversion": (
        "Yin et al., CVPR 2021 (See through Gradients)",
        "honest server, gradient or FedAvg update, batches",
        "batch size; labels given or recovered (Yin's rule); BatchNorm statistics (the batch's or running)",
    ),
    "gias": (
        "Jeon et al., NeurIPS 2021 (GIAS)",
        "honest server, gradient or FedAvg update",
        "batch size; a generator of the client's kind of images (shipped: digits16, or your own)",
    ),
    "fedavg_leakage": (
        "Dimitrov et al., TMLR 2022 (Data Leakage in Federated Averaging)",
        "honest server, FedAvg update of a client that reshuffles its data every local epoch",
        "batch size and the training details; one copy of the data per epoch, an order-invariant prior",
    ),
    "bias_trick": (
        "Phong et al., IEEE TIFS 2018; Geiping et al. 2020 Prop. 3.1",
        "honest server, gradient",
        "a fully connected first layer with bias; exact",
    ),
    "rgap": (
        "Zhu & Blaschko, ICLR 2021 (R-GAP)",
        "honest server, gradient, batch 1",
        "a chain of conv/linear layers with invertible activations; exact where rank-sufficient",
    ),
    "spear": (
        "Dimitrov et al., NeurIPS 2024 (SPEAR)",
        "honest server, gradient, batches",
        "a fully connected first layer with bias and ReLU; exact per consistent sample",
    ),
    "imprint": (
        "Fowl et al., ICLR 2022 (Robbing the Fed)",
        "malicious server (imprint module), gradient",
        "prepare_model(); exact for bins holding one sample",
    ),
    "trap_weights": (
        "Boenisch et al., IEEE EuroS&P 2023 (Curious Abandon Honesty)",
        "malicious server (trap weights in the first linear layer), gradient",
        "prepare_model(); a fully connected first layer; exact for rows one sample fired",
    ),
    "cafe": (
        "Jin et al., NeurIPS 2021 (CAFE)",
        "vertical FL: the server's record of every iteration's gradient and batch indices (`gradinv vertical`)",
        "the labels (the server holds them) and the batch indices; each party's first layer fully connected",
    ),
}


# text attacks (`gradinv text`), same layout
TEXT_SUMMARY: dict[str, tuple[str, str, str]] = {
    "tag": (
        "Deng et al., Findings of EMNLP 2021 (TAG)",
        "honest server, gradient of a sequence classifier (text)",
        "batch size; optimisation, L2 + L1 distance",
    ),
    "lamp": (
        "Balunovic et al., NeurIPS 2022 (LAMP)",
        "honest server, gradient of a sequence classifier (text)",
        "batch size; a language model (shipped bigram, or a causal LM); optimisation with token reordering",
    ),
    "dager": (
        "Petrov et al., NeurIPS 2024 (DAGER)",
        "honest server, gradient of a transformer (text), batches",
        "the first two attention projections' gradients; exact and certified where the span is narrow",
    ),
}


def names(setting: str | None = None) -> list[str]:
    """The registered image attack names (``setting``: only those of ``"horizontal"`` or ``"vertical"`` FL), or
    with ``setting="text"`` the attacks on text clients."""
    if setting not in (None, "horizontal", "vertical", "text"):
        raise ValueError(f"setting must be 'horizontal', 'vertical' or 'text', got {setting!r}")
    if setting == "text":
        return list(TEXT_REGISTRY)
    return [name for name, cls in REGISTRY.items() if setting is None or cls.setting == setting]


def describe() -> dict[str, str]:
    """One line per attack (image and text)."""
    both = {**SUMMARY, **TEXT_SUMMARY}
    return {name: f"{paper}; {threat}; needs {needs}" for name, (paper, threat, needs) in both.items()}


def make(name: str, **kwargs: Any) -> Any:
    """Build a registered attack with keyword hyperparameters (the paper's defaults otherwise): an image attack, or
    a text attack (``names("text")``)."""
    if name in TEXT_REGISTRY:
        check_known_options(TEXT_REGISTRY[name], kwargs)
        return TEXT_REGISTRY[name](**kwargs)
    if name not in REGISTRY:
        raise ValueError(f"unknown attack {name!r}; available: {', '.join(names() + names('text'))}")
    check_known_options(REGISTRY[name], kwargs)
    return REGISTRY[name](**kwargs)


__all__ = [
    "DLG",
    "GIAS",
    "GradInversion",
    "BiasTrick",
    "CAFE",
    "DAGER",
    "LAMP",
    "TAG",
    "Imprint",
    "TrapWeights",
    "IDLG",
    "RGAP",
    "SPEAR",
    "Attack",
    "Callback",
    "InvertingGradients",
    "describe",
    "gradient_residual",
    "labels",
    "make",
    "names",
]
