"""What a published mask says: counts per bit, module, gain and cell; figures.

Stores are read through :func:`rmm_dask.store.open_tree`, verified (:mod:`rmm_dask.integrity`):
a missing or damaged chunk raises InputError naming it, never counts as good pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .codes import BadPixel
from .store import gain_names, open_tree


def count_bits(store) -> dict:
    """Pixels per bit, overall and per module, gain stage and cell, read one module at a time.

    ``store``: a path, or a store opened by :func:`rmm_dask.store.open_store` or :func:`rmm_dask.store.open_tree`.

    Returns ``{"pixels": n pixel-planes, "total": {name: n}, "module": {id: {name: n}},
    "gain": {...}, "cell": {...}, "layers": {name: masked pixels}}`` where the names are the bits, ``any`` and ``flagged``:
    edge pixels are counted under ASIC_EDGE and in ``any``; ``flagged`` counts the pixels
    with any other bit (found bad by the analysis).
    """
    tree = open_tree(store)
    mask = tree["mask"]
    modules, cells = tree["module"].values, tree["cell"].values
    gains = gain_names(tree)
    per = {"module": {}, "gain": {g: _zero() for g in gains}, "cell": {int(c): _zero() for c in cells}}
    total = _zero()
    for i, m in enumerate(modules):
        block = mask[i].values  # (gain, cell, y, x)
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
    layers = _layers(tree)
    per["layers"] = {name: int(np.count_nonzero(layers[name].values)) for name in sorted(layers)}
    if "manufacturer" in layers:
        per["manufacturer_bits"] = count_nexus_bits(layers["manufacturer"])
    return {"pixels": int(np.prod(mask.shape)), "total": total, **per}


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
    return {name: 0 for name, _ in _SELECTIONS}


def detector_image(store, geometry: str | None = None) -> tuple[np.ndarray, str, str] | None:
    """The whole detector as one image: per pixel, the fraction of gain stages x cells masked (edges left out).

    From the detector's description: EuXFEL detectors (AGIPD-1M, JUNGFRAU) are
    assembled by EXtra-geom, from the CrystFEL ``geometry`` file given or its example
    geometry (approximate module positions); detectors whose modules tile a stored frame
    (``module_grid``) are laid out as that frame; other multi-module detectors have their
    modules side by side with a small gap (:func:`modules_side_by_side`). Modules absent
    from the store are NaN. Returns (image, how it was assembled, imshow origin), or
    None for a detector of one module (its module image is the whole detector).
    """
    from .detectors import detector_of

    tree = open_tree(store)
    det = detector_of(tree.attrs)
    if det.n_modules < 2:
        return None
    full = np.full((det.n_modules, *det.module_shape), np.nan, dtype=np.float32)
    for i, m in enumerate(tree["module"].values):
        block = tree["mask"][i].values
        full[int(m)] = ((block != 0) & (block != BadPixel.ASIC_EDGE)).reshape(-1, *det.module_shape).mean(axis=0)
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
    if det.frame_shape is not None:
        return det.join_frame(full, fill=np.nan), f"{det.name} frame layout ({det.module_grid[0]} x {det.module_grid[1]} modules)", "upper"
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


def _image_figure(shape: tuple[int, int], n: int, *, title_room: float = 0.5):
    """A Figure with ``n`` image axes of ``shape`` (y, x) pixels each, sized so that each axes box has the
    image's aspect ratio: panels one above the other for wide images, side by side for tall ones.
    Returns (figure, axes, colorbar axes)."""
    from matplotlib.figure import Figure

    ny, nx = shape
    across = ny > nx  # tall images side by side
    group = (nx * n, ny) if across else (nx, ny * n)  # (width, height) in pixels, gaps aside
    scale = max(_LONG_SIDE / max(group), _SHORT_SIDE / min(ny, nx))  # thin panels get wider ...
    scale = min(scale, 1.6 * _LONG_SIDE / max(group))  # ... up to a bounded long side
    pw, ph = nx * scale, ny * scale  # one panel, inches
    gap, margin, bar = 0.35, 0.7, 0.9  # between panels; left/bottom for labels; right for the colorbar
    width = margin + (pw * n + gap * (n - 1) if across else pw) + bar
    height = margin + (ph if across else ph * n + (gap + 0.25) * (n - 1)) + title_room + 0.3
    fig = Figure(figsize=(width, height))
    axes = []
    for i in range(n):
        x0 = margin + (i * (pw + gap) if across else 0)
        y0 = margin + (0 if across else (n - 1 - i) * (ph + gap + 0.25))
        axes.append(fig.add_axes([x0 / width, y0 / height, pw / width, ph / height]))
    right = margin + (pw * n + gap * (n - 1) if across else pw)
    cax = fig.add_axes([(right + 0.15) / width, margin / height, 0.15 / width, (height - margin - title_room - 0.3) / height])
    return fig, axes, cax


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
        fig.savefig(path, dpi=80)
        written.append(path)
    return written


def figures_png(store, *, lam: float | None = None, geometry: str | None = None) -> list[tuple[str, bytes]]:
    """The figures of :func:`write_figures` as (file name, PNG bytes), drawn in memory."""
    import io

    out = []
    for name, fig in _figures(open_tree(store), lam=lam, geometry=geometry):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
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
        fig, axes, cax = _image_figure(shape, len(gains))
        for ax, g, plane in zip(axes, gains, block):
            bad = ((plane != 0) & (plane != BadPixel.ASIC_EDGE)).mean(axis=0)
            im = ax.imshow(bad, cmap="magma", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
            ax.set_title(f"{g} gain", fontsize=9)
            ax.tick_params(labelsize=7)
        fig.colorbar(im, cax=cax, label="fraction of cells masked (edges left out)")
        fig.suptitle(f"module {int(m)}: masked pixels", y=1 - 0.15 / fig.get_figheight(), va="top")
        yield f"mask_module{int(m):02d}.png", fig

    assembled = detector_image(tree, geometry)
    if assembled is not None:
        image, how, origin = assembled
        fig, (ax,), cax = _image_figure(image.shape, 1)
        im = ax.imshow(image, cmap="magma", vmin=0, vmax=1, interpolation="nearest", origin=origin, aspect="equal")
        ax.tick_params(labelsize=7)
        fig.colorbar(im, cax=cax, label="fraction of gain stages x cells masked")
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
