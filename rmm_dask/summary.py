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
    """
    tree = open_tree(store)
    mask = tree["mask"]
    modules, cells = tree["module"].values, tree["cell"].values
    gains = gain_names(tree)
    per = {"module": {}, "gain": {g: _zero() for g in gains}, "cell": {int(c): _zero() for c in cells}}
    total = _zero()
    for i, m in enumerate(modules):
        block = mask[i].values  # (gain, cell, y, x)
        gap = gap_pixels(tree, i)
        if gap.any():  # a gap's missing data is no defect
            block = np.where(gap, block & np.uint8(0xFF ^ int(BadPixel.NO_DATA)), block)
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
    layers = _layers(tree)
    per["layers"] = {name: int(np.count_nonzero(layers[name].values)) for name in sorted(layers)}
    if "manufacturer" in layers:
        per["manufacturer_bits"] = count_nexus_bits(layers["manufacturer"])
    return {"pixels": int(np.prod(mask.shape)), "total": total, **per}


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

    1 ``known``: found bad by the analysis (any bit but ASIC_EDGE, in any gain stage or cell) and
    rejected by the manufacturer (NeXus bits 1-15); 2 ``new``: found bad, not rejected by the
    manufacturer; 3 ``not confirmed``: rejected by the manufacturer, good in every plane of rmm's
    mask; 0 otherwise, and on gap pixels (bit 0: no sensor, nothing to judge). A store without a
    manufacturer's layer has no verdict: all 0 but ``new``.
    """
    tree = open_tree(store)
    planes = tree["mask"][i].values  # (gain, cell, y, x)
    found = ((planes & np.uint8(0xFF ^ int(BadPixel.ASIC_EDGE))) != 0).any(axis=(0, 1))
    layer = _layers(tree).get("manufacturer")
    words = np.zeros(found.shape, np.uint32) if layer is None else np.asarray(layer[i].values, dtype=np.uint32)
    gap = (words & NEXUS_GAP) != 0
    rejected = (words & np.uint32(0xFFFF ^ int(NEXUS_GAP))) != 0
    verdict = np.where(found, np.where(rejected, 1, 2), np.where(rejected, 3, 0)).astype(np.uint8)
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
    """The store's layers by name (``manufacturer``, ``user``), those it has."""
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
_SELECTIONS = [(b.name, int(b)) for b in BadPixel] + [("any", 0xFF), ("flagged", 0xFF ^ int(BadPixel.ASIC_EDGE))]


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
    (:func:`modules_side_by_side`). Modules absent from the store are NaN, and so are gap pixels
    (:func:`detector_gaps` tells them apart). Returns (image, how it was assembled, imshow origin),
    or None for a detector of one module (its module image is the whole detector).
    """
    tree = open_tree(store)
    return _assemble(tree, lambda i: _module_fraction(tree, i), geometry)


def _module_fraction(tree, i: int) -> np.ndarray:
    """(y, x): the fraction of the gain stages x cells of module index ``i`` masked (:func:`masked_fraction`)."""
    block = tree["mask"][i].values  # (gain, cell, y, x)
    return masked_fraction(block.reshape(-1, *block.shape[-2:]), gap_pixels(tree, i))


def detector_gaps(store, geometry: str | None = None) -> np.ndarray | None:
    """Bool image laid out as :func:`detector_image`'s: True on the gap pixels (:func:`gap_pixels`),
    for the figure to draw them apart from the masked pixels; None for a detector of one module."""
    tree = open_tree(store)
    assembled = _assemble(tree, lambda i: gap_pixels(tree, i).astype(np.float32), geometry)
    return None if assembled is None else assembled[0] == 1


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
#: the colour of gap pixels in the mask figures: light blue, on no part of the magma scale of "fraction masked"
GAP_COLOUR = "#8ecae6"
GAP_LABEL = "gap (no sensor: missing data)"
_LEGEND_ROOM = 0.3  #: inches below the images for the gap colour's legend


def _image_figure(shape: tuple[int, int], n: int, *, title_room: float = 0.5, legend_room: float = 0.0):
    """A Figure with ``n`` image axes of ``shape`` (y, x) pixels each, sized so that each axes box has the
    image's aspect ratio: panels one above the other for wide images, side by side for tall ones;
    ``legend_room`` inches more at the bottom, below the tick labels, for a legend.
    Returns (figure, axes, colorbar axes)."""
    from matplotlib.figure import Figure

    ny, nx = shape
    across = ny > nx  # tall images side by side
    group = (nx * n, ny) if across else (nx, ny * n)  # (width, height) in pixels, gaps aside
    scale = max(_LONG_SIDE / max(group), _SHORT_SIDE / min(ny, nx))  # thin panels get wider ...
    scale = min(scale, 1.6 * _LONG_SIDE / max(group))  # ... up to a bounded long side
    pw, ph = nx * scale, ny * scale  # one panel, inches
    gap, margin, bar = 0.35, 0.7, 0.9  # between panels; left/bottom for labels; right for the colorbar
    bottom = margin + legend_room
    width = margin + (pw * n + gap * (n - 1) if across else pw) + bar
    height = bottom + (ph if across else ph * n + (gap + 0.25) * (n - 1)) + title_room + 0.3
    fig = Figure(figsize=(width, height), dpi=FIGURE_DPI)
    axes = []
    for i in range(n):
        x0 = margin + (i * (pw + gap) if across else 0)
        y0 = bottom + (0 if across else (n - 1 - i) * (ph + gap + 0.25))
        axes.append(fig.add_axes([x0 / width, y0 / height, pw / width, ph / height]))
    right = margin + (pw * n + gap * (n - 1) if across else pw)
    bar_height = height - bottom - title_room - 0.3
    cax = fig.add_axes([(right + 0.15) / width, bottom / height, 0.15 / width, bar_height / height])
    return fig, axes, cax


FIGURE_DPI = 80  #: the figures' resolution: the images are pooled for it (:func:`_draw_image`)


def pooled(fraction: np.ndarray, gap: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) masked fractions (NaN: gap or absent) and gap pixels in blocks of ``factor`` x ``factor``: each
    block shows its most masked pixel, so that a figure with fewer screen pixels than detector pixels
    loses no bad pixel (a single bad column stays a column); a block of no masked pixel with a gap
    pixel is drawn as gap (NaN fraction, gap True), a block of absent pixels only stays NaN."""
    if factor <= 1:
        return fraction, gap
    ny, nx = fraction.shape
    py, px = -ny % factor, -nx % factor
    f = np.pad(fraction, ((0, py), (0, px)), constant_values=np.nan)
    g = np.pad(gap, ((0, py), (0, px)), constant_values=False)
    blocks = f.reshape(f.shape[0] // factor, factor, f.shape[1] // factor, factor)
    gaps = g.reshape(blocks.shape).any(axis=(1, 3))
    measured = ~np.isnan(blocks)
    most = np.where(measured.any(axis=(1, 3)), np.where(measured, blocks, -1).max(axis=(1, 3)), np.nan)
    drawn_gap = gaps & ~(most > 0)
    return np.where(drawn_gap, np.nan, most).astype(np.float32), drawn_gap


def _draw_image(ax, fraction: np.ndarray, gap: np.ndarray, origin: str, labels=("x: fast scan", "y: slow scan")):
    """Draw a (y, x) masked fraction (and its gap pixels) into ``ax``, pooled (:func:`pooled`) so that each
    drawn block has at least one screen pixel at FIGURE_DPI: every bad pixel stays visible at the
    figure's size. Axes in pixels, named (``labels``: a module's scan directions by default). Returns the
    image (for the colorbar)."""
    box = ax.get_position()
    width, height = ax.figure.get_size_inches()
    screen = (box.height * height * FIGURE_DPI, box.width * width * FIGURE_DPI)  # (y, x) screen pixels
    factor = max(1, *(int(np.ceil(n / max(s, 1.0))) for n, s in zip(fraction.shape, screen)))
    image, drawn_gap = pooled(fraction, gap, factor)
    ny, nx = fraction.shape
    extent = (-0.5, image.shape[1] * factor - 0.5, image.shape[0] * factor - 0.5, -0.5)
    if origin == "lower":
        extent = (extent[0], extent[1], extent[3], extent[2])
    im = ax.imshow(image, cmap="magma", vmin=0, vmax=1, interpolation="nearest", origin=origin, aspect="equal",
                   extent=extent, zorder=3)  # over the axes' frame: a bad border column is not hidden under it
    if drawn_gap.any():
        _draw_gaps(ax, drawn_gap, origin, extent)
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(*((ny - 0.5, -0.5) if origin == "upper" else (-0.5, ny - 0.5)))
    pooling = f"; {factor} x {factor} px per drawn block, its most masked" if factor > 1 else ""
    ax.set_xlabel(f"{labels[0]} (pixels){pooling}", fontsize=7)
    ax.set_ylabel(f"{labels[1]} (pixels)", fontsize=7)
    return im


def _draw_gaps(ax, gap: np.ndarray, origin: str, extent=None) -> None:
    """Draw the gap pixels (``gap``: bool, the image's shape) over an image in :data:`GAP_COLOUR`, the
    other pixels left transparent: missing data by design, not on the scale of the masked fraction."""
    from matplotlib.colors import ListedColormap

    ax.imshow(np.ma.masked_array(np.zeros(gap.shape, np.float32), mask=~gap), cmap=ListedColormap([GAP_COLOUR]),
              vmin=0, vmax=1, interpolation="nearest", origin=origin, aspect="equal", extent=extent, zorder=3.1)


def _gap_legend(fig, ax) -> None:
    """The legend of the gap colour, in the room left below the images, from the left of ``ax``."""
    from matplotlib.patches import Patch

    patch = Patch(facecolor=GAP_COLOUR, edgecolor="0.4", label=GAP_LABEL)
    fig.legend(handles=[patch], loc="lower left", bbox_to_anchor=(ax.get_position().x0, 0.0), fontsize=8, frameon=False,
               borderaxespad=0.2)


def write_figures(store, out_dir, *, lam: float | None = None, geometry: str | None = None) -> list[Path]:
    """Per-module mask images, the assembled detector, the manufacturer's mask per bit and SNR histograms, as PNG files.

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
    """(file name, matplotlib Figure) of every figure of a store's tree, one at a time."""
    from matplotlib.figure import Figure  # not pyplot: no global backend switch (notebooks keep theirs), thread-safe

    lam = lam if lam is not None else float(tree.attrs.get("parameters", {}).get("lam", 8.0))
    gains = gain_names(tree)
    mask = tree["mask"]
    shape = tuple(mask.shape[-2:])
    for i, m in enumerate(tree["module"].values):
        block = mask[i].values  # (gain, cell, y, x)
        gap = gap_pixels(tree, i)
        fig, axes, cax = _image_figure(shape, len(gains), legend_room=_LEGEND_ROOM if gap.any() else 0.0)
        for ax, g, plane in zip(axes, gains, block):
            im = _draw_image(ax, masked_fraction(plane, gap), gap, "upper")
            ax.set_title(f"{g} gain", fontsize=9)
            ax.tick_params(labelsize=7)
        what = "fraction of cells masked" if block.shape[1] > 1 else "masked (1: yes)"
        fig.colorbar(im, cax=cax, label=f"{what} (edges{' and gaps' if gap.any() else ''} left out)")
        if gap.any():
            _gap_legend(fig, axes[-1])
        fig.suptitle(f"module {int(m)}: masked pixels", y=1 - 0.15 / fig.get_figheight(), va="top")
        yield f"mask_module{int(m):02d}.png", fig

    assembled = detector_image(tree, geometry)
    if assembled is not None:
        image, how, origin = assembled
        gap = detector_gaps(tree, geometry)
        fig, (ax,), cax = _image_figure(image.shape, 1, legend_room=_LEGEND_ROOM if gap.any() else 0.0)
        im = _draw_image(ax, image, gap, origin, labels=("x, assembled", "y, assembled"))
        if gap.any():
            _gap_legend(fig, ax)
        ax.tick_params(labelsize=7)
        label = "fraction of gain stages x cells masked" + (" (gaps left out)" if gap.any() else "")
        fig.colorbar(im, cax=cax, label=label)
        fig.suptitle(f"{tree.attrs.get('detector')}: {how}", fontsize=9, y=1 - 0.15 / fig.get_figheight(), va="top")
        yield "detector.png", fig

    layers = _layers(tree)
    if "manufacturer" in layers:
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

    snr = tree["snr"].data_vars if "snr" in tree.children else None
    if snr:
        names = sorted(snr)
        fig = Figure(figsize=(4 * len(names), 3.5))
        axes = fig.subplots(1, len(names), squeeze=False)
        clip = max(4 * lam, 1.0)
        edges = np.linspace(-clip, clip, 201)
        for ax, name in zip(axes[0], names):
            counts = np.zeros(200, dtype=np.int64)
            for i in range(snr[name].shape[0]):  # one module at a time
                values = np.asarray(snr[name][i].values, dtype=np.float64).ravel()
                counts += np.histogram(np.clip(values[~np.isnan(values)], -clip, clip), bins=edges)[0]
            ax.stairs(counts, edges, fill=True, color="0.3")
            if counts.any():
                ax.set_yscale("log")
            for s in (-lam, lam):
                ax.axvline(s, color="tab:red", lw=1)
            ax.set_title(f"{name}: SNR against the ASIC model")
            ax.set_xlabel(f"SNR (clipped to +-{clip:g}; red: +-lambda)")
        axes[0][0].set_ylabel("pixels")
        fig.tight_layout()
        yield "snr_histograms.png", fig
