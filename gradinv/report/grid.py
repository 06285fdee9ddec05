"""The grid's ``report.html``: the privacy-utility trade-off plot, the table of cells (mean and std over seeds and
images), failed cells with their errors, a ranking of the defenses for this setting, and each cell's images."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from gradinv.attacks.adaptive import ADAPTABLE, TRANSFORMS
from gradinv.attacks.dager import ACCOUNTED_FOR
from gradinv.defenses import REGISTRY
from gradinv.defenses.base import Defense
from gradinv.evaluate.grid import Grid, attack_label
from gradinv.evaluate.results import COLUMNS, TEXT_COLUMNS, table
from gradinv.evaluate.store import Store
from gradinv.evaluate.text_cells import PROTECTED_ROUGE
from gradinv.observation import atomic_write, atomic_write_text
from gradinv.report.html import STYLE, _fmt, _img, header
from gradinv.report.text import sentence_row

PROTECTED_PSNR = 20.0
"""Below this worst-case PSNR (dB) the report calls a defense protective: at 20 dB and under, reconstructions of
small images no longer show the content (our threshold for the ranking, stated in the report, not a paper's)."""


MIXING = frozenset(n for n, (cls, _) in REGISTRY.items() if cls.encode is not Defense.encode) - TRANSFORMS
"""Defenses that encode the client's data as mixes of images (MixUp, InstaHide): recovering an encoding needs a
decoding step before it is an image."""


def ranking(rows: list[dict[str, Any]], protected: float = PROTECTED_PSNR) -> list[dict[str, Any]]:
    """Defenses ranked for this grid by their worst case over attacks, threats and batch sizes, adaptive attacks
    included (a defense is judged against the strongest attack run, issue 18).

    ``status``: ``"protective"`` (the worst case stays under ``protected`` dB, and where the defense has an adaptive
    counterpart (:data:`~gradinv.attacks.adaptive.ADAPTABLE`) an adaptive attack was among those run),
    ``"unverified"`` (under ``protected`` dB, but only attacks that ignore the defense were run against it: adaptive
    attacks broke Soteria, dropout, clipping and quantisation here, docs/adaptive.md), ``"leaks"``. Protective ones
    first by accuracy (highest first), then unverified ones by accuracy, then the rest by worst case (lowest first).
    ``by`` names the worst case's attack, marked ``(adaptive)`` where it was one.

    Where the client trained on its images moved, mirrored or recoloured (ATS's policies, ``ThreatModel.augmentation``),
    an image recovered as the client saw it is the private image: the PSNR against that transformed batch
    (``encoding_psnr``) counts as leakage too, marked ``vs the transformed images``. MixUp/InstaHide encodings mix
    several images and need a decoding step: they only add a note (``encodings``)."""
    per: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["psnr"] is None:
            continue
        names = row.get("defenses") or []
        entry = per.setdefault(
            row["defense_label"],
            {
                "defense": row["defense_label"],
                "worst": -1e9,
                "accuracy": None,
                "adaptable": bool(names) and all(n in ADAPTABLE for n in names),
                "adaptive_run": False,
            },
        )
        adaptive = bool(row.get("adaptive"))
        entry["adaptive_run"] = entry["adaptive_run"] or adaptive
        # under a mixing encoder the transformed batch is one of mixes, not of images: it keeps to the encodings note
        mixing = any(n in MIXING for n in names)
        transformed = not mixing and (row.get("augmentation", "none") != "none" or any(n in TRANSFORMS for n in names))
        leak, against = row["psnr"], ""
        if transformed and row["encoding_psnr"] is not None and row["encoding_psnr"] > leak:
            leak, against = row["encoding_psnr"], " vs the transformed images"
        if leak > entry["worst"]:
            by = f"{row['attack']} (adaptive)" if adaptive else row["attack"]
            entry.update(worst=leak, by=by + against, threat=row["threat_label"])
        if row["accuracy"] is not None:
            entry["accuracy"] = row["accuracy"]
        if not transformed and row["encoding_psnr"] is not None and row["encoding_psnr"] > entry.get("encodings", -1e9):
            entry["encodings"] = row["encoding_psnr"]
    for entry in per.values():
        if entry["worst"] >= protected:
            entry["status"] = "leaks"
        elif entry["adaptable"] and not entry["adaptive_run"]:
            entry["status"] = "unverified"
        else:
            entry["status"] = "protective"
        entry["protective"] = entry["status"] == "protective"
    order = {"protective": 0, "unverified": 1, "leaks": 2}
    return sorted(
        per.values(),
        key=lambda e: (order[e["status"]], e["worst"] if e["status"] == "leaks" else -(e["accuracy"] or 0)),
    )


def text_ranking(rows: list[dict[str, Any]], protected: float = PROTECTED_ROUGE) -> list[dict[str, Any]]:
    """Defenses of the grid's text cells ranked by their worst case over text attacks, models, threats and batch
    sizes: the highest mean ROUGE-1 (``worst``) and the highest exact-sentence rate (``exact``).

    ``status``: ``"leaks"`` (a sentence came back exactly, or ROUGE-1 reached ``protected``), ``"protective"``
    (neither, against a chain of defenses DAGER accounts for (:data:`~gradinv.attacks.dager.ACCOUNTED_FOR`), with
    DAGER run so),
    ``"unverified"`` (neither, but no attack that knows the defense was run: there is none for signSGD on text, or
    DAGER ran only as published, or no defense at all). Protective first, then unverified, by worst case; then the
    leaking ones, lowest worst case first."""
    per: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("modality") != "text" or row["rouge1"] is None:
            continue
        names = row.get("defenses") or []
        entry = per.setdefault(
            row["defense_label"],
            {
                "defense": row["defense_label"],
                "worst": -1.0,
                "exact": 0.0,
                "readable": bool(names) and all(n in ACCOUNTED_FOR for n in names),
                "reading_run": False,
            },
        )
        entry["reading_run"] = entry["reading_run"] or bool(row.get("dager_aware"))
        entry["exact"] = max(entry["exact"], row["exact"] or 0.0)
        if row["rouge1"] > entry["worst"]:
            entry.update(worst=row["rouge1"], by=row["attack"], threat=row["threat_label"], model=row["model"])
    for entry in per.values():
        if entry["exact"] > 0 or entry["worst"] >= protected:
            entry["status"] = "leaks"
        elif entry["readable"] and entry["reading_run"]:
            entry["status"] = "protective"
        else:
            entry["status"] = "unverified"
    order = {"protective": 0, "unverified": 1, "leaks": 2}
    return sorted(per.values(), key=lambda e: (order[e["status"]], e["worst"]))


TEXT_VERDICTS = {
    "protective": " - protective (against the text attacks run, DAGER accounting for the defense among them)",
    "unverified": " - holds against the text attacks run, but none of them knows this defense (gradinv has no "
    "adaptive text attack for signSGD, and DAGER was run only as published): not shown protective",
    "leaks": " - leaks",
}


def text_section(rows: list[dict[str, Any]], recorded: list[dict[str, Any]], protected: float) -> str:
    """The report's text part: the ranking of defenses, the table of text cells, and each cell's sentences (true
    tokens beside the recovered ones, coloured by position)."""
    text_rows = [r for r in rows if r.get("modality") == "text"]
    if not text_rows:
        return ""
    advice = "".join(
        f"<li><b>{html.escape(e['defense'])}</b>: worst case ROUGE-1 {_fmt(e['worst'])}, exact sentences "
        f"{_fmt(e['exact'])} ({html.escape(e['by'])}, {html.escape(e['model'])}, {html.escape(e['threat'])})"
        f"{TEXT_VERDICTS[e['status']]}</li>"
        for e in text_ranking(text_rows, protected)
    )
    cells = []
    for c in recorded[:200]:
        if c["config"].get("modality") != "text" or c["status"] != "done":
            continue
        lines = "".join(sentence_row(s["index"], s["truth"], s["found"]) for s in c["summary"].get("sentences", []))
        config = c["config"]
        cells.append(
            f"<h3>{html.escape(attack_label(config))} x {html.escape(config['defense_label'])} "
            f"({html.escape(config.get('model_label', config['model']))}, {html.escape(config['threat_label'])}, "
            f"batch {config['batch_size']}, seed {config['seed']})</h3><table><tr><th>#</th><th>true tokens</th>"
            f"<th>recovered (green: right token at that position)</th></tr>{lines}</table>"
        )
    return f"""<h2>Text cells</h2>
<p>ROUGE-1/2/L (F-measure) and token accuracy: mean over the client's sentences, each matched to one recovered
sentence (Hungarian, on ROUGE-L; an unmatched one scores 0); <i>exact</i>: sentences recovered token for token;
<i>certified_wrong</i>: certified sentences that are not the client's (must be 0). Guessing the most frequent words
scores about 0.2 ROUGE-1 without any gradient.</p>
<p>Defenses ranked for the text cells (protective: no sentence exact and ROUGE-1 under {protected:g}, the grid's
<i>protected_rouge</i>, against an attack that knows the defense):</p><ol>{advice}</ol>
{_html_table(list(TEXT_COLUMNS), [[r[c] for c in TEXT_COLUMNS] for r in text_rows])}
<h2>Recovered sentences</h2>{"".join(cells)}"""


def tradeoff_plot(
    rows: list[dict[str, Any]], path: Path, *, ceiling: float = 60.0, protected: float = PROTECTED_PSNR
) -> None:
    """Attack PSNR against test accuracy: per attack and defense setting one point, its strongest case over threat
    models and batch sizes; PSNR above ``ceiling`` (exact recovery) is drawn at the ceiling, ``protected`` as a
    dotted line."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if r["accuracy"] is None or r["psnr"] is None:
            continue
        key = (r["attack"], r["defense_label"])
        if key not in best or r["psnr"] > best[key]["psnr"]:
            best[key] = r
    # colour by attack, marker by defense, both named in legends beside the plot (labels on the points overlap)
    fig, ax = plt.subplots(figsize=(11, 5.5), layout="constrained")
    attacks = sorted({a for a, _ in best})
    defenses = sorted({d for _, d in best})
    markers = "osD^v<>pPX*hH8d"
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (attack, defense), r in best.items():
        ax.scatter(
            r["accuracy"],
            min(r["psnr"], ceiling),
            s=45,
            color=colours[attacks.index(attack) % len(colours)],
            marker=markers[defenses.index(defense) % len(markers)],
        )
    ax.axhline(protected, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("test accuracy with the defense (utility)")
    ax.set_ylabel(f"attack PSNR, strongest case (dB; exact shown at {ceiling:g})")
    ax.set_title("privacy-utility trade-off: lower right is better")
    handles = [plt.Line2D([], [], color=colours[i % len(colours)], marker="o", linestyle="", label=a)
               for i, a in enumerate(attacks)]  # fmt: skip
    handles += [plt.Line2D([], [], color="grey", marker=markers[i % len(markers)], linestyle="", label=d)
                for i, d in enumerate(defenses)]  # fmt: skip
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="attack / defense")
    fig.savefig(path, dpi=100)
    plt.close(fig)


EXACT_PSNR = 100.0
"""From this PSNR (dB) on the ranking says "exact" rather than a number: past float32's resolution of [0, 1] images
(about 140 dB) the figure measures rounding, not the attack (an exact recovery prints e.g. 578.7 dB)."""


def worst_case(psnr: float) -> str:
    """A ranking's worst case in words: the PSNR in dB, or "exact" from :data:`EXACT_PSNR` on."""
    return f"exact (PSNR >= {EXACT_PSNR:g} dB)" if psnr >= EXACT_PSNR else f"{_fmt(psnr)} dB"


VERDICTS = {
    "protective": " - protective",
    "unverified": " - holds against the attacks that ignore it, but no adaptive attack was run against it: not shown "
    "protective (add an attack entry with adaptive = true; adaptive attacks broke Soteria, dropout, DP-SGD's "
    "clipping and quantisation, docs/adaptive.md)",
    "leaks": " - leaks",
}
"""The ranking's words for each status of :func:`ranking`."""

HEADERS = {
    "threat_label": "threat",
    "batch_size": "batch",
    "defense_label": "defense",
    "psnr": "PSNR dB",
    "psnr_std": "PSNR std",
    "ssim": "SSIM",
    "label_acc": "label acc.",
    "encoding_psnr": "encoding PSNR",
    "accuracy": "accuracy",
    "seconds": "s / batch",
    "cost_seconds": "full recovery s",
}
"""Readable column names for the stored fields."""


def _html_table(head: list[str], body: list[list[Any]]) -> str:
    cells = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in line) + "</tr>" for line in body)
    return "<table><tr>" + "".join(header(HEADERS.get(h, h)) for h in head) + f"</tr>{cells}</table>"


