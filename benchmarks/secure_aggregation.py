"""Cost of the three in-process secure aggregation protocols on the same updates, in one run: SecAgg (Bonawitz et
al. 2017), LightSecAgg (So et al. 2022) and FastSecAgg (Kadhe et al. 2020), as the number of clients grows.

    python benchmarks/secure_aggregation.py [--clients 10 30 100] [--size 15826] [--drop 0.1]

Every client holds a vector of ``--size`` entries (default: DLG's LeNet at 32x32, 15,826 parameters, as in
``defense_settings.py``); a fraction ``--drop`` of the clients, drawn at random (the paper's dropout model), drop
after their input (or shares) went out and do not answer the recovery round. Columns: wall seconds of the whole
protocol divided by the number of clients, the ratio to SecAgg measured in the same run (the baseline), the largest
error of the sum, and each protocol's settings (privacy T, clients needed U, FastShare's grid). LightSecAgg runs
twice: at its defaults (privacy against half the clients) and at FastSecAgg's privacy T with every responder needed
(the closest match: its cost falls as U - T grows). The protocols are
modelled in process (no network): the seconds are the arithmetic, the part FastSecAgg's paper speeds up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gradinv.fl.fastsecagg import FastShare, fast_secure_sum
from gradinv.fl.lightsecagg import light_secure_sum
from gradinv.fl.secagg import secure_sum


def run(clients: int, size: int, drop: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = [rng.normal(size=size) * 0.01 for _ in range(clients)]
    dropped = tuple(int(i) for i in rng.permutation(clients)[: int(drop * clients)])
    plain = sum(vectors)
    scheme = FastShare.design(clients)
    settings = {
        "secagg": f"t = {clients // 2 + 1}",
        "lightsecagg": f"T = {clients // 2}, U = {clients // 2 + 1} (its defaults)",
        "lightsecagg, FastSecAgg's T": f"T = {scheme.privacy}, U = {clients - len(dropped)}",
        "fastsecagg": (
            f"T = {scheme.privacy}, grid {scheme.n1}x{scheme.n2}, corner {scheme.k1}x{scheme.k2}, "
            f"L = {scheme.secrets_per_sharing}, {scheme.guaranteed_drops} drops guaranteed"
        ),
    }
    calls = {
        "secagg": lambda: secure_sum(vectors, drop_in_unmasking=dropped),
        "lightsecagg": lambda: light_secure_sum(vectors, drop_in_recovery=dropped),
        "lightsecagg, FastSecAgg's T": lambda: light_secure_sum(
            vectors, drop_in_recovery=dropped, privacy=scheme.privacy, needed=clients - len(dropped)
        ),
        "fastsecagg": lambda: fast_secure_sum(vectors, drop_in_recovery=dropped),
    }
    baseline = None
    for name, call in calls.items():
        start = time.perf_counter()
        try:
            total, _ = call()
        except ValueError as err:
            print(f"{clients:<9}{name:<29}refused: {err}", flush=True)
            continue
        seconds = (time.perf_counter() - start) / clients
        baseline = baseline or seconds
        error = float(np.abs(total - plain).max())
        print(
            f"{clients:<9}{name:<29}{seconds:>11.4f}{seconds / baseline:>9.2f}{error:>11.1e}   {settings[name]}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--size", type=int, default=15826)
    parser.add_argument("--drop", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{args.size} entries per client, {args.drop:.0%} of the clients drop before the recovery round")
    print(f"{'clients':<9}{'protocol':<29}{'s / client':>11}{'x secagg':>9}{'max error':>11}   settings")
    for clients in args.clients:
        run(clients, args.size, args.drop, args.seed)


if __name__ == "__main__":
    main()
