"""Readers: runs on disk as lazy, labelled ``xarray`` datasets.

:func:`open_run` opens a run as an ``xarray.Dataset`` with dims ``(module, cell, frame,
y, x)`` and data variables ``analog`` (and ``gain`` for detectors that record their gain
stage; ``pixel_mask`` when the file has the manufacturer's mask); nothing is read until
compute. What a run is:

* a EuXFEL RAW run directory: AGIPD-like (XTDF) detectors, or JUNGFRAU (through
  EXtra-data; the detector's description says which);
* a directory of CBF frames (PILATUS; read with fabio);
* the HDF5 files of one acquisition (a directory, a glob pattern, or several paths;
  grouped by :mod:`rmm_dask.io.files`): CXI (CSPAD), NeXus/NXmx (EIGER, PILATUS),
  part files of a series, files that each hold one module (LAMBDA), or any stack of
  frames, at the detector's dataset or ``dataset``.

Readers only: the writers of these layouts (synthetic data, tests) are in :mod:`rmm_dask.synth`.
Shared reader helpers are in :mod:`.common`; where each lazy array's blocks are read from,
for streaming, in :mod:`.regions`.
"""

from __future__ import annotations

import os
import re

import xarray as xr

from ..detectors import Detector, get_detector
from ..errors import InputError
from .cbf import open_cbf_series
from .common import resolve_detector
from .euxfel import open_euxfel_run
from .files import acquisition, classify, directory_files, expand
from .hdf5 import open_hdf5_stack

_EUXFEL_FILE = re.compile(r"^(RAW|CORR)-R\d+-")

__all__ = ["open_run", "describe_files", "open_euxfel_run", "open_hdf5_stack", "open_cbf_series", "InputError"]


def open_run(
    path,
    detector: str | Detector | None = "AGIPD1M",
    *,
    dataset: str | None = None,
    cells_per_chunk: int = 1,
    modules=None,
    detector_id: str | None = None,
) -> xr.Dataset:
    """Open a run lazily: a EuXFEL RAW run or CBF directory, or the HDF5 files of one acquisition.

    ``path`` is a directory, a file, a glob pattern (expanded here, in name order) or a
    list of them. A directory of CBF frames or of EuXFEL RAW files (or any directory
    when the detector names no dataset and none is given) is read as before; otherwise
    the HDF5 files (a directory's ``.h5``, ``.nxs``, ... files, or those given) are one
    acquisition, grouped by their names (:mod:`rmm_dask.io.files`): part files join
    along frames, one-module files along modules, an NXmx master stands for its data
    files. Returns an ``xarray.Dataset``, dims ``(module, cell, frame, y, x)``, chunked
    by module and ``cells_per_chunk`` memory cells with all frames in a chunk; attrs
    ``path`` (what was given) and ``files`` (every file read, VDS sources included). Raises
    :class:`InputError` naming the file and the problem for anything unreadable,
    incomplete or mixed. ``modules`` selects module numbers; ``detector_id`` (e.g.
    ``SPB_DET_AGIPD1M-1``) picks one detector of a EuXFEL run that holds several. ``detector``
    None: the files describe it (:func:`describe_files`: NXmx and LAMBDA files; AGIPD1M for
    EuXFEL runs); ``attrs["detector_source"]`` says where the description came from, and
    ``attrs["detector_notes"]`` where its values did.
    """
    label, paths = expand(path)
    directories = [p for p in paths if os.path.isdir(p)]
    if directories and len(paths) > 1:
        raise InputError(directories[0], "is a directory among other paths: a run is one directory, or the files of one acquisition")
    if detector is None:
        det, source, notes = describe_files(paths)
    else:
        det, notes = resolve_detector(detector), []
        source = f"given: {os.fspath(detector) if isinstance(detector, (str, os.PathLike)) else det.name}"
    if directories:
        ds = _open_directory(paths[0], det, dataset=dataset, cells_per_chunk=cells_per_chunk, modules=modules, detector_id=detector_id)
    else:
        ds = _open_files(label, paths, det, dataset=dataset, cells_per_chunk=cells_per_chunk, modules=modules)
    ds.attrs["detector_source"], ds.attrs["detector_notes"] = source, notes
    return ds


