"""gradinv: gradient inversion attacks and defenses for federated learning.

import gradinv as gi
model = gi.models.make("lenet", num_classes=10, image_shape=(3, 32, 32))
images, labels = gi.data.load("skimage", n=1, size=32, seed=0)
obs = gi.observe(model, images, labels, threat=gi.ThreatModel(update="gradient", knows_labels=False))
rec = gi.attacks.make("idlg").reconstruct(obs)
print(gi.metrics.score(rec, images, labels))
"""

import importlib
from typing import Any

from gradinv import analysis, attacks, data, defenses, evaluate, metrics, models
from gradinv.fl.client import observe
from gradinv.observation import Observation, Reconstruction, ThreatModel

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``gi.flower`` (the Flower integration, which needs the optional ``flwr``) is imported on first use."""
    if name in ("flower", "fl", "report", "audit", "pipeline"):
        return importlib.import_module(f"gradinv.{name}")
    raise AttributeError(f"module 'gradinv' has no attribute {name!r}")


__all__ = [
    "Observation",
    "Reconstruction",
    "ThreatModel",
    "analysis",
    "evaluate",
    "attacks",
    "data",
    "defenses",
    "metrics",
    "models",
    "observe",
]
