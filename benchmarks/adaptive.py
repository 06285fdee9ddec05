"""Defenses against attacks that ignore them and attacks that know them (gradinv/attacks/adaptive.py).

    python benchmarks/adaptive.py [--size 32] [--image 1] [--defenses prune topk soteria noise ...]

The comparison of issue 18: on DLG's LeNet (sigmoid, 32x32 by default) and a real photograph (scikit-image's cat,
index 1), each defense at the setting its paper or the issue names (pruning 0.9, top-k 0.01, Soteria 80%, Gaussian
noise std 1e-3 and 1e-2, DP-SGD clipping at 1 without and with noise multiplier 1e-3, quantisation to 4 and 2 bits,
dropout 0.5, signSGD, PRECODE, ATS's policies 3-1-7 and 3-1-7+43-18-18), each attack run twice from the same seed:
plain (``adaptive=False``) and adaptive (``adaptive=True``: matched only on the entries the defense let through;
under noise, the noise-aware posterior; under DP-SGD, the trial clipped as the client's was; under quantisation, the
rounding cells; under dropout, the masks optimised too; under signs, the orthant; under PRECODE, its draw read off
the update; under ATS, the policy undone on the recovered image, each sign chosen by the round trip). The baseline
is the same attack on the undefended update, measured in the same run. A defense without an adaptive counterpart
prints ``n/a`` (the attack refuses ``adaptive=True`` there rather than run the plain one under the adaptive name).
``--fedavg k``: the client shares a FedAvg update of ``k`` local steps (lr 0.1) instead of a gradient. ``vs enc.``: the
plain attack's PSNR against what the client trained on (ATS's transformed image; ``-`` where that
is the photograph itself).

``--ats``: instead, ATS in detail: iDLG on three photographs (cat, astronaut, rocket) and both of the paper's policies,
PSNR against the encoding (the transformed image) and, plain and adaptive, on the part of the photograph the
client's own draw kept in view; then the policies' utility (``gi.evaluate.utility``: DLG's LeNet on 16x16 digits,
10 epochs, against no defense in the same run).

``--precode``: instead, PRECODE's utility claim (the paper: a small accuracy cost): the official code's MLP (two
hidden layers of 1,024, ReLU) and DLG's sigmoid LeNet, trained 10 epochs on 3,000 16x16 MNIST digits with and without
the bottleneck, at server learning rates 0.05, 0.03, 0.02 and 0.01 (SGD, momentum 0.9) and with Adam at 1e-3 (the
official code's optimiser), test accuracy of the sampled
model as the official code measures it; then iDLG (plain and adaptive) on the cat against a client whose
BatchNorm/dropout mode is eval: the bottleneck still draws.

``--utility``: instead, each defense setting's accuracy cost (the table's accuracy column): DLG's sigmoid LeNet
trained 10 epochs on 3,000 16x16 MNIST digits with the defense on every update (``gi.evaluate.utility``, server lr
0.02, the largest at which it trains with PRECODE), against no defense in the same run.

Attacks and budgets: iDLG (L-BFGS, strong-Wolfe line search, 100 iterations), DLG (the same, labels optimised
jointly), Inverting Gradients (Adam, 1,000 steps, TV 1e-4).
"""

from __future__ import annotations

import argparse
import time

import gradinv as gi
from gradinv.fl.client import encode_batch

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
    "ats": ("ats", {"policy": "3-1-7"}),
    "ats-hybrid": ("ats", {"policy": "3-1-7+43-18-18"}),
}
ATTACKS = {
    "idlg": {"steps": 100, "line_search": "strong_wolfe"},
    "dlg": {"steps": 100, "line_search": "strong_wolfe"},
    "inverting_gradients": {"steps": 1000},
}


