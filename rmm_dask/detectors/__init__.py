"""Detector descriptions: module geometry, ASIC tiling, gain stages, kind of sensor, frame layout.

The descriptions are YAML files (this directory, also at ``configs/detectors/``): one
per detector, loaded by name (``get_detector("JUNGFRAU4M")``, case-insensitive), by a
short alias (:data:`ALIASES`: ``agipd``, ``jungfrau``, ``lambda``, ...), or from any path
(``get_detector("my-detector.yaml")``) for a detector of your own read as a plain HDF5
stack. Chips (ASICs) are given at a uniform pitch (``asic-shape``) or, where they are not
evenly spaced, by their boundaries (``chip-rows``, ``chip-columns``: LAMBDA's chips are
258 or 260 pixels wide because the large pixels between chips are split into virtual
pixels). Kernels take what they need from a :class:`Detector` (chip windows, edge width,
minimum sigma); nothing here reads data.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..yamlload import load_yaml

HERE = Path(__file__).parent
GAIN_KINDS = ("separate", "bits", "none")

#: Upper bounds of a description, well above every detector built (AGIPD-1M: 16 modules of 512 x 128,
#: 352 cells; DSSC 800 cells; JUNGFRAU 16M: 32 modules; EIGER2 16M read as one 4362 x 4148 module: 18 M
#: pixels) and far below what would not fit in memory: a description that names 10^9 cells or modules
#: is refused before anything is allocated from it (the per-module maps of show/export, a reader's
#: module list), as a value that cannot be.
MAX_MODULES = 1024
MAX_CELLS = 4096
MAX_GAIN_STAGES = 8
MAX_SIDE = 65536  #: pixels along one axis of a module, and of a gap between modules
MAX_MODULE_PIXELS = 2**26  #: 67 M
MAX_PIXELS = 2**28  #: 268 M: of all modules, and of a stored full frame with its gaps


@dataclass(frozen=True)
class Detector:
    """What the mask maker needs to know about a detector."""

    name: str
    n_modules: int
    module_shape: tuple[int, int]  #: (y, x) pixels of one module
    #: (y, x) pitch of the ASICs (chips): the local model windows, from the module's
    #: corner; a last window that does not fit is cut at the module border. With chip
    #: boundaries given (``chip_rows``/``chip_columns``) the largest chip along that axis
    asic_shape: tuple[int, int]
    gain_stages: tuple[str, ...] = ("high",)
    n_cells: int = 1
    #: photon counting: F2 and weak flats by the exact Poisson test of rmm_dask.counting; the
    #: Gaussian features with sigma floored at 1/6 (paper 2.1); no zero-variance rule
    counting: bool = False
    edge_width: int = 0  #: pixels at each ASIC border masked without analysis
    #: how the gain stage is recorded: "separate" (a gain value per pixel, AGIPD),
    #: "bits" (bits 14-15 of the raw value, JUNGFRAU), "none"
    gain: str = "none"
    #: how the modules tile a stored full frame (rows, columns), modules in row-major
    #: order, with ``module_gap`` (rows, columns) of pixels between them; None: the
    #: modules are stored separately (EuXFEL)
    module_grid: tuple[int, int] | None = None
    module_gap: tuple[int, int] = (0, 0)
    module_order: str = "row"  #: modules numbered along rows ("row") or down columns ("column")
    dataset: str | None = None  #: the frames' dataset in HDF5 files (CXI, NeXus/NXmx)
    pixel_mask: str | None = None  #: the manufacturer's pixel mask dataset in HDF5 files
    #: chip boundaries along y (0, ..., module rows) where chips are not at a uniform pitch
    #: (None: every ``asic_shape[0]`` rows); the windows are [b[i], b[i + 1])
    chip_rows: tuple[int, ...] | None = None
    chip_columns: tuple[int, ...] | None = None  #: the same along x
    #: chip boundaries from a run's own pixel mask (the regions between runs of virtual and gap
    #: pixels, :mod:`rmm_dask.chips`) where it marks them, over ``chip_rows``/``chip_columns`` and
    #: ``asic_shape``; then a module may have any shape its files show (LAMBDA: 516 x 1556 Si,
    #: 516 x 1554 GaAs/CdTe)
    chips_from_mask: bool = False
    #: raw values above (below) this are no measurement (NXmx ``saturation_value``/``underload_value``:
    #: the detector's marks of gaps, dead or overflowing pixels): read as missing
    saturation_value: float | None = None
    underload_value: float | None = None
    #: memory cells of HDF5 stacks with ``n_cells`` > 1: None, frames interleaved (frame i is cell
    #: i mod n_cells); or the path of a dataset of each frame's cell id (EuXFEL ``image.cellId``)
    cell_ids: str | None = None

    def __post_init__(self):
        self._check_types()
        self._check_sizes()
        if min(self.module_shape) < 1 or min(self.asic_shape) < 1 or self.n_modules < 1:
            raise ValueError(f"{self.name}: module, ASIC shapes and module count must be positive")
        if self.n_cells < 1:
            raise ValueError(f"{self.name}: cells must be at least 1, not {self.n_cells}")
        if not self.gain_stages:
            raise ValueError(f"{self.name}: at least one gain stage is needed")
        if len(set(self.gain_stages)) != len(self.gain_stages):
            raise ValueError(f"{self.name}: gain stages {list(self.gain_stages)} repeat a name")
        if self.edge_width < 0:
            raise ValueError(f"{self.name}: edge-width must be 0 or more, not {self.edge_width}")
        for key, bounds, size in (("chip-rows", self.chip_rows, self.module_shape[0]), ("chip-columns", self.chip_columns, self.module_shape[1])):
            if bounds is None:
                continue
            if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != size or any(b <= a for a, b in zip(bounds, bounds[1:])):
                raise ValueError(
                    f"{self.name}: {key} {list(bounds)} must be increasing boundaries from 0 to the module's {size} pixels"
                )
        smallest = min(b - a for axis in (0, 1) for a, b in self.asic_windows(axis))
        if 2 * self.edge_width >= smallest:
            raise ValueError(f"{self.name}: edge-width {self.edge_width} leaves nothing inside a chip of {smallest} pixels")
        if self.gain not in GAIN_KINDS:
            raise ValueError(f"{self.name}: gain must be one of {GAIN_KINDS}, not {self.gain!r}")
        if self.module_order not in ("row", "column"):
            raise ValueError(f"{self.name}: module-order must be 'row' or 'column', not {self.module_order!r}")
        if self.module_grid is not None and self.module_grid[0] * self.module_grid[1] != self.n_modules:
            raise ValueError(f"{self.name}: module grid {self.module_grid} does not hold {self.n_modules} modules")

    def _check_types(self) -> None:
        """Counts are integers and shapes pairs of integers (a description read from a store's
        attributes, a YAML file or Python may hold anything), so that the checks after compare numbers."""
        def whole(v) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        for key, value in (("modules", self.n_modules), ("cells", self.n_cells), ("edge-width", self.edge_width)):
            if not whole(value):
                raise ValueError(f"{self.name}: {key} must be an integer, not {_short(value)}")
        pairs = {"module-shape": self.module_shape, "asic-shape": self.asic_shape, "module-gap": self.module_gap}
        if self.module_grid is not None:
            pairs["module-grid"] = self.module_grid
        for key, value in pairs.items():
            if not (isinstance(value, tuple) and len(value) == 2 and all(map(whole, value))):
                raise ValueError(f"{self.name}: {key} must be two integers [y, x], not {_short(value)}")
        for key, value in (("chip-rows", self.chip_rows), ("chip-columns", self.chip_columns)):
            if value is not None and not (isinstance(value, tuple) and all(map(whole, value))):
                raise ValueError(f"{self.name}: {key} must be a list of integers, not {_short(value)}")
        if not isinstance(self.counting, bool):
            raise ValueError(f"{self.name}: counting must be true or false, not {_short(self.counting)}")
        if not (isinstance(self.gain_stages, tuple) and all(isinstance(g, str) for g in self.gain_stages)):
            raise ValueError(f"{self.name}: gain-stages must be a list of names, not {_short(self.gain_stages)}")
        for key, value in (("saturation-value", self.saturation_value), ("underload-value", self.underload_value)):
            if value is not None and (not isinstance(value, numbers.Real) or isinstance(value, bool)):
                raise ValueError(f"{self.name}: {key} must be a number, not {_short(value)}")
        if not isinstance(self.chips_from_mask, bool):
            raise ValueError(f"{self.name}: chips-from-pixel-mask must be true or false, not {_short(self.chips_from_mask)}")
        for key, value in (("dataset", self.dataset), ("pixel-mask", self.pixel_mask), ("cell-ids", self.cell_ids)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{self.name}: {key} must be the path of a dataset, not {_short(value)}")

    def _check_sizes(self) -> None:
        """The upper bounds (:data:`MAX_MODULES`, ...): nothing is allocated from a description before they hold."""
        (ny, nx), (py, px) = self.module_shape, self.module_gap
        for key, value, bound in (("modules", self.n_modules, MAX_MODULES), ("cells", self.n_cells, MAX_CELLS),
                                  ("gain-stages", len(self.gain_stages), MAX_GAIN_STAGES)):
            if value > bound:
                raise ValueError(f"{self.name}: {key} {value} is more than any detector has (at most {bound})")
        for key, value in (("module-shape", self.module_shape), ("module-gap", self.module_gap)):
            if max(value) > MAX_SIDE:
                raise ValueError(f"{self.name}: {key} {list(value)} is larger than any detector's "
                                 f"(at most {MAX_SIDE} a side)")
        if ny * nx > MAX_MODULE_PIXELS:
            raise ValueError(f"{self.name}: module-shape {[ny, nx]} holds {ny * nx} pixels, more than any detector's "
                             f"module (at most {MAX_MODULE_PIXELS})")
        frame = ((self.module_grid[0] * (ny + py), self.module_grid[1] * (nx + px)) if self.module_grid else (0, 0))
        total = max(self.n_modules * ny * nx, frame[0] * frame[1])
        if total > MAX_PIXELS:
            raise ValueError(f"{self.name}: {self.n_modules} modules of {[ny, nx]} pixels"
                             f"{' with gaps ' + str(list(self.module_gap)) if self.module_grid else ''} make {total} "
                             f"pixels, more than any detector has (at most {MAX_PIXELS})")

    @property
    def min_sigma(self) -> float:
        return 1.0 / 6.0 if self.counting else 0.0

    @property
    def gain_min_sigma(self) -> float:
        """Floor of the sigma of the gain features: 0.01 stage for stages recorded as bits
        (a normal pixel is always in the stage forced, so the spread of its ASIC is 0)."""
        return 0.01 if self.gain == "bits" else self.min_sigma

    @property
    def frame_shape(self) -> tuple[int, int] | None:
        """(y, x) of a stored full frame, or None when modules are stored separately."""
        if self.module_grid is None:
            return None
        (gy, gx), (py, px), (ny, nx) = self.module_grid, self.module_gap, self.module_shape
        return gy * ny + (gy - 1) * py, gx * nx + (gx - 1) * px

    def module_origins(self) -> list[tuple[int, int]]:
        """(y, x) of each module's first pixel in the full frame, in module order."""
        if self.module_grid is None:
            raise ValueError(f"{self.name}: modules are not stored as one frame")
        (gy, gx), (py, px), (ny, nx) = self.module_grid, self.module_gap, self.module_shape
        cells = [(r, c) for r in range(gy) for c in range(gx)]
        if self.module_order == "column":
            cells = [(r, c) for c in range(gx) for r in range(gy)]
        return [(r * (ny + py), c * (nx + px)) for r, c in cells]

    def split_frame(self, frames: np.ndarray) -> np.ndarray:
        """(..., Y, X) full frames -> (..., module, y, x), gaps dropped."""
        ny, nx = self.module_shape
        return np.stack([frames[..., y : y + ny, x : x + nx] for y, x in self.module_origins()], axis=-3)

    def join_frame(self, modules: np.ndarray, fill=0) -> np.ndarray:
        """(..., module, y, x) -> (..., Y, X) full frames, gaps filled with ``fill``."""
        ny, nx = self.module_shape
        out = np.full(modules.shape[:-3] + self.frame_shape, fill, dtype=modules.dtype)
        for m, (y, x) in enumerate(self.module_origins()):
            out[..., y : y + ny, x : x + nx] = modules[..., m, :, :]
        return out

    def module_stack(self, array: np.ndarray) -> np.ndarray:
        """A per-pixel map as (module, y, x): a full frame is split, one module's (y, x) gets a module
        axis; anything else is returned as it is, for the caller to check."""
        array = np.asarray(array)
        if self.frame_shape is not None and array.shape == self.frame_shape:
            return self.split_frame(array)
        if array.shape == tuple(self.module_shape):
            return array[None]
        return array

    def gap_mask(self) -> np.ndarray:
        """Bool full frame (Y, X): True in the gaps between modules."""
        return self.join_frame(np.zeros((self.n_modules, *self.module_shape), dtype=bool), fill=True)

    def asic_windows(self, axis: int) -> list[tuple[int, int]]:
        """[start, stop) of the ASIC (chip) windows along ``axis`` (0: y, 1: x) of a module: the
        chip boundaries where the description gives them, else every ``asic_shape`` pixels."""
        bounds = (self.chip_rows, self.chip_columns)[axis]
        if bounds is not None:
            return list(zip(bounds[:-1], bounds[1:]))
        return uniform_windows(self.module_shape[axis], self.asic_shape[axis])

    @property
    def uniform_chips(self) -> bool:
        """True when the chips are at a uniform pitch (a last one may be cut at the border)."""
        return all(
            self.asic_windows(axis) == uniform_windows(self.module_shape[axis], self.asic_windows(axis)[0][1])
            for axis in (0, 1)
        )

    def asic_edges(self) -> np.ndarray:
        """Boolean (y, x) map of the ASIC edge pixels of one module."""
        edge = np.zeros(self.module_shape, dtype=bool)
        w = self.edge_width
        if w <= 0:
            return edge
        for a, b in self.asic_windows(0):
            edge[a : a + w] = True
            edge[max(b - w, a) : b] = True
        for a, b in self.asic_windows(1):
            edge[:, a : a + w] = True
            edge[:, max(b - w, a) : b] = True
        return edge


