"""Detector descriptions: module geometry, ASIC tiling, gain stages, kind of sensor.

Kernels take what they need from a :class:`Detector` (window shapes, edge width,
minimum sigma); nothing here reads data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detector:
    """What the mask maker needs to know about a detector."""

    name: str
    n_modules: int
    module_shape: tuple[int, int]  #: (y, x) pixels of one module
    asic_shape: tuple[int, int]  #: (y, x) pixels of one ASIC; the local model window
    gain_stages: tuple[str, ...] = ("high",)
    n_cells: int = 1
    counting: bool = False  #: photon counting: robust sigma floored at 1/6 (paper 2.1)
    edge_width: int = 1  #: pixels at each ASIC border masked without analysis

    @property
    def min_sigma(self) -> float:
        return 1.0 / 6.0 if self.counting else 0.0

    def asic_edges(self) -> np.ndarray:
        """Boolean (y, x) map of the ASIC edge pixels of one module."""
        ny, nx = self.module_shape
        ay, ax = self.asic_shape
        if ny % ay or nx % ax:
            raise ValueError(f"{self.name}: module {self.module_shape} is not tiled by ASICs {self.asic_shape}")
        w = self.edge_width
        edge = np.zeros(self.module_shape, dtype=bool)
        if w <= 0:
            return edge
        yy = np.arange(ny) % ay
        xx = np.arange(nx) % ax
        edge[(yy < w) | (yy >= ay - w), :] = True
        edge[:, (xx < w) | (xx >= ax - w)] = True
        return edge


AGIPD1M = Detector(
    name="AGIPD1M",
    n_modules=16,
    module_shape=(512, 128),
    asic_shape=(64, 64),
    gain_stages=("high", "medium", "low"),
    n_cells=352,
)

DETECTORS = {d.name.lower(): d for d in (AGIPD1M,)}


def get_detector(name: str | Detector) -> Detector:
    """A :class:`Detector` from its name (KeyError for an unknown one), or the detector itself."""
    if isinstance(name, Detector):
        return name
    try:
        return DETECTORS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(sorted(DETECTORS))}") from None
