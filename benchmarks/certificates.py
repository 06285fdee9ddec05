"""False-positive and false-negative rates of the exact attacks' per-image flags, over seeded batches of real images.

    python benchmarks/certificates.py [--batches 20]

For every returned image, the ground truth says whether it is exact (within 1e-3 per pixel of the original it is
matched to, ``gi.metrics``); the attack says whether it is certified (``Reconstruction.certified``, no ground
truth). A false positive is a certified image that is not exact; a false negative an exact image not certified.
The baseline measured in the same run is the bias trick's former flag ("the image's rows number two or more and
agree", which the certificate replaced): its false positives are the same-label mixtures it let through.

Settings (each over ``--batches`` seeds, batch and model drawn by the seed):

- bias_trick: a 1000-unit ReLU MLP; 16 faces (scikit-image LFW, 32x32), 32 MNIST digits, 16 8x8 digits (200 units).
- trap_weights: 32 MNIST digits, 1000 trap rows, scale fitted on the server's own digits.
- imprint: a width-4 ResNet-20 behind the block; 16 faces with 64 bins and 128 MNIST digits with 256 bins, BatchNorm
  in eval mode (per-sample certificates) and in train mode (whole-batch certificates only).
- spear: 8 photographs through a 500-unit ReLU MLP (scikit-image, 32x32).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

import gradinv as gi

Run = Callable[[int], tuple[gi.Reconstruction, torch.Tensor, torch.Tensor]]


def _norm(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (0.5,) * channels, (0.25,) * channels


def bias_trick(data: str, n: int, size: int, hidden: int) -> Run:
    def run(seed: int) -> tuple[gi.Reconstruction, torch.Tensor, torch.Tensor]:
        images, labels = gi.data.load(data, n=n, size=size, seed=seed)
        shape = tuple(images.shape[1:])
        model = gi.models.make("mlp", image_shape=shape, hidden=(hidden,), seed=seed)
        threat = gi.ThreatModel(normalization=_norm(shape[0]))
        obs = gi.observe(model, images, labels, threat=threat)
        return gi.attacks.make("bias_trick").reconstruct(obs), images, labels

    return run


def trap_weights(seed: int) -> tuple[gi.Reconstruction, torch.Tensor, torch.Tensor]:
    images, labels = gi.data.load("mnist_subset", n=32, size=28, channels=1, seed=seed)
    public, _ = gi.data.load("mnist_subset", n=200, size=28, channels=1, seed=10_000 + seed)
    attack = gi.attacks.make("trap_weights", seed=seed).fit(public, 32)
    threat = gi.ThreatModel(server="malicious", normalization=_norm(1))
    model = attack.prepare_model(gi.models.make("mlp", image_shape=(1, 28, 28), hidden=(1000,), seed=seed), threat)
    return attack.reconstruct(gi.observe(model, images, labels, threat=threat)), images, labels


def imprint(data: str, n: int, bins: int, bn_mode: str) -> Run:
    def run(seed: int) -> tuple[gi.Reconstruction, torch.Tensor, torch.Tensor]:
        images, labels = gi.data.load(data, n=n, size=32, seed=seed)
        public, _ = gi.data.load(data, n=64, size=32, seed=10_000 + seed)
        attack = gi.attacks.make("imprint", bins=bins).fit(public)
        threat = gi.ThreatModel(server="malicious", normalization=_norm(images.shape[1]), bn_mode=bn_mode)
        model = attack.prepare_model(gi.models.make("resnet20", width=4, seed=seed), threat)
        return attack.reconstruct(gi.observe(model, images, labels, threat=threat)), images, labels

    return run


def spear(seed: int) -> tuple[gi.Reconstruction, torch.Tensor, torch.Tensor]:
    images, labels = gi.data.load("skimage", n=8, size=32, seed=seed)
    model = gi.models.make("mlp", hidden=(500,), seed=seed)
    obs = gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=_norm(3)))
    return gi.attacks.make("spear").reconstruct(obs), images, labels


SETTINGS: dict[str, Run] = {
    "bias_trick lfw 16": bias_trick("lfw", 16, 32, 1000),
    "bias_trick mnist 32": bias_trick("mnist_subset", 32, 28, 1000),
    "bias_trick digits 16": bias_trick("digits", 16, 8, 200),
    "trap_weights mnist 32": trap_weights,
    "imprint lfw 16/64 eval": imprint("lfw", 16, 64, "eval"),
    "imprint lfw 16/64 train": imprint("lfw", 16, 64, "train"),
    "imprint mnist 128/256 eval": imprint("mnist_subset", 128, 256, "eval"),
    "imprint mnist 128/256 train": imprint("mnist_subset", 128, 256, "train"),
    "spear skimage 8": spear,
}


def tally(rec: gi.Reconstruction, images: torch.Tensor, labels: torch.Tensor) -> dict[str, int]:
    """Counts of returned, exact, certified, false positives and negatives, labelled-right certified images, and
    the bias trick's former flag (rows >= 2, or a batch of one) with its false positives."""
    scores = gi.metrics.score(rec, images, labels)
    exact = [False] * len(rec.certified)
    label_ok = [False] * len(rec.certified)
    for entry in scores["per_image"]:
        exact[entry["match"]] = entry["max_abs_error"] < gi.metrics.EXACT_TOLERANCE
        label_ok[entry["match"]] = entry.get("label_pred") == entry.get("label")
    rows = rec.info.get("rows_used")
    old = [r >= 2 or images.shape[0] == 1 for r in rows] if rows is not None else [False] * len(exact)
    return {
        "returned": len(exact),
        "exact": sum(exact),
        "certified": sum(rec.certified),
        "fp": sum(c and not e for c, e in zip(rec.certified, exact, strict=True)),
        "fn": sum(e and not c for c, e in zip(rec.certified, exact, strict=True)),
        "certified_label_ok": sum(c and ok for c, ok in zip(rec.certified, label_ok, strict=True)),
        "exact_label_ok": sum(e and ok for e, ok in zip(exact, label_ok, strict=True)),
        "old_flag": sum(old) if rows is not None else -1,
        "old_fp": sum(o and not e for o, e in zip(old, exact, strict=True)) if rows is not None else -1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20, help="seeded batches per setting")
    parser.add_argument("--only", nargs="*", default=None, help="settings to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    head = f"{'setting':<28}{'returned':>9}{'exact':>7}{'cert.':>7}{'FP':>5}{'FN':>6}{'FN rate':>9}"
    print(head + f"{'cert. label ok':>15}{'old flag':>9}{'old FP':>8}{'s':>7}")
    for name, run in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        total: dict[str, int] = {}
        start = time.perf_counter()
        for seed in range(args.batches):
            for key, value in tally(*run(seed)).items():
                total[key] = total.get(key, 0) + value
        fn_rate = total["fn"] / max(total["exact"], 1)
        old = "n/a" if total["old_flag"] < 0 else str(total["old_flag"])
        old_fp = "n/a" if total["old_fp"] < 0 else str(total["old_fp"])
        print(
            f"{name:<28}{total['returned']:>9}{total['exact']:>7}{total['certified']:>7}{total['fp']:>5}"
            f"{total['fn']:>6}{fn_rate:>9.2f}{total['certified_label_ok']:>15}{old:>9}{old_fp:>8}"
            f"{time.perf_counter() - start:>7.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