def with_chips(det: Detector, module_shape: tuple[int, int], rows: tuple | None, columns: tuple | None) -> Detector:
    """``det`` for modules of ``module_shape`` with the chip boundaries a run's pixel mask gives along
    each axis (None: the description's, which must then be for as many pixels). Boundaries at a
    uniform pitch become that pitch (``asic_shape``), others ``chip_rows``/``chip_columns``.
    ValueError says which axis the description cannot give."""
    asic, bounds = list(det.asic_shape), [det.chip_rows, det.chip_columns]
    for axis, found in enumerate((rows, columns)):
        size = module_shape[axis]
        if found is None:
            if size != det.module_shape[axis]:
                what = ("rows", "columns")[axis]
                raise ValueError(f"modules of {list(module_shape)} pixels, not {det.name}'s {list(det.module_shape)}, "
                                 f"and the pixel mask marks no chip {what}")
            continue
        pitch = found[1] - found[0]
        uniform = list(zip(found[:-1], found[1:])) == uniform_windows(size, pitch)
        asic[axis] = pitch if uniform else max(b - a for a, b in zip(found, found[1:]))
        bounds[axis] = None if uniform else tuple(found)
    return replace(det, module_shape=tuple(module_shape), asic_shape=tuple(asic), chip_rows=bounds[0],
                   chip_columns=bounds[1])


