"""Federated-learning client simulation and secure aggregation protocols (imported on first use). The Flower
integration lives one layer up, in :mod:`gradinv.flower`, since it runs attacks and writes reports."""

from __future__ import annotations

import importlib
from typing import Any

from gradinv.fl.client import compute_update, cross_entropy, denormalize, normalize, observe


def __getattr__(name: str) -> Any:
    if name in ("secagg", "lightsecagg", "homomorphic", "aggregate", "vertical"):
        return importlib.import_module(f"gradinv.fl.{name}")
    raise AttributeError(f"module 'gradinv.fl' has no attribute {name!r}")


__all__ = ["compute_update", "cross_entropy", "denormalize", "normalize", "observe"]
