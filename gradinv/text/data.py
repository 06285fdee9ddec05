"""Real English sentences for text clients: a bundled corpus and a reader for the user's own text.

``rotten_tomatoes``: the 200 labelled movie-review sentences of Pang & Lee's sentence polarity dataset v1.0 (ACL 2005;
the ``rotten_tomatoes`` set DAGER and LAMP evaluate on) as gensim ships them in its test data
(``gensim/test/test_data/pang_lee_polarity.cor``, 100 negative then 100 positive), read from the installed package.
"""

from __future__ import annotations

import csv
import importlib.util
import random
from pathlib import Path

CORPORA = {"rotten_tomatoes": "Pang & Lee sentence polarity (gensim's copy): 200 sentences, 0 negative / 1 positive"}


def _gensim_data(filename: str) -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the bundled sentences are read from gensim's test data: pip install 'gradinv[text]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data" / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from this gensim install")
    return path


def _polarity() -> tuple[list[str], list[int]]:
    texts, labels = [], []
    # the file is Windows-1252 (as Pang & Lee distribute it): an em dash and accented letters
    for line in _gensim_data("pang_lee_polarity.cor").read_text(encoding="cp1252").splitlines():
        tag, _, text = line.partition(" ")
        if tag not in ("__label__neg", "__label__pos") or not text.strip():
            continue
        texts.append(" ".join(text.split()))
        labels.append(int(tag == "__label__pos"))
    return texts, labels


def _draw(texts: list[str], labels: list[int], n: int | None, seed: int) -> tuple[list[str], list[int]]:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(texts)):
        raise ValueError(f"n must be an integer in [1, {len(texts)}], got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    chosen = order[: len(texts) if n is None else n]
    return [texts[i] for i in chosen], [labels[i] for i in chosen]


def sentences(name: str = "rotten_tomatoes", *, n: int | None = None, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` sentences of a bundled corpus (all of them when ``None``), drawn without replacement by ``seed``, and
    their labels.

    Raises:
        ValueError: an unknown corpus, or ``n`` out of range.
        ImportError: the ``text`` extra is not installed.
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; available: {', '.join(CORPORA)}")
    texts, labels = _polarity()
    return _draw(texts, labels, n, seed)


def read_sentences(path: str | Path, *, n: int | None = None, seed: int = 0) -> tuple[list[str], list[int | None]]:
    """The user's own sentences: a CSV file with a ``text`` column (and optionally an integer ``label`` column), or
    a plain text file / a folder of ``.txt`` files with one sentence per line (no labels).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a CSV without a ``text`` column, a non-integer label, or no sentences at all.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    texts: list[str] = []
    labels: list[int | None] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "text" not in reader.fieldnames:
                raise ValueError(f"{path}: a CSV of sentences needs a 'text' column, got {reader.fieldnames}")
            for row_number, row in enumerate(reader, start=2):
                if not (row["text"] or "").strip():
                    continue
                raw = (row.get("label") or "").strip()
                if raw and not raw.lstrip("-").isdigit():
                    raise ValueError(f"{path}, line {row_number}: label must be an integer, got {raw!r}")
                texts.append(" ".join(row["text"].split()))
                labels.append(int(raw) if raw else None)
    else:
        files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
        for file in files:
            for line in file.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    texts.append(" ".join(line.split()))
                    labels.append(None)
    if not texts:
        raise ValueError(f"{path}: no sentences found")
    if n is None:
        return texts, labels
    drawn, kept = _draw(texts, list(range(len(texts))), n, seed)
    return drawn, [labels[i] for i in kept]