def uniform_windows(size: int, pitch: int) -> list[tuple[int, int]]:
    """[start, stop) windows of ``pitch`` pixels from 0 along ``size`` pixels, the last one cut at the border."""
    return [(a, min(a + pitch, size)) for a in range(0, size, pitch)]


def detector_of(attrs, where: str | os.PathLike | None = None, shape: tuple | None = None) -> Detector:
    """The Detector a store was made for: its recorded description, or its name (stores before descriptions).

    The description is checked as a YAML one is (types, the upper bounds): a store's attributes are
    a file anyone may edit, and the readers allocate per-module maps from it. With ``shape`` (the
    store's ``mask`` shape: module, gain, cell, y, x) it must also describe the store's arrays: as
    many modules at most, modules of (y, x). Problems raise InputError naming ``where`` (the store)
    and the attribute, or ValueError without ``where``.
    """
    try:
        det = _described(attrs)
        if shape is not None:
            _fits(det, tuple(shape))
        return det
    except (TypeError, ValueError, KeyError) as err:
        if where is None or isinstance(err, InputError):
            raise
        text = err.args[0] if isinstance(err, KeyError) else str(err)
        problem = " ".join(str(text).split())
        raise InputError(where, f"its detector_description attribute is not usable: {problem}") from None


def description(det: Detector) -> dict:
    """``det`` as a JSON-able mapping of its fields (a run's and a store's ``detector_description``
    attribute), read back by :func:`detector_of`."""
    return {f.name: list(v) if isinstance(v := getattr(det, f.name), tuple) else v for f in fields(Detector)}


