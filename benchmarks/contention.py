"""Attacks alone and beside a CPU-bound neighbour, with OpenMP threads that spin or sleep while they wait.

    python benchmarks/contention.py [--repeats 2]

Each measurement is a fresh process (OpenMP reads ``OMP_WAIT_POLICY`` when torch loads): iDLG (15 L-BFGS steps on
DLG's LeNet, 32x32) and Inverting Gradients (15 steps on ConvNet-64, 32x32), timed alone and while a neighbour
process multiplies 512x512 matrices on every core with torch's default threads, under ``OMP_WAIT_POLICY=ACTIVE``
(spinning, OpenMP's default before gradinv set one) and ``PASSIVE`` (sleeping, what gradinv now sets). The slowdown
is contended over alone; a fair share of 2 cores against one neighbour using both is about 2x. Best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ATTACK = """
import time, gradinv as gi, torch
big = {big}
name = "convnet" if big else "lenet"
model = gi.models.make(name, num_classes=10, image_shape=(3, 32, 32), seed=0, **({{"width": 64}} if big else {{}}))
images, labels = gi.data.load("skimage", indices=[1], size=32)
obs = gi.observe(model, images, labels, seed=0, threat=gi.ThreatModel(bn_mode="eval"))
attack = gi.attacks.make("inverting_gradients" if big else "idlg", steps=15)
t = time.perf_counter()
attack.reconstruct(obs)
print(time.perf_counter() - t)
"""

NEIGHBOUR = """
import time, torch
a = torch.randn(512, 512)
while True:
    a = (a @ a).tanh()
"""


def timed(big: bool, policy: str) -> float:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    done = subprocess.run([sys.executable, "-c", ATTACK.format(big=big)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-1000:])
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores")
    print("| attack | wait policy | alone (s) | beside a neighbour (s) | slowdown |")
    print("|---|---|---|---|---|")
    for big, label in ((False, "iDLG, LeNet"), (True, "IG, ConvNet-64")):
        for policy in ("ACTIVE", "PASSIVE"):
            alone = min(timed(big, policy) for _ in range(args.repeats))
            default = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # a neighbour as it comes
            neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env=default)
            try:
                time.sleep(2)
                busy = min(timed(big, policy) for _ in range(args.repeats))
            finally:
                neighbour.kill()
                neighbour.wait()
            print(f"| {label} | {policy} | {alone:.1f} | {busy:.1f} | {busy / alone:.1f}x |")


if __name__ == "__main__":
    main()
