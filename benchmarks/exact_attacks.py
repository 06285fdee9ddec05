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
5. ``--parts spear_kernel``: SPEAR's submatrix search, submatrices per second at batch 20 (photographs through a
   500-unit layer), against the search it replaced (top-(B-1) of uniforms per subset, a complete QR per subset,
   the sparsity screen in float64), both in this run on the same matrix: the baseline.
6. ``--parts spear_photos``: whole batches of 32x32 photographs through a 500-unit ReLU MLP (normalised inputs), the
   issue-16 setting: the 18 scikit-image photographs and two of them mirrored (batch 20), random crops of them
   (batches 16, 20, 24) and LFW faces and non-faces (batch 16) over ``--seeds`` draws, each with a 60 s budget:
   success, directions found, time, submatrices.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import gradinv as gi

NORM = ((0.5,), (0.25,))
PHOTO_NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


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


def _photo_batch(source: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``skimage``: the 18 photographs and the first two mirrored; ``crops``: random square crops (40-90% of the
    shorter side) of the 18 photographs in turn, at 32x32; ``lfw``: LFW faces and non-faces."""
    if source == "lfw":
        return gi.data.load("lfw", n=n, size=32, seed=seed)
    if source == "skimage":
        images, labels = gi.data.load("skimage", n=18, size=32, seed=seed)
        return torch.cat([images, images[:2].flip(-1)])[:n], torch.cat([labels, labels[:2]])[:n]
    from gradinv.data.bundled import skimage_images

    photos, _ = skimage_images()
    generator = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        photo = torch.from_numpy(photos[k % len(photos)])
        photo = photo.expand(3, *photo.shape) if photo.dim() == 2 else photo.permute(2, 0, 1)
        short = min(photo.shape[1:])
        side = int(short * (0.4 + 0.5 * float(torch.rand(1, generator=generator))))
        top = int(torch.randint(photo.shape[1] - side + 1, (1,), generator=generator))
        left = int(torch.randint(photo.shape[2] - side + 1, (1,), generator=generator))
        crop = photo[None, :, top : top + side, left : left + side]
        out.append(torch.nn.functional.interpolate(crop, size=(32, 32), mode="area")[0])
    return torch.stack(out).clamp(0, 1), torch.arange(n) % 10


def _spear_left(n: int) -> torch.Tensor:
    """The live rows of SPEAR's ``L`` for the 20-photograph batch."""
    from gradinv.attacks.spear import low_rank_factors

    images, labels = _photo_batch("skimage", n, 0)
    model = gi.models.make("mlp", image_shape=(3, 32, 32), hidden=(500,), seed=0)
    obs = gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=PHOTO_NORM))
    left, _, _ = low_rank_factors(obs.update["net.1.weight"].double(), n)
    norms = left.norm(dim=1)
    return left[norms > 1e-5 * norms.max()]


def _replaced_search(left: torch.Tensor, count: int, generator: torch.Generator, min_zeros: int) -> int:
    """The search SPEAR used before (2026-12-01): per subset the top B-1 of iid uniforms, a complete QR, the screen
    in float64. Returns the directions kept."""
    rows, size = left.shape
    left_norm = left / left.norm(dim=1)[:, None]
    picks = torch.rand(count, rows, generator=generator, dtype=torch.float64).topk(size - 1, dim=1, sorted=False)
    basis, triangle = torch.linalg.qr(left_norm[picks.indices].transpose(1, 2), mode="complete")
    q = basis[triangle.diagonal(dim1=1, dim2=2).abs().amin(dim=1) > 1e-8, :, -1]
    image = q @ left.T
    small = image.abs() <= 1e-5 * image.abs().amax(dim=1, keepdim=True)
    return int((small.sum(dim=1) >= min_zeros).sum())


def spear_kernel(n: int = 20, chunks: int = 20) -> None:
    from gradinv.attacks.spear import sample_directions

    left = _spear_left(n)
    min_zeros = max(n, int(0.15 * left.shape[0]))
    print(f"\nspear search, batch {n}, {left.shape[0]} live rows, {chunks} x 8,192 submatrices")
    print(f"{'search':<22}{'submatrices / s':>17}{'x replaced':>12}")
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(chunks):
        _replaced_search(left, 8192, generator, min_zeros)
    before = chunks * 8192 / (time.perf_counter() - start)
    start = time.perf_counter()
    sample_directions(left, chunks * 8192, generator, zero_tol=1e-5, min_zeros=min_zeros)
    now = chunks * 8192 / (time.perf_counter() - start)
    print(f"{'replaced (QR)':<22}{before:>17,.0f}{1.0:>12.2f}")
    print(f"{'current (LU, perm)':<22}{now:>17,.0f}{now / before:>12.2f}", flush=True)


def spear_photos(seeds: int) -> None:
    print(f"\n{'spear photos':<16}{'batch':>6}{'seed':>6}{'exact':>7}{'found':>7}{'s':>8}{'drawn':>12}")
    runs = [("skimage", 20, 0)] + [("crops", n, seed) for n in (16, 20, 24) for seed in range(seeds)]
    runs += [("lfw", 16, seed) for seed in range(seeds)]
    for source, n, seed in runs:
        images, labels = _photo_batch(source, n, seed)
        model = gi.models.make("mlp", image_shape=(3, 32, 32), hidden=(500,), seed=seed)
        obs = gi.observe(model, images, labels, threat=gi.ThreatModel(normalization=PHOTO_NORM))
        rec = gi.attacks.make("spear", samples=10**9, max_seconds=60.0, seed=seed).reconstruct(obs)
        exact = gi.metrics.score(rec, images, labels)["exact_fraction"]
        drawn = rec.info["samples_drawn"]
        found = rec.info["found"]
        print(f"{source:<16}{n:>6}{seed:>6}{exact:>7.2f}{found:>7}{rec.seconds:>8.1f}{drawn:>12,}", flush=True)


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
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["batch", "spear", "rgap", "spear_kernel", "spear_photos"],
        default=["batch", "spear", "rgap"],
    )
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
    if "spear_kernel" in args.parts:
        spear_kernel()
    if "spear_photos" in args.parts:
        spear_photos(args.seeds)


if __name__ == "__main__":
    main()
