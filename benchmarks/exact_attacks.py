"""Time to exact recovery and share of the batch recovered exactly, against batch size, for the exact attacks.

    python benchmarks/exact_attacks.py [--batch-sizes 1 8 32 128] [--spear-sizes 2 4 8 12 16 20] [--seeds 3]

Four tables:

1. bias_trick, trap_weights and imprint (``2 * batch`` bins): for each batch size the attack's wall time (the
   client's update excluded), the share of the batch within 1e-3 per pixel of an original (``exact_fraction``), and,
   as the baseline measured in the same run, the time of one client gradient on the same model and batch (``ratio``
   = attack time / gradient time).
2. imprint's bin sweep: exact share against the number of bins per batch size.
3. SPEAR's failure rate against batch size (the paper's Fig. 5 question) over ``--seeds`` models and batches, with
   the default budget of submatrices; time per batch and submatrices drawn.
4. R-GAP on the paper's CNN6 and CNN6-d and on DLG's LeNet, 32x32 photographs: PSNR, rank verdict, time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import gradinv as gi

NORM = ((0.5,), (0.25,))


def setting(name: str, n: int, public: torch.Tensor) -> tuple[gi.attacks.Attack, torch.nn.Module, gi.ThreatModel]:
    """The attack, the model the server sends, and the threat model."""
    mlp = gi.models.make("mlp", image_shape=(1, 28, 28), hidden=(1000,), seed=0)
    if name == "bias_trick":
        return gi.attacks.make(name), mlp, gi.ThreatModel(normalization=NORM)
    threat = gi.ThreatModel(server="malicious", normalization=NORM)
    if name == "imprint":
        attack = gi.attacks.make(name, bins=max(2 * n, 8)).fit(public)
        return attack, attack.prepare_model(gi.models.make("lenet", image_shape=(1, 28, 28), seed=0), threat), threat
    attack = gi.attacks.make(name).fit(public, n)
    return attack, attack.prepare_model(mlp, threat), threat


def imprint_bins(sizes: list[int], public: torch.Tensor) -> None:
    print(f"\n{'imprint batch':<14}" + "".join(f"{f'{f}x bins':>10}" for f in (0.5, 1, 2, 4)))
    threat = gi.ThreatModel(server="malicious", normalization=NORM)
    for n in sizes:
        images, labels = gi.data.load("mnist_subset", n=n, size=28, channels=1, seed=0)
        row = []
        for factor in (0.5, 1, 2, 4):
            attack = gi.attacks.make("imprint", bins=max(int(factor * n), 2)).fit(public)
            model = attack.prepare_model(gi.models.make("lenet", image_shape=(1, 28, 28), seed=0), threat)
            rec = attack.reconstruct(gi.observe(model, images, labels, threat=threat))
            row.append(gi.metrics.score(rec, images, labels)["exact_fraction"])
        print(f"{n:<14}" + "".join(f"{v:>10.2f}" for v in row), flush=True)


def spear_failure_rate(sizes: list[int], seeds: int) -> None:
    print(f"\n{'spear batch':<14}{'success':>9}{'exact':>8}{'mean s':>9}{'drawn':>10}")
    for n in sizes:
        wins, exact, seconds, drawn = 0, 0.0, 0.0, 0.0
        for seed in range(seeds):
            images, labels = gi.data.load("mnist_subset", n=n, size=28, channels=1, seed=seed)
            model = gi.models.make("mlp", image_shape=(1, 28, 28), hidden=(1000,), seed=seed)
            rec = gi.attacks.make("spear").reconstruct(
                gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=NORM))
            )
            share = gi.metrics.score(rec, images, labels)["exact_fraction"]
            wins += share == 1.0
            exact += share / seeds
            seconds += rec.seconds / seeds
            drawn += rec.info["samples_drawn"] / seeds
        print(f"{n:<14}{f'{wins}/{seeds}':>9}{exact:>8.2f}{seconds:>9.2f}{drawn:>10.0f}", flush=True)


def rgap_models(repeats: int = 5) -> None:
    """R-GAP per model: PSNR, the rank verdict, each conv layer's solver, the first call's time and the median of
    ``repeats`` more (the first call in a process also pays the first touch of its dense matrices' memory)."""
    from gradinv.models.cnn6 import CNN6D_CHANNELS

    print(f"\n{'rgap model':<14}{'psnr':>8}{'ranks ok':>10}{'first s':>9}{'median s':>10}  solvers")
    norm = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    images, labels = gi.data.load("skimage", n=1, size=32, seed=1)
    for label, name, kwargs in [
        ("cnn6", "cnn6", {}),
        ("cnn6-d", "cnn6", {"channels": CNN6D_CHANNELS}),
        ("lenet (dlg)", "lenet", {}),
    ]:
        model = gi.models.make(name, seed=0, **kwargs)
        obs = gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=norm))
        runs = [gi.attacks.make("rgap").reconstruct(obs) for _ in range(1 + repeats)]
        rec = runs[0]
        psnr = gi.metrics.score(rec, images, labels)["psnr"]
        median = statistics.median(r.seconds for r in runs[1:])
        solvers = ",".join(r["solver"] for r in rec.info["ranks"] if r["kind"] == "Conv2d")
        verdict = str(rec.info["rank_sufficient"])
        print(f"{label:<14}{psnr:>8.1f}{verdict:>10}{rec.seconds:>9.2f}{median:>10.2f}  {solvers}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--spear-sizes", type=int, nargs="+", default=[2, 4, 8, 12, 16, 20])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--parts", nargs="+", choices=["batch", "spear", "rgap"], default=["batch", "spear", "rgap"])
    parser.add_argument("--threads", type=int, default=1, help="torch's intra-op threads (BLAS keeps its own)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if "batch" in args.parts:
        public, _ = gi.data.load("mnist_subset", n=200, size=28, channels=1, seed=99)
        print(f"{'attack':<14}{'batch':>6}{'exact':>8}{'attack s':>10}{'gradient s':>12}{'ratio':>8}")
        for name in ("bias_trick", "trap_weights", "imprint"):
            for n in args.batch_sizes:
                images, labels = gi.data.load("mnist_subset", n=n, size=28, channels=1, seed=0)
                attack, model, threat = setting(name, n, public)
                t0 = time.perf_counter()
                obs = gi.observe(model, images, labels, threat=threat)
                gradient = time.perf_counter() - t0
                rec = attack.reconstruct(obs)
                exact = gi.metrics.score(rec, images, labels)["exact_fraction"]
                ratio = rec.seconds / gradient
                print(f"{name:<14}{n:>6}{exact:>8.2f}{rec.seconds:>10.3f}{gradient:>12.3f}{ratio:>8.1f}", flush=True)
        imprint_bins(args.batch_sizes, public)
    if "spear" in args.parts:
        spear_failure_rate(args.spear_sizes, args.seeds)
    if "rgap" in args.parts:
        rgap_models()


if __name__ == "__main__":
    main()