def ats_detail() -> None:
    import torch

    from gradinv.attacks.ats_decode import undo
    from gradinv.defenses import ats

    model = gi.models.make("lenet", num_classes=10, image_shape=(3, 32, 32), seed=0)
    print(f"{'photo':<8}{'policy':<12}{'plain vs enc.':>14}{'plain kept':>11}{'adaptive kept':>14}{'kept share':>11}")
    for index in (1, 0, 3):
        images, labels = gi.data.load("skimage", indices=[index], size=32)
        for policy in ("3-1-7", "43-18-18"):
            defense = gi.defenses.make("ats", policy=policy)
            obs = gi.observe(model, images, labels, seed=0, defenses=[defense])
            encoded, _ = encode_batch(images, labels, 10, [defense], seed=0)
            indices = ats.parse_policy(policy)[0]
            draws = [[a, b, c] for a in (1, -1) for b in (1, -1) for c in (1, -1)]
            drawn = next(d for d in draws if torch.equal(ats.transform(images[0], indices, d), encoded[0]))
            kept = (undo(ats.transform(torch.ones(3, 32, 32), indices, drawn), indices, drawn) > 0.5).all(dim=0)
            scores, versus = [], 0.0
            for adaptive in (False, True):
                attack = gi.attacks.make("idlg", adaptive=adaptive, **ATTACKS["idlg"])
                rec = attack.reconstruct(obs)
                scores.append(float(10 * torch.log10(1 / (rec.images[0] - images[0])[:, kept].pow(2).mean())))
                if not adaptive:
                    versus = float(gi.metrics.psnr(rec.images, encoded))
            share = float(kept.float().mean())
            row = f"{index:<8}{policy:<12}{versus:>14.1f}{scores[0]:>11.1f}{scores[1]:>14.1f}{share:>11.2f}"
            print(row, flush=True)
    print(f"\n{'utility':<22}{'accuracy':>9}")
    for label, chain in (("none", []), ("ats 3-1-7", ["3-1-7"]), ("ats 3-1-7+43-18-18", ["3-1-7+43-18-18"])):
        result = gi.evaluate.utility(
            lambda: gi.models.make("lenet", num_classes=10, image_shape=(1, 16, 16), seed=0),
            "digits",
            [gi.defenses.make("ats", policy=p) for p in chain],
            10,
            n=1797,
            size=16,
            channels=1,
            seed=0,
        )
        print(f"{label:<22}{result.accuracy:>9.3f}", flush=True)


def precode_detail() -> None:
    models = {
        "mlp 1024x2": ("mlp", {"hidden": (1024, 1024)}),
        "lenet (sigmoid)": ("lenet", {}),
    }
    print(f"{'model':<18}{'server':>7}{'lr':>7}{'no defense':>11}{'precode':>9}{'cost':>7}")
    steps = [("sgd", lr) for lr in (0.05, 0.03, 0.02, 0.01)] + [("adam", 1e-3)]
    for label, (name, options) in models.items():
        for server, lr in steps:
            scores = []
            for chain in ([], [gi.defenses.make("precode")]):
                result = gi.evaluate.utility(
                    lambda name=name, options=options: gi.models.make(
                        name, num_classes=10, image_shape=(1, 16, 16), seed=0, **options
                    ),
                    "mnist_subset",
                    chain,
                    10,
                    n=3000,
                    size=16,
                    channels=1,
                    lr=lr,
                    seed=0,
                    server_optimizer=server,
                )
                scores.append(result.accuracy)
            row = f"{label:<18}{server:>7}{lr:>7g}{scores[0]:>11.3f}{scores[1]:>9.3f}{scores[0] - scores[1]:>7.3f}"
            print(row, flush=True)
    model = gi.models.make("lenet", num_classes=10, image_shape=(3, 32, 32), seed=0)
    images, labels = gi.data.load("skimage", indices=[1], size=32)
    obs = gi.observe(
        model, images, labels, seed=0, defenses=[gi.defenses.make("precode")], threat=gi.ThreatModel(bn_mode="eval")
    )
    for adaptive in (False, True):
        rec = gi.attacks.make("idlg", adaptive=adaptive, **ATTACKS["idlg"]).reconstruct(obs)
        psnr = float(gi.metrics.psnr(rec.images, images).mean())
        print(f"eval-mode client, iDLG {'adaptive' if adaptive else 'plain':<9}{psnr:.1f} dB", flush=True)


