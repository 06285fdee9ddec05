"""gradinv: gradient inversion attacks and defenses for federated learning.

import gradinv as gi
model = gi.models.make("lenet", num_classes=10, image_shape=(3, 32, 32))
images, labels = gi.data.load("skimage", n=1, size=32, seed=0)
obs = gi.observe(model, images, labels, threat=gi.ThreatModel(update="gradient", knows_labels=False))
rec = gi.attacks.make("idlg").reconstruct(obs)
print(gi.metrics.score(rec, images, labels))
"""

import importlib
import os
import sys
from typing import Any

# OpenMP threads that wait by sleeping, not spinning, unless the user chose otherwise: beside a CPU-bound neighbour,
# spinning threads collapsed attacks to 3-5x their time alone on 2 cores, sleeping ones keep to the 2x of a fair
# share (benchmarks/contention.py). OpenMP reads this when torch loads, so it acts only if torch is not loaded yet
# (always so for the gradinv command; in Python, import gradinv before torch, or set the variable yourself).
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
