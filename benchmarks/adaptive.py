"""Defenses against attacks that ignore them and attacks that know them (gradinv/attacks/adaptive.py).

    python benchmarks/adaptive.py [--size 32] [--image 1] [--defenses prune topk soteria noise ...]

The comparison of issue 18: on DLG's LeNet (sigmoid, 32x32 by default) and a real photograph (scikit-image's cat,
index 1), each defense at the setting its paper or the issue names (pruning 0.9, top-k 0.01, Soteria 80%, Gaussian
noise std 1e-3 and 1e-2, DP-SGD clipping at 1 without and with noise multiplier 1e-3, quantisation to 4 and 2
bits, dropout 0.5, signSGD, PRECODE), each attack run twice from the same seed: plain (``adaptive=False``) and
adaptive (``adaptive=True``: matched only on the entries the defense let through; under noise, the noise-aware
posterior; under DP-SGD, the trial clipped as the client's was; under quantisation, the rounding cells; under
dropout, the masks optimised too; under signs, the orthant; under PRECODE, its draw read off the update). The
baseline is the same attack on the undefended update, measured in the same run. A defense without an adaptive
counterpart prints ``n/a`` (the attack refuses ``adaptive=True`` there rather than run the plain one under the
adaptive name).

Attacks and budgets: iDLG (L-BFGS, strong-Wolfe line search, 100 iterations), DLG (the same, labels optimised
jointly), Inverting Gradients (Adam, 1,000 steps, TV 1e-4).
"""

from __future__ import annotations

import argparse
import time

import gradinv as gi

DEFENSES = {
    "prune": ("prune", {"ratio": 0.9}),
    "topk": ("topk", {"fraction": 0.01}),
    "soteria": ("soteria", {"pruning_rate": 80.0}),
    "noise": ("noise", {"std": 1e-3}),
    "noise-1e-2": ("noise", {"std": 1e-2}),
    "dpsgd-clip": ("dpsgd", {"noise_multiplier": 0.0, "max_grad_norm": 1.0}),
    "dpsgd": ("dpsgd", {"noise_multiplier": 1e-3, "max_grad_norm": 1.0}),
    "quantize-4": ("quantize", {"bits": 4}),
    "quantize-2": ("quantize", {"bits": 2}),
    "dropout": ("dropout", {"p": 0.5}),
    "sign": ("sign", {}),
    "precode": ("precode", {}),
}
ATTACKS = {
    "idlg": {"steps": 100, "line_search": "strong_wolfe"},
    "dlg": {"steps": 100, "line_search": "strong_wolfe"},
    "inverting_gradients": {"steps": 1000},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--image", type=int, default=1, help="scikit-image sample index (1: the cat)")
    parser.add_argument("--defenses", nargs="+", choices=sorted(DEFENSES), default=list(DEFENSES))
    parser.add_argument("--attacks", nargs="+", choices=sorted(ATTACKS), default=list(ATTACKS))
    args = parser.parse_args()
    shape = (3, args.size, args.size)
    model = gi.models.make("lenet", num_classes=10, image_shape=shape, seed=0)
    images, labels = gi.data.load("skimage", indices=[args.image], size=args.size)
    undefended = gi.observe(model, images, labels, seed=0)
    print(f"{'defense':<12}{'attack':<22}{'no defense':>11}{'plain':>8}{'adaptive':>10}{'gain':>7}{'seconds':>9}")
    for attack in args.attacks:
        base = gi.metrics.score(gi.attacks.make(attack, **ATTACKS[attack]).reconstruct(undefended), images, labels)
        for key in args.defenses:
            name, options = DEFENSES[key]
            obs = gi.observe(model, images, labels, seed=0, defenses=[gi.defenses.make(name, **options)])
            start = time.perf_counter()
            plain = gi.metrics.score(gi.attacks.make(attack, **ATTACKS[attack]).reconstruct(obs), images, labels)
            try:
                rec = gi.attacks.make(attack, adaptive=True, **ATTACKS[attack]).reconstruct(obs)
            except ValueError:
                adaptive, gain = "n/a", "n/a"
            else:
                score = gi.metrics.score(rec, images, labels)["psnr"]
                adaptive, gain = f"{score:.1f}", f"{score - plain['psnr']:+.1f}"
            seconds = time.perf_counter() - start
            print(
                f"{key:<12}{attack:<22}{base['psnr']:>11.1f}{plain['psnr']:>8.1f}{adaptive:>10}{gain:>7}{seconds:>9.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
