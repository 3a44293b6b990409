"""Plain HDF5 stacks, and the shared "open an HDF5 file or say what is wrong with it".

:func:`open_hdf5_stack` reads a dataset of frames, ``(frame, y, x)`` or
``(frame, module, y, x)``, as the same lazy dataset as a EuXFEL run: dims
``(module, cell, frame, y, x)`` with a single memory cell (id 0) and no gain
indicator. One read task per module; tasks carry the file path, never an open file.
"""

from __future__ import annotations

import os
import re

import dask.array as da
import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle, LZ4, Zstd, ... so compressed data decodes)
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from h5py import h5s

from ..detectors import Detector, get_detector
from ..errors import InputError

__all__ = ["open_hdf5", "open_hdf5_stack", "resolve_detector"]

DIMS = ("module", "cell", "frame", "y", "x")
_TRUNCATED = re.compile(r"truncated file: eof = (\d+).*stored_eof = (\d+)")


# ---------------------------------------------------------------------------- shared helpers


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
    """A dask array from ``{block index: (function, argument)}`` read tasks with no dependencies."""
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


# ---------------------------------------------------------------------------- stacks


class _StackBlock:
    """One read task of a stack: all frames of one module, as (1, 1, frame, y, x)."""

    __slots__ = ("path", "dataset", "module", "shape", "dtype")

    def __init__(self, path: str, dataset: str, module: int | None, shape: tuple, dtype: str):
        self.path = path
        self.dataset = dataset
        self.module = module  #: index along the dataset's module axis; None for (frame, y, x)
        self.shape = shape  #: (frame, y, x)
        self.dtype = dtype

    def __reduce__(self):
        return type(self), (self.path, self.dataset, self.module, self.shape, self.dtype)


