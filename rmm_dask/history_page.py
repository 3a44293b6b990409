"""``rmm history PUBLISH/NAME --html FILE``: one self-contained HTML page of a pixel history.

The tables of ``rmm history`` (the rows of :mod:`rmm_dask.history_tables`: the page and the terminal say the
same), the figures of :mod:`rmm_dask.history_figures` embedded as PNG data, and a line of what the history does
not tell. Rendered from ``templates/history.html.j2`` with autoescape (a path or version is text, never markup);
published read-only through :func:`rmm_dask.publish.output`.
"""

from __future__ import annotations

import base64
from pathlib import Path

TEMPLATE = "history.html.j2"

#: the figures' captions, in words
CAPTIONS = {
    "counts.png": "Per night (its number and the day of its darks): pixel-planes flagged, newly bad and healed; "
                  "flagged per bit; the fraction of each module's pixel-planes seen that were flagged.",
    "frequency.png": "Per module, the fraction of the last N nights each pixel (module, y, x) was bad, of the nights "
                     "it was seen (any gain stage or cell bad); grey: never bad; sky blue: never seen. Each drawn "
                     "block shows its pixel most often bad: a pixel bad on one night stays visible.",
}


def history_html(result: dict, figures: list[tuple[str, bytes]]) -> str:
    """The page's text for ``result`` (:func:`rmm_dask.nightly.history.report`) and ``figures`` ((file name, PNG
    bytes), :func:`rmm_dask.history_figures.figures_png`)."""
    import jinja2

    from .history_tables import PIXEL_RULE, UNTOLD, changed_rows, k_rows, night_rows

    env = jinja2.Environment(loader=jinja2.PackageLoader("rmm_dask", "templates"), autoescape=True,
                             keep_trailing_newline=True)
    path = Path(result["history"])
    return env.get_template(TEMPLATE).render(
        title=f"{path.parent.name}: pixel history", path=str(path.absolute()), nights=result["nights"],
        last=result["last"], pixels=result["pixels"], notes=result["notes"], untold=UNTOLD, pixel_rule=PIXEL_RULE,
        bins=k_rows(result), per_night=night_rows(result), changed=changed_rows(result),
        figures=[{"name": Path(name).stem, "caption": CAPTIONS.get(name, name),
                  "data": base64.b64encode(data).decode()} for name, data in figures])


def write_page(result: dict, figures: list[tuple[str, bytes]], out, *, overwrite: bool = False) -> Path:
    """Publish the page of ``result`` with ``figures`` at ``out`` (an existing file only with ``overwrite``, a
    symbolic link never); its path."""
    from . import publish

    text = history_html(result, figures)
    with publish.output(out, overwrite=overwrite, what="the history page") as tmp:
        Path(tmp.tmp).write_text(text, encoding="utf-8", errors="surrogateescape")  # any locale
    return tmp.target
