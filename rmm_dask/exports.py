"""Exports of a mask store in the formats downstream programs read.

Each format says "bad" in its own words; the tables below are the whole mapping (also in
README). Masks are combined over gain stages and memory cells where a format has no
such axes (a pixel bad in any of them is bad); the EuXFEL export keeps them. The
store's layers stay apart where the format allows: the manufacturer's pixel mask
(NeXus bits), the user's mask and the history layer of a mask that remembers (nightly
``history:``: pixel-planes bad on enough of the last nights, masked on a night they look
good; a bit of its own in every format, so that users see why a pixel is masked).

=============  ===================  ====================  ======================
rmm-dask bit   NeXus pixel_mask     EuXFEL BadPixels      CrystFEL mask word
=============  ===================  ====================  ======================
OFFSET         4 noisy              0 OFFSET_OUT_OF_...   bit 0 (mask0)
NOISE          4 noisy              1 NOISE_OUT_OF_...    bit 1 (mask0)
GAIN_SEPARAT.  4 noisy              13 GAIN_THRESHOLDING  bit 2 (mask0)
GAIN_LEVEL     4 noisy              21 WRONG_GAIN_VALUE   bit 3 (mask0)
FLAT_HIGH      3 over-responding    8 FF_GAIN_DEVIATION   bit 4 (mask0)
FLAT_LOW       2 under-responding   8 FF_GAIN_DEVIATION   bit 5 (mask0)
ASIC_EDGE      5 (undefined; edge)  22 NON_STANDARD_SIZE  bit 6 (mask0)
NO_DATA        1 dead               3 NO_DARK_DATA        bit 7 (mask0)
user layer     8 user               19 NON_SENSITIVE *    bit 8 (mask1)
history layer  9 (undefined; hist)  30 USER1 **           bit 9 (mask3)
manufacturer   its own bits         kept apart *          bits 16-31 (mask2)
gaps (frame)   0 gap                -                     (not in the data)
=============  ===================  ====================  ======================

(*) in separate datasets ``/user_mask`` and ``/manufacturer_mask`` of the EuXFEL export;
(**) ``/history_mask`` uint32 (module, gain, cell, y, x) as ``/mask``: USER1 (1 << 30), the bit
BadPixels leaves to its users' own reasons, as no EuXFEL reason says "bad on earlier nights".
NeXus bit 9 is undefined by NXdetector and within the reject bits 0-15 that analysis software
masks, so a remembered pixel is masked everywhere and still told apart from one found noisy
tonight (bit 4). CrystFEL's mask3 lines are written only for a store with the layer.
Cheetah/OM: ``/data/data`` 1 = good, 0 = bad (any bit or layer), and ``/data/rmm``,
``/data/user``, ``/data/manufacturer`` (and ``/data/history``) with each source alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from . import publish
from .codes import BadPixel
from .detectors import detector_of
from .errors import InputError
from .store import export_h5, open_tree

__all__ = ["export", "FORMATS", "NEXUS", "EUXFEL", "lookup"]

FORMATS = ("h5", "crystfel", "nexus", "euxfel", "cheetah")

NEXUS_GAP, NEXUS_DEAD, NEXUS_UNDER, NEXUS_OVER, NEXUS_NOISY, NEXUS_EDGE, NEXUS_USER = (1 << b for b in (0, 1, 2, 3, 4, 5, 8))
NEXUS_HISTORY = 1 << 9  #: the history layer (undefined by NeXus, within the reject bits 0-15)
NEXUS = {
    BadPixel.OFFSET: NEXUS_NOISY,
    BadPixel.NOISE: NEXUS_NOISY,
    BadPixel.GAIN_SEPARATION: NEXUS_NOISY,
    BadPixel.GAIN_LEVEL: NEXUS_NOISY,
    BadPixel.FLAT_HIGH: NEXUS_OVER,
    BadPixel.FLAT_LOW: NEXUS_UNDER,
    BadPixel.ASIC_EDGE: NEXUS_EDGE,
    BadPixel.NO_DATA: NEXUS_DEAD,
}
#: EuXFEL BadPixels flags (European-XFEL/EXtra, extra.calibration.BadPixels)
EUXFEL_FLAGS = {"OFFSET_OUT_OF_THRESHOLD": 0, "NOISE_OUT_OF_THRESHOLD": 1, "NO_DARK_DATA": 3, "FF_GAIN_DEVIATION": 8,
                "GAIN_THRESHOLDING_ERROR": 13, "NON_SENSITIVE": 19, "WRONG_GAIN_VALUE": 21, "NON_STANDARD_SIZE": 22}
EUXFEL = {
    BadPixel.OFFSET: 1 << EUXFEL_FLAGS["OFFSET_OUT_OF_THRESHOLD"],
    BadPixel.NOISE: 1 << EUXFEL_FLAGS["NOISE_OUT_OF_THRESHOLD"],
    BadPixel.GAIN_SEPARATION: 1 << EUXFEL_FLAGS["GAIN_THRESHOLDING_ERROR"],
    BadPixel.GAIN_LEVEL: 1 << EUXFEL_FLAGS["WRONG_GAIN_VALUE"],
    BadPixel.FLAT_HIGH: 1 << EUXFEL_FLAGS["FF_GAIN_DEVIATION"],
    BadPixel.FLAT_LOW: 1 << EUXFEL_FLAGS["FF_GAIN_DEVIATION"],
    BadPixel.ASIC_EDGE: 1 << EUXFEL_FLAGS["NON_STANDARD_SIZE"],
    BadPixel.NO_DATA: 1 << EUXFEL_FLAGS["NO_DARK_DATA"],
}
EUXFEL_USER = 1 << EUXFEL_FLAGS["NON_SENSITIVE"]
EUXFEL_HISTORY = 1 << 30  #: BadPixels.USER1: the history layer, in /history_mask
CRYSTFEL_USER, CRYSTFEL_HISTORY, CRYSTFEL_MANUFACTURER = 1 << 8, 1 << 9, 0xFFFF0000


def lookup(mapping: dict) -> np.ndarray:
    """uint32[256]: the mapped word of every uint8 mask value."""
    table = np.zeros(256, dtype=np.uint32)
    for value in range(256):
        for bit, word in mapping.items():
            if value & bit:
                table[value] |= word
    return table


class _Mask:
    """A store read through xarray one module at a time: the mask's union over gains and cells, and its layers."""

    def __init__(self, store):
        self.tree = open_tree(store)
        self.det = detector_of(self.tree.attrs)
        self.modules = [int(m) for m in self.tree["module"].values]
        layers = self.tree["layers"].data_vars if "layers" in self.tree.children else {}
        self.manufacturer = layers.get("manufacturer")
        self.user = layers.get("user")
        self.history = layers.get("history")  #: (module, gain, cell, y, x), or None

    def union(self, i: int) -> np.ndarray:
        """uint8 (y, x): the bits of module index ``i`` in any gain stage and cell."""
        return np.bitwise_or.reduce(self.tree["mask"][i].values.reshape(-1, *self.det.module_shape), axis=0)

    def layer(self, which, i: int, dtype) -> np.ndarray:
        return np.zeros(self.det.module_shape, dtype) if which is None else np.asarray(which[i].values, dtype=dtype)

    def user_layer(self, i: int) -> np.ndarray:
        """uint32 (y, x): 1 where the user masked the pixel."""
        return (self.layer(self.user, i, np.uint32) != 0).astype(np.uint32)

    def history_layer(self, i: int) -> np.ndarray:
        """uint32 (y, x): 1 where the history layer keeps the pixel masked in any gain stage and cell."""
        if self.history is None:
            return np.zeros(self.det.module_shape, np.uint32)
        planes = np.asarray(self.history[i].values).reshape(-1, *self.det.module_shape)
        return (planes != 0).any(axis=0).astype(np.uint32)

    def per_module(self, words, missing) -> np.ndarray:
        """(all modules of the detector, y, x): ``words(i)`` for the store's modules, ``missing`` for the rest."""
        first = words(0)
        out = np.full((self.det.n_modules, *self.det.module_shape), missing, dtype=first.dtype)
        for i, m in enumerate(self.modules):
            out[m] = first if i == 0 else words(i)
        return out

    def frame(self, stack: np.ndarray, gap) -> np.ndarray:
        """The detector's stored layout: a full frame with gaps, or the (module, y, x) stack."""
        return self.det.join_frame(stack, fill=gap) if self.det.frame_shape else stack


