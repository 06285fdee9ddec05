"""DLG, iDLG and Inverting Gradients on several real images, at initialisation and on trained networks.

    python benchmarks/optimisation_attacks.py [--steps 100] [--ig-steps 500] [--sizes 16 32]

The README's claims about the optimisation attacks, re-measured; the baseline in the same run is each image's own
mean colour (the PSNR and SSIM a reconstruction must beat to show anything of the image):

1. DLG's sigmoid LeNet at initialisation, batch 1, labels withheld: iDLG, DLG (the paper's fixed-step L-BFGS with
   joint labels) and DLG with a strong-Wolfe line search on astronaut, cat, coffee, rocket, at each ``--sizes``.
2. The same LeNet trained for 5 epochs on 3000 MNIST digits (16x16), four held-out digits.
3. Inverting Gradients (ConvNet width 16, 16x16, BN eval, ``--ig-steps``) on the four photographs, and on a width-8
   ConvNet trained for 2 epochs on the digits.
4. Label recovery on the trained networks: iDLG on 40 single digits, LLG's label counts on 5 batches of 8.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch

import gradinv as gi
from gradinv.attacks.labels import recover

PHOTOS = {"astronaut": 0, "cat": 1, "coffee": 2, "rocket": 3}
VARIANTS = {"idlg": ("idlg", {}), "dlg": ("dlg", {}), "dlg-wolfe": ("dlg", {"line_search": "strong_wolfe"})}
CIFAR_NORM = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


def baseline(x: torch.Tensor) -> dict:
    mean = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    return gi.metrics.score(gi.Reconstruction(images=mean, labels=None, trace=[], seconds=0), x)


def attack_each(model, images, labels, name, options, threat) -> list[tuple[float, float, float, float]]:
    rows = []
    for i in range(images.shape[0]):
        x, y = images[i : i + 1], labels[i : i + 1]
        rec = gi.attacks.make(name, seed=0, **options).reconstruct(gi.observe(model, x, y, threat=threat))
        s, b = gi.metrics.score(rec, x, y), baseline(x)
        rows.append((s["psnr"], s["ssim"], b["psnr"], b["ssim"]))
    return rows


def show(title: str, rows: list[tuple[float, float, float, float]], seconds: float) -> None:
    cells = "  ".join(f"{p:5.1f}/{s:.2f} (base {bp:4.1f}/{bs:.2f})" for p, s, bp, bs in rows)
    wins = sum(p > 30 for p, *_ in rows)
    print(f"{title:<34}{wins}/{len(rows)} > 30 dB  {cells}  [{seconds:.0f} s]", flush=True)


def trained_models() -> tuple[torch.nn.Module, torch.nn.Module]:
    common = {"epochs": 5, "n": 3000, "size": 16, "channels": 1, "lr": 0.05}
    lenet = gi.evaluate.utility(
        lambda: gi.models.make("lenet", seed=0, image_shape=(1, 16, 16)), "mnist_subset", [], **common
    )
    common["epochs"] = 2
    conv = gi.evaluate.utility(
        lambda: gi.models.make("convnet", width=8, seed=0, image_shape=(1, 16, 16)), "mnist_subset", [], **common
    )
    print(f"trained LeNet accuracy {lenet.accuracy:.3f}, ConvNet {conv.accuracy:.3f}")
    assert lenet.model is not None and conv.model is not None
    return lenet.model, conv.model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="L-BFGS steps of DLG and iDLG")
    parser.add_argument("--ig-steps", type=int, default=500)
    parser.add_argument("--sizes", type=int, nargs="*", default=[16, 32])
    args = parser.parse_args()
    eval_mode = gi.ThreatModel(bn_mode="eval")
    print("PSNR/SSIM per image (astronaut, cat, coffee, rocket; digits: 4 held out)")
    for size in args.sizes:
        images, labels = gi.data.load("skimage", indices=list(PHOTOS.values()), size=size)
        model = gi.models.make("lenet", image_shape=(3, size, size), seed=0)
        for variant, (name, options) in VARIANTS.items():
            start = time.perf_counter()
            rows = attack_each(model, images, labels, name, {"steps": args.steps, **options}, eval_mode)
            show(f"{variant} LeNet init {size}x{size}", rows, time.perf_counter() - start)
    lenet, conv = trained_models()
    digits, digit_labels = gi.data.load("mnist_subset", n=40, size=16, channels=1, seed=777)
    for variant, (name, options) in VARIANTS.items():
        start = time.perf_counter()
        rows = attack_each(lenet, digits[:4], digit_labels[:4], name, {"steps": args.steps, **options}, eval_mode)
        show(f"{variant} LeNet trained 16x16", rows, time.perf_counter() - start)
    ig = {"steps": args.ig_steps}
    photos, photo_labels = gi.data.load("skimage", indices=list(PHOTOS.values()), size=16)
    init_conv = gi.models.make("convnet", width=16, image_shape=(3, 16, 16), seed=0)
    for title, model, x, y, norm in (
        ("IG ConvNet-16 init 16x16", init_conv, photos, photo_labels, CIFAR_NORM),
        ("IG ConvNet-8 trained 16x16", conv, digits[:4], digit_labels[:4], ((0.5,), (0.25,))),
    ):
        start = time.perf_counter()
        threat = gi.ThreatModel(bn_mode="eval", normalization=norm)
        show(title, attack_each(model, x, y, "inverting_gradients", ig, threat), time.perf_counter() - start)
    for title, model in (("LeNet", lenet), ("ConvNet", conv)):
        single = sum(
            int(recover("idlg", gi.observe(model, digits[i : i + 1], digit_labels[i : i + 1], threat=eval_mode), 1))
            == int(digit_labels[i])
            for i in range(40)
        )
        counts = []
        for start_index in range(0, 40, 8):
            sl = slice(start_index, start_index + 8)
            found = recover("llg", gi.observe(model, digits[sl], digit_labels[sl], threat=eval_mode), 8)
            counts.append(sum((Counter(found.tolist()) & Counter(digit_labels[sl].tolist())).values()) / 8)
        print(f"labels, trained {title}: iDLG {single}/40 exact; LLG label counts {sum(counts) / len(counts):.2f}")


if __name__ == "__main__":
    main()
