"""The figures of ``rmm history --png DIR`` and ``--html FILE``: the counts over the nights and the map of how often
each pixel was bad.

* ``counts.png`` (:func:`counts_figure`): per night (x: the night's number and the date of its darks), the
  pixel-planes flagged, newly bad and healed; flagged per bit; and the fraction flagged per module.
* ``frequency.png`` (:func:`frequency_figure`): per module, the fraction of the last N nights each distinct
  pixel ``(module, y, x)`` was bad (any gain stage or cell bad), of the nights it was seen; 0 (never bad) grey,
  never seen in its own colour; pooled by the maximum so that a pixel bad on a single night stays visible at the
  figure's size.

The numbers are those of :func:`rmm_dask.nightly.history.report` (the counts) and
:func:`rmm_dask.nightly.history.pixel_nights` (the map); drawing uses the image helpers of
:mod:`rmm_dask.summary` (square pixels, pooling, legends), without pyplot.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np

from .summary import FIGURE_DPI

#: the figures, in the order they are drawn and shown
NAMES = ("counts.png", "frequency.png")
#: the frequency map's colours: a scale for > 0 (dark blue to yellow), light grey for 0 (never bad: on no part of
#: the scale), sky blue for never seen (no data in those nights)
FREQUENCY_CMAP = "plasma"
NEVER_BAD_COLOUR = "#d9d9d9"
UNSEEN_COLOUR = "#56b4e9"
UNSEEN = 1  #: the map's mark of a pixel never seen, for :func:`rmm_dask.summary.pooled`
#: the series of the totals panel: (key of a night in report()'s per_night, label, colour)
TOTALS = (("flagged", "flagged", "0.2"), ("newly_bad", "newly bad", "tab:red"), ("healed", "healed", "tab:green"))


def _short_date(date: str | None) -> str:
    """The day of a night's darks as the x axis shows it (``12-03``), or "?" when it is not known."""
    return date[5:10] if isinstance(date, str) and len(date) >= 10 else "?"


def _night_axis(ax, per_night: list) -> None:
    """The x axis of the counts: the night's number and, below it, the day of its darks; at most 12 labels."""
    numbers = [row["night"] for row in per_night]
    step = max(1, int(np.ceil(len(numbers) / 12)))
    shown = per_night[::step]
    ax.set_xticks([row["night"] for row in shown],
                  [f"{row['night']}\n{_short_date(row['date'])}" for row in shown], fontsize=7)
    ax.set_xlim(numbers[0] - 0.5, numbers[-1] + 0.5)
    ax.set_xlabel("night (and the day its darks were taken, UTC)", fontsize=8)


