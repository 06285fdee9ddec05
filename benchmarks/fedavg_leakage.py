"""Dimitrov et al.'s FedAvg attack against a client that reshuffles its data every local epoch, beside its baselines.

    python benchmarks/fedavg_leakage.py [--steps 600] [--epochs 3 10]

The client: DLG's LeNet at 1x16x16, four MNIST digits, local SGD at lr 0.1 in mini-batches of 2 for ``--epochs``
epochs (2 steps each), its labels granted. In one run, per epoch count: Inverting Gradients unrolled over the client's
steps when the client keeps the data order (the ceiling: the attacker's simulation is then exact), the same attack
when the client reshuffles (it still assumes the data order: the authors' baseline), and ``fedavg_leakage`` with and
without its epoch order-invariant prior. Baseline in the same run: each digit's own mean grey level.
"""

from __future__ import annotations

import argparse
import time

import gradinv as gi

DIGITS = [4226, 1222, 227, 3001]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--epochs", type=int, nargs="+", default=[3, 10])
    args = parser.parse_args()
    x, y = gi.data.load("mnist_subset", indices=DIGITS, size=16, channels=1)
    model = gi.models.make("lenet", image_shape=(1, 16, 16), seed=0)
    mean = gi.Reconstruction(images=x.mean(dim=(2, 3), keepdim=True).expand_as(x), labels=None, trace=[], seconds=0)
    print(f"baseline (mean grey): {gi.metrics.score(mean, x)['psnr']:.2f} dB; {args.steps} attack steps")
    runs = [
        ("in data order", False, "inverting_gradients", {}),
        ("reshuffled", True, "inverting_gradients", {}),
        ("reshuffled", True, "fedavg_leakage", {}),
        ("reshuffled", True, "fedavg_leakage", {"reorder": 0.0}),
    ]
    for epochs in args.epochs:
        for client, shuffle, attack, options in runs:
            threat = gi.ThreatModel(
                update="fedavg",
                local_steps=2 * epochs,
                local_lr=0.1,
                local_batch_size=2,
                local_shuffle=shuffle,
                knows_labels=True,
            )
            observation = gi.observe(model, x, y, threat=threat, seed=3)
            start = time.perf_counter()
            rec = gi.attacks.make(attack, steps=args.steps, **options).reconstruct(observation)
            score = gi.metrics.score(rec, x, y)
            label = attack + ("" if not options else f" ({', '.join(f'{k}={v}' for k, v in options.items())})")
            print(
                f"{epochs:>2} epochs  client {client:<14} {label:<32} PSNR {score['psnr']:6.2f}  "
                f"SSIM {score['ssim']:.3f}  {time.perf_counter() - start:5.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
