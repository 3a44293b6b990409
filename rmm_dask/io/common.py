"""What every reader shares: opening an HDF5 file or saying what is wrong with it, the
read-task graph of a lazy array, the identity of files, and the dataset of a run with one
memory cell.

Nothing here reads pixel data; the readers (:mod:`.hdf5`, :mod:`.euxfel`, :mod:`.cbf`) build
their lazy arrays with :func:`graph_array` and name their read regions in :mod:`.regions`.
"""

from __future__ import annotations

import os
import re

import dask.array as da
import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle, LZ4, Zstd, ... so compressed data decodes)
import numpy as np
import xarray as xr
from dask.highlevelgraph import HighLevelGraph

from ..detectors import Detector, description, get_detector
from ..errors import InputError

__all__ = [
    "DIMS",
    "resolve_detector",
    "open_hdf5",
    "graph_array",
    "file_token",
    "negative_as_nan",
    "one_cell_dataset",
    "select_modules",
]

DIMS = ("module", "cell", "frame", "y", "x")  #: dims of every run's data variables
_TRUNCATED = re.compile(r"truncated file: eof = (\d+).*stored_eof = (\d+)")


def resolve_detector(detector: str | Detector) -> Detector:
    """A :class:`Detector` from itself or its name (ValueError for an unknown name)."""
    try:
        return get_detector(detector)
    except KeyError as e:
        raise ValueError(e.args[0]) from None


def open_hdf5(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only, or raise :class:`InputError` saying what is wrong with it.

    Distinguishes a missing file, a directory, an unreadable file, an empty file, a
    file that is not HDF5, and a truncated or otherwise corrupt HDF5 file.
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise InputError(path, "no such file")
    if os.path.isdir(path):
        raise InputError(path, "is a directory, expected an HDF5 file")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.read(8)
    except OSError as e:
        raise InputError(path, f"cannot read the file ({e.strerror or e})") from None
    if size == 0:
        raise InputError(path, "empty file, expected HDF5")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        message = str(e)
    match = _TRUNCATED.search(message)
    if match:
        raise InputError(path, f"truncated HDF5 file ({match[1]} of {match[2]} bytes; copy or transfer incomplete?)")
    if not h5py.is_hdf5(path):
        raise InputError(path, "not an HDF5 file")
    raise InputError(path, f"corrupt or truncated HDF5 file ({message})")


def graph_array(name: str, tasks: dict, chunks: tuple, dtype) -> da.Array:
    """A dask array from ``{block index: (function, *arguments)}`` read tasks with no dependencies."""
    dsk = {(name, *index): task for index, task in tasks.items()}
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return da.Array(graph, name, chunks=chunks, dtype=dtype)


def file_token(paths) -> list:
    """What identifies the content of files for a graph name: path, size and mtime of each."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((os.path.abspath(p), st.st_size, st.st_mtime_ns))
    return out


def negative_as_nan(block: np.ndarray) -> np.ndarray:
    """Float32 counts with the negative values (gaps, bad pixels of counting detectors) as NaN."""
    out = block.astype(np.float32)
    out[block < 0] = np.nan
    return out


def one_cell_dataset(data: dict, modules: list, n_frames: int, det: Detector, cells=(0,), **attrs) -> xr.Dataset:
    """The Dataset of a run with one memory cell (id 0; or the ``cells`` given): ``data`` variables,
    coordinates and attrs."""
    return xr.Dataset(
        data,
        coords={
            "module": ("module", np.asarray(modules, dtype=np.int64)),
            "cell": ("cell", np.asarray(cells, dtype=np.int64)),
            "frame": ("frame", np.arange(n_frames, dtype=np.int64)),
        },
        attrs={"detector": det.name, "detector_description": description(det), "run": -1, **attrs},
    )


def select_modules(path: str, available: list, modules, what: str) -> list:
    """The module numbers asked for (all ``available`` for None), or InputError naming the missing ones."""
    if modules is None:
        return available
    wanted = sorted({int(m) for m in np.atleast_1d(modules)})
    missing = [m for m in wanted if m not in available]
    if missing:
        raise InputError(path, f"{what} has no module {missing} (modules {available[0]}..{available[-1]})")
    return wanted
