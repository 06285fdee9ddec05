"""Running one grid cell: a client with the cell's defenses shares updates of its batches, the cell's attack
inverts each, and the evaluation side (which alone reads the private images) scores them."""

from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from gradinv import attacks, data, defenses, metrics, models
from gradinv.attacks.cafe import CAFE
from gradinv.data import NORMALIZATIONS
from gradinv.defenses.base import Defense
from gradinv.evaluate.cost import full_recovery
from gradinv.evaluate.grid import config_key
from gradinv.evaluate.summary import mean_std, present_mean
from gradinv.evaluate.text_cells import run_text_cell
from gradinv.evaluate.utility import TRAINING_ATTRIBUTE, Utility, pretrain, utility
from gradinv.fl.augmentation import augmented_batch
from gradinv.fl.client import encode_batch, observe
from gradinv.fl.vertical import simulate
from gradinv.observation import Reconstruction, ThreatModel

_PRETRAINED: dict[str, tuple[dict[str, torch.Tensor], list[dict[str, Any]]]] = {}
"""Per process: pretraining spec key -> the trained weights and their training records (``gi.evaluate.pretrain``)."""


def _model(config: dict[str, Any], device: str = "cpu") -> torch.nn.Module:
    """The cell's broadcast model: seeded initialisation, then ``pretrain_epochs`` of clean training if set (on
    ``device``; the model comes back on the CPU, carrying its training record for the observation)."""
    shape = (config["channels"], config["size"], config["size"])

    def fresh() -> torch.nn.Module:
        return models.make(
            config["model"],
            num_classes=config["num_classes"],
            image_shape=shape,
            seed=config["seed"],
            **config["model_options"],
        )

    epochs = config.get("pretrain_epochs", 0)
    if not epochs:
        return fresh()
    # what the training depends on: a utility job's configuration without defenses, plus the seed and the epochs
    key = config_key({**(utility_config({**config, "defenses": []}) or {}), "seed": config["seed"], "epochs": epochs})
    if key not in _PRETRAINED:
        options = _training_options(config)
        trained = pretrain(fresh(), config["utility"]["dataset"], epochs, seed=config["seed"], device=device, **options)
        state = {k: v.detach().cpu().clone() for k, v in trained.state_dict().items()}
        _PRETRAINED[key] = (state, getattr(trained, TRAINING_ATTRIBUTE))
    state, records = _PRETRAINED[key]
    model = fresh()
    model.load_state_dict(state)
    setattr(model, TRAINING_ATTRIBUTE, [dict(r) for r in records])
    return model


def _train(
    config: dict[str, Any],
    factory: Callable[[], torch.nn.Module],
    chain: list[Defense],
    epochs: int,
    seed: int,
    device: str = "cpu",
) -> Utility:
    """Train ``factory()``'s model with ``chain`` on the grid's [utility] data (``gi.evaluate.utility``)."""
    options = _training_options(config)
    return utility(factory, config["utility"]["dataset"], chain, epochs, seed=seed, device=device, **options)


def _training_options(config: dict[str, Any]) -> dict[str, Any]:
    """How the grid trains (its [utility] settings), for ``gi.evaluate.utility`` and ``gi.evaluate.pretrain``."""
    setup = config["utility"]
    return {
        "n": setup["n"],
        "size": config["size"],
        "channels": config["channels"],
        "batch_size": setup["batch_size"],
        "lr": setup["lr"],
        "normalization": NORMALIZATIONS[config["normalization"]],
    }


def score_run(
    reconstruction: Reconstruction, images: torch.Tensor, labels: torch.Tensor, threat: ThreatModel, seed: int
) -> dict[str, Any]:
    """``metrics.score`` against the client's data as it is; for an augmenting client (``threat.augmentation``, the
    observation made with ``seed``) also against the batch as its first pass saw it: ``psnr_vs_augmented`` and
    ``per_image_vs_augmented`` (per original, by ``index``), since an image rebuilt flipped or shifted is the image."""
    scores = metrics.score(reconstruction, images, labels)
    if threat.augmentation != "none":
        against = metrics.score(reconstruction, augmented_batch(images, threat, seed), labels)
        scores["psnr_vs_augmented"] = against["psnr"]
        scores["per_image_vs_augmented"] = [{"index": e["index"], "psnr": e["psnr"]} for e in against["per_image"]]
    return scores


