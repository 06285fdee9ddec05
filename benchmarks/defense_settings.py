"""Leakage against the protocol settings that act as defenses: local iterations, batch size, and the number of
clients behind secure aggregation; plus the cost of the cryptographic protocols per update.

    python benchmarks/defense_settings.py [--steps 1 2 5 10] [--batches 1 2 4 8] [--clients 1 2 4 8]

Four tables (PSNR of the best-matched reconstruction, mean over the batch; photographs from scikit-image, 16x16):

1. Local iterations (FedAvg, Wei et al. 2020 / Geiping et al. 2020 Sec. 5): DLG on DLG's LeNet against a client
   that takes k local SGD steps (lr 0.1) on one image, for two attackers: one that unrolls the k steps (gradinv's
   default: the threat model states them) and one that matches the update as if it were a single gradient (Wei et
   al.'s setting), normalising its scale. Both use L-BFGS with a strong-Wolfe line search (the paper's fixed step
   diverges through unrolled steps: 5.7 dB at 2 and 10 steps).
2. Batch size: DLG on LeNet with the batch size known, 1 to 8 images.
3. Clients behind secure aggregation (Bonawitz et al., in process): each of n clients holds one image; DLG (batch
   size guessed 1) and SPEAR (500-unit ReLU MLP) attack the mean update; the best PSNR any client's image gets.
4. Protocol cost per client update of DLG's LeNet at 32x32 (15,826 parameters): secagg, LightSecAgg, homomorphic (CKKS),
   against the time of the client's own gradient measured in the same run (``ratio``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import gradinv as gi
from gradinv.fl.aggregate import flatten, observe_aggregate
from gradinv.fl.homomorphic import encrypted_sum
from gradinv.fl.lightsecagg import light_secure_sum
from gradinv.fl.secagg import secure_sum

SHAPE = (3, 16, 16)


def psnr_of(attack: gi.attacks.Attack, obs: gi.Observation, images: torch.Tensor, labels: torch.Tensor) -> float:
    return gi.metrics.score(attack.reconstruct(obs), images, labels)["psnr"]


def local_iterations(steps: list[int], dlg_steps: int) -> None:
    print(f"\n{'local steps':<13}{'unrolled':>10}{'as gradient':>13}")
    images, labels = gi.data.load("skimage", indices=[1], size=16)
    model = gi.models.make("lenet", image_shape=SHAPE, seed=0)
    # the paper's fixed-step L-BFGS diverges through unrolled steps; a strong-Wolfe line search does not
    attack = gi.attacks.make("dlg", steps=dlg_steps, seed=0, line_search="strong_wolfe")
    for k in steps:
        threat = gi.ThreatModel(update="fedavg", local_steps=k, local_lr=0.1)
        obs = gi.observe(model, images, labels, threat=threat)
        unrolled = psnr_of(attack, obs, images, labels)
        # Wei et al.'s attacker: the update taken as one gradient (rescaled by 1 / (k lr), its size for small steps)
        naive = gi.Observation(
            model=obs.model,
            update={n: u / (k * 0.1) for n, u in obs.update.items()},
            threat=gi.ThreatModel(),
            image_shape=obs.image_shape,
            num_classes=obs.num_classes,
            batch_size=obs.batch_size,
        )
        print(f"{k:<13}{unrolled:>10.1f}{psnr_of(attack, naive, images, labels):>13.1f}", flush=True)


def batch_sizes(sizes: list[int], dlg_steps: int) -> None:
    print(f"\n{'batch':<13}{'DLG PSNR':>10}{'seconds':>10}")
    model = gi.models.make("lenet", image_shape=SHAPE, seed=0)
    attack = gi.attacks.make("dlg", steps=dlg_steps, seed=0)
    for n in sizes:
        images, labels = gi.data.load("skimage", n=n, size=16, seed=0)
        start = time.perf_counter()
        value = psnr_of(attack, gi.observe(model, images, labels), images, labels)
        print(f"{n:<13}{value:>10.1f}{time.perf_counter() - start:>10.1f}", flush=True)


def clients(counts: list[int], dlg_steps: int) -> None:
    print(f"\n{'clients':<13}{'DLG best':>10}{'SPEAR best':>12}{'SPEAR exact':>13}")
    lenet = gi.models.make("lenet", image_shape=SHAPE, seed=0)
    mlp = gi.models.make("mlp", image_shape=SHAPE, hidden=(500,), seed=0)
    dlg = gi.attacks.make("dlg", steps=dlg_steps, batch_size=1, seed=0)
    spear = gi.attacks.make("spear")
    for n in counts:
        images, labels = gi.data.load("skimage", n=n, size=16, seed=0)
        parts = [(images[i : i + 1], labels[i : i + 1]) for i in range(n)]
        threat = gi.ThreatModel(knows_batch_size=False)
        if n == 1:
            obs_dlg, obs_spear = gi.observe(lenet, images, labels, threat=threat), gi.observe(mlp, images, labels)
        else:
            obs_dlg = observe_aggregate(lenet, parts, threat=threat)
            obs_spear = observe_aggregate(mlp, parts)
        rec = dlg.reconstruct(obs_dlg)
        best_dlg = max(gi.metrics.psnr(rec.images, images[i : i + 1]).item() for i in range(n))
        scores = gi.metrics.score(spear.reconstruct(obs_spear), images, labels)
        best_spear = min(max(p["psnr"] for p in scores["per_image"]), 999.0)  # an exact match scores "inf"
        print(f"{n:<13}{best_dlg:>10.1f}{best_spear:>12.1f}{scores['exact_fraction']:>13.2f}", flush=True)


def protocol_costs(n: int) -> None:
    model = gi.models.make("lenet", image_shape=(3, 32, 32), seed=0)
    images, labels = gi.data.load("skimage", n=n, size=32, seed=0)
    start = time.perf_counter()
    vectors = [flatten(gi.observe(model, images[i : i + 1], labels[i : i + 1]).update) for i in range(n)]
    gradient = (time.perf_counter() - start) / n
    print(f"\n{n} clients, {vectors[0].size} parameters; one client gradient {gradient * 1000:.1f} ms")
    print(f"{'protocol':<14}{'s / client':>12}{'ratio':>8}{'bytes / client':>16}{'max error':>12}")
    plain = sum(vectors)
    for name, run in (("secagg", secure_sum), ("lightsecagg", light_secure_sum), ("homomorphic", encrypted_sum)):
        start = time.perf_counter()
        total, view = run(vectors)
        seconds = (time.perf_counter() - start) / n
        if name == "homomorphic":
            size = view.ciphertext_bytes
        else:
            size = next(iter(view.masked_inputs.values())).nbytes
        error = float(np.abs(total - plain).max())
        print(f"{name:<14}{seconds:>12.4f}{seconds / gradient:>8.2f}{size:>16,}{error:>12.1e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--dlg-steps", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(2)
    local_iterations(args.steps, args.dlg_steps)
    batch_sizes(args.batches, args.dlg_steps)
    clients(args.clients, args.dlg_steps)
    protocol_costs(4)


if __name__ == "__main__":
    main()
