"""A self-contained HTML page for one text run: per attack the scores, then every true sentence beside the one the
attack recovered for it (the matching of :func:`gradinv.metrics.text.text_score`), each recovered token coloured
by whether it is the true token at that position."""

from __future__ import annotations

import html
import json
from typing import Any

from gradinv.report.html import STYLE, _fmt

COLUMNS = ("rouge1", "rouge2", "rougeL", "token_acc", "exact", "certified", "certified_wrong")
RIGHT, WRONG = "#c8f0c8", "#f6c6c6"


def token_pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    """The tokenizer's pieces of ``ids`` (WordPiece continuations keep their ``##``)."""
    return [str(piece) for piece in tokenizer.convert_ids_to_tokens(ids)]


def coloured(pieces: list[str], truth: list[str]) -> str:
    """``pieces`` as HTML spans, green where the true sentence has the same token at that position, red elsewhere."""
    spans = []
    for position, piece in enumerate(pieces):
        right = position < len(truth) and truth[position] == piece
        colour, mark = (RIGHT, "right") if right else (WRONG, "wrong")
        spans.append(f'<span class="{mark}" style="background:{colour}">{html.escape(piece)}</span>')
    return " ".join(spans)


def sentence_row(index: int, truth: list[str], found: list[str] | None) -> str:
    """A table row: the true sentence's tokens, and the recovered one matched to it (``None``: none), coloured."""
    shown = "<em>(no sentence recovered for this one)</em>" if found is None else coloured(found, truth)
    return (
        f"<tr><td>{index}</td><td style='text-align:left'>{html.escape(' '.join(truth))}</td>"
        f"<td style='text-align:left'>{shown}</td></tr>"
    )


def sentence_rows(tokenizer: Any, truth: list[list[int]], found: list[list[int]], pairs: list[list[int]]) -> str:
    """One table row per true sentence: its tokens, and the recovered sentence matched to it, coloured."""
    matched = {t: f for t, f in pairs}
    return "".join(
        sentence_row(
            index,
            token_pieces(tokenizer, ids),
            token_pieces(tokenizer, found[matched[index]]) if index in matched else None,
        )
        for index, ids in enumerate(truth)
    )


def render_text(record: dict[str, Any], tokenizer: Any) -> str:
    """The page of a text run record (as :func:`gradinv.report.write_text_run` stores it)."""
    title = f"gradinv: {record['model']} ({record['task']}) on {record['data']}, batch {record['batch_size']}"
    scores = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{_fmt(result['scores'][c])}</td>" for c in COLUMNS)
        + f"<td>{_fmt(result['seconds'])}</td></tr>"
        for name, result in record["attacks"].items()
    )
    sections = []
    for name, result in record["attacks"].items():
        rows = sentence_rows(tokenizer, record["truth"], result["token_ids"], result["scores"]["pairs"])
        sections.append(
            f"<h2>{html.escape(name)}</h2><p>Certificate: {html.escape(result['certificate'] or 'none')}</p>"
            f"<table><tr><th>#</th><th>true tokens</th><th>recovered (green: right token at that position)</th>"
            f"</tr>{rows}</table>"
        )
    header = "".join(f"<th>{c}</th>" for c in (*COLUMNS, "seconds"))
    config = {k: v for k, v in record.items() if k not in ("attacks", "truth", "texts")}
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<table><tr><th>attack</th>{header}</tr>{scores}</table>{''.join(sections)}"
        f"<h2>Configuration</h2><pre>{html.escape(json.dumps(config, indent=2, default=str))}</pre></body></html>"
    )
