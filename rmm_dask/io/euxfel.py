"""European XFEL RAW runs of AGIPD-like (XTDF) and JUNGFRAU detectors: the lazy reader
(the writers are in :mod:`rmm_dask.synth.write_euxfel`).

Layout of a RAW run, as the DAQ writes it (file format 1.x): one file per module
(aggregator ``AGIPDnn``) and sequence, ``RAW-R0001-AGIPD00-S00000.h5``, each holding
one instrument source ``<detector id>/DET/<module>CH0:xtdf`` with

* ``INSTRUMENT/<source>/image/data``: ``(frame, 2, y, x)`` uint16, ``[:, 0]`` the
  analog signal and ``[:, 1]`` the digital gain indicator, one frame per HDF5 chunk;
  frames are stored train-major, memory-cell-minor;
* ``image/{cellId,pulseId,trainId,length,status}``: ``(frame, 1)`` per-frame metadata;
* ``header``, ``detector``, ``trailer``: one entry per train (the XTDF train envelope);
* ``INDEX/trainId`` (+ ``timestamp``, ``flag``, ``origin``) and, per source and group,
  ``INDEX/<source>/<group>/{first,count}``;
* ``METADATA``: ``dataFormatVersion``, ``dataSources/{dataSourceId,root,deviceId}``, run
  and sequence numbers, dates.

:func:`open_euxfel_run` reads the run's metadata through EXtra-data (sources, trains,
per-frame cell ids; :mod:`rmm_dask.io.euxfel_index`), keeps the trains that have the same cell sequence in every
module, and builds ONE dask array ``(module, cell, 2, frame, y, x)`` from its own
h5py read tasks, one per (module, block of cells): each task reads the frames of its
cells for all kept trains (one read per frame, in file order) into its output, where
each (cell, plane) is a contiguous (frame, y, x) array. ``analog`` and ``gain`` are
slices of that array, so computing both reads once. The blocks' regions
(:class:`_RawBlock`, ``frames(start, stop)``) are registered in :mod:`rmm_dask.io.regions`,
so that the pipeline streams a block's frames instead of reading them all at once.
"""

from __future__ import annotations

import os
from functools import partial

import h5py
import numpy as np
import xarray as xr
from dask.base import tokenize
from h5py import h5s

from ..detectors import Detector, description
from ..errors import InputError
from . import regions
from .common import DIMS, file_token, graph_array, resolve_detector
from .euxfel_index import (
    check_sequences,
    find_sources,
    flavour_of,
    module_frames,
    module_ranges,
    open_run_directory,
    run_number,
    select_trains,
    train_gap_note,
    train_rows,
)

__all__ = ["open_euxfel_run"]


class _RawBlock:
    """What one read task needs: plain values only (paths, dataset name, integer arrays), so it pickles."""

    __slots__ = ("files", "datasets", "per_train", "segments", "n_cells", "positions", "n_frames", "frame_shape")

    def __init__(self, files, datasets, per_train, segments, n_cells, positions, n_frames, frame_shape):
        self.files = tuple(files)  #: sequence files of the module
        self.datasets = tuple(datasets)  #: image.data, or data.adc and data.gain, inside them
        self.per_train = per_train  #: entries are trains holding all cells (JUNGFRAU), not frames
        #: int64 (segment, 4): file index, first entry in the file, trains, first output frame;
        #: the trains of a segment are consecutive in the file (n_cells entries each, or one)
        self.segments = segments
        self.n_cells = n_cells
        self.positions = tuple(positions)  #: positions in the cell sequence of the cells of this block
        self.n_frames = n_frames
        self.frame_shape = tuple(frame_shape)

    def frames(self, start: int, stop: int) -> "_RawBlock":
        """The same cells in the kept frames ``[start, stop)`` of the run only (cut to the frames it has)."""
        start, stop = max(0, int(start)), min(int(stop), self.n_frames)
        if stop <= start:
            raise ValueError(f"frames({start}, {stop}) of a block of {self.n_frames} frames holds no frame")
        rows = self.segments.copy()
        lo = np.maximum(rows[:, 3], start)
        hi = np.minimum(rows[:, 3] + rows[:, 2], stop)
        step = 1 if self.per_train else self.n_cells  # file entries per train
        rows[:, 1] += (lo - rows[:, 3]) * step
        rows[:, 2] = hi - lo
        rows[:, 3] = lo - start
        rows = rows[hi > lo]
        return _RawBlock(self.files, self.datasets, self.per_train, rows, self.n_cells, self.positions, stop - start, self.frame_shape)

    def __reduce__(self):
        return type(self), (
            self.files,
            self.datasets,
            self.per_train,
            self.segments,
            self.n_cells,
            self.positions,
            self.n_frames,
            self.frame_shape,
        )


