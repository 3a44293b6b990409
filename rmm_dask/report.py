"""Self-contained HTML pages about masks: figures embedded as PNG data, no external files.

:func:`mask_report` is ``rmm show STORE --html FILE``: what was masked, from what, with which
parameters, the counts per bit, module, gain stage and cell, the layers, and the figures
(per-module images, the assembled detector, SNR histograms with the lambda threshold).
:func:`summary_html` is the nightly version page: status and changes, then the same report.
A small script marks the page once every figure has decoded (``data-figures-loaded`` on
``<body>``), which the tests read from a headless browser.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

from .codes import BadPixel

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 75em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.held { color: #b00; } .published { color: #070; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
img { max-width: 100%; }
"""

#: counts how many embedded figures decoded; the tests check it in a headless browser
LOADED = """
window.addEventListener("load", function () {
  var images = document.querySelectorAll("img");
  var ok = Array.prototype.filter.call(images, function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-figures", images.length);
  document.body.setAttribute("data-figures-loaded", ok.length);
});
"""


def _table(header: list, rows: list) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(path: Path) -> str:
    """An embedded figure from a PNG file, or from ``(name, png bytes)``."""
    name, raw = (path[0], path[1]) if isinstance(path, tuple) else (Path(path).stem, Path(path).read_bytes())
    data = base64.b64encode(raw).decode()
    name = html.escape(Path(name).stem)
    return f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>'


def page(title: str, parts: list[str]) -> str:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style><script>{LOADED}</script></head><body>{''.join(parts)}</body></html>\n"
    )


def mask_sections(root, counts: dict, figures: list) -> list[str]:
    """Inputs, parameters, counts, layers and figures of one store (``counts`` from count_bits)."""
    attrs = root.attrs
    names = [b.name for b in BadPixel] + ["any"]
    rows = [["all", *(counts["total"][n] for n in names)]]
    rows += [["fraction", *(f"{counts['total'][n] / counts['pixels']:.2e}" for n in names)]]
    for axis in ("module", "gain", "cell"):
        rows += [[f"{axis} {k}", *(row[n] for n in names)] for k, row in counts[axis].items()]
    inputs = [[role, info.get("path"), info.get("format"), info.get("frames"), "; ".join(info.get("notes") or [])] for role, info in attrs.get("inputs", {}).items()]
    parts = [
        "<h2>Inputs</h2>" + _table(["run", "path", "format", "frames per cell", "notes"], inputs),
        f"<p>{html.escape(str(attrs.get('software')))} on {html.escape(str(attrs.get('host')))}, "
        f"{html.escape(str(attrs.get('start_time')))} - {html.escape(str(attrs.get('end_time')))}</p>",
        "<h2>Parameters</h2><pre>" + html.escape(json.dumps(attrs.get("parameters", {}), indent=1)) + "</pre>",
        f"<h2>Masked pixel-planes</h2><p>{counts['total']['flagged']} of {counts['pixels']} flagged by the analysis "
        f"(fraction {counts['total']['flagged'] / counts['pixels']:.3e}; ASIC edges not counted)</p>" + _table(["", *names], rows),
    ]
    if counts.get("layers"):
        parts.append("<h2>Layers</h2><p>Kept apart from the bits above; exports combine them.</p>"
                     + _table(["layer", "pixels masked"], list(counts["layers"].items())))
    if counts.get("manufacturer_bits"):
        bits = counts["manufacturer_bits"]
        parts.append("<h3>Manufacturer's pixel_mask per NeXus bit</h3><p>Pixels with each bit set; analysis software "
                     "rejects a pixel with any of bits 0-15 (reject); the high bits tag properties (virtual pixels).</p>"
                     + _table(list(bits), [list(bits.values())]))
    parts.append("<h2>Figures</h2>" + "".join(_image(p) for p in figures))
    return parts


def mask_report(store, out, *, overwrite: bool = False, geometry: str | None = None) -> Path:
    """``rmm show STORE --html FILE``: the report of one store as a self-contained page.

    Figures are drawn in memory; the page is published read-only by :func:`rmm_dask.publish.output`.
    """
    from . import publish
    from .store import open_store
    from .summary import count_bits, figures_png

    root = open_store(store)
    publish.prepare(out, overwrite=overwrite, what="the report")
    figures = figures_png(root, geometry=geometry)
    title = f"{root.attrs.get('detector')} mask {Path(os.fspath(store)).name}"
    text = page(title, [f"<h1>{html.escape(title)}</h1><p>{html.escape(str(Path(store).absolute()))}</p>",
                        *mask_sections(root, count_bits(root), figures)])
    with publish.output(out, overwrite=overwrite, what="the report") as tmp:
        Path(tmp.tmp).write_text(text)
    return tmp.target


def summary_html(summary: dict, root, counts: dict, figures: list) -> str:
    """The page of one nightly version: status, changes, timings, then the mask's report."""
    status = summary["status"]
    parts = [
        f"<h1>{html.escape(summary['detector'])} {html.escape(summary['version'])}: "
        f"<span class='{status}'>{html.escape(status)}</span></h1>"
    ]
    if summary.get("reasons"):
        parts.append("<p class='held'>Held, current not switched: " + html.escape("; ".join(summary["reasons"])) + "</p>")
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
    parts += mask_sections(root, counts, figures)
    return page(f"{summary['detector']} {summary['version']} ({status})", parts)