def export(store, to: str, out, *, overwrite: bool = False) -> list[Path]:
    """Export ``store`` to ``out`` in format ``to`` (one of FORMATS); the files written.

    Each file is published read-only through :func:`rmm_dask.publish.output`: an existing
    one is refused unless ``overwrite`` (then swapped atomically), a symbolic link at its
    name always.
    """
    tree = open_tree(store)
    publish.prepare(out, overwrite=overwrite, what="the export")  # before any pixel is read
    if to == "h5":
        return [export_h5(tree, out, overwrite=overwrite)]
    writer = {"crystfel": _crystfel, "nexus": _nexus, "euxfel": _euxfel, "cheetah": _cheetah}[to]
    mask = _Mask(tree)
    return writer(mask, out, overwrite)


def _write_h5(out, overwrite: bool, fill, nbytes: int) -> Path:
    """Write one HDF5 file through ``fill(h5py.File, ensure_room)``, published by :func:`rmm_dask.publish.output`.

    ``nbytes``: what ``fill`` writes at once (uncompressed), checked to fit before the file is
    opened; ``fill`` calls ``ensure_room(n)`` before any further block (HDF5 must not meet a
    full disk: see :meth:`rmm_dask.publish.Temporary.ensure_room`).
    """
    with publish.output(out, overwrite=overwrite, what="the export") as tmp:
        tmp.ensure_room(nbytes)
        with h5py.File(tmp.tmp, "w") as f:
            fill(f, tmp.ensure_room)
    return tmp.target


