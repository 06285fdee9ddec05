"""Attacks on each device this machine has: the CPU baseline, then CUDA and MPS where available.

    python benchmarks/devices.py [--steps 200] [--width 64] [--size 32]

Per device, in one run: Inverting Gradients on the paper's ConvNet (``--width``, BatchNorm in eval mode, one
photograph at ``--size``) for ``--steps`` signed-Adam steps, and DLG (strong-Wolfe L-BFGS, 50 steps) on DLG's LeNet:
seconds per step and the PSNR reached, with each device's speed-up over the CPU measured in the same run. The PSNR
columns show the results mean the same on every device (the dummy start is drawn on the CPU, so every device starts
from the same point; float arithmetic then differs in the last bits).
"""

from __future__ import annotations

import argparse
import time

import torch

import gradinv as gi


def devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def measure(device: str, args: argparse.Namespace) -> dict[str, float]:
    images, labels = gi.data.load("skimage", indices=[1], size=args.size)
    norm = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    convnet = gi.models.make("convnet", num_classes=10, image_shape=(3, args.size, args.size), seed=0, width=args.width)
    threat = gi.ThreatModel(bn_mode="eval", normalization=norm)
    observation = gi.observe(convnet, images, labels, threat=threat, seed=0, device=device)
    ig = gi.attacks.make("inverting_gradients", steps=args.steps, restarts=1)
    if device == "cuda":
        torch.cuda.synchronize()
    rec = ig.reconstruct(observation, device=device)
    ig_psnr = gi.metrics.score(rec, images, labels)["psnr"]
    lenet = gi.models.make("lenet", num_classes=10, image_shape=(3, args.size, args.size), seed=0)
    observation = gi.observe(lenet, images, labels, threat=gi.ThreatModel(), seed=0, device=device)
    started = time.perf_counter()
    dlg = gi.attacks.make("dlg", steps=50, line_search="strong_wolfe").reconstruct(observation, device=device)
    dlg_seconds = time.perf_counter() - started
    return {
        "ig_s_per_step": rec.seconds / args.steps,
        "ig_psnr": ig_psnr,
        "dlg_seconds": dlg_seconds,
        "dlg_psnr": gi.metrics.score(dlg, images, labels)["psnr"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    rows = {device: measure(device, args) for device in devices()}
    base = rows["cpu"]
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} CPU threads; IG: ConvNet-{args.width}, {args.steps} steps")
    print("| device | IG s/step | IG speed-up | IG PSNR (dB) | DLG s (50 steps) | DLG speed-up | DLG PSNR (dB) |")
    print("|---|---|---|---|---|---|---|")
    for device, r in rows.items():
        name = torch.cuda.get_device_name(0) if device == "cuda" else device
        print(
            f"| {name} | {r['ig_s_per_step']:.4f} | {base['ig_s_per_step'] / r['ig_s_per_step']:.1f}x | "
            f"{r['ig_psnr']:.1f} | {r['dlg_seconds']:.1f} | {base['dlg_seconds'] / r['dlg_seconds']:.1f}x | "
            f"{r['dlg_psnr']:.1f} |"
        )


if __name__ == "__main__":
    main()
