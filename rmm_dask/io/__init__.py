"""Readers and writers: runs on disk as lazy, labelled ``xarray`` datasets.

:func:`open_run` opens a run as an ``xarray.Dataset`` with dims ``(module, cell, frame,
y, x)`` and data variables ``analog`` (and ``gain`` for detectors that record their gain
stage; ``pixel_mask`` when the file has the manufacturer's mask); nothing is read until
compute. What a run is:

* a EuXFEL RAW run directory: AGIPD-like (XTDF) detectors, or JUNGFRAU (through
  EXtra-data; the detector's description says which);
* a directory of CBF frames (PILATUS; read with fabio);
* an HDF5 file: CXI (CSPAD), NeXus/NXmx (EIGER, PILATUS), or any stack of frames, at
  the detector's dataset or ``dataset``.

:func:`write_raw_run` and :func:`write_jungfrau_run` write arrays as EuXFEL RAW runs
(synthetic data, tests).
"""

from __future__ import annotations

import os
import re

import xarray as xr

from ..detectors import Detector
from ..errors import InputError
from .cbf import open_cbf_series
from .euxfel import open_euxfel_run
from .euxfel_write import write_jungfrau_run, write_raw_run
from .hdf5 import open_hdf5_stack, resolve_detector

__all__ = ["open_run", "open_euxfel_run", "open_hdf5_stack", "open_cbf_series", "write_raw_run", "write_jungfrau_run", "InputError"]


def open_run(
    path: str | os.PathLike,
    detector: str | Detector = "AGIPD1M",
    *,
    dataset: str | None = None,
    cells_per_chunk: int = 1,
    modules=None,
    detector_id: str | None = None,
) -> xr.Dataset:
    """Open a run lazily: a EuXFEL RAW run or CBF directory, or an HDF5 file (see the module docstring).

    Returns an ``xarray.Dataset``, dims ``(module, cell, frame, y, x)``, chunked by
    module and ``cells_per_chunk`` memory cells with all frames in a chunk. Raises
    :class:`InputError` naming the file and the problem for anything unreadable.
    ``modules`` selects module numbers; ``detector_id`` (e.g. ``SPB_DET_AGIPD1M-1``)
    picks one detector of a run that holds several.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise InputError(path, "no such file or directory")
    det = resolve_detector(detector)
    if os.path.isdir(path):
        if any(name.lower().endswith(".cbf") for name in os.listdir(path)):
            return open_cbf_series(path, det, modules=modules)
        return open_euxfel_run(path, det, cells_per_chunk=cells_per_chunk, modules=modules, detector_id=detector_id)
    if path.lower().endswith(".cbf"):
        raise InputError(path, f"is one CBF frame: open the directory of the run's frames, {os.path.dirname(path)}")
    if not dataset and re.match(r"^(RAW|CORR)-R\d+-", os.path.basename(path)):
        raise InputError(path, f"is one file of a EuXFEL run: open its run directory {os.path.dirname(path)}")
    if not dataset and not det.dataset:
        raise InputError(
            path, f"is a file: a plain HDF5 stack of {det.name} needs the path of its (frame, [module,] y, x) dataset inside the file"
        )
    return open_hdf5_stack(path, dataset, det, cells_per_chunk=cells_per_chunk, modules=modules)