def _provenance(f: h5py.File, mask: _Mask, fmt: str) -> None:
    attrs = mask.tree.attrs
    f.attrs["creator"] = f"{attrs.get('software')} export --to {fmt}"
    f.attrs["detector"] = mask.det.name
    f.attrs["modules"] = json.dumps(mask.modules)
    f.attrs["inputs"] = json.dumps(attrs.get("inputs", {}))
    f.attrs["parameters"] = json.dumps(attrs.get("parameters", {}))


def nx_detector(f: h5py.File) -> h5py.Group:
    """NeXus's ``/entry/instrument/detector`` (NXentry, NXinstrument, NXdetector) in a new file."""
    group = f
    for name, nx_class in (("entry", "NXentry"), ("instrument", "NXinstrument"), ("detector", "NXdetector")):
        group = group.create_group(name)
        group.attrs["NX_class"] = nx_class
    return group


def _nexus(mask: _Mask, out, overwrite) -> list[Path]:
    table = lookup(NEXUS)

    def words(i):
        return (table[mask.union(i)] | mask.layer(mask.manufacturer, i, np.uint32) | (mask.user_layer(i) * NEXUS_USER)
                | (mask.history_layer(i) * NEXUS_HISTORY))

    stack = mask.per_module(words, NEXUS_DEAD)
    pixel_mask = mask.frame(stack, NEXUS_GAP)

    def fill(f, ensure_room):
        _provenance(f, mask, "nexus")
        detector = nx_detector(f)
        d = detector.create_dataset("pixel_mask", data=pixel_mask, compression="gzip", compression_opts=1)
        remembered = ", 9 bad on earlier nights (history)" if mask.history is not None else ""
        d.attrs["description"] = ("NeXus NXdetector bits: 0 gap, 1 dead, 2 under-responding, 3 over-responding, 4 noisy,"
                                  " 5 ASIC edge, 8 user" + remembered)
        detector["pixel_mask_applied"] = False
        _nx_modules(detector, mask.det)

    return [_write_h5(out, overwrite, fill, pixel_mask.nbytes)]


