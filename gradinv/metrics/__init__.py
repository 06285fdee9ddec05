"""Leakage metrics: ``score(reconstruction, images, labels)`` after optimal matching.

This is evaluation code: it reads ground truth, which attacks never do.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gradinv.metrics import lpips as _lpips
from gradinv.metrics.image import mse, psnr, ssim
from gradinv.metrics.labels import label_accuracy, label_count_accuracy
from gradinv.metrics.matching import match
from gradinv.observation import UNKNOWN_LABEL, Reconstruction
from gradinv.validation import check_class_labels, check_images

EXACT_TOLERANCE = 1e-3
"""A reconstruction is exact when no pixel is off by more than this (a quarter of one 8-bit grey level)."""


def score(reconstruction: Reconstruction, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
    """Score a reconstruction against the private batch.

    Reconstructions are assigned to originals by the Hungarian algorithm maximising the summed PSNR (a
    monotone function of the MSE: see ``match``), then scored pairwise.

    Args:
        reconstruction: what the attack returned.
        images: ``(N, C, H, W)`` the client's private images in [0, 1].
        labels: ``(N,)`` the client's private labels (optional).

    Returns:
        ``psnr``, ``ssim``, ``mse`` (means over matched pairs), ``lpips`` (or ``None`` with ``lpips_note``),
        ``label_acc`` (matched pairs whose returned label is the original's; an unknown label, -1, counts as
        wrong), ``label_count_acc`` (the batch's label multiset: from ``reconstruction.label_counts`` when the attack
        gives counts, else from its known labels), ``labels_known`` (share of matched images with a label),
        ``exact_fraction`` (originals recovered to within ``EXACT_TOLERANCE`` per pixel), ``certified_fraction``
        (originals matched by a certified image), ``certified_not_exact`` (certified images that are not within
        ``EXACT_TOLERANCE`` of their original, or match none: a false certificate; always 0 unless something is
        wrong), ``per_image`` (one dict per original, with ``index``, ``match``, ``max_abs_error``, ``certified`` and
        its scores), and the attack's ``residual``.

    Raises:
        TypeError: a wrong type, or labels that are not integers.
        ValueError: labels whose shape does not match the images (or the reconstruction's images).
    """
    if not isinstance(reconstruction, Reconstruction):
        raise TypeError(f"score expects a gi.Reconstruction, got {type(reconstruction).__name__}")
    images = check_images(images)
    rec = check_images(reconstruction.images, name="reconstruction.images")
    if labels is not None:
        labels = check_class_labels(labels, images.shape[0], "labels")
    predicted = reconstruction.labels
    if predicted is not None:
        predicted = check_class_labels(predicted, rec.shape[0], "reconstruction.labels", unknown_ok=True)
    rows, cols = match(rec, images)
    r, o = rec[rows], images[cols]
    per_psnr, per_ssim, per_mse = psnr(r, o), ssim(r, o), mse(r, o)
    note = (
        "LPIPS needs RGB images"
        if images.shape[1] != 3
        else "LPIPS (AlexNet) needs images of at least 32x32"
        if min(images.shape[-2:]) < 32
        else _lpips.unavailable_reason()
    )
    per_lpips = _lpips.lpips(r, o) if note is None else None
    per_image: list[dict[str, Any]] = []
    for k, (i, j) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        entry = {
            "max_abs_error": float((r[k] - o[k]).abs().max()),
            "index": j,
            "match": i,
            "certified": bool(reconstruction.certified[i]),
            "psnr": _finite(per_psnr[k]),
            "ssim": float(per_ssim[k]),
            "mse": float(per_mse[k]),
        }
        if per_lpips is not None:
            entry["lpips"] = float(per_lpips[k])
        per_image.append(entry)
    result: dict[str, Any] = {
        "psnr": _finite(per_psnr.clamp(max=1e3).mean()),
        "ssim": float(per_ssim.mean()),
        "mse": float(per_mse.mean()),
        "lpips": None if per_lpips is None else float(per_lpips.mean()),
        "matched": len(rows),
        "exact_fraction": sum(e["max_abs_error"] < EXACT_TOLERANCE for e in per_image) / images.shape[0],
        "certified_fraction": sum(e["certified"] for e in per_image) / images.shape[0],
        "certified_not_exact": sum(reconstruction.certified)
        - sum(e["certified"] and e["max_abs_error"] < EXACT_TOLERANCE for e in per_image),
        "batch_size": int(images.shape[0]),
    }
    if note is not None:
        result["lpips_note"] = note
    if labels is not None and predicted is not None:
        true = labels
        result["label_acc"] = label_accuracy(predicted[rows], true[cols])
        result["labels_known"] = float((predicted[rows] != UNKNOWN_LABEL).double().mean())
        counts = reconstruction.label_counts
        if counts is not None:
            counted = torch.repeat_interleave(torch.arange(len(counts)), counts.long().clamp_min(0))
            result["label_count_acc"] = label_count_accuracy(counted, true)
        else:
            result["label_count_acc"] = label_count_accuracy(predicted[predicted != UNKNOWN_LABEL], true)
        for entry, i in zip(per_image, rows.tolist(), strict=True):
            entry["label"] = int(true[entry["index"]])
            entry["label_pred"] = None if int(predicted[i]) == UNKNOWN_LABEL else int(predicted[i])
    result["per_image"] = sorted(per_image, key=lambda e: e["index"])
    result["residual"] = dict(reconstruction.residual)
    return result


def _finite(value: torch.Tensor) -> float:
    """A JSON-safe float: an exact match's infinite PSNR is capped at 1000 dB."""
    v = float(value)
    return 1000.0 if math.isinf(v) else v


__all__ = ["label_accuracy", "label_count_accuracy", "match", "mse", "psnr", "score", "ssim"]