def run_cell(config: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """Run one cell on ``device``; returns ``summary``, per-image ``rows``, and ``originals`` / ``reconstructions``
    tensors (on the CPU).

    The client's training set is the first ``client_images`` images of the cell's seeded draw (its batches are the
    first ``images``): MixUp/InstaHide with ``pool="dataset"`` draw their partners from it."""
    if config.get("modality") == "text":
        return run_text_cell(config, device)
    if attacks.REGISTRY[config["attack"]].setting == "vertical":
        return run_vertical_cell(config, device)
    pooled = any(getattr(defenses.make(n, **p), "pool", None) == "dataset" for n, p in config["defenses"])
    client_images, client_labels = data.load(
        config["data"],
        n=max(config["client_images"], config["images"]) if pooled else config["images"],
        size=config["size"],
        seed=config["seed"],
        channels=config["channels"],
        num_classes=config["num_classes"],
        root=config["root"],
    )
    images, labels = client_images[: config["images"]], client_labels[: config["images"]]
    client_data = (client_images, client_labels) if pooled else None
    threat = ThreatModel(normalization=NORMALIZATIONS[config["normalization"]], **config["threat"])
    attack = attacks.make(config["attack"], **config["attack_options"])
    b = config["batch_size"]
    rows: list[dict[str, Any]] = []
    shown = torch.zeros_like(images)
    seconds, steps, chain = [], [], []
    label_counts: list[float | None] = []
    evidence: list[str] = []  # what each batch's certificates rest on (or why there are none), once each
    for batch in range(images.shape[0] // b):
        x, y = images[batch * b : (batch + 1) * b], labels[batch * b : (batch + 1) * b]
        chain = [defenses.make(name, **params) for name, params in config["defenses"]]  # fresh: DP-SGD accounting
        model = attack.prepare_model(_model(config, device), threat)
        client_seed = config["seed"] * 100_003 + batch
        observed = observe(
            model, x, y, threat=threat, seed=client_seed, defenses=chain, client_data=client_data, device=device
        )
        rec = attack.reconstruct(observed, device=device)
        scores = metrics.score(rec, x, y)
        label_counts.append(scores.get("label_count_acc"))
        if rec.certificate not in evidence:
            evidence.append(rec.certificate)
        encoded, _ = encode_batch(x, y, config["num_classes"], chain, seed=client_seed, client_data=client_data)
        if threat.augmentation != "none":  # what the client's first pass trained on
            encoded = augmented_batch(encoded, threat, client_seed)
        # PSNR of each returned image against the encoding it is closest to (MixUp/InstaHide; the augmented batch)
        by_match = {} if encoded is x else {e["match"]: e["psnr"] for e in metrics.score(rec, encoded)["per_image"]}
        seconds.append(rec.seconds)
        steps.append(len(rec.trace))
        rows += image_rows(scores, rec.images, shown, batch, batch * b, x.shape[0], by_match)
    rows.sort(key=lambda r: r["image"])
    summary = _summary(rows, seconds, steps, label_counts, evidence, b, config["client_images"], chain)
    summary["model_training"] = observed.model_training  # how the broadcast model was trained (empty: not at all)
    return {
        "summary": summary,
        "rows": rows,
        "originals": images,
        "reconstructions": shown,
    }


def image_rows(
    scores: dict[str, Any],
    returned: torch.Tensor,
    shown: torch.Tensor,
    batch: int,
    offset: int,
    count: int,
    by_match: dict[int, float],
) -> list[dict[str, Any]]:
    """One row per original of a scored batch (``offset`` its first image's index, ``count`` its size); the matched
    returned images go into ``shown``."""
    rows = []
    for entry in scores["per_image"]:
        shown[offset + entry["index"]] = returned[entry["match"]]
        label_ok = None if "label_pred" not in entry else int(entry["label_pred"] == entry["label"])
        rows.append(
            {
                "image": offset + entry["index"],
                "batch": batch,
                "psnr": entry["psnr"],
                "ssim": entry["ssim"],
                "mse": entry["mse"],
                "lpips": entry.get("lpips"),
                "label_ok": label_ok,
                "exact": int(entry["max_abs_error"] < metrics.EXACT_TOLERANCE),
                "encoding_psnr": by_match.get(entry["match"]),
                "certified": int(entry["certified"]),
            }
        )
    matched = {e["index"] for e in scores["per_image"]}
    return rows + [  # originals the attack returned no image for: recorded, unscored
        {"image": offset + i, "batch": batch, "exact": 0, "certified": 0} for i in range(count) if i not in matched
    ]


def _summary(
    rows: list[dict[str, Any]],
    seconds: list[float],
    steps: list[int],
    label_counts: list[float | None],
    evidence: list[str],
    batch_size: int,
    client_images: int,
    chain: list[Defense],
) -> dict[str, Any]:
    per_batch = statistics.fmean(seconds)
    return {
        **{m: mean_std([r.get(m) for r in rows]) for m in ("psnr", "ssim", "lpips", "encoding_psnr")},
        "label_acc": present_mean([r.get("label_ok") for r in rows]),
        "exact_fraction": statistics.fmean(r["exact"] for r in rows),
        "certified_fraction": statistics.fmean(r["certified"] for r in rows),
        "certificates": evidence,
        "label_count_acc": present_mean(label_counts),
        "matched_fraction": sum(r.get("psnr") is not None for r in rows) / len(rows),
        "attack_seconds_per_batch": per_batch,
        "attack_iterations": statistics.fmean(steps),
        "cost": full_recovery(per_batch, batch_size, client_images, chain),
        "defenses": [d.config() for d in chain],
    }


def run_vertical_cell(config: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """A vertical attack's cell: the parties hold the cell's ``images`` (vertical strips of each), train in batches of
    the cell's batch size with the cell's gradient defenses (:func:`gradinv.fl.vertical.train_vertical`), and the
    attack recovers every sample from the server's record in one run."""
    images, labels = data.load(
        config["data"],
        n=config["images"],
        size=config["size"],
        seed=config["seed"],
        channels=config["channels"],
        num_classes=config["num_classes"],
        root=config["root"],
    )
    setup = config["vertical"]
    chain = [defenses.make(name, **params) for name, params in config["defenses"]]
    record = simulate(
        images,
        labels,
        parties=setup["parties"],
        num_classes=config["num_classes"],
        batch_size=config["batch_size"],
        iterations=setup["iterations"] or None,
        lr=setup["lr"],
        seed=config["seed"],
        defenses=chain,
    )
    attack = attacks.make(config["attack"], **config["attack_options"])
    if not isinstance(attack, CAFE):  # the one vertical attack
        raise TypeError(f"no vertical FL cell for attack {config['attack']!r}")
    rec = attack.reconstruct(record, device=device)
    scores = metrics.score(rec, images, labels)
    shown = torch.zeros_like(images)
    rows = image_rows(scores, rec.images, shown, 0, 0, images.shape[0], {})
    rows.sort(key=lambda r: r["image"])
    # one run recovers the whole record: one "batch" of all the samples
    summary = _summary(rows, [rec.seconds], [len(rec.trace)], [None], [rec.certificate], images.shape[0],
                       images.shape[0], chain)  # fmt: skip
    return {"summary": summary, "rows": rows, "originals": images, "reconstructions": shown}


def utility_config(config: dict[str, Any]) -> dict[str, Any] | None:
    """What a cell's utility depends on (model, defenses, training setup), or ``None`` when the grid measures none."""
    if not config["utility"]:
        return None
    keep = ("model", "model_options", "size", "channels", "num_classes", "normalization", "defenses", "utility")
    return {k: config[k] for k in keep}


def run_utility(config: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """Train with the defenses (``gi.evaluate.utility``, on ``device``) and return the test accuracy and how it was
    measured."""
    setup = config["utility"]
    chain = [defenses.make(name, **params) for name, params in config["defenses"]]
    result = _train(
        config, lambda: _model({**config, "seed": setup["seed"]}), chain, setup["epochs"], setup["seed"], device
    )
    return {
        "accuracy": result.accuracy,
        "seconds": result.seconds,
        "steps": result.steps,
        "n_test": result.n_test,
        "epsilon": result.epsilon,
    }


def execute(kind: str, config: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """Run a cell or a utility job on ``device``; an exception becomes ``{"error": ...}`` so the grid goes on."""
    start = time.perf_counter()
    try:
        result = run_cell(config, device) if kind == "cell" else run_utility(config, device)
    except Exception as err:  # noqa: BLE001 - a failed cell is recorded with its error, the grid continues
        last = traceback.format_exc(limit=-1).strip().splitlines()[-1]
        return {"error": f"{type(err).__name__}: {err}", "where": last, "seconds": time.perf_counter() - start}
    return {**result, "seconds": time.perf_counter() - start}
