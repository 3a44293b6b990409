"""Self-contained HTML pages about masks: figures embedded as PNG data, no external files.

:func:`mask_report` is ``rmm show STORE --html FILE``: what was masked, from what (every file of
every run, the frames F1 rejected), with which parameters (name, value, meaning), the counts per bit,
module, gain stage and cell, the layers, rmm's verdict against the manufacturer's pixel mask, and the
figures with captions in words (per-module images, the assembled detector, SNR histograms with the
lambda threshold), with the lines ``rmm show`` prints (:mod:`rmm_dask.report_text`).
:func:`summary_html` is the nightly version page: status and the changes against the previous
version, then the same report.
Both are rendered from the jinja2 template ``templates/report.html.j2`` with autoescape: a
path, attribute or parameter of a store is shown as text, never taken as markup. A small
script marks the page once every figure has decoded (``data-figures-loaded`` on ``<body>``),
which the tests read from a headless browser.
"""

from __future__ import annotations

import base64
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
    """An embedded figure from a PNG file, or from ``(name, png bytes)``: its file stem (the image's ``alt``,
    which names it), its caption in words (:func:`rmm_dask.report_text.caption`) and its data."""
    from .report_text import caption

    name, raw = (path[0], path[1]) if isinstance(path, tuple) else (Path(path).name, Path(path).read_bytes())
    return {"name": Path(name).stem, "caption": caption(name), "data": base64.b64encode(raw).decode()}


def mask_context(root, counts: dict, figures: list) -> dict:
    """What the template shows of one store (``root``: the open store or its tree): its detector and chips
    (:func:`rmm_dask.tables.detector_lines`), when and by what it was made, its inputs and every file of
    them, the frames F1 rejected per dark run, its parameters with their meaning, counts (from count_bits),
    its gap pixels (:func:`rmm_dask.tables.gap_line`), layers, rmm's verdict against the manufacturer's
    pixel mask and the figures: what ``rmm show`` prints, so that the page and the terminal say the same."""
    from . import report_text as words
    from .store import open_tree
    from .summary import history_line, verdict_counts
    from .tables import detector_lines, gap_line, untested, untested_line

    tree = open_tree(root)
    attrs = tree.attrs
    missing = untested(attrs)
    names = [b.name for b in BadPixel] + ["any"]

    def cells(values: dict, shown) -> list:
        return ["not tested" if n in missing else shown(values[n]) for n in names]

    rows = [["all", *cells(counts["total"], str)]]
    rows += [["fraction", *cells(counts["total"], lambda n: f"{n / counts['pixels']:.2e}")]]
    for axis in ("module", "gain", "cell"):
        rows += [[f"{axis} {k}", *cells(row, str)] for k, row in counts[axis].items()]
    runs = attrs.get("inputs") or {}
    inputs = [[role, info.get("path"), info.get("format"), info.get("frames"), len(info.get("files") or ()),
               words.run_size(info), "; ".join(info.get("notes") or [])] for role, info in runs.items()]
    files = [[role, record.get("path"), size, record.get("size"), when]
             for role, info in runs.items()
             for record, (_, size, when) in zip(info.get("files") or (), words.file_rows(info))]
    rejected = []
    for role, r in words.rejected_frames(tree).items():
        trains = "not recorded" if r["trains"] is None and r["rejected"] else ", ".join(map(str, r["trains"] or ()))
        per_module = ", ".join(f"module {m}: {n}" for m, n in r["modules"].items())
        rejected.append([role, r["rejected"], r["frames"], " x ".join(map(str, r["shape"])), per_module, trains])
    verdict = verdict_counts(tree)
    return {
        "detector": [printable(line) for line in detector_lines(tree)],
        "gap": gap_line(counts) if counts["total"].get("gap") else None,
        "untested": untested_line(missing) if missing else None,
        "made": words.made_line(attrs),
        "inputs": inputs,
        "files": files,
        "rejected": rejected,
        "parameters": words.parameter_rows(attrs),
        "verdict": words.verdict_rows(verdict),
        "no_verdict": words.NO_VERDICT if verdict is None else None,
        "verdict_title": words.VERDICT_TITLE,
        "flagged": counts["total"]["flagged"],
        "pixels": counts["pixels"],
        "fraction": f"{counts['total']['flagged'] / counts['pixels']:.3e}",
        "header": ["", *names],
        "rows": rows,
        "layers": list(counts.get("layers", {}).items()),
        "history": history_line(counts["history"]) if counts.get("history") else None,
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


def _history_changes(h: dict | None) -> str | None:
    """The history layer's changes against the previous current version (diff_masks' ``history``), in words."""
    if not h:
        return None
    return (f"History layer: {h['history_newly']} pixel-planes newly remembered ({h['history_newly_distinct']} pixels),"
            f" {h['history_cleared']} no longer ({h['history_cleared_distinct']} pixels). What each version masks"
            f" (mask or history layer): {h['union']['newly_bad']} pixel-planes newly bad, {h['union']['recovered']}"
            f" recovered: what the sanity check's max-change counts.")


def summary_html(summary: dict, root, counts: dict, figures: list) -> str:
    """The page of one nightly version: status, the changes against the previous current version (distinct
    pixels and pixel-planes newly bad and recovered, per bit; "first version" when there was none), timings,
    then the mask's report (``root``: the open store)."""
    diff = summary.get("diff")
    if diff:
        pixels = diff.get("newly_bad_pixels", [])

        def both(planes, distinct):  # summaries of earlier versions have no distinct counts
            return [planes, "not recorded" if distinct is None else distinct]

        diff = {
            "against": diff["against"],
            "changes": [["newly bad", *both(diff["newly_bad"], diff.get("newly_bad_distinct"))],
                        ["recovered", *both(diff["recovered"], diff.get("recovered_distinct"))]],
            "bits": [[b, *both(r["set"], r.get("set_distinct")), *both(r["cleared"], r.get("cleared_distinct"))]
                     for b, r in diff["bits"].items() if r["set"] or r["cleared"]],
            "pixels": pixels,
            "truncated": diff.get("pixels_truncated"),
            "shown": [[p["module"], p["y"], p["x"], p["planes"], p["bits"]] for p in pixels[:100]],
            "history": _history_changes(diff.get("history")),
        }
    reasons = [*(summary.get("reasons") or []), *(summary.get("held_for") or [])]  # held_for: reasons of a release
    unlike = [r for r in reasons if r.startswith("cannot compare with ")]
    return _render(
        title=f"{summary['detector']} {summary['version']} ({summary['status']})",
        summary=summary,
        diff=diff,
        no_diff="; ".join(unlike) if unlike else "first version: no earlier current version to compare with",
        timings=[[k, f"{v:.1f}"] for k, v in summary["timings"].items()],
        mask=mask_context(root, counts, figures),
    )