def write_grid_report(grid: Grid, out: str | Path) -> Path:
    """Write ``out/report.html`` for ``grid`` from the results recorded in ``out/results.sqlite``."""
    folder = Path(out)
    store = Store(folder / "results.sqlite")
    try:
        settings = grid.settings
        return write_report(
            store, folder, grid.name, settings["protected_psnr"], settings.get("protected_rouge", PROTECTED_ROUGE)
        )
    finally:
        store.close()


def write_report(
    store: Store,
    folder: Path,
    name: str,
    protected: float = PROTECTED_PSNR,
    protected_rouge: float = PROTECTED_ROUGE,
) -> Path:
    """Write ``folder/report.html`` (and ``tradeoff.png``) from the database; returns the report's path.

    ``protected``: the worst-case PSNR (dB) under which the ranking calls a defense protective (the grid's
    ``protected_psnr``); ``protected_rouge``: the worst-case ROUGE-1 under which the text ranking does."""
    recorded = store.cells()
    every = table(store, recorded)
    rows = [r for r in every if r.get("modality") != "text"]
    plot = folder / "tradeoff.png"
    has_plot = any(r["accuracy"] is not None and r["psnr"] is not None for r in rows)
    if has_plot:
        atomic_write(plot, lambda tmp: tradeoff_plot(rows, tmp, protected=protected))
    columns = list(COLUMNS[: COLUMNS.index("modality")])  # the text columns have their own table
    ranked = ranking(rows, protected)
    advice = "".join(
        f"<li><b>{html.escape(e['defense'])}</b>: worst case {worst_case(e['worst'])} ({html.escape(e['by'])}, "
        f"{html.escape(e['threat'])}), accuracy {_fmt(e['accuracy'])}"
        f"{VERDICTS[e['status']]}"
        + (
            f"; but the encodings come back at {_fmt(e['encodings'])} dB, and encodings of enough epochs decode to "
            "the images (gi.attacks.instahide_decode; see the cost column)"
            if e.get("encodings", -1e9) >= protected
            else ""
        )
        + "</li>"
        for e in ranked
    )
    failed = [c for c in recorded if c["status"] == "failed"]
    pictures = "".join(
        f"<h3>{html.escape(attack_label(c['config']))} x {html.escape(c['config']['defense_label'])} "
        f"({html.escape(c['config']['threat_label'])}, batch {c['config']['batch_size']}, seed {c['config']['seed']})"
        f"</h3>{_img(folder / 'cells' / (c['key'] + '.png'), c['key'])}"
        for c in recorded[:200]
        if c["status"] == "done" and (folder / "cells" / (c["key"] + ".png")).exists()
    )
    image_part = (
        f"""<h2>What this means</h2>
<p>Defenses ranked for this grid (protective: the strongest attack run, adaptive ones included, stays under
{protected:g} dB, the grid's threshold, and an attack that knows the defense was among them), best accuracy first
among the protective ones:</p><ol>{advice}</ol>
<p>As Huang et al. (2021) advise: a defense must be judged against the strongest attack in the grid, including attacks
with side information (labels, BN statistics); combining gradient pruning with MixUp/InstaHide is their suggestion.
Exact attacks (bias trick, SPEAR) are not slowed by local iterations on a single step or by secure aggregation of a few
clients.</p>
<h2>Privacy-utility trade-off</h2>
{_img(plot, "trade-off") if has_plot else "<p>No utility was measured (add a [utility] section).</p>"}
<h2>Cells</h2>{_html_table(columns, [[r[c] for c in columns] for r in rows])}"""
        if rows
        else ""
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>gradinv grid: {html.escape(name)}</title>
<style>{STYLE}table{{font-size:12px}}</style></head><body>
<h1>Gradient inversion grid: {html.escape(name)}</h1>
<p>{len(recorded)} cells recorded, {len(failed)} failed. PSNR in dB against the private images (mean and std over
all images and seeds); <i>encoding_psnr</i>: against what the client trained on (MixUp/InstaHide encodings, ATS's
transformed images, the augmented batch);
<i>cost_seconds</i>: estimated time to recover the client's whole dataset (inversions times seconds per
inversion, Huang et al. 2021 Sec. 6); <i>matched</i>: share of images the attack returned an image for.</p>
{image_part}
<h2>Failed cells</h2>{
        _html_table(
            ["attack", "defense", "threat", "seed", "error"],
            [
                [
                    attack_label(c["config"]),
                    c["config"]["defense_label"],
                    c["config"]["threat_label"],
                    c["config"]["seed"],
                    c["error"],
                ]
                for c in failed
            ],
        )
        if failed
        else "<p>None.</p>"
    }
{"<h2>Reconstructions</h2>" + pictures if rows else ""}
{text_section(every, recorded, protected_rouge)}
</body></html>"""
    target = folder / "report.html"
    atomic_write_text(target, page)
    return target
