"""What a published mask says: counts per bit, module, gain and cell; figures.

Stores are read through :func:`rmm_dask.store.open_tree`, verified (:mod:`rmm_dask.integrity`):
a missing or damaged chunk raises InputError naming it, never counts as good pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .chips import NEXUS_GAP
from .codes import BadPixel
from .store import gain_names, open_tree


def count_bits(store) -> dict:
    """Pixels per bit, overall and per module, gain stage and cell, read one module at a time.

    ``store``: a path, or a store opened by :func:`rmm_dask.store.open_store` or :func:`rmm_dask.store.open_tree`.

    Returns ``{"pixels": n pixel-planes, "total": {name: n}, "module": {id: {name: n}},
    "gain": {...}, "cell": {...}, "layers": {name: masked pixels}}`` where the names are the bits, ``any``,
    ``flagged`` and ``gap``: edge pixels are counted under ASIC_EDGE and in ``any``; ``flagged``
    counts the pixels with any other bit (found bad by the analysis: what ``rmm show``, the report and
    the nightly service's flagged fraction call defects). ``gap`` counts the pixel-planes of gap pixels
    (:func:`gap_pixels`: no sensor behind them), whatever their bits: their data is missing by design,
    so their NO_DATA bit is counted nowhere else (not under NO_DATA, ``any`` or ``flagged``); any other
    bit the analysis set on one is counted as usual. ``pixels`` counts every pixel-plane, gaps included.
    The store's mask is not changed: it and the exports still mask the gaps.

    A store with the layer of a mask that remembers (``layers/history``) also gets ``history``:
    ``planes`` (pixel-planes in the layer), ``kept`` (of those, the planes tonight's mask does not flag:
    what the history adds), ``flagged`` (the union: planes flagged tonight or remembered, what the
    published version masks), ``pixels`` (distinct pixels with a plane in the layer), and the layer's
    ``min_fraction``, ``last``, ``nights`` and ``versions``.
    """
    tree = open_tree(store)
    mask = tree["mask"]
    modules, cells = tree["module"].values, tree["cell"].values
    gains = gain_names(tree)
    per = {"module": {}, "gain": {g: _zero() for g in gains}, "cell": {int(c): _zero() for c in cells}}
    total = _zero()
    layers = _layers(tree)
    remembered = layers.get("history")
    history = None if remembered is None else {
        "planes": 0, "kept": 0, "flagged": 0, "pixels": 0,
        **{k: remembered.attrs.get(k) for k in ("min_fraction", "last", "nights", "versions")}}
    for i, m in enumerate(modules):
        block = mask[i].values  # (gain, cell, y, x)
        gap = gap_pixels(tree, i)
        if gap.any():  # a gap's missing data is no defect
            block = np.where(gap, block & np.uint8(0xFF ^ int(BadPixel.NO_DATA)), block)
        if history is not None:
            kept = remembered[i].values != 0
            flagged = (block & np.uint8(_FLAGGED)) != 0
            history["planes"] += int(np.count_nonzero(kept))
            history["kept"] += int(np.count_nonzero(kept & ~flagged))
            history["flagged"] += int(np.count_nonzero(kept | flagged))
            history["pixels"] += int(np.count_nonzero(kept.any(axis=(0, 1))))
        per["module"][int(m)] = row = _zero()
        for name, bits in _SELECTIONS:
            hit = (block & np.uint8(bits)) != 0
            by_gain = hit.sum(axis=(1, 2, 3))
            by_cell = hit.sum(axis=(0, 2, 3))
            row[name] += int(by_gain.sum())
            total[name] += int(by_gain.sum())
            for g, n in zip(gains, by_gain):
                per["gain"][g][name] += int(n)
            for c, n in zip(cells, by_cell):
                per["cell"][int(c)][name] += int(n)
        n_gap = int(np.count_nonzero(gap))
        row["gap"] = n_gap * len(gains) * len(cells)
        total["gap"] += row["gap"]
        for g in gains:
            per["gain"][g]["gap"] += n_gap * len(cells)
        for c in cells:
            per["cell"][int(c)]["gap"] += n_gap * len(gains)
    per["layers"] = {name: history["planes"] if name == "history" else int(np.count_nonzero(layers[name].values))
                     for name in sorted(layers)}
    if "manufacturer" in layers:
        per["manufacturer_bits"] = count_nexus_bits(layers["manufacturer"])
    if history is not None:
        per["history"] = history
    return {"pixels": int(np.prod(mask.shape)), "total": total, **per}


def history_line(history: dict) -> str:
    """The one line ``rmm show``, the report and the nightly summary give a mask that remembers (``count_bits``'s
    ``history``): what its layer keeps masked beyond tonight's verdicts."""
    fraction, last = history.get("min_fraction"), history.get("last")
    rule = f"bad in >= {fraction:.0%} of the last {last} nights" if fraction is not None else "its rule not recorded"
    return (f"kept by the history: {history['kept']} pixel-planes, {rule} (counted over {history.get('nights')}"
            f" night(s); layers/history holds {history['planes']} pixel-planes in {history['pixels']} distinct pixels);"
            f" the version masks {history['flagged']} pixel-planes: flagged tonight or remembered")


def gap_pixels(store, i: int) -> np.ndarray:
    """(y, x) bool: the gap pixels of the store's module at index ``i``, from its manufacturer's layer (NeXus bit 0).

    Gap pixels have no sensor behind them: their data is missing (read as NaN, hence the mask's
    NO_DATA bit) and that is no defect, so counts and figures keep them apart. All False for a
    store without a manufacturer's layer (nothing says where gaps are).
    """
    tree = open_tree(store)
    layer = _layers(tree).get("manufacturer")
    if layer is None:
        return np.zeros(tree["mask"].shape[-2:], dtype=bool)
    return (np.asarray(layer[i].values, dtype=np.uint32) & NEXUS_GAP) != 0


#: codes of :func:`manufacturer_verdict`: rmm's verdict on a pixel against its manufacturer's
VERDICTS = {1: "known", 2: "new", 3: "not confirmed"}  #: 0: good for both; gaps are 0 (no sensor, no verdict)


def manufacturer_verdict(store, i: int) -> np.ndarray:
    """(y, x) uint8: rmm's verdict on each pixel of the module at index ``i`` against the manufacturer's layer.

    1 ``known``: rejected by the manufacturer (NeXus bits 1-15) and masked by rmm (found bad by the
    analysis, any bit but ASIC_EDGE, in any gain stage or cell, or an edge pixel, masked without
    analysis); 2 ``new``: found bad by the analysis, not rejected by the manufacturer; 3 ``not
    confirmed``: rejected by the manufacturer, good in every plane of rmm's mask; 0 otherwise (an edge
    pixel the manufacturer keeps is geometry, no finding), and on gap pixels (bit 0: no sensor, nothing
    to judge). A store without a manufacturer's layer has no verdict: all 0 but ``new``.
    """
    tree = open_tree(store)
    planes = tree["mask"][i].values  # (gain, cell, y, x)
    found = ((planes & np.uint8(0xFF ^ int(BadPixel.ASIC_EDGE))) != 0).any(axis=(0, 1))
    masked = (planes != 0).any(axis=(0, 1))
    layer = _layers(tree).get("manufacturer")
    words = np.zeros(found.shape, np.uint32) if layer is None else np.asarray(layer[i].values, dtype=np.uint32)
    gap = (words & NEXUS_GAP) != 0
    rejected = (words & np.uint32(0xFFFF ^ int(NEXUS_GAP))) != 0
    verdict = np.where(rejected, np.where(masked, 1, 3), np.where(found, 2, 0)).astype(np.uint8)
    verdict[gap] = 0
    return verdict


def verdict_counts(store) -> dict | None:
    """Pixels per :data:`VERDICTS` name over all modules (``{"known": n, "new": n, "not confirmed": n}``),
    or None for a store without a manufacturer's layer (nothing to compare with)."""
    tree = open_tree(store)
    if "manufacturer" not in _layers(tree):
        return None
    per = np.zeros(4, dtype=np.int64)
    for i in range(tree["mask"].shape[0]):
        per += np.bincount(manufacturer_verdict(tree, i).ravel(), minlength=4)
    return {name: int(per[code]) for code, name in VERDICTS.items()}


#: NeXus NXdetector ``pixel_mask`` bits (NXmx): software rejects a pixel with any bit of the low 16 set;
#: the high 16 tag properties that are no reason to reject it alone (bit 31: a virtual pixel)
NEXUS_BITS = {0: "gap", 1: "dead", 2: "under-responding", 3: "over-responding", 4: "noisy", 6: "cluster", 8: "user", 31: "virtual"}


def _layers(tree) -> dict:
    """The store's layers by name (``manufacturer``, ``user``, ``history``), those it has."""
    return dict(tree["layers"].data_vars) if "layers" in tree.children else {}


def count_nexus_bits(layer) -> dict:
    """Pixels per bit set in a NeXus ``pixel_mask`` layer (uint32 (module, y, x), read one module at a time).

    Keys are the names of :data:`NEXUS_BITS` (``bit N`` for the bits NeXus leaves
    undefined), in bit order, only bits that are set somewhere; ``reject`` counts the
    pixels with any of the low 16 bits (what analysis software masks), ``any`` those
    with any bit.
    """
    per_bit = np.zeros(32, dtype=np.int64)
    reject = anything = 0
    for i in range(layer.shape[0]):
        block = np.asarray(layer[i], dtype=np.uint32)
        for b in range(32):
            per_bit[b] += np.count_nonzero(block & np.uint32(1 << b))
        reject += int(np.count_nonzero(block & np.uint32(0xFFFF)))
        anything += int(np.count_nonzero(block))
    out = {NEXUS_BITS.get(b, f"bit {b}"): int(per_bit[b]) for b in range(32) if per_bit[b]}
    return {**out, "reject": reject, "any": anything}


#: what count_bits counts: each bit, "any" bit, and "flagged" (any bit but ASIC_EDGE: by the analysis)
_FLAGGED = 0xFF ^ int(BadPixel.ASIC_EDGE)  #: found bad by the analysis (edges are geometry)
_SELECTIONS = [(b.name, int(b)) for b in BadPixel] + [("any", 0xFF), ("flagged", _FLAGGED)]


def _zero() -> dict:
    """A row of count_bits: each selection and ``gap``, at 0."""
    return {name: 0 for name, _ in _SELECTIONS} | {"gap": 0}


def masked_fraction(planes: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """(plane, y, x) mask bits -> (y, x) float32: the fraction of the planes masked, what the figures draw.

    Edge pixels (ASIC_EDGE alone: geometry) are left out, as are gap pixels (``gap``, from
    :func:`gap_pixels`): those are NaN, no fraction at all, for the figures to draw in a colour of
    their own (:data:`GAP_COLOUR`) rather than as masked.
    """
    fraction = ((planes != 0) & (planes != BadPixel.ASIC_EDGE)).mean(axis=0, dtype=np.float32)
    fraction[gap] = np.nan
    return fraction


def detector_image(store, geometry: str | None = None) -> tuple[np.ndarray, str, str] | None:
    """The whole detector as one image: per pixel, the fraction of gain stages x cells masked (edges left out).

    From the detector's description: detectors whose modules tile a stored frame
    (``module_grid``, such as PILATUS, EIGER, or a JUNGFRAU as Jungfraujoch writes it) are laid out
    as that frame; EuXFEL detectors (AGIPD-1M, JUNGFRAU without a module grid) are assembled by
    EXtra-geom, from the CrystFEL ``geometry`` file given or its example geometry (approximate module
    positions); other multi-module detectors have their modules side by side with a small gap
    (:func:`modules_side_by_side`). Modules absent from the store are NaN, and so are gap pixels and
    the manufacturer's rejects (:func:`detector_marks` tells them apart). Returns (image, how it was
    assembled, imshow origin), or None for a detector of one module (its module image is the whole detector).
    """
    tree = open_tree(store)
    return _assemble(tree, lambda i: _module_fraction(tree, i), geometry)


def _module_fraction(tree, i: int) -> np.ndarray:
    """(y, x): the fraction of the gain stages x cells of module index ``i`` masked (:func:`masked_fraction`),
    the pixels :func:`module_marks` marks left out (NaN: drawn in their own colours)."""
    block = tree["mask"][i].values  # (gain, cell, y, x)
    return masked_fraction(block.reshape(-1, *block.shape[-2:]), module_marks(tree, i) != 0)


#: codes of :func:`module_marks`: what the mask figures draw apart from the fraction masked
GAP, REJECTED = 1, 2


def module_marks(store, i: int) -> np.ndarray:
    """(y, x) uint8: the pixels of module index ``i`` the mask figures draw in colours of their own: :data:`GAP`
    (no sensor, :func:`gap_pixels`) and :data:`REJECTED` (rejected by the manufacturer, NeXus bits 1-15, on a
    sensor pixel: masked in every export whatever rmm found; rmm's verdict on them is the verdict figure's);
    0 elsewhere. All 0 for a store without a manufacturer's layer."""
    tree = open_tree(store)
    layer = _layers(tree).get("manufacturer")
    if layer is None:
        return np.zeros(tree["mask"].shape[-2:], dtype=np.uint8)
    words = np.asarray(layer[i].values, dtype=np.uint32)
    marks = np.where((words & np.uint32(0xFFFF ^ int(NEXUS_GAP))) != 0, REJECTED, 0).astype(np.uint8)
    marks[(words & NEXUS_GAP) != 0] = GAP
    return marks


def detector_marks(store, geometry: str | None = None) -> np.ndarray | None:
    """uint8 image laid out as :func:`detector_image`'s: the codes of :func:`module_marks` (0 between modules),
    for the figure to draw gaps and the manufacturer's rejects apart; None for a detector of one module."""
    tree = open_tree(store)
    assembled = _assemble(tree, lambda i: module_marks(tree, i).astype(np.float32), geometry)
    return None if assembled is None else np.nan_to_num(assembled[0], nan=0.0).astype(np.uint8)


def _assemble(tree, module_image, geometry: str | None) -> tuple[np.ndarray, str, str] | None:
    """The per-module (y, x) float images ``module_image(i)`` of the store's modules (module index ``i``)
    laid out as the whole detector, as :func:`detector_image` describes; absent modules NaN."""
    from .detectors import detector_of

    det = detector_of(tree.attrs)
    if det.n_modules < 2:
        return None
    full = np.full((det.n_modules, *det.module_shape), np.nan, dtype=np.float32)
    for i, m in enumerate(tree["module"].values):
        full[int(m)] = module_image(i)
    if det.frame_shape is not None:  # before the names: an NXmx JUNGFRAU (Jungfraujoch) has its module grid
        how = f"{det.name} frame layout ({det.module_grid[0]} x {det.module_grid[1]} modules)"
        return det.join_frame(full, fill=np.nan), how, "upper"
    name = det.name.upper()
    if name.startswith(("AGIPD1M", "JUNGFRAU")):
        from extra_geom import AGIPD_1MGeometry, JUNGFRAUGeometry

        cls = AGIPD_1MGeometry if name.startswith("AGIPD") else JUNGFRAUGeometry
        if geometry:
            geom, how = cls.from_crystfel_geom(geometry), f"EXtra-geom {cls.__name__} from {geometry}"
        else:  # AGIPD-1M's example has its 16 modules; JUNGFRAU's is made for the number asked
            geom = cls.example() if cls is AGIPD_1MGeometry else cls.example(det.n_modules)
            how = f"EXtra-geom example {'AGIPD-1M' if cls is AGIPD_1MGeometry else det.name} geometry (approximate positions)"
        image, _ = geom.position_modules(full)
        return image, how, "lower"  # EXtra-geom: y up, as seen from the sample
    image, axis = modules_side_by_side(full)
    return image, f"{det.n_modules} modules {'one above the other' if axis == 0 else 'side by side'} (no geometry in the description)", "upper"


def modules_side_by_side(modules: np.ndarray) -> tuple[np.ndarray, int]:
    """(module, y, x) -> one image, modules along their shorter side (so the picture tends to a square),
    separated by NaN gaps of 2% of the longer side (at least 2 pixels). Returns (image, axis used)."""
    n, ny, nx = modules.shape
    axis = 0 if ny <= nx else 1
    gap = max(2, round(0.02 * max(ny, nx)))
    pad = np.full((gap, nx) if axis == 0 else (ny, gap), np.nan, dtype=np.float32)
    parts = []
    for i, m in enumerate(modules):
        parts += ([pad] if i else []) + [np.asarray(m, dtype=np.float32)]
    return np.concatenate(parts, axis=axis), axis


#: the longest side of a figure's images and the shortest side of one image panel, in inches
_LONG_SIDE, _SHORT_SIDE = 10.0, 1.6
_MARGIN = 0.7  #: inches left of and below the image panels, for the tick labels and axis names
#: the colour of gap pixels in the mask figures: light blue, on no part of the magma scale of "fraction masked"
GAP_COLOUR = "#8ecae6"
GAP_LABEL = "gap (no sensor: missing data)"
#: the colour of the pixels the manufacturer rejects: a bright bluish green (seen on black), on no part of the magma scale
REJECTED_COLOUR = "#20d8a0"
REJECTED_LABEL = "rejected by the manufacturer (NeXus bits 1-15): masked in every export; rmm's verdict in verdict.png"
#: the mask figures' colour and legend label of each code of :func:`module_marks`
MARKS = {GAP: (GAP_COLOUR, GAP_LABEL), REJECTED: (REJECTED_COLOUR, REJECTED_LABEL)}


def _image_figure(shape: tuple[int, int], n: int, *, title_room: float = 0.5, legend=(), colorbar: bool = True):
    """A Figure with ``n`` image axes of ``shape`` (y, x) pixels each, sized so that each axes box has the
    image's aspect ratio: panels one above the other for wide images, side by side for tall ones; room at
    the bottom, below the tick labels, for a legend of the labels ``legend`` (:func:`_legend` draws it).
    Returns (figure, axes, colorbar axes, or None without ``colorbar``)."""
    from matplotlib.figure import Figure

    ny, nx = shape
    across = ny > nx  # tall images side by side
    group = (nx * n, ny) if across else (nx, ny * n)  # (width, height) in pixels, gaps aside
    scale = max(_LONG_SIDE / max(group), _SHORT_SIDE / min(ny, nx))  # thin panels get wider ...
    scale = min(scale, 1.6 * _LONG_SIDE / max(group))  # ... up to a bounded long side
    pw, ph = nx * scale, ny * scale  # one panel, inches
    gap, bar = 0.35, (1.1 if colorbar else 0.3)  # between panels; right of them, for the colorbar
    right = _MARGIN + (pw * n + gap * (n - 1) if across else pw)
    width = right + bar
    bottom = _MARGIN + _legend_room(legend, width)
    height = bottom + (ph if across else ph * n + (gap + 0.25) * (n - 1)) + title_room + 0.3
    fig = Figure(figsize=(width, height), dpi=FIGURE_DPI)
    axes = []
    for i in range(n):
        x0 = _MARGIN + (i * (pw + gap) if across else 0)
        y0 = bottom + (0 if across else (n - 1 - i) * (ph + gap + 0.25))
        axes.append(fig.add_axes([x0 / width, y0 / height, pw / width, ph / height]))
    cax = None
    if colorbar:
        bar_height = height - bottom - title_room - 0.3
        cax = fig.add_axes([(right + 0.15) / width, bottom / height, 0.15 / width, bar_height / height])
    return fig, axes, cax


def _wrapped(labels, width: float) -> list[str]:
    """Legend ``labels`` folded to the width a figure ``width`` inches wide leaves them (8-point text)."""
    import textwrap

    chars = max(24, int((width - _MARGIN - 0.6) / 0.065))
    return [textwrap.fill(text, chars) for text in labels]


def _legend_room(labels, width: float) -> float:
    """Inches below the images that a legend of ``labels`` (:func:`_legend`) takes, 0 for none."""
    if not labels:
        return 0.0
    lines = sum(text.count("\n") + 1 for text in _wrapped(labels, width))
    return 0.08 + 0.165 * len(labels) + 0.13 * (lines - len(labels))


def _legend(fig, ax, entries) -> None:
    """The legend of ``entries`` ((colour, label) each), one below the other in the room :func:`_image_figure`
    left below the images, from the left of ``ax``."""
    from matplotlib.patches import Patch

    labels = _wrapped([label for _, label in entries], fig.get_figwidth())
    handles = [Patch(facecolor=colour, edgecolor="0.4", label=label) for (colour, _), label in zip(entries, labels)]
    fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(ax.get_position().x0, 0.0), fontsize=8,
               frameon=False, borderaxespad=0.2)


FIGURE_DPI = 80  #: the figures' resolution: the images are pooled for it (:func:`_draw_image`)


def pooled(fraction: np.ndarray, marks: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) masked fractions (NaN: marked or absent) and marks (codes of :func:`module_marks`, or a bool
    image of gaps) in blocks of ``factor`` x ``factor``: each block shows its most masked pixel, so that a
    figure with fewer screen pixels than detector pixels loses no bad pixel (a single bad column stays a
    column); a block of no masked pixel shows its highest mark (the manufacturer's reject over a gap), one
    of neither its fraction (0: good), a block of absent pixels only stays NaN. Returns (image, marks drawn)."""
    if factor <= 1:
        return fraction, marks
    ny, nx = fraction.shape
    py, px = -ny % factor, -nx % factor
    f = np.pad(fraction, ((0, py), (0, px)), constant_values=np.nan)
    k = np.pad(np.asarray(marks, dtype=np.uint8), ((0, py), (0, px)))
    blocks = f.reshape(f.shape[0] // factor, factor, f.shape[1] // factor, factor)
    mark = k.reshape(blocks.shape).max(axis=(1, 3))
    measured = ~np.isnan(blocks)
    most = np.where(measured.any(axis=(1, 3)), np.where(measured, blocks, -1).max(axis=(1, 3)), np.nan)
    drawn = np.where(most > 0, 0, mark).astype(np.uint8)
    return np.where(drawn > 0, np.nan, most).astype(np.float32), drawn


def pooled_codes(codes: np.ndarray, factor: int, rank) -> np.ndarray:
    """(y, x) small integer codes (float, NaN: no pixel there, e.g. between modules) in blocks of ``factor`` x
    ``factor``, each block showing the code of highest rank among its pixels (``rank``: the codes from the
    lowest to the highest), NaN for a block of no pixel: a figure with fewer screen pixels than detector
    pixels loses no pixel of a high-ranked code (a single one stays a drawn block)."""
    if factor <= 1:
        return codes
    position = np.full(int(max(rank)) + 1, -1, dtype=np.int64)
    position[list(rank)] = np.arange(len(rank))
    ny, nx = codes.shape
    c = np.pad(np.asarray(codes, dtype=np.float32), ((0, -ny % factor), (0, -nx % factor)), constant_values=np.nan)
    ranks = np.where(np.isnan(c), -1, position[np.nan_to_num(c, nan=0.0).astype(np.int64)])
    best = ranks.reshape(c.shape[0] // factor, factor, c.shape[1] // factor, factor).max(axis=(1, 3))
    return np.where(best < 0, np.nan, np.asarray(rank, dtype=np.float32)[np.maximum(best, 0)]).astype(np.float32)


def _pool_factor(ax, shape: tuple[int, int]) -> int:
    """The smallest block (pixels a side) of which an image of ``shape`` (y, x) in ``ax`` draws each with
    at least one screen pixel at FIGURE_DPI."""
    box = ax.get_position()
    width, height = ax.figure.get_size_inches()
    screen = (box.height * height * FIGURE_DPI, box.width * width * FIGURE_DPI)  # (y, x) screen pixels
    return max(1, *(int(np.ceil(n / max(s, 1.0))) for n, s in zip(shape, screen)))


def _extent(pooled_shape: tuple[int, int], factor: int, origin: str) -> tuple[float, float, float, float]:
    """imshow's extent of an image pooled by ``factor`` (its shape ``pooled_shape``), in detector pixels."""
    left, right, bottom, top = -0.5, pooled_shape[1] * factor - 0.5, pooled_shape[0] * factor - 0.5, -0.5
    return (left, right, bottom, top) if origin == "upper" else (left, right, top, bottom)


def _name_axes(ax, shape: tuple[int, int], origin: str, labels, pooling: str) -> None:
    """The axes of an image of ``shape`` (y, x) in pixels, named (``labels``: x, y), ``pooling`` said after x."""
    ny, nx = shape
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(*((ny - 0.5, -0.5) if origin == "upper" else (-0.5, ny - 0.5)))
    ax.set_xlabel(f"{labels[0]} (pixels){pooling}", fontsize=7)
    ax.set_ylabel(f"{labels[1]} (pixels)", fontsize=7)
    ax.tick_params(labelsize=7)


def _draw_codes(ax, codes: np.ndarray, colours, origin: str, extent, *, zorder: float, clear: int | None = None):
    """Draw an image of small integer ``codes`` (NaN, and ``clear``: transparent) in ``colours`` (code k in
    ``colours[k]``), pixel for pixel, over the axes' frame (a marked border column is not hidden under it)."""
    from matplotlib.colors import ListedColormap

    codes = np.asarray(codes, dtype=np.float32)
    hidden = np.isnan(codes) | (codes == clear) if clear is not None else np.isnan(codes)
    ax.imshow(np.ma.masked_array(codes, mask=hidden), cmap=ListedColormap(list(colours)), vmin=-0.5,
              vmax=len(colours) - 0.5, interpolation="nearest", origin=origin, aspect="equal", extent=extent,
              zorder=zorder)


def _draw_image(ax, fraction: np.ndarray, marks: np.ndarray, origin: str, labels=("x: fast scan", "y: slow scan")):
    """Draw a (y, x) masked fraction and its marks (codes of :func:`module_marks`, or a bool image of gaps)
    into ``ax``, pooled (:func:`pooled`) so that each drawn block has at least one screen pixel at FIGURE_DPI:
    every bad pixel stays visible at the figure's size. The marks in their colours (:data:`MARKS`), a few
    rejects (:data:`CIRCLED`) circled too. Axes in
    pixels, named (``labels``: a module's scan directions by default). Returns the image (for the colorbar)."""
    factor = _pool_factor(ax, fraction.shape)
    image, drawn = pooled(fraction, marks, factor)
    extent = _extent(image.shape, factor, origin)
    im = ax.imshow(image, cmap="magma", vmin=0, vmax=1, interpolation="nearest", origin=origin, aspect="equal",
                   extent=extent, zorder=3)  # over the axes' frame: a bad border column is not hidden under it
    drawn = np.asarray(drawn, dtype=np.uint8)
    if drawn.any():
        colours = ["none"] + [MARKS[code][0] for code in sorted(MARKS)]
        _draw_codes(ax, drawn, colours, origin, extent, zorder=3.1, clear=0)
    rejected = np.asarray(marks, dtype=np.uint8) == REJECTED
    if 0 < np.count_nonzero(rejected) <= CIRCLED:
        _circle(ax, rejected, True, REJECTED_COLOUR)
    pooling = f"; {factor} x {factor} px per drawn block, its most masked" if factor > 1 else ""
    _name_axes(ax, fraction.shape, origin, labels, pooling)
    return im


#: a finding of at most this many pixels in a figure (the manufacturer's rejects, a verdict) is circled
#: too: one screen pixel each is visible, but not found at a glance among thousands of others
CIRCLED = 100


def _circle(ax, image: np.ndarray, code: int, colour: str) -> None:
    """An open circle in ``colour`` around each pixel of ``image`` (unpooled, in the axes' pixel coordinates)
    whose code is ``code``."""
    ys, xs = np.nonzero(image == code)
    ax.scatter(xs, ys, s=80, facecolors="none", edgecolors=colour, linewidths=1.0, zorder=4)


def _circled(label: str, n: int) -> str:
    """``label`` with the note that its ``n`` pixels are circled."""
    return f"{label} (the {n} circled)"


def _marks_entries(marks: np.ndarray) -> list[tuple[str, str]]:
    """The legend entries ((colour, label)) of the marks present in ``marks``, gap first; the manufacturer's
    rejects said circled when they are few (:data:`CIRCLED`)."""
    n = np.bincount(np.asarray(marks, dtype=np.uint8).ravel(), minlength=max(MARKS) + 1)
    entries = [MARKS[code] for code in sorted(MARKS) if n[code]]
    return [(c, _circled(t, n[REJECTED]) if t == REJECTED_LABEL and n[REJECTED] <= CIRCLED else t) for c, t in entries]


def _marks_note(entries) -> str:
    """The colorbar's note of what is drawn apart: the edges always, gaps and rejects when drawn."""
    apart = ["edges"] + ["gaps" if label == GAP_LABEL else "rejects" for _, label in entries]
    return f"({', '.join(apart[:-1])} and {apart[-1]} left out)" if len(apart) > 1 else "(edges left out)"


#: the verdict figure's codes: those of :data:`VERDICTS`, 0 (good for both) and gaps
VERDICT_GAP = 4
#: colour and legend label of each code of the verdict figure, in the legend's order
VERDICT_STYLE = {
    1: ("#f0e442", "known: bad for both"),
    2: ("#d55e00", "new: found by rmm only"),
    3: (REJECTED_COLOUR, "not confirmed: the manufacturer rejects, rmm finds good"),
    0: ("#000000", "good for both"),
    VERDICT_GAP: (GAP_COLOUR, GAP_LABEL),
}
#: which code a pooled block of the verdict figure shows: the highest ranked of its pixels (the rarer
#: disagreements over the agreement, every verdict over good, gaps above good only)
VERDICT_RANK = (0, VERDICT_GAP, 1, 3, 2)


def verdict_codes(store, i: int) -> np.ndarray:
    """(y, x) float32: :func:`manufacturer_verdict` of the module at index ``i`` with its gap pixels
    :data:`VERDICT_GAP`, what the verdict figure draws."""
    tree = open_tree(store)
    codes = manufacturer_verdict(tree, i).astype(np.float32)
    codes[gap_pixels(tree, i)] = VERDICT_GAP
    return codes


def _absent(tree) -> str:
    """The assembled figures' note of the detector's modules the store does not have (drawn blank), or ""."""
    from .detectors import detector_of

    have, total = tree["mask"].shape[0], detector_of(tree.attrs).n_modules
    return f"; {have} of its {total} modules in the store, the others blank" if have < total else ""


def _verdict_figure(tree, geometry: str | None):
    """The figure of rmm's verdict against the manufacturer's layer (:func:`manufacturer_verdict`): the whole
    detector assembled as :func:`detector_image` does (the module alone for a one-module detector), each
    verdict in its colour (:data:`VERDICT_STYLE`) with its count in the legend, pooled by
    :data:`VERDICT_RANK` so that every marked pixel stays visible at the figure's size."""
    codes = {i: verdict_codes(tree, i) for i in range(tree["mask"].shape[0])}
    counts = sum(np.bincount(c.astype(np.int64).ravel(), minlength=len(VERDICT_STYLE)) for c in codes.values())
    assembled = _assemble(tree, codes.__getitem__, geometry)
    if assembled is None:
        (image,), origin, labels = codes.values(), "upper", ("x: fast scan", "y: slow scan")
        how = f"module {int(tree['module'].values[0])}"
    else:
        (image, how, origin), labels = assembled, ("x, assembled", "y, assembled")
    title = (f"{tree.attrs.get('detector')}: rmm's verdict against the manufacturer's pixel_mask\n"
             f"bad for rmm: found in any gain stage or cell (an ASIC edge pixel is masked, not found); {how}"
             f"{_absent(tree)}")
    return verdict_drawing(image, counts, origin, labels, title)[0]


def verdict_drawing(image: np.ndarray, counts, origin: str, labels, title: str):
    """A figure of an image of verdict codes (:func:`verdict_codes`, NaN: no pixel) with the legend of
    ``counts`` (pixels per code) and ``title``: the verdicts in their colours (:data:`VERDICT_STYLE`), pooled
    by :data:`VERDICT_RANK` so that each drawn block has at least one screen pixel at FIGURE_DPI and every
    marked pixel stays visible; a verdict of few pixels (:data:`CIRCLED`) circled too. Axes named ``labels``
    (x, y), in pixels. Returns (figure, image axes)."""
    shown = [code for code in VERDICT_STYLE if code != VERDICT_GAP or counts[VERDICT_GAP]]
    entries = []
    for code in shown:
        colour, label = VERDICT_STYLE[code][0], f"{VERDICT_STYLE[code][1]}: {int(counts[code]):,} pixels"
        rare = code in VERDICTS and 0 < counts[code] <= CIRCLED
        entries.append((colour, _circled(label, int(counts[code])) if rare else label))
    fig, (ax,), _ = _image_figure(image.shape, 1, title_room=0.7, legend=[label for _, label in entries],
                                  colorbar=False)
    factor = _pool_factor(ax, image.shape)
    drawn = pooled_codes(image, factor, VERDICT_RANK)
    colours = [VERDICT_STYLE[code][0] for code in range(len(VERDICT_STYLE))]
    _draw_codes(ax, drawn, colours, origin, _extent(drawn.shape, factor, origin), zorder=3)
    for code in VERDICTS:
        if 0 < counts[code] <= CIRCLED:
            _circle(ax, image, code, VERDICT_STYLE[code][0])
    order = ", then ".join(VERDICTS.get(code, "gap") for code in reversed(VERDICT_RANK[1:]))
    pooling = f"; {factor} x {factor} px per drawn block: {order}" if factor > 1 else ""
    _name_axes(ax, image.shape, origin, labels, pooling)
    _legend(fig, ax, entries)
    fig.suptitle(title, fontsize=9, y=1 - 0.1 / fig.get_figheight(), va="top")
    return fig, ax


#: the mask bit each SNR sets beyond +-lambda, and the parameter switch of its feature
_SNR_BITS = {"offset": (BadPixel.OFFSET, "offset"), "noise": (BadPixel.NOISE, "noise"),
             "gain_mean": (BadPixel.GAIN_LEVEL, "gain_level"),
             "flat_snr": (BadPixel.FLAT_HIGH | BadPixel.FLAT_LOW, "flat")}
_SERIES_COLOURS = ("0.2", "tab:blue", "tab:orange", "tab:green")  #: one step line per gain stage; red: +-lambda


def snr_tails(values: np.ndarray, lam: float) -> tuple[int, int]:
    """(below -lambda, above +lambda): the SNRs ``values`` beyond the threshold on each side (NaN: none),
    the pixel(-plane)s the feature finds bad (``|SNR| > lambda``)."""
    with np.errstate(invalid="ignore"):
        return int(np.count_nonzero(values < -lam)), int(np.count_nonzero(values > lam))


def _snr_figure(tree, i: int, lam: float):
    """The SNR histograms of the module at index ``i``: a panel per feature, a step line per gain stage
    with its count of pixel-planes beyond -lambda and +lambda in the legend, the lines at +-lambda, lambda
    stated; the module's ASIC edge pixels (masked without analysis) left out."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from .detectors import detector_of
    from .tables import FEATURE_BITS, untested

    snr, gains, m = tree["snr"], gain_names(tree), int(tree["module"].values[i])
    names = sorted(snr.data_vars)
    planes = tree["mask"][i].values  # (gain, cell, y, x)
    analysed = ~((planes[0, 0] & np.uint8(BadPixel.ASIC_EDGE)) != 0)  # edges: the same in every plane
    missing = untested(tree.attrs)
    test = (tree.attrs.get("parameters") or {}).get("counting_test", "poisson")
    det = detector_of(tree.attrs)
    counting = det.counting and test == "poisson"
    clip = max(4 * lam, 1.0)
    edges = np.linspace(-clip, clip, 201)
    fig = Figure(figsize=(4.2 * len(names), 4.6), dpi=FIGURE_DPI)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        values = np.asarray(snr[name][i].values, dtype=np.float64)  # (gain, cell, y, x); flat_snr (cell, y, x)
        bit, switch = _SNR_BITS.get(name, (0, name))
        bits = planes if values.ndim == 4 else planes[0]  # F6 sets its bits on every gain stage alike
        several = values.ndim == 4 and len(gains) > 1
        series = list(zip(gains, values, bits)) if several else [(None, values.reshape(-1, *values.shape[-2:]),
                                                                   bits.reshape(-1, *bits.shape[-2:]))]
        handles = []
        for (g, v, b), colour in zip(series, _SERIES_COLOURS):
            v, b = v[..., analysed], b[..., analysed]
            below, above = snr_tails(v, lam)
            kept = v[np.isfinite(v)]
            counts = np.histogram(np.clip(kept, -clip, clip), bins=edges)[0]
            label = f"{g + ' gain: ' if g else ''}{below:,} below -{lam:g}, {above:,} above +{lam:g}"
            single = len(series) == 1
            colour = "0.3" if single else colour
            handles.append(ax.stairs(counts, edges, fill=single, color=colour, lw=1.2, label=label))
            with np.errstate(invalid="ignore"):
                within = int(np.count_nonzero(((b & np.uint8(bit)) != 0) & (np.abs(v) <= lam)))
            if within:  # the mask's count of the bit is larger than the tails': say why
                why = " (zero variance: stuck)" if name == "noise" and not det.counting else ""
                said = f"  + {within:,} with {BadPixel(bit).name} within +-{lam:g}{why}"
                handles.append(Line2D([], [], color="none", label=said))
        for s in (-lam, lam):
            ax.axvline(s, color="tab:red", lw=1)
        if ax.get_ylim()[1] > 1:
            ax.set_yscale("log")
        what = f"{len(gains)} gain stages x " if several else ""
        cells = values.shape[-3]
        unused = [bit_name for bit_name in FEATURE_BITS.get(switch, ()) if bit_name in missing]
        heading = f"{name} ({what}{cells} cell{'s' if cells > 1 else ''})"
        ax.set_title(heading + (f"\nnot used: {missing[unused[0]]}" if unused else ""), fontsize=9)
        ax.set_xlabel(f"SNR (clipped to +-{clip:g}); red: +-lambda = +-{lam:g}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7, frameon=False)
    planes_word = "pixel-planes" if planes.shape[0] * planes.shape[1] > 1 else "pixels"
    axes[0].set_ylabel(planes_word + ("" if analysed.all() else " (ASIC edges left out)"), fontsize=8)
    title = (f"module {m}: each feature's SNR against its ASIC's robust model; lambda = {lam:g}: pixels beyond "
             f"+-{lam:g} robust sigmas are bad")
    if counting:
        title += ("\nphoton counting: offset and flat_snr are Poisson z-scores (same tail probability) where the "
                  "counts are Poisson")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def write_figures(store, out_dir, *, lam: float | None = None, geometry: str | None = None) -> list[Path]:
    """Per-module mask images, the assembled detector, rmm's verdict against the manufacturer's mask, that
    mask per bit and per-module SNR histograms, as PNG files.

    Written into ``out_dir`` (created if needed: a directory of the caller's, such as the
    temporary of a publication); the paths written. Images keep the pixels square
    (``aspect="equal"``): the figures are sized from the module's shape (a 516 x 1556
    module is a wide picture, a 512 x 128 one a tall one).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in _figures(open_tree(store), lam=lam, geometry=geometry):
        path = out_dir / name
        fig.savefig(path, dpi=FIGURE_DPI)
        written.append(path)
    return written


def figures_png(store, *, lam: float | None = None, geometry: str | None = None) -> list[tuple[str, bytes]]:
    """The figures of :func:`write_figures` as (file name, PNG bytes), drawn in memory."""
    import io

    out = []
    for name, fig in _figures(open_tree(store), lam=lam, geometry=geometry):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
        out.append((name, buffer.getvalue()))
    return out


def _figures(tree, *, lam: float | None = None, geometry: str | None = None):
    """(file name, matplotlib Figure) of every figure of a store's tree, one at a time: per module its mask
    (``mask_moduleNN.png``), the detector assembled (``detector.png``), with a manufacturer's layer rmm's
    verdict against it (``verdict.png``) and its bits (``manufacturer_bits.png``), per module the SNR
    histograms (``snr_moduleNN.png``)."""
    from matplotlib.figure import Figure  # not pyplot: no global backend switch (notebooks keep theirs), thread-safe

    lam = lam if lam is not None else float(tree.attrs.get("parameters", {}).get("lam", 8.0))
    gains = gain_names(tree)
    mask = tree["mask"]
    shape = tuple(mask.shape[-2:])
    for i, m in enumerate(tree["module"].values):
        block = mask[i].values  # (gain, cell, y, x)
        marks = module_marks(tree, i)
        entries = _marks_entries(marks)
        fig, axes, cax = _image_figure(shape, len(gains), legend=[label for _, label in entries])
        for ax, g, plane in zip(axes, gains, block):
            im = _draw_image(ax, masked_fraction(plane, marks != 0), marks, "upper")
            ax.set_title(f"{g} gain", fontsize=9)
        what = "fraction of cells masked" if block.shape[1] > 1 else "masked (1: yes)"
        fig.colorbar(im, cax=cax).set_label(f"{what}\n{_marks_note(entries)}", fontsize=8)
        if entries:
            _legend(fig, axes[-1], entries)
        fig.suptitle(f"module {int(m)}: masked pixels", y=1 - 0.15 / fig.get_figheight(), va="top")
        yield f"mask_module{int(m):02d}.png", fig

    assembled = detector_image(tree, geometry)
    if assembled is not None:
        image, how, origin = assembled
        marks = detector_marks(tree, geometry)
        entries = _marks_entries(marks)
        fig, (ax,), cax = _image_figure(image.shape, 1, legend=[label for _, label in entries])
        im = _draw_image(ax, image, marks, origin, labels=("x, assembled", "y, assembled"))
        if entries:
            _legend(fig, ax, entries)
        label = f"fraction of gain stages x cells masked\n{_marks_note(entries)}"
        fig.colorbar(im, cax=cax).set_label(label, fontsize=8)
        fig.suptitle(f"{tree.attrs.get('detector')}: {how}{_absent(tree)}", fontsize=9,
                     y=1 - 0.15 / fig.get_figheight(), va="top")
        yield "detector.png", fig

    layers = _layers(tree)
    if "manufacturer" in layers:
        yield "verdict.png", _verdict_figure(tree, geometry)
        bits = {k: v for k, v in count_nexus_bits(layers["manufacturer"]).items()}
        fig = Figure(figsize=(1.0 + 0.8 * len(bits), 3.5))
        ax = fig.subplots()
        ax.bar(range(len(bits)), list(bits.values()), color=["0.3"] * (len(bits) - 2) + ["tab:red", "0.6"])
        ax.set_xticks(range(len(bits)), list(bits), rotation=30, ha="right", fontsize=8)
        for x, n in enumerate(bits.values()):
            ax.annotate(str(n), (x, n), ha="center", va="bottom", fontsize=7)
        if any(bits.values()):
            ax.set_yscale("log")
        ax.set_ylabel("pixels")
        ax.set_title("manufacturer's pixel_mask per NeXus bit (reject: bits 0-15)", fontsize=9)
        fig.tight_layout()
        yield "manufacturer_bits.png", fig

    if "snr" in tree.children and tree["snr"].data_vars:
        for i, m in enumerate(tree["module"].values):
            yield f"snr_module{int(m):02d}.png", _snr_figure(tree, i, lam)