def _nx_modules(detector: h5py.Group, det) -> None:
    """One ``NXdetector_module`` per module with its ``data_origin``/``data_size`` in ``pixel_mask``.

    NXmx's way to say where a module's pixels are (dxtbx slices a master's pixel_mask so, one
    panel per module); :mod:`rmm_dask.dials_mask` reads them to split the mask into DIALS' panels.
    """
    for m in range(det.n_modules):
        if det.frame_shape:
            origin, size = det.module_origins()[m], det.module_shape
        else:
            origin, size = (m, 0, 0), (1, *det.module_shape)
        group = detector.create_group(f"module{m:02d}")
        group.attrs["NX_class"] = "NXdetector_module"
        group["data_origin"] = np.asarray(origin, dtype=np.int64)
        group["data_size"] = np.asarray(size, dtype=np.int64)


def _euxfel(mask: _Mask, out, overwrite) -> list[Path]:
    table = lookup(EUXFEL)
    tree = mask.tree
    gains = list(tree.attrs.get("gain_stages") or [])

    def fill(f, ensure_room):
        _provenance(f, mask, "euxfel")
        d = f.create_dataset("mask", shape=tree["mask"].shape, dtype=np.uint32, chunks=(1, 1, 1, *mask.det.module_shape), compression="gzip", compression_opts=1)
        for i in range(len(mask.modules)):
            words = table[tree["mask"][i].values]
            ensure_room(words.nbytes)
            d[i] = words
        d.attrs["dims"] = ["module", "gain", "cell", "y", "x"]
        d.attrs["description"] = "EuXFEL BadPixels flags (extra.calibration.BadPixels) per module, gain stage, memory cell"
        f["module"] = np.asarray(mask.modules)
        f["cell"] = tree["cell"].values
        f["gain"] = np.asarray(gains, dtype=h5py.string_dtype())
        ensure_room(sum(a.nbytes for a in (mask.user, mask.manufacturer) if a is not None))
        if mask.history is not None:  # as /mask: per module, gain stage and cell
            h = f.create_dataset("history_mask", shape=tree["mask"].shape, dtype=np.uint32,
                                 chunks=(1, 1, 1, *mask.det.module_shape), compression="gzip", compression_opts=1)
            for i in range(len(mask.modules)):
                words = (np.asarray(mask.history[i].values) != 0).astype(np.uint32) * EUXFEL_HISTORY
                ensure_room(words.nbytes)
                h[i] = words
            h.attrs["dims"] = ["module", "gain", "cell", "y", "x"]
            h.attrs["description"] = ("USER1 (1 << 30): bad on enough of the last nights (the pixel history of the"
                                      " nightly service); combine it with /mask")
        if mask.user is not None:
            f.create_dataset("user_mask", data=(mask.user.values != 0).astype(np.uint32) * EUXFEL_USER, compression="gzip")
        if mask.manufacturer is not None:
            f.create_dataset("manufacturer_mask", data=mask.manufacturer.values, compression="gzip")

    return [_write_h5(out, overwrite, fill, 0)]


def _cheetah(mask: _Mask, out, overwrite) -> list[Path]:
    sources = {
        "rmm": lambda i: (mask.union(i) == 0).astype(np.uint8),
        "user": lambda i: (mask.layer(mask.user, i, np.uint8) == 0).astype(np.uint8),
        "manufacturer": lambda i: ((mask.layer(mask.manufacturer, i, np.uint32) & 0xFFFF) == 0).astype(np.uint8),
    }
    if mask.history is not None:
        sources["history"] = lambda i: (mask.history_layer(i) == 0).astype(np.uint8)
    maps = {name: mask.frame(mask.per_module(fn, 0), 0) for name, fn in sources.items()}
    if not mask.det.frame_shape:  # Cheetah and OM stack the modules along y: (modules * y, x)
        maps = {k: v.reshape(-1, v.shape[-1]) for k, v in maps.items()}

    def fill(f, ensure_room):
        _provenance(f, mask, "cheetah")
        good = np.bitwise_and.reduce(list(maps.values()))
        f.create_dataset("data/data", data=good, compression="gzip").attrs["description"] = "1 = good, 0 = bad (any source)"
        for name, m in maps.items():
            f.create_dataset(f"data/{name}", data=m, compression="gzip").attrs["description"] = f"1 = good, 0 = bad by the {name} mask alone"

    return [_write_h5(out, overwrite, fill, 2 * sum(m.nbytes for m in maps.values()))]