def counts_figure(result: dict):
    """The counts of the last N nights of ``result`` (:func:`rmm_dask.nightly.history.report`), three panels over the
    same nights: the pixel-planes flagged, newly bad and healed (all modules); flagged per bit, one line per bit
    that was ever set (ASIC_EDGE left out: geometry, the same every night); and per module the fraction of its
    pixel-planes seen that were flagged, as an image (modules x nights).

    Why these: 8 bits are few enough for one line each in distinct colours, and a bit's trend (noise growing, a
    flat missing) reads as one line; 16 modules are not: 16 lines cannot be told apart and 16 small panels leave
    each too small to read, while in an image of modules x nights a module going bad lights up as a row and a bad
    night as a column. The y axes of the lines are logarithmic below and linear near 0 (symlog), so that 0 (no
    pixel healed) is drawn and counts of thousands and of a few share a panel. Returns the Figure."""
    from matplotlib.figure import Figure

    per_night = result["per_night"]
    x = [row["night"] for row in per_night]
    modules = result.get("modules") or list(range(len(per_night[0]["per_module"]["flagged"])))
    fig = Figure(figsize=(8.0, 8.0), dpi=FIGURE_DPI)
    totals, bits, per_module = fig.subplots(3, 1, sharex=True, height_ratios=(1.0, 1.0, 0.25 + 0.06 * len(modules)))
    for key, label, colour in TOTALS:
        totals.plot(x, [row[key] for row in per_night], marker="o", ms=3, lw=1.2, color=colour, label=label)
    totals.set_ylabel("pixel-planes", fontsize=8)
    totals.set_title("all modules: pixel-planes flagged, newly bad and healed (against the last night each was "
                     "seen)", fontsize=9)
    names = list(per_night[0]["per_module"]["bits"])
    drawn = 0
    for b, name in enumerate(names):
        series = [sum(row["per_module"]["bits"][name]) for row in per_night]
        if name == "ASIC_EDGE" or not any(series):
            continue
        bits.plot(x, series, marker="o", ms=3, lw=1.2, color=f"C{b}", label=name)
        drawn += 1
    bits.set_ylabel("pixel-planes", fontsize=8)
    bits.set_title("pixel-planes with each bit set" + ("" if drawn else ": none (ASIC edges aside)"), fontsize=9)
    for ax in (totals, bits):
        ax.set_yscale("symlog", linthresh=1.0)
        highest = max((max(line.get_ydata(), default=0) for line in ax.get_lines()), default=0)
        ax.set_ylim(0, max(10.0, 3.0 * highest))  # room above the highest point
        ax.grid(True, lw=0.3, color="0.85")
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        image = np.array([[row["per_module"]["flagged"][i] / row["per_module"]["seen"][i]
                           if row["per_module"]["seen"][i] else np.nan for row in per_night]
                          for i in range(len(modules))], dtype=np.float64)
    top = float(np.nanmax(image)) if np.isfinite(image).any() else 0.0
    im = per_module.imshow(image, aspect="auto", interpolation="nearest", cmap="magma", vmin=0, vmax=max(top, 1e-9),
                           extent=(x[0] - 0.5, x[-1] + 0.5, len(modules) - 0.5, -0.5))
    per_module.set_yticks(range(len(modules)), [str(m) for m in modules], fontsize=6 if len(modules) > 8 else 7)
    per_module.set_ylabel("module", fontsize=8)
    per_module.set_title("per module: the fraction of its pixel-planes seen that were flagged", fontsize=9)
    bar = fig.colorbar(im, cax=per_module.inset_axes([1.01, 0.0, 0.015, 1.0]))  # beside: the x axes stay aligned
    bar.set_label("fraction flagged", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    _night_axis(per_module, per_night)
    for ax in (totals, bits):
        ax.tick_params(labelbottom=False)
    name = Path(result["history"]).parent.name
    fig.suptitle(f"{name}: the last {result['last']} of {result['nights']} night(s)", fontsize=10)
    fig.tight_layout()
    return fig


def frequency_image(bad: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fraction, marks) ``(module, y, x)`` of the nights each pixel was bad (``bad``) of those it was seen
    (``seen``): float32, NaN where never seen, and uint8 :data:`UNSEEN` there (0 elsewhere)."""
    seen = np.asarray(seen)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(seen > 0, np.asarray(bad, dtype=np.float32) / seen, np.nan).astype(np.float32)
    return fraction, np.where(seen > 0, 0, UNSEEN).astype(np.uint8)


def frequency_figure(bad: np.ndarray, seen: np.ndarray, n: int, nights: list, modules=None, name: str = ""):
    """The map of bad-night frequency: one panel per module (``bad`` and ``seen``: nights of the last ``n``, uint8
    ``(module, y, x)``, :func:`rmm_dask.nightly.history.pixel_nights`; ``nights``: the last ``n`` nights of the
    history, for the title), square pixels (:func:`rmm_dask.summary._image_figure`). A fraction > 0 on the plasma
    scale, 0 (never bad) in light grey, never seen in sky blue; each drawn block shows its pixel most often bad
    (:func:`rmm_dask.summary.pooled`: a pixel bad on a single night, or a single bad column, stays visible at any
    size), else never seen, else 0; a few bad pixels (:data:`rmm_dask.summary.CIRCLED`) are circled too. Returns
    (figure, image axes)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    from . import summary as drawing  # the image helpers of the mask figures: square pixels, pooling, legends

    fraction, marks = frequency_image(bad, seen)
    modules = list(range(fraction.shape[0])) if modules is None else list(modules)
    never_bad = int(np.count_nonzero(fraction == 0))
    unseen = int(np.count_nonzero(marks))
    ever = int(np.count_nonzero(fraction > 0))
    entries = [(NEVER_BAD_COLOUR, f"never bad in the last {n} night(s): {never_bad:,} pixels")]
    if unseen:
        entries.append((UNSEEN_COLOUR, f"never seen (no data in the last {n} night(s)): {unseen:,} pixels"))
    circled = 0 < ever <= drawing.CIRCLED
    label = f"bad on at least one night (the colour scale): {ever:,} pixels" + (" (circled)" if circled else "")
    entries.append((colormaps[FREQUENCY_CMAP](0.5), label))
    shape = tuple(fraction.shape[1:])
    first, last = nights[0], nights[-1]
    span = f"{first['version']} ({_short_date(first.get('date'))})"
    if len(nights) > 1:
        span += f" to {last['version']} ({_short_date(last.get('date'))})"
    title = [f"{name + ': ' if name else ''}fraction of the last {n} nights bad, per pixel (module, y, x)",
             f"the {n} nights {span}; a pixel is bad on a night when any gain stage or cell is"]
    legend = [text for _, text in entries]
    width = drawing._image_figure(shape, len(modules), legend=legend)[0].get_figwidth()  # the title folds to it
    title = "\n".join(textwrap.fill(line, max(30, int(width / 0.075))) for line in title)
    fig, axes, cax = drawing._image_figure(shape, len(modules), title_room=0.25 + 0.17 * (title.count("\n") + 1),
                                   legend=legend)
    cmap = colormaps[FREQUENCY_CMAP].with_extremes(under=NEVER_BAD_COLOUR, bad=UNSEEN_COLOUR)
    norm = Normalize(vmin=1e-6, vmax=1.0)  # 0 is "under": grey, apart from the scale's darkest blue
    im = None
    for i, (ax, m) in enumerate(zip(axes, modules)):
        factor = drawing._pool_factor(ax, shape)
        image, drawn = drawing.pooled(fraction[i], marks[i], factor)
        extent = drawing._extent(image.shape, factor, "upper")
        im = ax.imshow(image, cmap=cmap, norm=norm, interpolation="nearest", origin="upper", aspect="equal",
                       extent=extent, zorder=3)
        if drawn.any():
            drawing._draw_codes(ax, drawn, ["none", UNSEEN_COLOUR], "upper", extent, zorder=3.1, clear=0)
        if circled:
            drawing._circle(ax, (fraction[i] > 0).astype(np.uint8), 1, "tab:red")
        pooling = f"; {factor} x {factor} px per drawn block, its most often bad" if factor > 1 else ""
        drawing._name_axes(ax, shape, "upper", ("x: fast scan", "y: slow scan"), pooling if i == 0 else "")
        if i:
            ax.set_xlabel("")
            ax.set_ylabel("")
        ax.set_title(f"module {m}", fontsize=8)
    bar = fig.colorbar(im, cax=cax, extend="min")
    bar.set_label(f"fraction of the last {n} nights bad\n(of the nights seen; grey: 0, never bad)", fontsize=8)
    drawing._legend(fig, axes[0], entries)
    fig.suptitle(title, fontsize=9, y=1 - 0.1 / fig.get_figheight(), va="top")
    return fig, axes


def figures(result: dict):
    """(file name, Figure) of the figures of ``result`` (:func:`rmm_dask.nightly.history.report`), one at a time; the
    map reads the history's ``recent`` bitsets again (verified)."""
    from .nightly.history import open_history, pixel_nights

    yield "counts.png", counts_figure(result)
    path = Path(result["history"])
    n = result["last"]
    group = open_history(path)
    bad, seen = pixel_nights(group, path, n)
    nights = list(group.attrs["nights"])[-n:]
    fig, _ = frequency_figure(bad, seen, n, nights, result.get("modules"), path.parent.name)
    yield "frequency.png", fig


def write_figures(pngs: list[tuple[str, bytes]], out_dir) -> list[Path]:
    """The figures ``pngs`` (:func:`figures_png`: drawn once for both ``--png`` and ``--html``) as files in
    ``out_dir`` (created if needed: the temporary of a publication); the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in pngs:
        (out_dir / name).write_bytes(data)
    return [out_dir / name for name, _ in pngs]


def figures_png(result: dict) -> list[tuple[str, bytes]]:
    """The figures of :func:`figures` as (file name, PNG bytes), drawn in memory (for the HTML page)."""
    out = []
    for name, fig in figures(result):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
        out.append((name, buffer.getvalue()))
    return out
