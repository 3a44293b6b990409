"""What a published mask says: counts per bit, module, gain and cell; figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from .codes import BadPixel


def count_bits(root: zarr.Group) -> dict:
    """Pixels per bit, overall and per module, gain stage and cell, read one module at a time.

    Returns ``{"pixels": n pixel-planes, "total": {name: n}, "module": {id: {name: n}},
    "gain": {...}, "cell": {...}, "layers": {name: masked pixels}}`` where the names are the bits, ``any`` and ``flagged``:
    edge pixels are counted under ASIC_EDGE and in ``any``; ``flagged`` counts the pixels
    with any other bit (found bad by the analysis).
    """
    mask = root["mask"]
    modules, cells = root["module"][:], root["cell"][:]
    gains = root.attrs.get("gain_stages") or [str(g) for g in root["gain"][:]]
    per = {"module": {}, "gain": {g: _zero() for g in gains}, "cell": {int(c): _zero() for c in cells}}
    total = _zero()
    for i, m in enumerate(modules):
        block = mask[i]  # (gain, cell, y, x)
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
    layers = root["layers"] if "layers" in root else None
    per["layers"] = {name: int(np.count_nonzero(layers[name][:])) for name in sorted(layers.array_keys())} if layers is not None else {}
    return {"pixels": int(np.prod(mask.shape)), "total": total, **per}


#: what count_bits counts: each bit, "any" bit, and "flagged" (any bit but ASIC_EDGE: by the analysis)
_SELECTIONS = [(b.name, int(b)) for b in BadPixel] + [("any", 0xFF), ("flagged", 0xFF ^ int(BadPixel.ASIC_EDGE))]


def _zero() -> dict:
    return {name: 0 for name, _ in _SELECTIONS}


#: AGIPD-1M quadrant positions of EXtra-geom's example geometry (its docs' values), in mm
AGIPD_EXAMPLE_QUADS = [(-525, 625), (-550, -10), (520, -160), (542.5, 475)]


def detector_image(root: zarr.Group, geometry: str | None = None) -> tuple[np.ndarray, str, str] | None:
    """The whole detector as one image: per pixel, the fraction of gain stages x cells masked (edges left out).

    EuXFEL detectors are assembled by EXtra-geom, from the CrystFEL ``geometry`` file
    given or its example geometry (approximate module positions); detectors whose
    modules tile a stored frame are laid out as that frame. Modules absent from the
    store are NaN. Returns (image, how it was assembled, imshow origin), or None for other detectors.
    """
    from .detectors import detector_of

    det = detector_of(root.attrs)
    full = np.full((det.n_modules, *det.module_shape), np.nan, dtype=np.float32)
    for i, m in enumerate(root["module"][:]):
        block = root["mask"][i]
        full[int(m)] = ((block != 0) & (block != BadPixel.ASIC_EDGE)).reshape(-1, *det.module_shape).mean(axis=0)
    name = det.name.upper()
    if name.startswith(("AGIPD1M", "JUNGFRAU")):
        from extra_geom import AGIPD_1MGeometry, JUNGFRAUGeometry

        cls = AGIPD_1MGeometry if name.startswith("AGIPD") else JUNGFRAUGeometry
        if geometry:
            geom, how = cls.from_crystfel_geom(geometry), f"EXtra-geom {cls.__name__} from {geometry}"
        elif cls is AGIPD_1MGeometry:
            geom, how = cls.from_quad_positions(quad_pos=AGIPD_EXAMPLE_QUADS), "EXtra-geom example AGIPD-1M geometry (approximate positions)"
        else:
            geom, how = cls.example(det.n_modules), f"EXtra-geom example {det.name} geometry (approximate positions)"
        image, _ = geom.position_modules(full)
        return image, how, "lower"  # EXtra-geom: y up, as seen from the sample
    if det.frame_shape is not None:
        return det.join_frame(full, fill=np.nan), f"{det.name} frame layout ({det.module_grid[0]} x {det.module_grid[1]} modules)", "upper"
    return None


def write_figures(root: zarr.Group, out_dir, *, lam: float | None = None, geometry: str | None = None) -> list[Path]:
    """Per-module mask images, the assembled detector and SNR histograms per feature, as PNG files in ``out_dir``."""
    from matplotlib.figure import Figure  # not pyplot: no global backend switch (notebooks keep theirs), thread-safe

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lam = lam if lam is not None else float(root.attrs.get("parameters", {}).get("lam", 8.0))
    gains = root.attrs.get("gain_stages") or [str(g) for g in root["gain"][:]]
    written = []
    mask = root["mask"]
    for i, m in enumerate(root["module"][:]):
        block = mask[i]  # (gain, cell, y, x)
        fig = Figure(figsize=(2.2 * len(gains) + 1, 7))
        axes = fig.subplots(1, len(gains), squeeze=False, sharey=True)
        for ax, g, plane in zip(axes[0], gains, block):
            bad = ((plane != 0) & (plane != BadPixel.ASIC_EDGE)).mean(axis=0)
            im = ax.imshow(bad, cmap="magma", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
            ax.set_title(f"{g} gain")
            ax.set_xlabel("x")
        axes[0][0].set_ylabel("y")
        for ax in axes[0]:
            ax.label_outer()
        fig.colorbar(im, ax=axes[0].tolist(), label="fraction of cells masked (edges left out)")
        fig.suptitle(f"module {int(m)}: masked pixels")
        path = out_dir / f"mask_module{int(m):02d}.png"
        fig.savefig(path, dpi=80)
        written.append(path)

    assembled = detector_image(root, geometry)
    if assembled is not None:
        image, how, origin = assembled
        fig = Figure(figsize=(8, min(8 * image.shape[0] / max(image.shape[1], 1), 16) + 0.8))
        ax = fig.subplots()
        im = ax.imshow(image, cmap="magma", vmin=0, vmax=1, interpolation="nearest", origin=origin)
        fig.colorbar(im, ax=ax, label="fraction of gain stages x cells masked (edges left out)", shrink=0.8)
        ax.set_title(f"{root.attrs.get('detector')}: {how}", fontsize=9)
        path = out_dir / "detector.png"
        fig.savefig(path, dpi=80)
        written.append(path)

    snr = root["snr"] if "snr" in root else None
    if snr is not None:
        names = sorted(snr.array_keys())
        fig = Figure(figsize=(4 * len(names), 3.5))
        axes = fig.subplots(1, len(names), squeeze=False)
        clip = max(4 * lam, 1.0)
        edges = np.linspace(-clip, clip, 201)
        for ax, name in zip(axes[0], names):
            counts = np.zeros(200, dtype=np.int64)
            for i in range(snr[name].shape[0]):  # one module at a time
                values = np.asarray(snr[name][i], dtype=np.float64).ravel()
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
        path = out_dir / "snr_histograms.png"
        fig.savefig(path, dpi=80)
        written.append(path)
    return written
