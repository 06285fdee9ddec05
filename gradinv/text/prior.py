"""Language-model priors over token sequences, for attacks that rank candidate sentences by how natural they read
(LAMP's discrete step).

A prior is any object with ``nll(ids) -> (n,)``: the mean negative log-likelihood per predicted token of each
sequence ``ids`` ``(n, L)`` (special tokens included). Two are provided:

- :class:`CausalLMPrior`: a Hugging Face causal LM that reads the same token ids (LAMP's setting: a GPT-2 trained on
  WikiText-103 with BERT's vocabulary; or the client's own model when it is a trained causal LM).
- :class:`BigramPrior`: an interpolated Kneser-Ney bigram model (Kneser & Ney, ICASSP 1995; Chen & Goodman, 1998,
  eq. 13 with one discount) counted over the tokenizer's ids of English text. :func:`shipped_prior` counts it on the
  English prose gensim ships in its test data (107 Wikipedia articles and the Lee news corpus, about 0.5 million
  words; none of the Pang & Lee review sentences), because no trained language model over this vocabulary ships in
  a package; a trained GPT-2 is the paper's and the stronger prior, to pass where one is at hand.
"""

from __future__ import annotations

import bz2
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from gradinv.text.data import _gensim_data


class Prior(Protocol):
    """What LAMP needs of a language model: a score per sequence (lower reads more natural)."""

    def nll(self, ids: torch.Tensor) -> torch.Tensor: ...


class CausalLMPrior:
    """A Hugging Face causal LM as a prior: the mean next-token cross-entropy of each sequence (``lm(input_ids=ids,
    labels=ids).loss`` per sequence, as LAMP scores candidates). The LM must read the attacked tokenizer's ids."""

    def __init__(self, model: nn.Module) -> None:
        if not callable(getattr(model, "forward", None)) or not hasattr(model, "config"):
            raise TypeError(f"CausalLMPrior takes a Hugging Face causal LM, got {type(model).__name__}")
        self.model = model.eval()

    def nll(self, ids: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        with torch.no_grad():
            logits = self.model(input_ids=ids.to(device)).logits[:, :-1].float()
        target = ids[:, 1:].to(device)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        return loss.mean(dim=1).cpu()


def kneser_ney_bigram(sequences: Iterable[Sequence[int]], vocab_size: int, discount: float = 0.75) -> dict[str, Any]:
    """Counts of an interpolated Kneser-Ney bigram model over ``sequences`` of token ids.

    ``P(b | a) = max(c(ab) - D, 0) / c(a) + D N1+(a.) / c(a) * Pc(b)`` with the continuation probability
    ``Pc(b) = (N1+(.b) + 1) / (N1+(..) + V)`` (one added to every continuation count so that a token never seen after
    another keeps a probability); ``Pc(b)`` alone where ``a`` never precedes anything.
    """
    if not 0 < discount < 1:
        raise ValueError(f"discount must lie in (0, 1), got {discount!r}")
    pairs = [np.asarray(s[:-1], np.int64) * vocab_size + np.asarray(s[1:], np.int64) for s in sequences if len(s) > 1]
    if not pairs:
        raise ValueError("a bigram model needs at least one sequence of two or more tokens")
    keys, counts = np.unique(np.concatenate(pairs), return_counts=True)
    first, second = keys // vocab_size, keys % vocab_size
    return {
        "keys": keys,
        "counts": counts.astype(np.float64),
        "history": np.bincount(first, weights=counts, minlength=vocab_size),
        "followers": np.bincount(first, minlength=vocab_size).astype(np.float64),
        "continuation": (np.bincount(second, minlength=vocab_size) + 1.0) / (len(keys) + vocab_size),
        "vocab_size": vocab_size,
        "discount": discount,
    }


class BigramPrior:
    """An interpolated Kneser-Ney bigram language model over token ids (see :func:`kneser_ney_bigram`)."""

    def __init__(self, sequences: Iterable[Sequence[int]], vocab_size: int, *, discount: float = 0.75) -> None:
        self.table = kneser_ney_bigram(sequences, vocab_size, discount)

    def log_prob(self, previous: np.ndarray, token: np.ndarray) -> np.ndarray:
        """``log P(token | previous)`` elementwise."""
        t = self.table
        key = previous.astype(np.int64) * t["vocab_size"] + token.astype(np.int64)
        where = np.clip(np.searchsorted(t["keys"], key), 0, len(t["keys"]) - 1)
        pair = np.where(t["keys"][where] == key, t["counts"][where], 0.0)
        history = t["history"][previous]
        seen = history > 0
        safe = np.where(seen, history, 1.0)
        continuation = t["continuation"][token]
        interpolated = np.maximum(pair - t["discount"], 0.0) / safe
        interpolated += t["discount"] * t["followers"][previous] / safe * continuation
        return np.log(np.where(seen, interpolated, continuation))

    def nll(self, ids: torch.Tensor) -> torch.Tensor:
        array = ids.detach().cpu().numpy()
        return torch.from_numpy(-self.log_prob(array[:, :-1], array[:, 1:]).mean(axis=1))


def prior_corpus() -> list[str]:
    """English prose from gensim's test data: the paragraphs of its 107 shortened Wikipedia articles (markup
    removed) and the sentences of the Lee background news corpus."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    texts: list[str] = []
    with bz2.open(_gensim_data("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")) as handle:
        for _title, markup, _id in extract_pages(handle):
            for line in filter_wiki(markup).splitlines():
                line = line.replace("'''", "").replace("''", "").strip()
                if len(line.split()) >= 8 and line[0].isalnum():
                    texts.extend(_sentences(line))
    for line in _gensim_data("lee_background.cor").read_text(encoding="utf-8", errors="replace").splitlines():
        texts.extend(_sentences(line))
    return texts


def _sentences(paragraph: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", paragraph.strip()) if len(s.split()) >= 3]


_SHIPPED: dict[tuple[str, int], BigramPrior] = {}


def shipped_prior(tokenizer: Any) -> BigramPrior:
    """The Kneser-Ney bigram prior counted on :func:`prior_corpus` in ``tokenizer``'s ids (each sentence with the
    tokenizer's special tokens, truncated at 128 tokens); built once per tokenizer (a few seconds)."""
    key = (str(getattr(tokenizer, "name_or_path", "")), len(tokenizer))
    if key not in _SHIPPED:
        encoded = tokenizer(prior_corpus(), truncation=True, max_length=128)["input_ids"]
        _SHIPPED[key] = BigramPrior(encoded, len(tokenizer))
    return _SHIPPED[key]