def _read_stack_block(block: _StackBlock) -> np.ndarray:
    """Read (1, 1, frame, y, x) of one module, one HDF5 chunk of frames at a time, straight into the output.

    One read per chunk: a single selection spanning many chunks is several times slower in HDF5 1.14.
    """
    n_frames, ny, nx = block.shape
    out = np.empty((1, 1, n_frames, ny, nx), dtype=block.dtype)
    try:
        with h5py.File(block.path, "r") as f:
            ds = f[block.dataset]
            if ds.shape[0] < n_frames or ds.shape[-2:] != (ny, nx):
                raise InputError(block.path, f"dataset {block.dataset} changed shape since it was opened: {ds.shape}")
            if not ds.size:
                return out
            step = ds.chunks[0] if ds.chunks else max(1, (4 << 20) // (ny * nx * ds.dtype.itemsize))
            file_space = ds.id.get_space()
            for f0 in range(0, n_frames, step):
                n = min(step, n_frames - f0)
                if block.module is None:
                    file_space.select_hyperslab((f0, 0, 0), (n, ny, nx))
                else:
                    file_space.select_hyperslab((f0, block.module, 0, 0), (n, 1, ny, nx))
                mem_shape = (n, ny, nx) if block.module is None else (n, 1, ny, nx)
                ds.id.read(h5s.create_simple(mem_shape), file_space, out[0, 0, f0 : f0 + n].reshape(mem_shape))
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise InputError(block.path, f"cannot read dataset {block.dataset}: {e}") from None
    return out


def _candidates(f: h5py.File) -> list[str]:
    """Datasets that could be stacks of frames (3 or 4 dims), for error messages."""
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim in (3, 4) and len(found) < 5:
            found.append("/" + name)

    try:
        f.visititems(visit)
    except Exception:  # noqa: BLE001  (a broken link must not hide the real problem)
        pass
    return found


def open_hdf5_stack(
    path: str | os.PathLike,
    dataset: str,
    detector: str | Detector = "AGIPD1M",
    *,
    cells_per_chunk: int = 1,
    modules=None,
) -> xr.Dataset:
    """Open a plain HDF5 stack of frames as a lazy ``(module, cell, frame, y, x)`` dataset.

    ``dataset`` is ``(frame, y, x)`` (one module, number 0) or ``(frame, module, y, x)``,
    of any integer or float dtype (NaN in float data means missing); ``(y, x)`` must be
    the detector's module shape. The result has one memory cell (id 0) and the data
    variable ``analog`` only. ``cells_per_chunk`` is accepted for symmetry with
    EuXFEL runs (a stack has one cell). ``modules`` selects module numbers.
    Nothing but the dataset's metadata is read here.
    """
    det = resolve_detector(detector)
    if cells_per_chunk < 1:
        raise ValueError("cells_per_chunk must be at least 1")
    path = os.path.abspath(os.fspath(path))
    if not dataset:
        raise InputError(path, "no dataset given: name the (frame, y, x) or (frame, module, y, x) dataset to read")
    with open_hdf5(path) as f:
        try:
            obj = f.get(dataset)
        except (OSError, KeyError, ValueError) as e:
            raise InputError(path, f"cannot open dataset {dataset}: {e}") from None
        if obj is None:
            hint = _candidates(f)
            hint = f" (datasets with 3 or 4 dims: {', '.join(hint)})" if hint else ""
            raise InputError(path, f"no dataset {dataset}{hint}")
        if not isinstance(obj, h5py.Dataset):
            raise InputError(path, f"{dataset} is a group, not a dataset")
        shape, dtype = tuple(obj.shape), obj.dtype
    if dtype.kind in "iuf":
        dtype = dtype.newbyteorder("=")  # read into native byte order
    where = f"dataset {dataset}"
    if dtype.kind not in "iuf":
        raise InputError(path, f"{where} holds {dtype} values, expected integer or float numbers")
    if len(shape) not in (3, 4):
        raise InputError(path, f"{where} has shape {shape}, expected (frame, y, x) or (frame, module, y, x)")
    if shape[-2:] != tuple(det.module_shape):
        raise InputError(
            path,
            f"{where} has shape {shape}: frames of {shape[-2:]}, expected {tuple(det.module_shape)} for {det.name}",
        )
    n_frames = shape[0]
    if n_frames < 2:
        raise InputError(path, f"{where} has {n_frames} frame(s), need at least 2")
    if len(shape) == 4:
        n_mod = shape[1]
        if n_mod < 1 or n_mod > det.n_modules:
            raise InputError(path, f"{where} has shape {shape}: {n_mod} modules, {det.name} has {det.n_modules}")
        available = list(range(n_mod))
    else:
        available = [0]
    if modules is not None:
        wanted = sorted({int(m) for m in np.atleast_1d(modules)})
        missing = [m for m in wanted if m not in available]
        if missing:
            raise InputError(path, f"{where} has no module {missing} (modules {available[0]}..{available[-1]})")
    else:
        wanted = available

    frame_shape = (n_frames, *det.module_shape)
    name = "hdf5-stack-" + tokenize(file_token([path]), dataset, shape, str(dtype), wanted)
    tasks = {
        (i, 0, 0, 0, 0): (
            _read_stack_block,
            _StackBlock(path, dataset, None if len(shape) == 3 else m, frame_shape, dtype.str),
        )
        for i, m in enumerate(wanted)
    }
    chunks = ((1,) * len(wanted), (1,), (n_frames,), (det.module_shape[0],), (det.module_shape[1],))
    analog = graph_array(name, tasks, chunks, dtype)
    return xr.Dataset(
        {"analog": (DIMS, analog)},
        coords={
            "module": ("module", np.asarray(wanted, dtype=np.int64)),
            "cell": ("cell", np.zeros(1, dtype=np.int64)),
            "frame": ("frame", np.arange(n_frames, dtype=np.int64)),
        },
        attrs={
            "detector": det.name,
            "source": dataset,
            "path": path,
            "run": -1,
            "format": "hdf5-stack",
            "notes": [],
            "files": [path],
        },
    )
