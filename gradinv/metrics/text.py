"""Text metrics: ROUGE-1/2/L (Lin, 2004, via Google's ``rouge-score``), token accuracy and the exact-sentence rate,
each recovered sentence matched to one true sentence by the Hungarian algorithm on ROUGE-L."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from gradinv.text.models import tokenize
from gradinv.text.observation import TextReconstruction


def references(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """The true sentences as the client fed them: token ids, special tokens included, padding removed."""
    batch = tokenize(tokenizer, texts, max_length)
    return [row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)]


def _scorer() -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError as error:  # pragma: no cover - part of the text extra
        raise ImportError("text metrics need rouge-score: pip install 'gradinv[text]'") from error
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])


def text_score(
    reconstruction: TextReconstruction, texts: Sequence[str], tokenizer: Any, *, max_length: int = 64
) -> dict[str, Any]:
    """Score recovered sentences against the client's.

    Each true sentence is compared, in the tokenizer's own decoding (what the model saw, e.g. lower-cased and
    truncated at ``max_length`` tokens), with the recovered sentence the matching assigns it; a true sentence left
    unmatched scores 0. Returns the mean ROUGE-1/2/L F-measures over the true sentences, ``token_acc`` (true tokens
    recovered at their position, over all true tokens), ``exact`` (true sentences recovered token for token),
    ``certified`` and ``certified_wrong`` (certified sentences that are not exact: must be 0), ``pairs``
    (``(true index, recovered index)``), and ``per_sentence``: for each true sentence its ``match`` (the recovered
    index, ``None`` if unmatched), ROUGE-1/2/L, ``token_acc``, ``exact`` and ``certified`` (its match's
    certificate).

    Raises:
        ValueError: no true sentences.
    """
    if not texts:
        raise ValueError("text_score needs at least one true sentence")
    truth = references(tokenizer, texts, max_length)
    true_texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in truth]
    found = reconstruction.token_ids
    scorer = _scorer()
    table = [[scorer.score(t, tokenizer.decode(f, skip_special_tokens=True)) for f in found] for t in true_texts]
    rouge_l = np.array([[cell["rougeL"].fmeasure for cell in row] for row in table]).reshape(len(truth), len(found))
    rows, cols = linear_sum_assignment(-rouge_l) if found else (np.array([], int), np.array([], int))
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    correct = exact = 0
    matched = dict(zip(rows.tolist(), cols.tolist(), strict=True))
    per_sentence = []
    for r, ids in enumerate(truth):
        c = matched.get(r)
        entry: dict[str, Any] = {"index": r, "match": c, "rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
        entry.update(token_acc=0.0, exact=False, certified=False)
        if c is not None:
            hits = sum(a == b for a, b in zip(ids, found[c], strict=False))
            entry.update({key: table[r][c][key].fmeasure for key in sums})
            entry.update(token_acc=hits / len(ids), exact=ids == found[c], certified=bool(reconstruction.certified[c]))
            for key in sums:
                sums[key] += entry[key]
            correct += hits
            exact += entry["exact"]
        per_sentence.append(entry)
    truth_set = {tuple(t) for t in truth}
    certified = [tuple(f) for f, flag in zip(found, reconstruction.certified, strict=True) if flag]
    return {
        **{key: value / len(truth) for key, value in sums.items()},
        "token_acc": correct / sum(len(t) for t in truth),
        "exact": exact / len(truth),
        "certified": len(certified),
        "certified_wrong": sum(f not in truth_set for f in certified),
        "pairs": list(zip(rows.tolist(), cols.tolist(), strict=True)),
        "per_sentence": per_sentence,
    }
