"""Federated-learning client simulation, secure aggregation protocols, and the Flower integration (``flower``,
imported on first use: it needs the optional ``flwr``)."""

from __future__ import annotations

import importlib
from typing import Any

from gradinv.fl.client import compute_update, cross_entropy, denormalize, normalize, observe


def __getattr__(name: str) -> Any:
    if name in ("flower", "secagg", "lightsecagg", "homomorphic", "aggregate"):
        return importlib.import_module(f"gradinv.fl.{name}")
    raise AttributeError(f"module 'gradinv.fl' has no attribute {name!r}")


__all__ = ["compute_update", "cross_entropy", "denormalize", "normalize", "observe"]