def utility_detail(keys: list[str]) -> None:
    print(f"{'defense':<12}{'accuracy':>9}{'seconds':>9}")
    for key, (name, options) in {"none": ("", {}), **{k: DEFENSES[k] for k in keys}}.items():
        start = time.perf_counter()
        result = gi.evaluate.utility(
            lambda: gi.models.make("lenet", num_classes=10, image_shape=(1, 16, 16), seed=0),
            "mnist_subset",
            [gi.defenses.make(name, **options)] if name else [],
            10,
            n=3000,
            size=16,
            channels=1,
            lr=0.02,
            seed=0,
        )
        print(f"{key:<12}{result.accuracy:>9.3f}{time.perf_counter() - start:>9.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--image", type=int, default=1, help="scikit-image sample index (1: the cat)")
    parser.add_argument("--defenses", nargs="+", choices=sorted(DEFENSES), default=list(DEFENSES))
    parser.add_argument("--attacks", nargs="+", choices=sorted(ATTACKS), default=list(ATTACKS))
    parser.add_argument("--ats", action="store_true", help="ATS in detail (kept region, utility) instead")
    parser.add_argument("--utility", action="store_true", help="each defense setting's accuracy cost instead")
    parser.add_argument(
        "--precode", action="store_true", help="PRECODE's utility claim (and an eval-mode client) instead"
    )
    parser.add_argument(
        "--fedavg", type=int, default=0, help="the client shares a FedAvg update of this many local steps (lr 0.1)"
    )
    args = parser.parse_args()
    if args.ats:
        ats_detail()
        return
    if args.precode:
        precode_detail()
        return
    if args.utility:
        utility_detail(args.defenses)
        return
    shape = (3, args.size, args.size)
    model = gi.models.make("lenet", num_classes=10, image_shape=shape, seed=0)
    images, labels = gi.data.load("skimage", indices=[args.image], size=args.size)
    threat = gi.ThreatModel(update="fedavg", local_steps=args.fedavg, local_lr=0.1) if args.fedavg else gi.ThreatModel()
    undefended = gi.observe(model, images, labels, seed=0, threat=threat)
    print(
        f"{'defense':<12}{'attack':<22}{'no defense':>11}{'plain':>8}{'vs enc.':>9}{'adaptive':>10}{'gain':>7}"
        f"{'seconds':>9}"
    )
    for attack in args.attacks:
        base = gi.metrics.score(gi.attacks.make(attack, **ATTACKS[attack]).reconstruct(undefended), images, labels)
        for key in args.defenses:
            name, options = DEFENSES[key]
            defense = gi.defenses.make(name, **options)
            obs = gi.observe(model, images, labels, seed=0, defenses=[defense], threat=threat)
            encoded, _ = encode_batch(images, labels, 10, [defense], seed=0)
            start = time.perf_counter()
            plain_rec = gi.attacks.make(attack, **ATTACKS[attack]).reconstruct(obs)
            plain = gi.metrics.score(plain_rec, images, labels)
            versus = "-" if encoded is images else f"{float(gi.metrics.psnr(plain_rec.images, encoded).mean()):.1f}"
            try:
                rec = gi.attacks.make(attack, adaptive=True, **ATTACKS[attack]).reconstruct(obs)
            except ValueError:
                adaptive, gain = "n/a", "n/a"
            else:
                score = gi.metrics.score(rec, images, labels)["psnr"]
                adaptive, gain = f"{score:.1f}", f"{score - plain['psnr']:+.1f}"
            seconds = time.perf_counter() - start
            print(
                f"{key:<12}{attack:<22}{base['psnr']:>11.1f}{plain['psnr']:>8.1f}{versus:>9}{adaptive:>10}{gain:>7}"
                f"{seconds:>9.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