def run_detector(darks: dict, flat=None, detector=None) -> Detector:
    """The detector the runs (dark runs ``{gain stage: dataset}``, a flat dataset or None) were read as:
    the description their readers recorded (``detector_description``: adapted to the files, e.g. chip
    boundaries from their pixel mask, or built from an NXmx file), unless ``detector`` names another
    detector; else ``detector`` or the first run's detector name; a :class:`Detector` given is used as
    it is. The runs must all be of one description: InputError naming the run whose files describe another."""
    if isinstance(detector, Detector):
        return detector
    runs = {f"dark-{g}": run for g, run in darks.items()} | ({"flat": flat} if flat is not None else {})
    own = {k: detector_of(run.attrs, run.attrs.get("path")) for k, run in runs.items()
           if run.attrs.get("detector_description")}
    named = get_detector(detector) if detector is not None else None
    if not own or (named is not None and named.name != next(iter(own.values())).name):
        return named or get_detector(next(iter(runs.values())).attrs.get("detector", "AGIPD1M"))
    (key, first), *others = own.items()
    for other, det in others:
        if det != first:
            differ = [f.name for f in fields(Detector) if getattr(det, f.name) != getattr(first, f.name)]
            raise InputError(runs[other].attrs.get("path", other), f"its files describe {det.name} with other "
                             f"{', '.join(differ)} than {key}'s ({runs[key].attrs.get('path', key)}): not one detector")
    return first


