"""The defense registry: ``make(name, **kwargs)``, ``names()``, ``describe()``; defenses compose in list order."""

from __future__ import annotations

from typing import Any

from gradinv.defenses.ats import ATS
from gradinv.defenses.base import Defense
from gradinv.defenses.dpsgd import DPSGD
from gradinv.defenses.dropout import Dropout
from gradinv.defenses.instahide import InstaHide
from gradinv.defenses.mixup import MixUp
from gradinv.defenses.noise import Noise
from gradinv.defenses.precode import Precode
from gradinv.defenses.prune import Prune
from gradinv.defenses.quantize import Quantize
from gradinv.defenses.sign import Sign
from gradinv.defenses.soteria import Soteria
from gradinv.defenses.topk import TopK
from gradinv.validation import check_known_options

REGISTRY: dict[str, tuple[type[Defense], str]] = {
    "dpsgd": (DPSGD, "DP-SGD (Abadi et al. 2016) via Opacus: per-sample clipping + Gaussian noise; epsilon reported"),
    "noise": (Noise, "Gaussian/Laplacian noise on the update (DLG's evaluation); std"),
    "prune": (Prune, "zero the smallest-magnitude fraction of each tensor (DLG; Huang et al. 2021); ratio"),
    "quantize": (Quantize, "uniform per-tensor quantisation; bits"),
    "topk": (TopK, "top-k sparsification (Aji & Heafield 2017; DGC): send the largest fraction of entries; fraction"),
    "sign": (Sign, "signSGD: share the signs only (Bernstein et al. 2018)"),
    "mixup": (MixUp, "MixUp of k client images and labels (Zhang et al. 2018; Huang et al. 2021: k=4, bound 0.65)"),
    "instahide": (InstaHide, "InstaHide (Huang et al. ICML 2020): MixUp of k images + random sign flip; k, bounds"),
    "soteria": (Soteria, "Soteria (Sun et al. CVPR 2021): mask the representation's gradient; pruning_rate"),
    "dropout": (Dropout, "dropout before the classifier while the client trains (Zheng 2021); p"),
    "precode": (Precode, "PRECODE (Scheliga et al. WACV 2022): a variational bottleneck before the classifier; latent"),
    "ats": (ATS, "ATS (Gao et al. CVPR 2021): the client's images through a searched augmentation policy; policy"),
}


def names() -> list[str]:
    """The registered defense names."""
    return list(REGISTRY)


def describe() -> dict[str, str]:
    """One line per defense."""
    return {name: entry[1] for name, entry in REGISTRY.items()}


def make(name: str, **kwargs: Any) -> Defense:
    """Build a registered defense with keyword parameters."""
    if name not in REGISTRY:
        raise ValueError(f"unknown defense {name!r}; available: {', '.join(names())}")
    check_known_options(REGISTRY[name][0], kwargs)
    return REGISTRY[name][0](**kwargs)


__all__ = [
    "ATS",
    "DPSGD",
    "Defense",
    "Dropout",
    "InstaHide",
    "MixUp",
    "Noise",
    "Prune",
    "Quantize",
    "Sign",
    "Soteria",
    "TopK",
    "describe",
    "make",
    "names",
]
