"""Self-contained HTML pages about masks: figures embedded as PNG data, no external files."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from .codes import BadPixel


def _table(header: list, rows: list) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<figure><img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(Path(path).stem)}</figcaption></figure>'


STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 75em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.held { color: #b00; } .published { color: #070; }
img { max-width: 100%; }
"""


def summary_html(summary: dict, figures: list) -> str:
    """The page of one nightly version: status, inputs, counts, changes, timings, figures."""
    status = summary["status"]
    parts = [
        f"<h1>{html.escape(summary['detector'])} {html.escape(summary['version'])}: "
        f"<span class='{status}'>{html.escape(status)}</span></h1>"
    ]
    if summary.get("reasons"):
        parts.append("<p class='held'>Held, current not switched: " + html.escape("; ".join(summary["reasons"])) + "</p>")
    parts.append("<h2>Inputs</h2>" + _table(["role", "run"], list(summary["runs"].items())))
    counts = summary["counts"]
    names = [b.name for b in BadPixel] + ["any"]
    parts.append(
        f"<h2>Masked pixel-planes</h2><p>{counts['flagged']} of {counts['pixels']} flagged by the analysis "
        f"(fraction {counts['bad_fraction']:.3e}; ASIC edges not counted)</p>"
        + _table(["", *names], [["all", *(counts["total"][n] for n in names)]]
                 + [[f"module {m}", *(row[n] for n in names)] for m, row in counts["module"].items()]
                 + [[f"gain {g}", *(row[n] for n in names)] for g, row in counts["gain"].items()])
    )
    diff = summary.get("diff")
    if diff:
        parts.append(f"<h2>Changes against {html.escape(diff['against'])}</h2>"
                     f"<p>{diff['newly_bad']} pixel-planes newly bad, {diff['recovered']} recovered</p>")
        parts.append(_table(["bit", "set", "cleared"], [[b, r["set"], r["cleared"]] for b, r in diff["bits"].items() if r["set"] or r["cleared"]]))
        pixels = diff.get("newly_bad_pixels", [])
        if pixels:
            shown = pixels[:100]
            parts.append(f"<h3>Newly bad pixels ({len(pixels)}{'+' if diff.get('pixels_truncated') else ''}; first {len(shown)})</h3>")
            parts.append(_table(["module", "y", "x", "planes", "bits"], [[p["module"], p["y"], p["x"], p["planes"], p["bits"]] for p in shown]))
    else:
        parts.append("<h2>Changes</h2><p>No earlier current version to compare with.</p>")
    parts.append("<h2>Timings</h2>" + _table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in summary["timings"].items()]))
    parts.append("<h2>Parameters</h2><pre>" + html.escape(json.dumps(summary["parameters"], indent=1)) + "</pre>")
    parts.append(f"<p>{html.escape(summary['software'])}, {html.escape(summary['started'])} - {html.escape(summary['finished'])}</p>")
    parts.append("<h2>Figures</h2>" + "".join(_image(p) for p in figures))
    title = f"{summary['detector']} {summary['version']} ({status})"
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