def describe_files(paths: list[str]) -> tuple[Detector, str, list[str]]:
    """The detector of a run's files when no description is given: (Detector, where it came from, notes
    saying where each of its values came from).

    A EuXFEL RAW run of AGIPD is read as AGIPD1M (the default of rmm, as before); the HDF5 files
    of NeXus/NXmx detectors are described by their own metadata (:func:`rmm_dask.io.nxmx.describe_nxmx`:
    an NXmx master, or a LAMBDA's first module file). InputError (one line) for anything else: CBF
    frames, other detectors of EuXFEL runs, HDF5 files that are not NXmx; they need ``--detector``.
    """
    from .nxmx import describe_nxmx

    if len(paths) == 1 and os.path.isdir(paths[0]):
        names = sorted(os.listdir(paths[0]))
        if any(name.lower().endswith(".cbf") for name in names):
            raise InputError(paths[0], "holds CBF frames: give --detector (PILATUS300K, PILATUS6M or a YAML file)")
        raw = [name for name in names if _EUXFEL_FILE.match(name)]
        if raw:
            if not any("-AGIPD" in name for name in raw):
                raise InputError(paths[0], f"is a EuXFEL run of another detector than AGIPD ({raw[0]}): give --detector "
                                           "(JUNGFRAU1M, JUNGFRAU4M or a YAML file)")
            return get_detector("AGIPD1M"), "AGIPD1M, the default for EuXFEL runs", []
        files = directory_files(paths[0])
    else:
        files = sorted(p for p in paths if not os.path.isdir(p))
    masters = [p for p in files if os.path.basename(p).lower().endswith(("_master.h5", "_master.nxs"))]
    if not files:
        raise InputError(paths[0], "holds no HDF5 files to describe the detector from: give --detector")
    first = (masters or files)[0]
    det, notes = describe_nxmx(first)
    if det == get_detector("LAMBDA2M") and {classify(p).module for p in files} == {0}:  # one module: a 750K
        det = get_detector("LAMBDA750K")
        notes.append("one module file (m1): LAMBDA750K")
    return det, f"described by {first}", notes


def _open_directory(path: str, det: Detector, *, dataset, cells_per_chunk, modules, detector_id) -> xr.Dataset:
    names = os.listdir(path)
    if any(name.lower().endswith(".cbf") for name in names):
        return open_cbf_series(path, det, modules=modules)
    if any(_EUXFEL_FILE.match(name) for name in names) or not (dataset or det.dataset):
        return open_euxfel_run(path, det, cells_per_chunk=cells_per_chunk, modules=modules, detector_id=detector_id)
    return _open_files(path, directory_files(path), det, dataset=dataset, cells_per_chunk=cells_per_chunk, modules=modules)


def _open_files(label: str, paths: list[str], det: Detector, *, dataset, cells_per_chunk, modules) -> xr.Dataset:
    for p in paths:
        if p.lower().endswith(".cbf"):
            raise InputError(p, f"is one CBF frame: open the directory of the run's frames, {os.path.dirname(p)}")
        if not dataset and _EUXFEL_FILE.match(os.path.basename(p)):
            raise InputError(p, f"is one file of a EuXFEL run: open its run directory {os.path.dirname(p)}")
    if not dataset and not det.dataset:
        raise InputError(
            label, f"is a file: a plain HDF5 stack of {det.name} needs the path of its (frame, [module,] y, x) dataset inside the file"
        )
    acq = acquisition(paths, det.n_modules, label)
    stack = acq.parts[0] if acq.modules == [None] else dict(zip(acq.modules, acq.parts))
    return open_hdf5_stack(stack, dataset, det, cells_per_chunk=cells_per_chunk, modules=modules, label=label)