def _described(attrs) -> Detector:
    described = attrs.get("detector_description")
    if not described:
        return get_detector(str(attrs.get("detector")))
    if not isinstance(described, dict):
        raise ValueError(f"expected a mapping, not {_short(described)}")
    unknown = set(described) - {f.name for f in fields(Detector)}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    return Detector(**{k: tuple(v) if isinstance(v, list) else v for k, v in described.items()})


def _fits(det: Detector, shape: tuple) -> None:
    """The store's mask arrays (module, gain, cell, y, x) are of this detector's modules."""
    if len(shape) != 5 or tuple(shape[-2:]) != tuple(det.module_shape) or shape[0] > det.n_modules:
        raise ValueError(f"{det.name}: {det.n_modules} modules of {list(det.module_shape)} pixels, but the mask "
                         f"array is (module, gain, cell, y, x) {list(shape)}")


def _short(value) -> str:
    """``value`` quoted in a message: on one line and short (a store may hold a huge one)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


#: every key of a YAML description -> its default (None: required; see the README table)
KEYS = {
    "name": None,
    "modules": None,
    "module-shape": None,
    "asic-shape": "required unless chip-rows and chip-columns are given",
    "chip-rows": None,
    "chip-columns": None,
    "gain-stages": ["high"],
    "gain": "none",
    "cells": 1,
    "counting": False,
    "edge-width": 0,
    "module-grid": None,
    "module-gap": [0, 0],
    "module-order": "row",
    "dataset": None,
    "pixel-mask": None,
    "chips-from-pixel-mask": False,
    "saturation-value": None,
    "underload-value": None,
    "cell-ids": None,
}


def load_detector(path: str | os.PathLike, *, builtin: bool = False) -> Detector:
    """A :class:`Detector` from its YAML description (keys: :data:`KEYS`, as in this directory's files).

    ``edge-width`` is 0 unless the description says otherwise; the built-in descriptions
    (``builtin``) must state it. ValueError names the file and the problem.
    """
    d = load_yaml(path, "detector description")
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping describing a detector")
    if set(d) - set(KEYS):
        raise ValueError(f"{path}: unknown keys {sorted(set(d) - set(KEYS))}; known: {sorted(KEYS)}")
    missing = {"name", "modules", "module-shape"} - set(d)
    if "asic-shape" not in d and not {"chip-rows", "chip-columns"} <= set(d):
        missing.add("asic-shape (or chip-rows and chip-columns)")
    if builtin and "edge-width" not in d:
        missing.add("edge-width")
    if missing:
        raise ValueError(f"{path}: missing {sorted(missing)}")
    try:
        return _from_mapping(d)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def _ints(d: dict, key: str, n: int | None = 2) -> tuple[int, ...] | None:
    """The integers of a list-valued key (``n`` of them, if given), None when absent."""
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or (n is not None and len(value) != n):
        raise ValueError(f"{key} must be a list of {n or 'several'} integers, not {_short(value)}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{key} must hold integers, not {_short(value)}")
    return tuple(value)


def _from_mapping(d: dict) -> Detector:
    module_shape = _ints(d, "module-shape")
    chip_rows, chip_columns = _ints(d, "chip-rows", None), _ints(d, "chip-columns", None)
    asic_shape = _ints(d, "asic-shape")
    if asic_shape is None or chip_rows or chip_columns:  # the boundaries replace the pitch along their axis
        widest = lambda b: None if b is None else max(q - p for p, q in zip(b, b[1:]))  # noqa: E731
        asic_shape = (
            widest(chip_rows) or (asic_shape or module_shape)[0],
            widest(chip_columns) or (asic_shape or module_shape)[1],
        )
    stages = d.get("gain-stages", ["high"])
    if not isinstance(stages, (list, tuple)):
        raise ValueError(f"gain-stages must be a list of names, not {_short(stages)}")
    for key in ("modules", "cells", "edge-width"):
        if key in d and (not isinstance(d[key], int) or isinstance(d[key], bool)):
            raise ValueError(f"{key} must be an integer, not {_short(d[key])}")
    return Detector(
        name=str(d["name"]),
        n_modules=d["modules"],
        module_shape=module_shape,
        asic_shape=asic_shape,
        gain_stages=tuple(str(g) for g in stages),
        n_cells=d.get("cells", 1),
        counting=d.get("counting", False),
        edge_width=d.get("edge-width", 0),
        gain=str(d.get("gain", "none")),
        module_grid=_ints(d, "module-grid"),
        module_gap=_ints(d, "module-gap") or (0, 0),
        module_order=str(d.get("module-order", "row")),
        dataset=d.get("dataset"),
        pixel_mask=d.get("pixel-mask"),
        chip_rows=chip_rows,
        chip_columns=chip_columns,
        chips_from_mask=d.get("chips-from-pixel-mask", False),
        saturation_value=d.get("saturation-value"),
        underload_value=d.get("underload-value"),
        cell_ids=d.get("cell-ids"),
    )


#: Detector field -> its YAML key, where the two differ
_YAML_KEYS = {"n_modules": "modules", "n_cells": "cells", "chips_from_mask": "chips-from-pixel-mask"}


def to_mapping(det: Detector) -> dict:
    """The YAML description of ``det`` (keys of :data:`KEYS`, defaults left out): what
    :func:`load_detector` reads back as the same Detector. ``asic-shape`` is left out where
    chip boundaries along both axes replace it."""
    out = {}
    for f in fields(Detector):
        value = getattr(det, f.name)
        if value == f.default and f.name != "gain_stages":
            continue
        if f.name == "asic_shape" and det.chip_rows is not None and det.chip_columns is not None:
            continue
        out[_YAML_KEYS.get(f.name, f.name.replace("_", "-"))] = list(value) if isinstance(value, tuple) else value
    return out


DETECTORS = {det.name.lower(): det for det in (load_detector(p, builtin=True) for p in sorted(HERE.glob("*.yaml")))}
AGIPD1M = DETECTORS["agipd1m"]

#: short names -> the built-in description they stand for (the model `rmm demo` synthesises).
#: ``lambda`` is the LAMBDA 2M: its runs may hold 1 to 3 module files, so it reads a 750K too.
ALIASES = {
    "agipd": "AGIPD1M",
    "jungfrau": "JUNGFRAU1M",
    "cspad": "CSPAD",
    "pilatus": "PILATUS300K",
    "eiger": "EIGER1M",
    "lambda": "LAMBDA2M",
}


def builtin(det: Detector) -> bool:
    """True for a built-in description (this directory's YAML files) as it is."""
    return DETECTORS.get(det.name.lower()) == det


def get_detector(name: str | os.PathLike | Detector) -> Detector:
    """A :class:`Detector` from its name or alias (case-insensitive) or a YAML file (KeyError if
    none: one line naming the problem), or the detector itself."""
    if isinstance(name, Detector):
        return name
    if str(name).endswith((".yaml", ".yml")):
        try:
            return load_detector(name)
        except InputError as err:  # the file cannot be read, is too large, not YAML, has aliases: one line
            raise KeyError(f"bad detector description {err.path}: {err.problem}") from None
        except (ValueError, TypeError) as err:
            raise KeyError(f"bad detector description: {' '.join(str(err).split())}") from None
    key = str(name).lower()
    key = ALIASES.get(key, key).lower()
    try:
        return DETECTORS[key]
    except KeyError:
        names = ", ".join(d.name for d in DETECTORS.values())
        aliases = ", ".join(ALIASES)
        raise KeyError(f"unknown detector {name!r}; known: {names} (or {aliases}), or a YAML file") from None
