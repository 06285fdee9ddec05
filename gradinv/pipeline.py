"""The main job: simulate a client, run attacks on what it shares, score and report (used by the CLI)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from gradinv import attacks, data, defenses, metrics, models, report
from gradinv.attacks.base import Callback
from gradinv.fl.client import observe
from gradinv.observation import ThreatModel
from gradinv.validation import check_device, constructor_options

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """Everything one run needs; the fields mirror ``gradinv attack``'s options."""

    attacks: Sequence[str] = ("inverting_gradients",)
    attack_options: dict[str, Any] = field(default_factory=dict)
    model: str = "lenet"
    model_options: dict[str, Any] = field(default_factory=dict)
    data: str = "skimage"
    root: str | None = None
    download: bool = False
    indices: Sequence[int] | None = None  # pick these images instead of a seeded draw
    defenses: Sequence[tuple[str, dict[str, Any]]] = ()  # (name, parameters), applied by the client in order
    batch_size: int = 1
    size: int = 32
    channels: int = 3
    num_classes: int = 10
    threat: ThreatModel = field(default_factory=ThreatModel)
    seed: int = 0
    model_seed: int | None = None  # None: ``seed``
    client_images: int = 256  # the client's training set, for defenses that draw from it (MixUp's pool="dataset")
    notes: dict[str, str] = field(default_factory=dict)  # per attack, a sentence for the report (the demo's)
    device: str = "cpu"  # where the client and the attacks compute: cpu, cuda, cuda:N, mps


def client_training_set(client_defenses: Sequence[Any], dataset: str, n: int, **load: Any) -> tuple[Any, Any] | None:
    """The client's training set ``(images, labels)`` when a defense draws from it (MixUp/InstaHide with
    ``pool="dataset"``): ``n`` images of ``dataset`` (all it holds, if fewer) drawn with the run's seed, so the
    batch's own images are among them when the batch is a seeded draw too; ``None`` when no defense needs it."""
    if not any(getattr(d, "pool", None) == "dataset" for d in client_defenses):
        return None
    return data.load(dataset, n=n, up_to=True, **load)


def split_options(names: Sequence[str], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Give each attack the options its constructor accepts; an option no attack accepts raises ``ValueError``.

    Keys may be ``attack.option`` to address one attack.
    """
    per: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in options.items():
        target, _, option = key.rpartition(".")
        params = {n: constructor_options(attacks.REGISTRY[n]) for n in names if not target or n == target}
        takers = [n for n, taken in params.items() if option in taken]
        if not takers:
            valid = "; ".join(f"{n}: {', '.join(p)}" for n, p in params.items())
            raise ValueError(f"no chosen attack ({', '.join(names)}) takes the option {key!r}; valid options: {valid}")
        for n in takers:
            per[n][option] = value
    return per


def run(
    config: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: Callable[[str], Callback | None] | None = None,
) -> dict[str, Any]:
    """Run ``config`` and write ``metrics.json``, ``reconstruction.png``, ``loss.png``, ``report.html`` to ``out``.

    Args:
        config: what to run.
        out: the output folder (must not exist or be empty, unless ``overwrite``).
        overwrite: replace an existing output folder.
        progress: given an attack name, returns the callback that attack reports its steps to.

    Returns:
        The run record also written to ``metrics.json``.
    """
    device = str(check_device(config.device))
    for name in config.attacks:
        if name not in attacks.REGISTRY:
            raise ValueError(f"unknown attack {name!r}; available: {', '.join(attacks.names())}")
    per_attack = split_options(config.attacks, config.attack_options)
    chosen = {name: attacks.make(name, **per_attack[name]) for name in config.attacks}
    client_defenses = [defenses.make(name, **kwargs) for name, kwargs in config.defenses]
    folder = report.prepare_folder(out, overwrite=overwrite)
    started = time.perf_counter()
    images, labels = data.load(
        config.data,
        n=config.batch_size,
        size=config.size,
        seed=config.seed,
        channels=config.channels,
        num_classes=config.num_classes,
        root=config.root,
        download=config.download,
        indices=config.indices,
    )
    image_shape = (config.channels, config.size, config.size)
    model = models.make(
        config.model,
        num_classes=config.num_classes,
        image_shape=image_shape,
        seed=config.seed if config.model_seed is None else config.model_seed,
        **config.model_options,
    )
    pool = client_training_set(
        client_defenses,
        config.data,
        max(config.client_images, config.batch_size),
        size=config.size,
        seed=config.seed,
        channels=config.channels,
        num_classes=config.num_classes,
        root=config.root,
    )
    observation = observe(
        model,
        images,
        labels,
        threat=config.threat,
        seed=config.seed,
        defenses=client_defenses,
        client_data=pool,
        device=device,
    )
    observation.save(folder / "observation")
    results = {}
    for name, attack in chosen.items():
        log.info("running %s", name)
        rec = attack.reconstruct(observation, callback=progress(name) if progress else None, device=device)
        results[name] = (rec, metrics.score(rec, images, labels))
    record_config = {
        "model": config.model,
        "model_options": config.model_options,
        "data": config.data,
        "batch_size": int(images.shape[0]),
        "size": config.size,
        "channels": config.channels,
        "num_classes": config.num_classes,
        "threat": config.threat.to_dict(),
        "defenses": observation.defenses,
        "seed": config.seed,
        "model_seed": config.model_seed,
        "labels": labels.tolist(),
        "seconds_total": time.perf_counter() - started,
        "notes": dict(config.notes),
        "device": device,
    }
    save_file({"images": images.contiguous(), "labels": labels}, str(folder / "ground_truth.safetensors"))
    return report.write_run(folder, originals=images, results=results, config=record_config)