def _read_raw_block(block: _RawBlock) -> np.ndarray:
    """Read (1, cells, 2, frame, y, x): for each cell of the block, its frame in every kept train.

    One HDF5 read per frame (a frame is one chunk), in file order: a strided hyperslab
    over the same frames is 30-60 times slower in HDF5 1.14. The analog and gain planes
    of a frame go to separate places, so that each (cell, plane) is one contiguous
    (frame, y, x) array: the kernels then read it in place instead of copying it.
    """
    planes, ny, nx = block.frame_shape
    out = np.empty((1, len(block.positions), planes, block.n_frames, ny, nx), dtype=np.uint16)
    for index, path in enumerate(block.files):
        segments = block.segments[block.segments[:, 0] == index]
        if not len(segments):
            continue
        try:
            with h5py.File(path, "r") as f:
                if block.per_train:
                    for plane, dataset in enumerate(block.datasets):
                        _read_cells_per_train(f[dataset], path, dataset, segments, block, out, plane)
                else:
                    _read_frames(f[block.datasets[0]], path, block.datasets[0], segments, block, out)
        except InputError:
            raise
        except (OSError, KeyError, ValueError) as e:
            raise InputError(path, f"cannot read {block.datasets[0]}: {e}") from None
    return out


def _plane(plane: int, raw: np.ndarray) -> np.ndarray:
    """The analog (0) or gain (1) plane of what :func:`_read_raw_block` read: (1, cells, frame, y, x)."""
    return raw[:, :, plane]


def _read_frames(ds, path, dataset, segments, block, out) -> None:
    """XTDF: (frame, 2, y, x) entries, a train's cells consecutive; both planes at once."""
    dsid = ds.id
    file_space = dsid.get_space()
    if file_space.get_simple_extent_dims()[1:] != block.frame_shape:
        raise InputError(path, f"{dataset} changed shape since the run was opened")
    frame = np.empty((1, *block.frame_shape), dtype=np.uint16)
    mem_space = h5s.create_simple((1, *block.frame_shape))
    count = (1, *block.frame_shape)
    for _, start, n, dest in segments.tolist():
        for k in range(n):
            for i, pos in enumerate(block.positions):
                file_space.select_hyperslab((start + k * block.n_cells + pos, 0, 0, 0), count)
                dsid.read(mem_space, file_space, frame)
                out[0, i, :, dest + k] = frame[0]


def _read_cells_per_train(ds, path, dataset, segments, block, out, plane) -> None:
    """JUNGFRAU: (train, cell, y, x) entries; one plane, read straight into the output."""
    _, ny, nx = block.frame_shape
    dsid = ds.id
    file_space = dsid.get_space()
    dims = file_space.get_simple_extent_dims()
    if dims[1] != block.n_cells or dims[2:] != (ny, nx):
        raise InputError(path, f"{dataset} changed shape since the run was opened")
    mem_space = h5s.create_simple((1, 1, ny, nx))
    for _, start, n, dest in segments.tolist():
        for k in range(n):
            for i, pos in enumerate(block.positions):
                file_space.select_hyperslab((start + k, pos, 0, 0), (1, 1, ny, nx))
                dsid.read(mem_space, file_space, out[0, i, plane, dest + k : dest + k + 1].reshape(1, 1, ny, nx))