def _crystfel(mask: _Mask, out, overwrite) -> list[Path]:
    def words(i):
        user = mask.user_layer(i) * CRYSTFEL_USER
        maker = (mask.layer(mask.manufacturer, i, np.uint32) & 0xFFFF) << 16
        return mask.union(i).astype(np.uint32) | user | maker | (mask.history_layer(i) * CRYSTFEL_HISTORY)

    data = mask.frame(mask.per_module(words, int(BadPixel.NO_DATA)), int(BadPixel.NO_DATA))
    if _one_module_files(mask):  # the data is (frame, y, x): so is the mask, less the frame axis
        data = data[0]

    def fill(f, ensure_room):
        _provenance(f, mask, "crystfel")
        d = f.create_dataset("data/mask", data=data, compression="gzip")
        d.attrs["description"] = ("bits 0-7 rmm-dask (mask0), bit 8 user (mask1), bits 16-31 manufacturer (mask2)"
                                  + (", bit 9 history (mask3)" if mask.history is not None else ""))

    geom = Path(out).absolute().with_suffix(".geom")
    target = publish.prepare(out, overwrite=overwrite, what="the export")  # both checked before either is written
    publish.prepare(geom, overwrite=overwrite, what="the geometry lines")
    return _both_or_neither(target, geom, overwrite, lambda path: _write_h5(path, overwrite, fill, data.nbytes),
                            "\n".join(geometry_lines(target, "/data/mask", mask)) + "\n")


def _both_or_neither(target: Path, geom: Path, overwrite: bool, write_mask, lines: str) -> list[Path]:
    """Publish the CrystFEL mask file (``write_mask(target)``) and its geometry lines as a pair.

    The geometry's temporary is created and written first, then the mask file is written and
    published, then the geometry: a failure before that (no inode or no room left for either
    temporary, an error writing the mask) publishes neither, and a failure of the last step
    (or an interrupt between the two) removes the mask file again, so that it is never left
    without its geometry lines (with ``overwrite`` the old mask file was replaced by then: the
    line says so). The one line says what was published.
    """
    published = None
    try:
        with publish.output(geom, overwrite=overwrite, what="the geometry lines") as tmp:
            Path(tmp.tmp).write_text(lines, encoding="utf-8", errors="surrogateescape")  # paths as their bytes, any locale
            published = write_mask(target)
    except BaseException as err:
        if published is not None:  # the geometry failed once the mask file was in place: take it back
            publish.remove(published, what="the export")
        if not isinstance(err, InputError):
            raise
        problem = err.problem.removesuffix("; nothing was published")
        if published is not None and overwrite:  # the old mask file is gone with the swap; the old geometry stays
            outcome = f"the new {target.name} was removed again, {geom.name} is as it was"
        else:
            outcome = f"neither {target.name} nor {geom.name} was published"
        raise InputError(err.path, f"{problem}; {outcome} (a CrystFEL export is both files or neither)") from None
    return [published, tmp.target]


#: pixel size (m) by the start of a detector's name, for CrystFEL's ``res``; a detector of your own: add it yourself
PIXEL_SIZE = {"AGIPD": 200e-6, "JUNGFRAU": 75e-6, "CSPAD": 110e-6, "PILATUS": 172e-6, "EIGER": 75e-6, "LAMBDA": 55e-6}


