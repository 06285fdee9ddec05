"""Restarts of Inverting Gradients as one vectorised computation against one after another, in the same run.

    python benchmarks/batched_trials.py [--restarts 1 2 4 8] [--steps 40] [--width 16] [--size 16]

One photograph (the cat) through the IG ConvNet (BatchNorm in eval mode), ``--steps`` steps per restart. For each R,
``batched=True`` (all R restarts' gradients from one ``torch.func.vmap``) and ``batched=False`` (the same lockstep
restarts, each gradient by its own backward pass) run on the same start points; the table gives trials per
CPU-second for both and their ratio, and the largest difference of the returned images (the same runs, to float
rounding).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

import gradinv as gi


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--size", type=int, default=16)
    args = parser.parse_args()
    images, labels = gi.data.load("skimage", indices=[1], size=args.size)
    model = gi.models.make("convnet", width=args.width, image_shape=(3, args.size, args.size), seed=0)
    obs = gi.observe(model, images, labels, threat=gi.ThreatModel(bn_mode="eval", knows_labels=True))
    for batched in (False, True):  # warm-up: first calls pay for allocation and kernel selection
        gi.attacks.make("inverting_gradients", steps=2, restarts=2, batched=batched).reconstruct(obs)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ConvNet-{args.width} {args.size}x{args.size}")
    print("| restarts | sequential trials/CPU-s | vectorised trials/CPU-s | ratio | wall ratio | max image diff |")
    print("|---|---|---|---|---|---|")
    for r in args.restarts:
        measured = {}
        for batched in (False, True):
            attack = gi.attacks.make("inverting_gradients", steps=args.steps, restarts=r, batched=batched)
            cpu, wall = cpu_seconds(), time.perf_counter()
            rec = attack.reconstruct(obs)
            measured[batched] = (cpu_seconds() - cpu, time.perf_counter() - wall, rec.images)
        (cs, ws, a), (cv, wv, b) = measured[False], measured[True]
        print(
            f"| {r} | {r / cs:.2f} | {r / cv:.2f} | {cs / cv:.2f}x | {ws / wv:.2f}x | "
            f"{float((a - b).abs().max()):.1e} |"
        )


if __name__ == "__main__":
    main()
