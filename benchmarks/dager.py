"""DAGER on real sentences: a random GPT-2-small-shaped decoder and the shipped trained MiniLM encoder.

    python benchmarks/dager.py [--batches 16] [--encoder-batches 1 2 4 8] [--encoder-length 12]

The README's DAGER numbers, re-measured: for each batch of Pang & Lee's movie reviews (seed 0), the exact-sentence
rate, ROUGE-1/2, the certified sentences and those certified wrongly (must be 0), and the attack's time against the
client's own gradient computation in the same run (the ratio printed). Decoder: GPT-2 of the GPT-2-small shape (12
layers, width 768, 12 heads; random weights, the shipped WordPiece vocabulary), sequence classification and
next-token loss. Encoder: all-MiniLM-L6-v2 (trained, width 384) with a new classifier head, sentences cut at
``--encoder-length`` tokens.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import gradinv as gi  # noqa: E402
from gradinv.fl.text_client import observe_text  # noqa: E402
from gradinv.metrics.text import text_score  # noqa: E402
from gradinv.text import make_text_model, sentences, shipped_tokenizer  # noqa: E402


def row(label: str, model, tokenizer, n: int, task: str, max_length: int) -> None:
    texts, labels = sentences(n=n, seed=0)
    start = time.perf_counter()
    obs = observe_text(model, tokenizer, texts, labels, task=task, max_length=max_length)
    client = time.perf_counter() - start
    rec = gi.attacks.make("dager").reconstruct(obs)
    s = text_score(rec, texts, tokenizer, max_length=max_length)
    print(
        f"{label:<34} B={n:<3} exact {s['exact']:.2f}  R1 {s['rouge1']:.3f}  R2 {s['rouge2']:.3f}  "
        f"certified {s['certified']:>2} (wrong {s['certified_wrong']})  ranks {rec.info.get('ranks')}  "
        f"attack {rec.seconds:6.1f} s = {rec.seconds / client:5.0f}x the client's {client:.2f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="*", default=[16])
    parser.add_argument("--encoder-batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--encoder-length", type=int, default=12)
    args = parser.parse_args()
    tokenizer = shipped_tokenizer()
    for task in ("classification", "causal_lm"):
        model = make_text_model("gpt2", task=task, seed=0)
        for n in args.batches:
            row(f"gpt2-small shape, random, {task}", model, tokenizer, n, task, 64)
    encoder = make_text_model("minilm", seed=0)
    for n in args.encoder_batches:
        row(
            f"minilm (trained), {args.encoder_length} tokens",
            encoder,
            tokenizer,
            n,
            "classification",
            args.encoder_length,
        )


if __name__ == "__main__":
    main()
