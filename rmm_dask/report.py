"""Self-contained HTML pages about masks: figures embedded as PNG data, no external files.

:func:`mask_report` is ``rmm show STORE --html FILE``: what was masked, from what, with which
parameters, the counts per bit, module, gain stage and cell, the layers, and the figures
(per-module images, the assembled detector, SNR histograms with the lambda threshold), with the
lines ``rmm show`` prints of the detector, its chips and its gap pixels.
:func:`summary_html` is the nightly version page: status and changes, then the same report.
Both are rendered from the jinja2 template ``templates/report.html.j2`` with autoescape: a
path, attribute or parameter of a store is shown as text, never taken as markup. A small
script marks the page once every figure has decoded (``data-figures-loaded`` on ``<body>``),
which the tests read from a headless browser.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from .codes import BadPixel
from .errors import printable

TEMPLATE = "report.html.j2"


def _render(**context) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("rmm_dask", "templates"), autoescape=True, keep_trailing_newline=True)
    return env.get_template(TEMPLATE).render(**context)


def _figure(path) -> dict:
    """An embedded figure from a PNG file, or from ``(name, png bytes)``."""
    name, raw = (path[0], path[1]) if isinstance(path, tuple) else (Path(path).stem, Path(path).read_bytes())
    return {"name": Path(name).stem, "data": base64.b64encode(raw).decode()}


def mask_context(root, counts: dict, figures: list) -> dict:
    """What the template shows of one store (``root``: the open store or its tree): its detector and chips
    (:func:`rmm_dask.tables.detector_lines`), inputs, parameters, counts (from count_bits), its gap pixels
    (:func:`rmm_dask.tables.gap_line`), layers and figures: the lines ``rmm show`` prints, so that the page
    and the terminal say the same of the mask."""
    from .tables import detector_lines, gap_line, untested, untested_line

    attrs = root.attrs
    missing = untested(attrs)
    names = [b.name for b in BadPixel] + ["any"]

    def cells(values: dict, shown) -> list:
        return ["not tested" if n in missing else shown(values[n]) for n in names]

    rows = [["all", *cells(counts["total"], str)]]
    rows += [["fraction", *cells(counts["total"], lambda n: f"{n / counts['pixels']:.2e}")]]
    for axis in ("module", "gain", "cell"):
        rows += [[f"{axis} {k}", *cells(row, str)] for k, row in counts[axis].items()]
    inputs = [[role, info.get("path"), info.get("format"), info.get("frames"), "; ".join(info.get("notes") or [])] for role, info in attrs.get("inputs", {}).items()]
    return {
        "detector": [printable(line) for line in detector_lines(root)],
        "gap": gap_line(counts) if counts["total"].get("gap") else None,
        "untested": untested_line(missing) if missing else None,
        "inputs": inputs,
        **{key: str(attrs.get(key)) for key in ("software", "host", "start_time", "end_time")},
        "parameters": json.dumps(attrs.get("parameters", {}), indent=1),
        "flagged": counts["total"]["flagged"],
        "pixels": counts["pixels"],
        "fraction": f"{counts['total']['flagged'] / counts['pixels']:.3e}",
        "header": ["", *names],
        "rows": rows,
        "layers": list(counts.get("layers", {}).items()),
        "manufacturer_bits": counts.get("manufacturer_bits"),
        "figures": [_figure(p) for p in figures],
    }


def mask_report(store, out, *, overwrite: bool = False, geometry: str | None = None) -> Path:
    """``rmm show STORE --html FILE``: the report of one store as a self-contained page.

    Figures are drawn in memory; the page is published read-only by :func:`rmm_dask.publish.output`.
    """
    from . import publish
    from .store import open_tree
    from .summary import count_bits, figures_png

    tree = open_tree(store)
    publish.prepare(out, overwrite=overwrite, what="the report")
    figures = figures_png(tree, geometry=geometry)
    title = f"{tree.attrs.get('detector')} mask {Path(os.fspath(store)).name}"
    text = _render(title=title, path=str(Path(store).absolute()), mask=mask_context(tree, count_bits(tree), figures))
    with publish.output(out, overwrite=overwrite, what="the report") as tmp:
        Path(tmp.tmp).write_text(text, encoding="utf-8", errors="surrogateescape")  # any locale
    return tmp.target


def summary_html(summary: dict, root, counts: dict, figures: list) -> str:
    """The page of one nightly version: status, changes, timings, then the mask's report (``root``: the open store)."""
    diff = summary.get("diff")
    if diff:
        pixels = diff.get("newly_bad_pixels", [])
        diff = {
            "against": diff["against"],
            "newly_bad": diff["newly_bad"],
            "recovered": diff["recovered"],
            "bits": [[b, r["set"], r["cleared"]] for b, r in diff["bits"].items() if r["set"] or r["cleared"]],
            "pixels": pixels,
            "truncated": diff.get("pixels_truncated"),
            "shown": [[p["module"], p["y"], p["x"], p["planes"], p["bits"]] for p in pixels[:100]],
        }
    return _render(
        title=f"{summary['detector']} {summary['version']} ({summary['status']})",
        summary=summary,
        diff=diff,
        timings=[[k, f"{v:.1f}"] for k, v in summary["timings"].items()],
        mask=mask_context(root, counts, figures),
    )
