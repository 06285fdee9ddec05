"""TAG, LAMP and DAGER side by side on real sentences from the shipped trained encoder (the papers' BERT setting at
CPU scale).

    OMP_NUM_THREADS=1 python benchmarks/text_attacks.py [--sentences 3] [--max-length 12] [--attacks tag lamp]
        [--lora-rank 16]

For each of ``--sentences`` Pang & Lee movie reviews (seed 0; batch 1, cut at ``--max-length`` tokens) the client,
all-MiniLM-L6-v2 (trained, 6 layers, width 384) with a new two-class head, shares one gradient (labels known, as
LAMP assumes); each attack runs at its paper's settings (TAG: 2,500 Adam steps at 0.1, L1 weight 0.01; LAMP_cos:
2,000 steps, 500 starts, 200 reorderings every 75 steps, the shipped bigram prior; DAGER: its defaults). Printed per
sentence and on average: ROUGE-1/2, token accuracy, exact sentences and time. ``random`` is the floor: the tokens
a random start projects to (what an attack that learned nothing returns).

``--lora-rank R``: the client fine-tunes LoRA adapters of rank ``R`` on the query and value projections
(``gi.text.with_lora``, B drawn at random) and shares their gradients only; TAG and LAMP are told the sentence's
length (no position-embedding gradient is shared, so they cannot read it off).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

import gradinv as gi  # noqa: E402
from gradinv.attacks.embedding_inversion import build_problem, text_result  # noqa: E402
from gradinv.fl.text_client import observe_text  # noqa: E402
from gradinv.metrics.text import text_score  # noqa: E402
from gradinv.text import make_text_model, sentences, shipped_tokenizer, with_lora  # noqa: E402

KEYS = ("rouge1", "rouge2", "token_acc", "exact")


class _Random:
    """The floor: a standard-normal start projected to tokens, special positions fixed."""

    name = "random"

    def __init__(self, length: int | None = None) -> None:
        self.length = length

    def config(self) -> dict:
        return {}

    def reconstruct(self, observation, seed: int = 0):
        problem = build_problem(observation, None, self.length)
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(problem.batch, problem.length, problem.embeddings.shape[1], generator=generator)
        return text_result(observation, problem.project(x), 0.0, self, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=12)
    parser.add_argument("--attacks", nargs="+", default=["random", "tag", "lamp", "dager"])
    parser.add_argument("--lora-rank", type=int, default=0, help="> 0: a LoRA client of this rank")
    args = parser.parse_args()
    tokenizer = shipped_tokenizer()
    model = make_text_model("minilm", seed=0)
    if args.lora_rank:
        model = with_lora(model, args.lora_rank, seed=0)
    texts, labels = sentences(n=args.sentences, seed=0)
    totals: dict[str, dict[str, float]] = {a: dict.fromkeys((*KEYS, "seconds"), 0.0) for a in args.attacks}
    threat = gi.ThreatModel(knows_labels=True)
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        obs = observe_text(model, tokenizer, [text], [label], threat=threat, max_length=args.max_length)
        length = len(tokenizer(text, truncation=True, max_length=args.max_length)["input_ids"])
        for name in args.attacks:
            told = {"length": length} if args.lora_rank and name in ("tag", "lamp", "random") else {}
            attack = _Random(**told) if name == "random" else gi.attacks.make(name, **told)
            start = time.perf_counter()
            rec = attack.reconstruct(obs)
            seconds = time.perf_counter() - start
            s = text_score(rec, [text], tokenizer, max_length=args.max_length)
            for key in KEYS:
                totals[name][key] += s[key] / len(texts)
            totals[name]["seconds"] += seconds / len(texts)
            print(
                f"sentence {i} {name:<7} R1 {s['rouge1']:.3f} R2 {s['rouge2']:.3f} tokens {s['token_acc']:.3f} "
                f"exact {s['exact']:.0f}  {seconds:6.1f} s  {rec.texts[0] if rec.texts else ''!r}",
                flush=True,
            )
    client = f"minilm (trained){f', LoRA rank {args.lora_rank}' if args.lora_rank else ''}"
    print(f"\nmean over {len(texts)} sentences (batch 1, {args.max_length} tokens at most), {client}:")
    for name, t in totals.items():
        print(
            f"{name:<7} R1 {t['rouge1']:.3f}  R2 {t['rouge2']:.3f}  token acc {t['token_acc']:.3f}  "
            f"exact {t['exact']:.2f}  {t['seconds']:.1f} s per sentence"
        )


if __name__ == "__main__":
    main()
