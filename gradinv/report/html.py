"""A self-contained HTML page for one run: pictures inlined as base64, the scores table, the configuration."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from gradinv.metrics import EXACT_TOLERANCE


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    """A value for a page: floats to 4 significant digits, ``None`` as n/a, text escaped."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;display:block;overflow-x:auto;max-width:100%}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}
th[title]{text-decoration:underline dotted;cursor:help}img{max-width:100%;height:auto}
pre{background:#f5f5f5;padding:1em;overflow:auto;max-width:100%;box-sizing:border-box}"""
"""The pages' CSS: at most 1200 px wide, tables scroll inside their own box, pictures shrink to fit."""

TOOLTIPS = {
    "exact": f"share of the batch recovered to within {EXACT_TOLERANCE:g} per pixel (against the originals: "
    "evaluation only)",
    "certified": "share of the batch the attack proves without ground truth (see Certificates)",
    "residual cos": "cosine of the reconstruction's own update with the observed one (1: same direction)",
    "residual rel. L2": "||u' - u|| / ||u||: near 0 means consistent with the update, not proven to be the data",
    "label acc.": "share of matched images whose returned label is the original's (unknown labels count as wrong)",
}
"""Column explanations shown on hover."""


def header(name: str) -> str:
    """A table header cell, with its explanation on hover when it has one."""
    tip = TOOLTIPS.get(name)
    return f'<th title="{html.escape(tip)}">{html.escape(name)}</th>' if tip else f"<th>{html.escape(name)}</th>"


def _audit(audit: dict[str, Any] | None) -> str:
    """The verdict and the attack plan of ``gradinv audit`` (empty for other runs)."""
    if not audit:
        return ""
    verdict = audit["verdict"]
    rows = "".join(
        f"<tr><td>{_fmt(s['attack'])}</td><td>{'yes' if s['exact'] else 'no'}</td><td>{ran}</td>"
        f"<td style='text-align:left'>{_fmt(s['reason'])}</td></tr>"
        for entries, ran in ((audit["plan"], "ran"), (audit["skipped"], "no"))
        for s in entries
    )
    best = ", ".join("none" if b is None else f"{b:.1f}" for b in verdict["best_psnr_per_image"])
    return f"""<h2>Audit verdict</h2>
<p><b>{_fmt(verdict["summary"])}</b>. Best PSNR per image over all attacks (dB): {best}. A server that recovers an
image above {verdict["threshold_db"]:g} dB shows it recognisably (our threshold). Strongest attack:
{_fmt(verdict["strongest_attack"])}.</p>
<h2>Attack plan</h2>
<p>Exact attacks whose conditions hold on this model, batch size and threat model run first; an attack that
certifies every image of the batch (its own uniqueness condition, not a small residual alone) ends the audit
early.</p>
<table><tr><th>attack</th><th>exact</th><th>ran</th><th>why</th></tr>{rows}</table>
"""


def _notes(record: dict[str, Any]) -> str:
    """What to expect of each attack in this setting, when the run states it (the demo does)."""
    notes = record.get("notes") or {}
    if not notes:
        return ""
    items = "".join(f"<li><b>{_fmt(name)}</b>: {_fmt(text)}</li>" for name, text in notes.items())
    return f"<h2>Why these results</h2><ul>{items}</ul>"


def _augmentation(record: dict[str, Any]) -> str:
    """The client's private augmentation, and each attack's PSNR against the batch as the client saw it."""
    kind = record["threat"].get("augmentation", "none")
    if kind == "none":
        return ""
    against = ", ".join(
        f"{_fmt(name)} {res['scores']['psnr_vs_augmented']:.1f} dB"
        for name, res in record["attacks"].items()
        if "psnr_vs_augmented" in res["scores"]
    )
    return (
        f" The client augmented its images (<b>{_fmt(kind)}</b>, private draws): the scores below are against its "
        f"data as it is; against the batch as the client's first pass saw it, PSNR: {against}."
    )


def _training(record: dict[str, Any]) -> str:
    """How the broadcast model was trained before the round (``gi.evaluate.pretrain``), or that it was not; nothing
    where the run does not know (an audit of the user's own weights records no ``model_training``)."""
    if "model_training" not in record:
        return ""
    records = record["model_training"]
    if not records:
        return "The model is at the initialisation gradinv drew (no training before this round)."
    done = "; then ".join(
        f"{r['epochs']} epochs ({r['steps']} steps, lr {r['lr']:g}) on {r['n_train']} images of {_fmt(r['dataset'])}, "
        f"held-out accuracy {r['test_accuracy']:.3f}"
        for r in records
    )
    return f"The model was trained before this round: <b>{done}</b>."


def _certificates(record: dict[str, Any]) -> str:
    """Per attack: what its certificate rests on, and R-GAP's rank analysis at the answer, layer by layer."""
    items = []
    for name, result in record["attacks"].items():
        certified = result.get("certified") or []
        text = f"<li><b>{_fmt(name)}</b>: {sum(certified)} of {len(certified)} returned images certified. "
        text += f"{_fmt(result.get('certificate', ''))}.</li>"
        items.append(text)
        ranks = result.get("info", {}).get("ranks")
        if ranks:
            rows = "".join(
                f"<tr><td>{_fmt(r['layer'])}</td><td>{_fmt(r['kind'])}</td><td>{r['unknowns']}</td>"
                f"<td>{r['forward_constraints']}</td><td>{r['gradient_constraints']}</td><td>{r['rank']}</td>"
                f"<td>{'yes' if r['sufficient'] else '<b>no</b>'}</td></tr>"
                for r in ranks
            )
            items.append(
                "<li>R-GAP's rank analysis at the recovered input (Zhu &amp; Blaschko, Sec. 4): a layer whose rank is "
                "below its unknowns does not determine its input.<table><tr><th>layer</th><th>kind</th>"
                "<th>unknowns</th><th>forward eqs</th><th>gradient eqs</th><th>rank</th><th>sufficient</th></tr>"
                f"{rows}</table></li>"
            )
    return f"<h2>Certificates</h2><ul>{''.join(items)}</ul>" if items else ""


def render(record: dict[str, Any], grid: Path, curve: Path) -> str:
    """The page for a run record (the content of ``metrics.json``)."""
    head = [
        "attack",
        "PSNR (dB)",
        "SSIM",
        "MSE",
        "LPIPS",
        "exact",
        "certified",
        "label acc.",
        "residual cos",
        "residual rel. L2",
        "seconds",
    ]
    rows = []
    for name, result in record["attacks"].items():
        s, r = result["scores"], result["scores"].get("residual", {})
        cells = [
            name,
            s["psnr"],
            s["ssim"],
            s["mse"],
            s.get("lpips"),
            s.get("exact_fraction"),
            s.get("certified_fraction"),
            s.get("label_acc"),
            r.get("cosine"),
            r.get("rel_l2"),
            result["seconds"],
        ]
        rows.append("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in cells) + "</tr>")
    notes = sorted({res["scores"]["lpips_note"] for res in record["attacks"].values() if "lpips_note" in res["scores"]})
    config = html.escape(json.dumps({k: v for k, v in record.items() if k != "attacks"}, indent=2))
    objective = f"<h2>Attack objective</h2>{_img(curve, 'loss curves')}" if curve.exists() else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gradinv report</title>
<style>{STYLE}</style>
</head><body>
<h1>Gradient inversion report</h1>
<p>Model <b>{_fmt(record["model"])}</b>, data <b>{_fmt(record["data"])}</b>, batch size <b>{record["batch_size"]}</b>,
shared update <b>{_fmt(record["threat"]["update"])}</b>, server <b>{_fmt(record["threat"]["server"])}</b>,
labels {"known" if record["threat"]["knows_labels"] else "withheld"} to the attacker, client defenses:
<b>{_fmt(", ".join(d["name"] for d in record.get("defenses", [])) or "none")}</b>.
{_training(record)}{_augmentation(record)}</p>
{_audit(record.get("audit"))}
<h2>Originals and reconstructions</h2>
{_img(grid, "originals above reconstructions")}
{_notes(record)}
<h2>Scores</h2>
<p>Reconstructions are matched to originals by the Hungarian algorithm maximising the summed PSNR. "Exact" is
the share of the batch recovered to within {EXACT_TOLERANCE:g} per pixel (measured against the originals).
"Certified" is the share the attack itself proves without ground truth (below: the evidence). The gradient
residual compares the reconstruction's own update with the observed one: a relative L2 near 0 says the answer is
consistent with what the server saw, not that it is the data (where the update does not determine the input, a
wrong image reproduces it too).</p>
<table><tr>{"".join(header(h) for h in head)}</tr>{"".join(rows)}</table>
{_certificates(record)}
{"".join(f"<p><i>{html.escape(n)}</i></p>" for n in notes)}
{objective}
<h2>Configuration</h2>
<pre>{config}</pre>
</body></html>
"""