def geometry_lines(path: Path, dataset: str, mask: _Mask) -> list[str]:
    """CrystFEL geometry lines for the mask file: three masks (0.10+), the one-mask form of 0.9, and the panels.

    Full frames (PILATUS, EIGER, CSPAD, a JUNGFRAU or any detector stored as one frame): one
    panel per module, its ``min_fs``..``max_ss`` its place in the frame, the gaps in none.
    Modules stored apart (LAMBDA's module files): one panel per module of a ``(frame, module, y,
    x)`` dataset (``dim1`` = the module), which the user joins the files into. EuXFEL runs:
    the mask lines only, for the panels EXtra-geom writes. What rmm does not know (distance,
    photon energy, beam centre or module positions) is left to add, in lines that say so.
    """
    det, euxfel = mask.det, _euxfel_runs(mask)
    if det.frame_shape:
        layout = (f"{det.frame_shape[0]} x {det.frame_shape[1]} full frames (ss x fs), as the data's "
                  "`dim0 = %`, `dim1 = ss`, `dim2 = fs`")
    elif euxfel:
        layout = "(module, y, x), as the data's `dim0 = %`, `dim1 = <module>`, `dim2 = ss`, `dim3 = fs` (EXtra-geom)"
    elif _one_module_files(mask):
        layout = f"(y, x) = {det.module_shape}, as the data's `dim0 = %`, `dim1 = ss`, `dim2 = fs`"
    else:
        layout = (f"(module, y, x) = ({det.n_modules}, {det.module_shape[0]}, {det.module_shape[1]}), as data "
                  "`dim0 = %`, `dim1 = <module>`, `dim2 = ss`, `dim3 = fs`")
    lines = [
        f"; rmm-dask mask of {det.name} ({mask.tree.attrs.get('software')}) for CrystFEL 0.10+",
        f"; mask dataset: {layout}",
        "; a pixel bad in any memory cell or gain stage is bad",
        "; these lines go before the panels: a value without a panel name holds for the panels named after it",
        f"mask0_file = {path}",
        f"mask0_data = {dataset}",
        "mask0_goodbits = 0x0",
        "mask0_badbits = 0xff          ; rmm-dask bits (OFFSET ... NO_DATA)",
        f"mask1_file = {path}",
        f"mask1_data = {dataset}",
        "mask1_goodbits = 0x0",
        f"mask1_badbits = {CRYSTFEL_USER:#x}         ; the user's mask",
        f"mask2_file = {path}",
        f"mask2_data = {dataset}",
        "mask2_goodbits = 0x0",
        f"mask2_badbits = {CRYSTFEL_MANUFACTURER:#x}  ; the detector's own pixel mask",
        "; CrystFEL 0.9 and earlier read one mask: instead of the lines above, use",
        f";   mask_file = {path}",
        f";   mask = {dataset}",
        ";   mask_good = 0x0",
        ";   mask_bad = 0xffffffff",
        ";   (0.9 reads the mask as 16 bits: the manufacturer's bits 16-31 are not seen there)",
    ]
    if mask.history is not None:  # a mask that remembers: its own mask line, before the panels with the others
        lines[16:16] = [f"mask3_file = {path}", f"mask3_data = {dataset}", "mask3_goodbits = 0x0",
                        f"mask3_badbits = {CRYSTFEL_HISTORY:#x}         ; bad on earlier nights (the pixel history)"]
    if euxfel:
        return lines + ["; panels: EXtra-geom's write_crystfel_geom() writes them for this (module, y, x) layout"]
    return lines + _beam_lines(det) + (_frame_panels(det) if det.frame_shape else _module_panels(det))


def _euxfel_runs(mask: _Mask) -> bool:
    """True when the store was made from EuXFEL runs (EXtra-geom's (module, y, x) layout)."""
    runs = (mask.tree.attrs.get("inputs") or {}).values()
    return any(str(run.get("format", "")).startswith("euxfel") for run in runs)


def _one_module_files(mask: _Mask) -> bool:
    """True for a one-module detector stored apart (LAMBDA 750K, a stack of your own): its data is (frame, y, x)."""
    return mask.det.frame_shape is None and mask.det.n_modules == 1 and not _euxfel_runs(mask)


