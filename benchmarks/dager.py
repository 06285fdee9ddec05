"""DAGER on real sentences: a random GPT-2-small-shaped decoder and the shipped trained MiniLM encoder.

    python benchmarks/dager.py [--batches 16] [--encoder-batches 1 2 4 8 16 32] [--encoder-length 12] [--no-links]
                               [--random-bert]
    python benchmarks/dager.py --noise    # only the noise sweep
    python benchmarks/dager.py --prune    # only the pruning sweep

The README's DAGER numbers, re-measured: for each batch of Pang & Lee's movie reviews (seed 0), the exact-sentence
rate, ROUGE-1/2, the certified sentences and those certified wrongly (must be 0), and the attack's time against the
client's own gradient computation in the same run (the ratio printed). Decoder: GPT-2 of the GPT-2-small shape (12
layers, width 768, 12 heads; random weights, the shipped WordPiece vocabulary), sequence classification and
next-token loss. Encoder: all-MiniLM-L6-v2 (trained, width 384) with a new classifier head, sentences cut at
``--encoder-length`` tokens, its sentences proposed by the first-layer links (:mod:`gradinv.attacks.dager_links`), or
with ``--no-links`` by the paper's search and our beam search; ``--random-bert``: a random BERT of the BERT-base
shape (width 768, 12 heads) with 3 layers instead of MiniLM.

``--noise``: four reviews through a random 3-layer GPT-2 of width 384 under Gaussian noise on the gradient, under
DP-SGD (clipping norm 1) and under quantisation (8 to 16 bits), DAGER as published (``noise_aware=False``) beside
DAGER reading the recorded noise (for quantisation, its rounding error: uniform over a step); the
release's epsilon at delta 1e-5 for the DP-SGD rows; then the trained MiniLM encoder (one review, 12 tokens) under
noise 1e-8, 1e-7 and 1e-6.

``--prune``: two reviews cut at 12 tokens through random 3-layer GPT-2s of width 128, 192 and 256, each gradient tensor
pruned at 0.3, 0.5 and 0.7: DAGER as published beside DAGER completing the pruned gradients (low-rank completion,
:mod:`gradinv.attacks.completion`), with the ranks completed, the two fits' span agreement and the time.
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


def row(label: str, model, tokenizer, n: int, task: str, max_length: int, **options) -> None:
    texts, labels = sentences(n=n, seed=0)
    start = time.perf_counter()
    obs = observe_text(model, tokenizer, texts, labels, task=task, max_length=max_length)
    client = time.perf_counter() - start
    rec = gi.attacks.make("dager", **options).reconstruct(obs)
    s = text_score(rec, texts, tokenizer, max_length=max_length)
    print(
        f"{label:<34} B={n:<3} exact {s['exact']:.2f}  R1 {s['rouge1']:.3f}  R2 {s['rouge2']:.3f}  "
        f"certified {s['certified']:>2} (wrong {s['certified_wrong']})  ranks {rec.info.get('ranks')}  "
        f"attack {rec.seconds:6.1f} s = {rec.seconds / client:5.0f}x the client's {client:.2f} s",
        flush=True,
    )


def noise_sweep(tokenizer) -> None:
    texts, labels = sentences(n=4, seed=0)
    model = make_text_model("gpt2", seed=0, n_layer=3, n_embd=384, n_head=6)
    settings = [("noise", {"std": s}) for s in (1e-7, 1e-6, 3e-6, 1e-5)]
    settings += [("dpsgd", {"noise_multiplier": m, "max_grad_norm": 1.0}) for m in (0.0, 4e-8, 4e-7, 4e-6, 1.0)]
    settings += [("quantize", {"bits": b}) for b in (8, 10, 12, 14, 16)]  # the rounding read as noise of its step
    for name, options in settings:
        defense = gi.defenses.make(name, **options)
        obs = observe_text(model, tokenizer, texts, labels, defenses=[defense])
        cells = []
        for aware in (False, True):
            rec = gi.attacks.make("dager", noise_aware=aware).reconstruct(obs)
            s = text_score(rec, texts, tokenizer)
            cells.append(f"{s['exact']:.2f} / {s['rouge1']:.3f} (ranks {rec.info['ranks']}, {rec.seconds:.1f} s)")
        epsilon = obs.defenses[0].get("release_epsilon")
        eps = "" if epsilon is None else f" eps {epsilon:.3g}"
        print(f"{name} {options}{eps}: published {cells[0]} | noise-aware {cells[1]}", flush=True)
    # the trained encoder, one review cut at 12 tokens
    encoder = make_text_model("minilm", seed=0)
    one, label = sentences(n=1, seed=0)
    for std in (1e-8, 1e-7, 1e-6):
        obs = observe_text(encoder, tokenizer, one, label, max_length=12, defenses=[gi.defenses.make("noise", std=std)])
        rec = gi.attacks.make("dager").reconstruct(obs)
        s = text_score(rec, one, tokenizer, max_length=12)
        print(f"minilm, noise {std:g}: noise-aware {s['exact']:.2f} / {s['rouge1']:.3f} (ranks {rec.info['ranks']}, "
              f"thresholds {rec.info['thresholds']}, candidates {rec.info['candidates']})", flush=True)  # fmt: skip


def prune_sweep(tokenizer) -> None:
    texts, labels = sentences(n=8, seed=0)
    texts, labels = texts[:2], labels[:2]
    for width, heads in ((128, 2), (192, 3), (256, 4)):
        model = make_text_model("gpt2", seed=0, n_layer=3, n_embd=width, n_head=heads)
        for ratio in (0.3, 0.5, 0.7):
            defense = gi.defenses.make("prune", ratio=ratio)
            obs = observe_text(model, tokenizer, texts, labels, max_length=12, defenses=[defense])
            cells = []
            for aware in (False, True):
                rec = gi.attacks.make("dager", noise_aware=aware).reconstruct(obs)
                s = text_score(rec, texts, tokenizer, max_length=12)
                done = rec.info.get("completion", [])
                how = ", ".join(f"rank {c.get('rank')} agreement {c.get('agreement', float('nan')):.1g}" for c in done)
                stop = " (stopped)" if "stopped" in rec.info else ""
                cells.append(f"{s['exact']:.2f} / {s['rouge1']:.3f}{stop} {how} {rec.seconds:.1f} s")
            print(f"width {width}, prune {ratio}: published {cells[0]} | completed {cells[1]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="*", default=[16])
    parser.add_argument("--encoder-batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--encoder-length", type=int, default=12)
    parser.add_argument("--noise", action="store_true", help="only the noise sweep")
    parser.add_argument("--prune", action="store_true", help="only the pruning sweep")
    parser.add_argument("--no-links", action="store_true", help="the encoder as published, with our beam search")
    parser.add_argument("--random-bert", action="store_true", help="a random 3-layer BERT-base-shaped encoder")
    args = parser.parse_args()
    tokenizer = shipped_tokenizer()
    if args.noise:
        noise_sweep(tokenizer)
        return
    if args.prune:
        prune_sweep(tokenizer)
        return
    for task in ("classification", "causal_lm"):
        model = make_text_model("gpt2", task=task, seed=0)
        for n in args.batches:
            row(f"gpt2-small shape, random, {task}", model, tokenizer, n, task, 64)
    if args.random_bert:
        encoder, name = make_text_model("bert", seed=0, num_hidden_layers=3), "bert-base shape, 3 layers, random"
    else:
        encoder, name = make_text_model("minilm", seed=0), "minilm (trained)"
    search = "paper's search + beam" if args.no_links else "first-layer links"
    for n in args.encoder_batches:
        row(
            f"{name}, {args.encoder_length} tokens, {search}",
            encoder,
            tokenizer,
            n,
            "classification",
            args.encoder_length,
            links=not args.no_links,
        )


if __name__ == "__main__":
    main()