def open_euxfel_run(
    path: str | os.PathLike,
    detector: str | Detector = "AGIPD1M",
    *,
    cells_per_chunk: int = 1,
    modules=None,
    detector_id: str | None = None,
) -> xr.Dataset:
    """Open a EuXFEL RAW run directory as a lazy ``(module, cell, frame, y, x)`` dataset.

    Data variables ``analog`` and ``gain`` (uint16), slices of one dask array whose
    chunks are one module x ``cells_per_chunk`` cells x all frames. Coordinates:
    ``module``, ``cell`` (memory cell ids in the order of the train), ``frame``
    (0..F-1) with ``train_id`` on it, and ``pulse_id`` on ``cell`` when every train
    has the same pulse ids. Trains missing in some module, or whose cell sequence
    differs from the run's, are dropped and said so in ``attrs["notes"]``, as are train ids
    missing from every file. A run with a file of another run or proposal, a sequence file
    missing, or a train in two sequence files is refused (InputError naming the file;
    :func:`rmm_dask.io.euxfel_index.check_identity`, :func:`~rmm_dask.io.euxfel_index.check_sequences`).
    ``modules`` selects module numbers; ``detector_id`` (e.g. ``SPB_DET_AGIPD1M-1``)
    picks a detector when the run holds several. Only metadata is read here.
    """
    det = resolve_detector(detector)
    if cells_per_chunk < 1:
        raise ValueError("cells_per_chunk must be at least 1")
    run_dir = os.path.abspath(os.fspath(path))
    if not os.path.exists(run_dir):
        raise InputError(run_dir, "no such file or directory")
    if not os.path.isdir(run_dir):
        raise InputError(run_dir, "not a directory (a EuXFEL run is a directory of HDF5 files)")

    run = open_run_directory(run_dir)
    detector_id, sources = find_sources(run, run_dir, det, detector_id, modules)
    mods = [module_frames(run, m, s, det) for m, s in sources.items()]
    run_trains = np.asarray(run.train_ids, dtype=np.int64)
    n_run_trains = run_trains.size
    for fa in run.files:  # metadata read: close EXtra-data's handles now rather than at garbage collection,
        fa.close()  # or a file replaced or damaged meanwhile is read through the stale handle
    del run
    check_sequences(mods, run_dir)  # every sequence file there, each train in one of them
    kept, reference, notes = select_trains(mods, run_dir)
    cell_ids = np.frombuffer(reference, dtype=np.uint16).astype(np.int64)
    n_cells, n_frames = cell_ids.size, kept.size
    absent = sorted(set(range(det.n_modules)) - {m.number for m in mods}) if modules is None else []
    if absent:
        notes.insert(0, f"{det.n_modules - len(absent)} of {det.name}'s {det.n_modules} modules in the run; no data source for {module_ranges(absent)}")
    with_data = set().union(*(m.trains for m in mods))
    only_suspect = set().union(*(m.suspect for m in mods)) - with_data
    if only_suspect:
        notes.append(
            f"ignored {len(only_suspect)} of {n_run_trains} trains flagged suspect (INDEX/flag = 0) in every module"
        )
    no_frames = n_run_trains - len(with_data) - len(only_suspect)
    if no_frames > 0:
        notes.append(f"{no_frames} of {n_run_trains} trains of the run have no frames of these modules")
    gap = train_gap_note([*run_trains.tolist(), *with_data, *only_suspect])
    if gap:
        notes.append(gap)

    flavour = flavour_of(det)
    pulse_keys = {m.pulses.get(int(t)) for m in mods for t in kept.tolist()}
    pulse_ids = None
    if len(pulse_keys) == 1 and None not in pulse_keys:
        pulse_ids = np.frombuffer(pulse_keys.pop(), dtype=np.uint64)
    elif not flavour.per_train:
        notes.append("pulse ids differ between trains: no pulse_id coordinate")

    frame_shape = (2, *det.module_shape)
    starts = list(range(0, n_cells, cells_per_chunk))
    cell_chunks = tuple(min(cells_per_chunk, n_cells - s) for s in starts)
    files = [p for m in mods for p in m.files]
    tasks, grid = {}, np.empty((len(mods), len(starts)), dtype=object)
    for i, mod in enumerate(mods):
        segments = train_rows(mod, kept, 1 if flavour.per_train else n_cells)
        used = sorted(set(segments[:, 0].tolist()))
        # keep only the files this module's kept trains are in, renumbered
        remap = np.full(len(mod.files), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        segments[:, 0] = remap[segments[:, 0]]
        mod_files = [mod.files[k] for k in used]
        datasets = [f"INSTRUMENT/{mod.source}/{name}" for name in flavour.datasets]
        for j, start in enumerate(starts):
            positions = range(start, start + cell_chunks[j])
            block = _RawBlock(mod_files, datasets, flavour.per_train, segments, n_cells, positions, n_frames, frame_shape)
            tasks[(i, j, 0, 0, 0, 0)] = (_read_raw_block, block)
            grid[i, j] = block
    name = "euxfel-raw-" + tokenize(
        file_token(files), detector_id, sorted(sources.items()), kept, reference, cells_per_chunk, frame_shape
    )
    chunks = ((1,) * len(mods), cell_chunks, (2,), (n_frames,), (frame_shape[1],), (frame_shape[2],))
    raw = graph_array(name, tasks, chunks, np.uint16)
    analog = regions.register(raw[:, :, 0], _read_raw_block, grid, partial(_plane, 0))
    gain = regions.register(raw[:, :, 1], _read_raw_block, regions.grid_of(analog), partial(_plane, 1))

    coords = {
        "module": ("module", np.array([m.number for m in mods], dtype=np.int64)),
        "cell": ("cell", cell_ids),
        "frame": ("frame", np.arange(n_frames, dtype=np.int64)),
        "train_id": ("frame", kept.astype(np.uint64)),
    }
    if pulse_ids is not None:
        coords["pulse_id"] = ("cell", pulse_ids)
    return xr.Dataset(
        {"analog": (DIMS, analog), "gain": (DIMS, gain)},
        coords=coords,
        attrs={
            "detector": det.name,
            "detector_description": description(det),
            "source": detector_id,
            "path": run_dir,
            "run": run_number(run_dir, files),
            "format": "euxfel-raw",
            "notes": notes,
            "files": files,
        },
    )
