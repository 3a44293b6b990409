"""Runs of CBF frames (PILATUS, and EIGER converted to CBF): one frame per file, read with fabio.

A run is a directory of ``*.cbf`` files, in name order. Opening reads only the text
header of the first file (shape and element type); each read task decodes a block of
frames and cuts them into modules; the blocks are then rechunked to one module and all
frames per chunk, the pipeline's unit. A run of one module registers its frames as one
region (:mod:`rmm_dask.io.regions`) that the pipeline streams block by block. Values below 0 (PILATUS marks gaps -1 and bad
pixels -2) are missing (NaN).
"""

from __future__ import annotations

import os
import re

import numpy as np
import xarray as xr
from dask.base import tokenize

from ..detectors import Detector
from ..errors import InputError
from . import regions
from .common import DIMS, file_token, graph_array, negative_as_nan, one_cell_dataset, resolve_detector, select_modules

__all__ = ["open_cbf_series", "FRAMES_PER_TASK"]

FRAMES_PER_TASK = 16
_HEADER_KEYS = {
    "fast": re.compile(rb"X-Binary-Size-Fastest-Dimension:\s*(\d+)"),
    "slow": re.compile(rb"X-Binary-Size-Second-Dimension:\s*(\d+)"),
    "type": re.compile(rb"X-Binary-Element-Type:\s*\"?([^\"\r\n]+)"),
}


def _cbf_header(path: str) -> tuple[tuple[int, int], str]:
    """(slow, fast) frame shape and element type from a CBF file's header, without decoding its data."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as e:
        raise InputError(path, f"cannot read the file ({e.strerror})") from None
    found = {k: p.search(head) for k, p in _HEADER_KEYS.items()}
    if not head.startswith(b"###CBF") or not all(found.values()):
        raise InputError(path, "not a CBF file with a binary image (no ###CBF magic or X-Binary-Size-* header)")
    return (int(found["slow"][1]), int(found["fast"][1])), found["type"][1].decode().strip()


class _CbfBlock:
    """What one read task decodes: the frames ``paths`` (from frame ``start`` of the run), cut into ``wanted`` modules."""

    __slots__ = ("paths", "det", "wanted", "layout", "start")

    def __init__(self, paths: tuple, det: Detector, wanted: tuple, layout: str, start: int):
        self.paths, self.det, self.wanted, self.layout, self.start = tuple(paths), det, tuple(wanted), layout, start

    @property
    def n_frames(self) -> int:
        return len(self.paths)

    def frames(self, start: int, stop: int) -> "_CbfBlock":
        """Only the frames of this block among the run's frames ``[start, stop)`` (none when they do not meet)."""
        a = min(len(self.paths), max(0, int(start) - self.start))
        b = max(a, min(len(self.paths), int(stop) - self.start))
        return _CbfBlock(self.paths[a:b], self.det, self.wanted, self.layout, self.start + a)

    def __reduce__(self):
        return type(self), (self.paths, self.det, self.wanted, self.layout, self.start)


def _read_cbf_block(block: _CbfBlock) -> np.ndarray:
    """Decode frames and cut them into modules: float32 (module, 1, frame, y, x), negatives NaN."""
    import fabio

    paths, det, wanted, layout = block.paths, block.det, block.wanted, block.layout
    ny, nx = det.module_shape
    out = np.empty((len(wanted), 1, len(paths), ny, nx), dtype=np.float32)
    for i, path in enumerate(paths):
        try:
            frame = fabio.open(path).data
        except Exception as e:  # noqa: BLE001  (fabio raises many kinds for damaged files)
            raise InputError(path, f"cannot decode the CBF frame: {e}") from None
        expected = det.frame_shape if layout == "frame" else tuple(det.module_shape)
        if frame.shape != expected:
            raise InputError(path, f"frame of shape {frame.shape}, expected {expected} like the run's first frame")
        modules = det.split_frame(frame) if layout == "frame" else frame[None]
        out[:, 0, i] = negative_as_nan(modules[list(wanted)])
    return out


def open_cbf_series(path: str | os.PathLike, detector: str | Detector, *, modules=None) -> xr.Dataset:
    """Open a directory of CBF frames as a lazy ``(module, cell, frame, y, x)`` dataset (``analog`` float32)."""
    det = resolve_detector(detector)
    run_dir = os.path.abspath(os.fspath(path))
    files = sorted(os.path.join(run_dir, f) for f in os.listdir(run_dir) if f.lower().endswith(".cbf"))
    if len(files) < 2:
        raise InputError(run_dir, f"{len(files)} CBF frame(s), need at least 2")
    shape, element = _cbf_header(files[0])
    if det.frame_shape is not None and shape == det.frame_shape:
        layout, available = "frame", list(range(det.n_modules))
    elif shape == tuple(det.module_shape):
        layout, available = "module", [0]
    else:
        expected = det.frame_shape or tuple(det.module_shape)
        raise InputError(files[0], f"frames of {shape} ({element}), expected {expected} for {det.name}")
    wanted = select_modules(run_dir, available, modules, f"{det.name} frames")
    n_frames = len(files)
    starts = list(range(0, n_frames, FRAMES_PER_TASK))
    name = "cbf-" + tokenize(file_token(files), det, wanted)
    tasks = {
        (0, 0, j, 0, 0): (_read_cbf_block, _CbfBlock(files[s : s + FRAMES_PER_TASK], det, wanted, layout, s))
        for j, s in enumerate(starts)
    }
    chunks = ((len(wanted),), (1,), tuple(min(FRAMES_PER_TASK, n_frames - s) for s in starts), (det.module_shape[0],), (det.module_shape[1],))
    blocks = graph_array(name, tasks, chunks, np.float32)
    analog = blocks.rechunk({0: 1, 2: n_frames})  # the pipeline's chunk: one module, all frames
    grid = np.empty((len(wanted), 1), dtype=object)
    for i, m in enumerate(wanted):
        grid[i, 0] = _CbfBlock(files, det, [m], layout, 0)
    # one module: its frames can be streamed; with several, a module's region decodes whole frames
    # to cut its pixels out, so the regions serve only to read a few frames (the flat check)
    regions.register(analog, _read_cbf_block, grid, stream=len(wanted) == 1)
    return one_cell_dataset(
        {"analog": (DIMS, analog)}, wanted, n_frames, det,
        source="cbf", path=run_dir, format=f"cbf ({layout} layout, {element})", notes=[], files=files,
    )
