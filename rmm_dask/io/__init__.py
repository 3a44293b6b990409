"""Readers and writers: runs on disk as lazy, labelled ``xarray`` datasets.

:func:`open_run` opens a EuXFEL RAW run directory or a plain HDF5 stack as an
``xarray.Dataset`` with dims ``(module, cell, frame, y, x)`` and data variables
``analog`` (and ``gain`` for raw data with a gain indicator); nothing is read until
compute. :func:`write_raw_run` writes arrays as a EuXFEL RAW run (synthetic data, tests).
"""

from __future__ import annotations

import os
import re

import xarray as xr

from ..detectors import Detector
from ..errors import InputError
from .euxfel import open_euxfel_run, write_raw_run
from .hdf5 import open_hdf5_stack

__all__ = ["open_run", "open_euxfel_run", "open_hdf5_stack", "write_raw_run", "InputError"]


def open_run(
    path: str | os.PathLike,
    detector: str | Detector = "AGIPD1M",
    *,
    dataset: str | None = None,
    cells_per_chunk: int = 1,
    modules=None,
    detector_id: str | None = None,
) -> xr.Dataset:
    """Open a run lazily: a directory is a EuXFEL RAW run, a file a plain HDF5 stack (``dataset`` required).

    Returns an ``xarray.Dataset``, dims ``(module, cell, frame, y, x)``, chunked by
    module and ``cells_per_chunk`` memory cells with all frames in a chunk. Raises
    :class:`InputError` naming the file and the problem for anything unreadable.
    ``modules`` selects module numbers; ``detector_id`` (e.g. ``SPB_DET_AGIPD1M-1``)
    picks one detector of a run that holds several.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise InputError(path, "no such file or directory")
    if os.path.isdir(path):
        return open_euxfel_run(
            path, detector, cells_per_chunk=cells_per_chunk, modules=modules, detector_id=detector_id
        )
    if not dataset and re.match(r"^(RAW|CORR)-R\d+-", os.path.basename(path)):
        raise InputError(path, f"is one file of a EuXFEL run: open its run directory {os.path.dirname(path)}")
    if not dataset:
        raise InputError(
            path, "is a file: a plain HDF5 stack needs the path of its (frame, [module,] y, x) dataset inside the file"
        )
    return open_hdf5_stack(path, dataset, detector, cells_per_chunk=cells_per_chunk, modules=modules)
