"""The Flower wrapper's report: per round and target, what each attack recovered, with pictures inlined."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from gradinv.report.html import STYLE, _fmt, _img


def render(records: list[dict[str, Any]], out: Path) -> str:
    """The audit report: per round and target, what each attack recovered, with pictures inlined."""
    sections = []
    for r in records:
        if "failed" in r:
            sections.append(
                f"<h2>Round {r['round']}: {html.escape(r['target'])}</h2><p>Not audited: this reply could not be read "
                f"as an update ({html.escape(r['failed'])}); the round aggregated without it being attacked.</p>"
            )
            continue
        note = (
            f"<p><b>Secure aggregation:</b> every reply carried the same weights, so the server saw only the "
            f"aggregate of clients {r['clients']} (batch {r['batch_size']}); the attacks ran on the aggregate.</p>"
            if r["secure_aggregation"]
            else f"<p>The server saw client {r['clients'][0]}'s own update (batch {r['batch_size']}).</p>"
        )
        rows = []
        for name, a in r["attacks"].items():
            if "error" in a:
                rows.append(
                    f"<tr><td>{html.escape(name)}</td><td colspan=4>not applicable: {html.escape(a['error'])}</td></tr>"
                )
                continue
            s = a.get("scores", {})
            cells = [name, s.get("psnr"), s.get("ssim"), s.get("exact_fraction"), a["seconds"]]
            rows.append("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in cells) + "</tr>")
        picture = _img(out / r["figure"], r["target"]) if "figure" in r else ""
        sections.append(
            f"<h2>Round {r['round']}: {html.escape(r['target'])}</h2>{note}<table><tr><th>attack</th><th>PSNR (dB)"
            f"</th><th>SSIM</th><th>exact share</th><th>seconds</th></tr>{''.join(rows)}</table>{picture}"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gradinv: what the Flower server could reconstruct</title>
<style>{STYLE}</style></head><body>
<h1>What the curious Flower server could reconstruct</h1>
<p>Each section is one update the server received; PSNR and SSIM compare the reconstruction with the client's private
images (evaluation only: the attacks never read them). Scores are empty when no ground truth was given.</p>
{"".join(sections)}
</body></html>
"""
