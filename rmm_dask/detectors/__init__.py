"""Detector descriptions: module geometry, ASIC tiling, gain stages, kind of sensor, frame layout.

The descriptions are YAML files (this directory, also at ``configs/detectors/``): one
per detector, loaded by name (``get_detector("JUNGFRAU4M")``, case-insensitive), or
from any path (``get_detector("my-detector.yaml")``) for a detector of your own read
as a plain HDF5 stack. Kernels take what they need from a :class:`Detector` (window
shapes, edge width, minimum sigma); nothing here reads data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).parent
GAIN_KINDS = ("separate", "bits", "none")


@dataclass(frozen=True)
class Detector:
    """What the mask maker needs to know about a detector."""

    name: str
    n_modules: int
    module_shape: tuple[int, int]  #: (y, x) pixels of one module
    #: (y, x) pitch of the ASICs (chips): the local model windows, from the module's
    #: corner; a last window that does not fit is cut at the module border
    asic_shape: tuple[int, int]
    gain_stages: tuple[str, ...] = ("high",)
    n_cells: int = 1
    #: photon counting: F2 and weak flats by the exact Poisson test of rmm_dask.counting; the
    #: Gaussian features with sigma floored at 1/6 (paper 2.1); no zero-variance rule
    counting: bool = False
    edge_width: int = 1  #: pixels at each ASIC border masked without analysis
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

    def __post_init__(self):
        if self.gain not in GAIN_KINDS:
            raise ValueError(f"{self.name}: gain must be one of {GAIN_KINDS}, not {self.gain!r}")
        if self.module_order not in ("row", "column"):
            raise ValueError(f"{self.name}: module-order must be 'row' or 'column', not {self.module_order!r}")
        if self.module_grid is not None and self.module_grid[0] * self.module_grid[1] != self.n_modules:
            raise ValueError(f"{self.name}: module grid {self.module_grid} does not hold {self.n_modules} modules")
        if min(self.module_shape) < 1 or min(self.asic_shape) < 1 or self.n_modules < 1:
            raise ValueError(f"{self.name}: module, ASIC shapes and module count must be positive")

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
        """[start, stop) of the ASIC windows along ``axis`` (0: y, 1: x) of a module."""
        n, pitch = self.module_shape[axis], self.asic_shape[axis]
        return [(a, min(a + pitch, n)) for a in range(0, n, pitch)]

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


def detector_of(attrs) -> Detector:
    """The Detector a store was made for: its recorded description, or its name (stores before descriptions)."""
    described = attrs.get("detector_description")
    if described:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in described.items()}
        return Detector(**fields)
    return get_detector(attrs["detector"])


def load_detector(path: str | os.PathLike) -> Detector:
    """A :class:`Detector` from its YAML description (keys as in this directory's files)."""
    with open(path) as f:
        d = yaml.safe_load(f)
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping describing a detector")
    known = {"name", "modules", "module-shape", "asic-shape", "gain-stages", "gain", "cells", "counting",
             "edge-width", "module-grid", "module-gap", "module-order", "dataset", "pixel-mask"}
    if set(d) - known:
        raise ValueError(f"{path}: unknown keys {sorted(set(d) - known)}; known: {sorted(known)}")
    missing = {"name", "modules", "module-shape", "asic-shape"} - set(d)
    if missing:
        raise ValueError(f"{path}: missing {sorted(missing)}")
    pair = lambda key: None if d.get(key) is None else tuple(int(v) for v in d[key])  # noqa: E731
    return Detector(
        name=str(d["name"]),
        n_modules=int(d["modules"]),
        module_shape=pair("module-shape"),
        asic_shape=pair("asic-shape"),
        gain_stages=tuple(d.get("gain-stages", ("high",))),
        n_cells=int(d.get("cells", 1)),
        counting=bool(d.get("counting", False)),
        edge_width=int(d.get("edge-width", 1)),
        gain=str(d.get("gain", "none")),
        module_grid=pair("module-grid"),
        module_gap=pair("module-gap") or (0, 0),
        module_order=str(d.get("module-order", "row")),
        dataset=d.get("dataset"),
        pixel_mask=d.get("pixel-mask"),
    )


DETECTORS = {det.name.lower(): det for det in map(load_detector, sorted(HERE.glob("*.yaml")))}
AGIPD1M = DETECTORS["agipd1m"]


def get_detector(name: str | os.PathLike | Detector) -> Detector:
    """A :class:`Detector` from its name or a YAML file (KeyError if neither), or the detector itself."""
    if isinstance(name, Detector):
        return name
    if str(name).endswith((".yaml", ".yml")):
        try:
            return load_detector(name)
        except OSError as err:
            raise KeyError(f"cannot read the detector description {name}: {err.strerror}") from None
        except (ValueError, TypeError, yaml.YAMLError) as err:
            raise KeyError(f"bad detector description: {err}") from None
    try:
        return DETECTORS[str(name).lower()]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(d.name for d in DETECTORS.values())}, or a YAML file") from None
