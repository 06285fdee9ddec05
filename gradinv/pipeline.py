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
from gradinv.attacks.cafe import CAFE
from gradinv.evaluate.cells import score_run
from gradinv.evaluate.utility import pretrain
from gradinv.fl import vertical
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
    pretrain_epochs: int = 0  # > 0: the broadcast model is first trained this many epochs on ``data`` (a later round)
    pretrain_images: int = 1000  # the images of ``data`` that training draws (a fifth held out for its accuracy)


def client_training_set(client_defenses: Sequence[Any], dataset: str, n: int, **load: Any) -> tuple[Any, Any] | None:
    """The client's training set ``(images, labels)`` when a defense draws from it (MixUp/InstaHide with
    ``pool="dataset"``): ``n`` images of ``dataset`` (all it holds, if fewer) drawn with the run's seed, so the
    batch's own images are among them when the batch is a seeded draw too; ``None`` when no defense needs it."""
    if not any(getattr(d, "pool", None) == "dataset" for d in client_defenses):
        return None
    return data.load(dataset, n=n, up_to=True, **load)


def split_options(
    names: Sequence[str], options: dict[str, Any], registry: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Give each attack the options its constructor accepts; an option no attack accepts raises ``ValueError``.

    Keys may be ``attack.option`` to address one attack.
    """
    per: dict[str, dict[str, Any]] = {n: {} for n in names}
    classes = attacks.REGISTRY if registry is None else registry
    for key, value in options.items():
        target, _, option = key.rpartition(".")
        params = {n: constructor_options(classes[n]) for n in names if not target or n == target}
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
        if attacks.REGISTRY[name].setting == "vertical":
            raise ValueError(
                f"attack {name!r} attacks a vertical FL record, not one client's update: run `gradinv vertical` "
                "(or a grid)"
            )
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
    if config.pretrain_epochs:
        try:
            model = pretrain(
                model,
                config.data,
                config.pretrain_epochs,
                n=config.pretrain_images,
                size=config.size,
                channels=config.channels,
                root=config.root,
                normalization=config.threat.normalization,
                seed=config.seed,
                device=device,
            )
        except ValueError as err:
            raise ValueError(
                f"pretraining on {config.data!r} ({config.pretrain_images} images, --pretrain-images): {err}"
            ) from err
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
        results[name] = (rec, score_run(rec, images, labels, config.threat, config.seed))
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
        "model_training": observation.model_training,
        "seed": config.seed,
        "model_seed": config.model_seed,
        "labels": labels.tolist(),
        "seconds_total": time.perf_counter() - started,
        "notes": dict(config.notes),
        "device": device,
    }
    save_file({"images": images.contiguous(), "labels": labels}, str(folder / "ground_truth.safetensors"))
    return report.write_run(folder, originals=images, results=results, config=record_config)


@dataclass
class VerticalConfig:
    """One vertical FL run attacked by CAFE; the fields mirror ``gradinv vertical``'s options."""

    data: str = "mnist_subset"
    root: str | None = None
    samples: int = 40
    size: int = 16
    channels: int = 1
    num_classes: int = 10
    parties: int = 4
    batch_size: int = 10
    iterations: int | None = None  # None: 2 * samples, enough for CAFE's Steps I-II to have full rank
    lr: float = 0.0  # the server's SGD step on the parties' gradients (0: the model stays fixed)
    passes: int = 6  # CAFE's Step III sweeps over the record
    seed: int = 0
    device: str = "cpu"


def run_vertical(config: VerticalConfig, out: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Train ``config.samples`` images in vertical FL, attack the server's record with CAFE and with gradient matching
    alone (CAFE without its first-layer alignment), and write the run folder (``report.html``, ``metrics.json``)."""
    device = str(check_device(config.device))
    folder = report.prepare_folder(out, overwrite=overwrite)
    started = time.perf_counter()
    images, labels = data.load(
        config.data,
        n=config.samples,
        size=config.size,
        seed=config.seed,
        channels=config.channels,
        num_classes=config.num_classes,
        root=config.root,
    )
    record = vertical.simulate(
        images,
        labels,
        parties=config.parties,
        num_classes=config.num_classes,
        batch_size=config.batch_size,
        iterations=config.iterations,
        lr=config.lr,
        seed=config.seed,
    )
    iterations = len(record.batches)
    results = {}
    for name, alignment in (("cafe", 1.0), ("cafe_no_alignment", 0.0)):
        log.info("running %s", name)
        rec = CAFE(passes=config.passes, alignment=alignment, seed=config.seed).reconstruct(record, device=device)
        results[name] = (rec, metrics.score(rec, images, labels))
    record_config = {
        "setting": "vertical FL (CAFE)",
        "model": f"vertical model, {config.parties} parties (a strip each)",
        "threat": {
            "update": "vertical FL: each iteration's gradient and batch indices",
            "server": "honest",
            "knows_labels": True,
        },
        "defenses": [],
        "data": config.data,
        "batch_size": config.samples,  # the images attacked: every sample of the record
        "training_batch_size": config.batch_size,
        "iterations": iterations,
        "parties": config.parties,
        "lr": config.lr,
        "size": config.size,
        "channels": config.channels,
        "num_classes": config.num_classes,
        "seed": config.seed,
        "labels": labels.tolist(),
        "seconds_total": time.perf_counter() - started,
        "device": device,
        "notes": {
            "cafe": "CAFE (Jin et al., NeurIPS 2021): every sample's first-layer input from the bias and weight "
            "gradients of all iterations, then the fake data batch by batch, aligned to it.",
            "cafe_no_alignment": "The same record attacked by gradient matching alone (CAFE without its alignment).",
        },
    }
    save_file({"images": images.contiguous(), "labels": labels}, str(folder / "ground_truth.safetensors"))
    return report.write_run(folder, originals=images, results=results, config=record_config)


@dataclass
class TextRunConfig:
    """Everything one text run needs; the fields mirror ``gradinv text``'s options."""

    attacks: Sequence[str] = ("dager",)
    attack_options: dict[str, Any] = field(default_factory=dict)
    model: str = "gpt2"
    model_options: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"
    data: str = "rotten_tomatoes"  # a bundled corpus, or a CSV / text file / folder of the user's sentences
    batch_size: int = 4
    max_length: int = 32
    defenses: Sequence[tuple[str, dict[str, Any]]] = ()
    threat: ThreatModel = field(default_factory=ThreatModel)
    seed: int = 0
    device: str = "cpu"
    lora_rank: int = 0  # > 0: the client fine-tunes LoRA adapters of this rank (gi.text.with_lora), not the model


def run_text(
    config: TextRunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: Callable[[str], Callback | None] | None = None,
) -> dict[str, Any]:
    """Simulate a text client (a transformer fine-tuned on ``batch_size`` real sentences), run the text attacks on
    its gradient, and write ``metrics.json`` and ``report.html`` (true and recovered sentences side by side, tokens
    coloured by correctness) to ``out``.

    Raises:
        ValueError: an unknown attack, model, corpus or option; sentences without labels for a classifier.
    """
    from gradinv.fl.text_client import observe_text
    from gradinv.metrics.text import text_score
    from gradinv.text import CORPORA, make_text_model, read_sentences, sentences, shipped_tokenizer, with_lora

    device = str(check_device(config.device))
    for name in config.attacks:
        if name not in attacks.TEXT_REGISTRY:
            raise ValueError(f"unknown text attack {name!r}; available: {', '.join(attacks.names('text'))}")
    per_attack = split_options(config.attacks, config.attack_options, attacks.TEXT_REGISTRY)
    chosen = {name: attacks.make(name, **per_attack[name]) for name in config.attacks}
    client_defenses = [defenses.make(name, **kwargs) for name, kwargs in config.defenses]
    model = make_text_model(config.model, task=config.task, seed=config.seed, **config.model_options)
    if config.lora_rank:
        model = with_lora(model, config.lora_rank, seed=config.seed)
    if config.data in CORPORA:
        texts, labels = sentences(config.data, n=config.batch_size, seed=config.seed)
    else:
        texts, found = read_sentences(config.data, n=config.batch_size, seed=config.seed)
        if config.task == "classification" and any(label is None for label in found):
            raise ValueError(f"{config.data}: a classifier's sentences need labels (a CSV with a 'label' column)")
        labels = [int(label) for label in found if label is not None]
    tokenizer = shipped_tokenizer()
    folder = report.prepare_folder(out, overwrite=overwrite)
    obs = observe_text(
        model,
        tokenizer,
        texts,
        labels if config.task == "classification" else None,
        task=config.task,
        threat=config.threat,
        max_length=config.max_length,
        defenses=client_defenses,
        seed=config.seed,
        device=device,
    )
    results = {}
    for name, attack in chosen.items():
        log.info("running %s", name)
        callback = progress(name) if progress else None
        rec = attack.reconstruct(obs, callback=callback, device=device, seed=config.seed)
        results[name] = (rec, text_score(rec, texts, tokenizer, max_length=config.max_length))
    record_config = {
        "modality": "text",
        "model": config.model,
        "model_options": config.model_options,
        "task": config.task,
        "data": config.data,
        "batch_size": config.batch_size,
        "max_length": config.max_length,
        "lora_rank": config.lora_rank,
        "defenses": [d.config() for d in client_defenses],
        "threat": config.threat.to_dict(),
        "seed": config.seed,
        "device": device,
        "texts": texts,
        "labels": labels,
    }
    return report.write_text_run(folder, tokenizer=tokenizer, results=results, config=record_config)