def _beam_lines(det) -> list[str]:
    """What holds for every panel: what rmm knows (pixel size, counting) and what the user must add."""
    size = next((v for k, v in PIXEL_SIZE.items() if det.name.upper().startswith(k)), None)
    res = f"res = {1 / size:.1f}            ; 1 / pixel size in m ({size * 1e6:.0f} um)" if size else (
        "; add: res = <1 / pixel size in m>  (not known to rmm for this detector)")
    lines = [
        "; add: clen = <sample-detector distance> m   (or clen = /path/to/distance/in/the/data mm)",
        "; add: photon_energy = <energy> eV           (or photon_energy = /path/in/the/data eV)",
        res,
        "adu_per_photon = 1            ; photon counting" if det.counting else "; add: adu_per_eV or adu_per_photon",
        "; add: data = <the frames' dataset>   (HDF5 input; CBF files need no data line)"
        + (f", e.g. {det.dataset}" if det.dataset and not det.dataset.endswith("/entry/data") else ""),
        "dim0 = %",
    ]
    stacked = det.n_modules > 1 and not det.frame_shape  # dim1 = <module>, per panel
    return lines + (["dim2 = ss", "dim3 = fs"] if stacked else ["dim1 = ss", "dim2 = fs"])


def _frame_panels(det) -> list[str]:
    """One panel per module of a full frame, its pixels where the module lies in the frame."""
    (ny, nx), lines = det.module_shape, [
        "; one panel per module; fs = +1.0x, ss = +1.0y is the frame as stored, without a flip: check it against",
        "; your beamline's orientation. The corners put the frame's first pixel at the beam: subtract your beam",
        "; centre (fs, ss in pixels) from every corner_x, corner_y. The gaps between modules are in no panel.",
    ]
    for m, (y, x) in enumerate(det.module_origins()):
        lines += [f"m{m}/min_fs = {x}", f"m{m}/max_fs = {x + nx - 1}", f"m{m}/min_ss = {y}",
                  f"m{m}/max_ss = {y + ny - 1}", f"m{m}/fs = +1.0x", f"m{m}/ss = +1.0y",
                  f"m{m}/corner_x = {x}", f"m{m}/corner_y = {y}"]
    return lines


def _module_panels(det) -> list[str]:
    """One panel per module of a ``(frame, module, y, x)`` dataset: modules written to files of their own (LAMBDA)."""
    if det.n_modules == 1:
        return ["; one panel, the module; add its corner_x, corner_y (pixels from the beam to its first pixel)",
                "m0/min_fs = 0", f"m0/max_fs = {det.module_shape[1] - 1}", "m0/min_ss = 0",
                f"m0/max_ss = {det.module_shape[0] - 1}", "; add: m0/corner_x = ...", "; add: m0/corner_y = ...",
                "m0/fs = +1.0x", "m0/ss = +1.0y"]
    (ny, nx), lines = det.module_shape, [
        "; one panel per module. CrystFEL reads a frame's panels from one file: join the module files",
        "; (LAMBDA: <acq>_m1_..., _m2_..., _m3_...) into one (frame, module, y, x) dataset first, e.g. an HDF5",
        "; virtual dataset (README, \"CrystFEL\"), and name it in `data`. rmm does not know where the modules are:",
        "; add each panel's corner_x, corner_y (pixels from the beam) and fs, ss directions as your beamline has them.",
    ]
    for m in range(det.n_modules):
        lines += [f"m{m}/dim1 = {m}", f"m{m}/min_fs = 0", f"m{m}/max_fs = {nx - 1}", f"m{m}/min_ss = 0",
                  f"m{m}/max_ss = {ny - 1}", f"; add: m{m}/corner_x = ...", f"; add: m{m}/corner_y = ...",
                  f"m{m}/fs = +1.0x", f"m{m}/ss = +1.0y"]
    return lines


def parse_geometry(text: str) -> tuple[dict, dict]:
    """CrystFEL's reading of a .geom: (global key = value, {panel: {key: value}}), comments (;) dropped."""
    top, panels = {}, {}
    for line in text.splitlines():
        line = line.split(";", 1)[0].strip()
        if "=" not in line:
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        if "/" in key:
            panel, key = key.split("/", 1)
            panels.setdefault(panel, {})[key] = value
        else:
            top[key] = value
    return top, panels
