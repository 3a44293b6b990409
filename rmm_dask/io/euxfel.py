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
per-frame cell ids), keeps the trains that have the same cell sequence in every
module, and builds ONE dask array ``(module, cell, 2, frame, y, x)`` from its own
h5py read tasks, one per (module, block of cells): each task reads the frames of its
cells for all kept trains (one read per frame, in file order) into its output, where
each (cell, plane) is a contiguous (frame, y, x) array. ``analog`` and ``gain`` are
slices of that array, so computing both reads once.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass

import h5py
import numpy as np
import xarray as xr
from dask.base import tokenize
from h5py import h5s

from ..detectors import Detector
from ..errors import InputError
from .hdf5 import DIMS, file_token, graph_array, open_hdf5, resolve_detector

__all__ = ["open_euxfel_run"]

IMAGE_KEY = "image.data"
_XTDF_SOURCE = re.compile(r"^(?P<det>[^/]+)/DET/(?P<module>\d+)CH0:xtdf$")
_RUN_FILE = re.compile(r"^[A-Z]+-R(\d+)-")
_RUN_DIR = re.compile(r"^r(\d+)$")


# ============================================================================ reader


@dataclass(frozen=True)
class _Flavour:
    """How a kind of detector stores its frames in RAW files."""

    group: str  #: INDEX group of the frames
    datasets: tuple  #: read into the (analog, gain) planes: one (frame, 2, y, x) dataset, or one per plane
    cells: str  #: memory cell ids: per frame, or per train entry (train, cell)
    per_train: bool  #: one entry per train with all its cells along axis 1 (JUNGFRAU), else one per frame
    source_hint: str  #: what its module sources look like, for messages


XTDF = _Flavour("image", ("image/data",), "image/cellId", False, "<detector>/DET/<n>CH0:xtdf")
JUNGFRAU = _Flavour("data", ("data/adc", "data/gain"), "data/memoryCell", True, "<detector>/DET/JNGFR<n>:daqOutput")


def flavour_of(det: Detector) -> _Flavour:
    return JUNGFRAU if det.gain == "bits" else XTDF


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

    def head(self, n: int) -> "_RawBlock":
        """The same cells in the run's first ``n`` kept frames only (a sample, :mod:`rmm_dask.io.sample`)."""
        n = max(0, min(int(n), self.n_frames))
        rows = self.segments[self.segments[:, 3] < n].copy()
        rows[:, 2] = np.minimum(rows[:, 2], n - rows[:, 3])
        return _RawBlock(self.files, self.datasets, self.per_train, rows, self.n_cells, self.positions, n, self.frame_shape)

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


class _Module:
    """Frames of one module source: per train with data, where they are and which cells they hold."""

    def __init__(self, number: int, source: str):
        self.number = number
        self.source = source
        self.files: list[str] = []
        self.trains: dict[int, tuple[int, int, int]] = {}  #: train id -> (file index, first frame, count)
        self.cells: dict[int, bytes] = {}  #: train id -> its cell ids (uint16 bytes)
        self.pulses: dict[int, bytes] = {}  #: train id -> its pulse ids (uint64 bytes)
        self.suspect: set[int] = set()  #: trains with frames but flagged suspect (INDEX/flag = 0)
        self.duplicate = 0

    def file_name(self, train: int | None = None) -> str:
        index = self.trains[train][0] if train is not None else 0
        return os.path.basename(self.files[index]) if self.files else self.source


def _run_number(run_dir: str, files) -> int:
    for name in [os.path.basename(p) for p in files] + [os.path.basename(run_dir)]:
        match = _RUN_FILE.match(name) or _RUN_DIR.match(name)
        if match:
            return int(match[1])
    return -1


def _open_run_directory(run_dir: str):
    """The run's files as one EXtra-data run, with its failures (and its files skipped as unusable) as InputError.

    Read only: ``extra_data.RunDirectory`` would save its map of the files' trains and sources
    (``karabo_data_map.json``) into the run directory when it may write there (and a virtual
    overview file may be used in place of the files); ``DataCollection.from_paths`` opens the
    same files as one run and writes nothing. The price: a map left by others is not read,
    so each file's index is read on opening (as the first RunDirectory of a run does).
    """
    from extra_data import DataCollection

    names = sorted(f for f in os.listdir(run_dir) if f.endswith(".h5") and f.lower() != "overview.h5")
    if not names:
        runs = sorted(d for d in os.listdir(run_dir) if _RUN_DIR.match(d) and os.path.isdir(os.path.join(run_dir, d)))
        hint = f" (it holds run directories: {', '.join(runs[:4])}{', ...' if len(runs) > 4 else ''})" if runs else ""
        raise InputError(run_dir, f"no .h5 files: not a EuXFEL run directory{hint}")
    log = io.StringIO()
    try:
        with contextlib.redirect_stderr(log):
            run = DataCollection.from_paths([os.path.join(run_dir, n) for n in names], is_single_run=True)
    except Exception as e:  # noqa: BLE001  (EXtra-data raises bare Exceptions)
        _raise_for_unusable(run_dir, names, log.getvalue())
        raise InputError(run_dir, f"cannot open as a EuXFEL run: {e}") from None
    opened = {os.path.basename(fa.filename) for fa in run.files}
    skipped = [n for n in names if n not in opened]
    if skipped:
        _raise_for_unusable(run_dir, skipped, log.getvalue())
    if log.getvalue():  # not about skipped files: pass it on
        sys.stderr.write(log.getvalue())
    return run


def _raise_for_unusable(run_dir: str, names, log: str):
    """Raise InputError for the first of ``names`` that does not open, saying why."""
    for name in names:
        path = os.path.join(run_dir, name)
        open_hdf5(path).close()  # raises for missing, empty, non-HDF5, truncated or corrupt files
        match = re.search(rf"Skipping file {re.escape(name)}\n\s*\(error was: (.*)\)", log)
        if match:
            raise InputError(path, f"not a EuXFEL data file ({match[1]})")


def _find_sources(run, run_dir: str, det: Detector, detector_id: str | None, modules) -> tuple[str, dict[int, str]]:
    """(detector id, {module number: source name}) of the raw module sources to read."""
    flavour = flavour_of(det)
    found = _jungfrau_sources(run, run_dir, det, detector_id) if flavour is JUNGFRAU else _xtdf_sources(run)
    if not found:
        listed = ", ".join(sorted(run.instrument_sources)[:5]) or "none"
        raise InputError(run_dir, f"no {det.name} raw module sources ({flavour.source_hint}) in the run; sources: {listed}")
    if detector_id is None:
        if len(found) > 1:
            raise InputError(
                run_dir, f"several detectors in the run ({', '.join(sorted(found))}): choose one with detector_id"
            )
        detector_id = next(iter(found))
    elif detector_id not in found:
        raise InputError(run_dir, f"no detector {detector_id} in the run (found {', '.join(sorted(found))})")
    sources = found[detector_id]
    too_high = [m for m in sources if m >= det.n_modules]
    if too_high:
        raise InputError(run_dir, f"module numbers {too_high} out of range for {det.name} ({det.n_modules} modules)")
    if modules is not None:
        wanted = sorted({int(m) for m in np.atleast_1d(modules)})
        missing = [m for m in wanted if m not in sources]
        if missing:
            raise InputError(run_dir, f"no data source for module(s) {missing} (found modules {sorted(sources)})")
        sources = {m: sources[m] for m in wanted}
    return detector_id, dict(sorted(sources.items()))


def _xtdf_sources(run) -> dict[str, dict[int, str]]:
    found: dict[str, dict[int, str]] = {}
    for source in sorted(run.instrument_sources):
        match = _XTDF_SOURCE.match(source)
        if match:
            found.setdefault(match["det"], {})[int(match["module"])] = source
    return found


def _jungfrau_sources(run, run_dir: str, det: Detector, detector_id: str | None) -> dict[str, dict[int, str]]:
    """JUNGFRAU sources through EXtra-data's component; its modules JNGFR01... become 0, 1, ..."""
    from extra_data.components import JUNGFRAU as ExtraJungfrau

    try:
        jf = ExtraJungfrau(run, detector_id, raw=True)
    except Exception as e:  # noqa: BLE001  (EXtra-data raises ValueError, SourceNameError, ...)
        if "no detector" in str(e).lower() or "not found" in str(e).lower():
            return {}
        raise InputError(run_dir, f"cannot read the {det.name} sources of the run: {e}") from None
    return {jf.detector_name: {modno - 1: source for modno, source in jf.modno_to_source.items()}}


def _module_frames(run, number: int, source: str, det: Detector) -> _Module:
    """Read one module's index and per-frame cell/pulse ids (metadata only) from every file of its source."""
    flavour = flavour_of(det)
    mod = _Module(number, source)
    files = sorted(run[source].files, key=lambda fa: (int(fa.train_ids[0]) if len(fa.train_ids) else 0, fa.filename))
    inst = f"INSTRUMENT/{source}"
    for fa in files:
        path = fa.filename
        try:
            h5 = fa.file
            n_data, n_cells_stored = _check_frames(h5, inst, flavour, det, path)
            cells = np.asarray(h5[f"{inst}/{flavour.cells}"][:])
            cells = cells.reshape(-1) if not flavour.per_train else cells.reshape(cells.shape[0], -1)
            pulses = None
            if not flavour.per_train and "pulseId" in h5[f"{inst}/image"]:
                pulses = np.asarray(h5[f"{inst}/image/pulseId"][:]).reshape(-1).astype(np.uint64)
            firsts, counts = fa.get_index(source, flavour.group)
        except KeyError as e:
            what = e.args[0] if e.args else "dataset"
            raise InputError(path, f"{source}: missing {what} (not raw detector data?)") from None
        except OSError as e:
            raise InputError(path, f"cannot read the metadata of {source}: {e}") from None
        firsts = np.asarray(firsts, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        tids = np.asarray(fa.train_ids, dtype=np.uint64)
        valid = np.asarray(fa.validity_flag, dtype=bool)
        if firsts.size != tids.size:
            raise InputError(path, f"INDEX/{source}/{flavour.group} has {firsts.size} entries for {tids.size} trains")
        end = firsts + counts
        if len(end) and (end.max() > min(n_data, cells.shape[0])):
            raise InputError(
                path,
                f"INDEX/{source}/{flavour.group} points to entry {end.max()} but {flavour.datasets[0]} has {n_data}"
                f" and {flavour.cells} {cells.shape[0]}",
            )
        if flavour.per_train and (counts > 1).any():
            raise InputError(path, f"INDEX/{source}/{flavour.group} has trains with {counts.max()} entries, expected one")
        index = len(mod.files)
        mod.files.append(path)
        for t, first, count, ok in zip(tids.tolist(), firsts.tolist(), counts.tolist(), valid.tolist()):
            if count == 0:
                continue
            if not ok:
                mod.suspect.add(t)
                continue
            if t in mod.trains:
                mod.duplicate += 1
                continue
            mod.trains[t] = (index, first, count)
            train_cells = cells[first] if flavour.per_train else cells[first : first + count]
            mod.cells[t] = train_cells.astype(np.uint16).tobytes()
            if pulses is not None:
                mod.pulses[t] = pulses[first : first + count].tobytes()
    return mod


def _check_frames(h5, inst: str, flavour: _Flavour, det: Detector, path: str) -> tuple[int, int | None]:
    """Entries in the file and cells per entry (JUNGFRAU), after checking shapes and dtypes."""
    ny, nx = det.module_shape
    if not flavour.per_train:
        data = h5[f"{inst}/{flavour.datasets[0]}"]
        if tuple(data.shape[1:]) != (2, ny, nx) or data.dtype != np.uint16:
            raise InputError(
                path,
                f"{inst.split('/', 1)[1]} {IMAGE_KEY} holds {data.dtype} frames of {tuple(data.shape[1:])},"
                f" expected uint16 {(2, ny, nx)} (raw {det.name} data)",
            )
        return data.shape[0], None
    adc, gain = (h5[f"{inst}/{name}"] for name in flavour.datasets)
    if adc.ndim != 4 or tuple(adc.shape[2:]) != (ny, nx) or adc.dtype != np.uint16:
        raise InputError(path, f"{inst}/data/adc holds {adc.dtype} {adc.shape}, expected uint16 (train, cell, {ny}, {nx}) (raw {det.name} data)")
    if gain.shape != adc.shape or gain.dtype.kind != "u":
        raise InputError(path, f"{inst}/data/gain holds {gain.dtype} {gain.shape}, expected unsigned {adc.shape} like data/adc")
    return adc.shape[0], adc.shape[1]


def _ranges(numbers: list[int]) -> str:
    """[2, 3, 4, 7] -> 'modules 2-4, 7'."""
    parts, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(str(n) if n == start else f"{start}-{n}")
            start = None
    return ("module " if len(numbers) == 1 else "modules ") + ", ".join(parts)


def _describe_cells(key: bytes) -> str:
    cells = np.frombuffer(key, dtype=np.uint16)
    if cells.size == 0:
        return "no frames"
    if cells.size > 1 and (np.diff(cells.astype(np.int64)) == 1).all():
        listing = f"{cells[0]}..{cells[-1]}"
    elif cells.size <= 4:
        listing = ", ".join(map(str, cells))
    else:
        listing = ", ".join(map(str, cells[:3])) + f", ..., {cells[-1]}"
    return f"{cells.size} frames, cells {listing}"


def _select_trains(mods: list[_Module], run_dir: str) -> tuple[np.ndarray, bytes, list[str]]:
    """Trains with data in every module and the run's cell sequence in each: (train ids, sequence, notes)."""
    notes = []
    for mod in mods:
        if mod.duplicate:
            notes.append(f"ignored {mod.duplicate} trains stored twice in module {mod.number} (kept the first)")
    for mod in mods:
        if not mod.trains:
            raise InputError(mod.files[0] if mod.files else run_dir, f"no frames of {mod.source} in any train")
    every = np.array(sorted(set().union(*(m.trains for m in mods))), dtype=np.uint64)
    n_all = every.size
    sequences = Counter(key for mod in mods for key in mod.cells.values())
    reference = sequences.most_common(1)[0][0]
    ref_cells = np.frombuffer(reference, dtype=np.uint16)
    if np.unique(ref_cells).size != ref_cells.size:
        mod = next(m for m in mods if reference in m.cells.values())
        raise InputError(
            mod.files[0], f"memory cell ids repeat within a train ({_describe_cells(reference)}); cannot group by cell"
        )

    keep = np.ones(n_all, dtype=bool)
    for mod in mods:
        present = np.fromiter((int(t) in mod.trains for t in every), dtype=bool, count=n_all)
        same = np.fromiter((mod.cells.get(int(t)) == reference for t in every), dtype=bool, count=n_all)
        suspect = ~present & np.fromiter((int(t) in mod.suspect for t in every), dtype=bool, count=n_all)
        missing = int(np.count_nonzero(~present & ~suspect))
        other = present & ~same
        if missing:
            notes.append(f"dropped {missing} of {n_all} trains missing in module {mod.number}")
        if suspect.any():
            notes.append(
                f"dropped {int(suspect.sum())} of {n_all} trains flagged suspect (INDEX/flag = 0)"
                f" in module {mod.number}"
            )
        if other.any():
            t = int(every[np.argmax(other)])
            notes.append(
                f"dropped {int(other.sum())} of {n_all} trains of module {mod.number} with a cell sequence other"
                f" than the run's ({_describe_cells(reference)}), e.g. train {t} in {mod.file_name(t)}:"
                f" {_describe_cells(mod.cells[t])}"
            )
        keep &= same
    kept = every[keep]
    if kept.size == 0:
        parts = []
        for mod in mods:
            first_train = min(mod.trains)
            parts.append(
                f"module {mod.number} ({mod.file_name(first_train)}): {len(mod.trains)} trains"
                f" {min(mod.trains)}..{max(mod.trains)}, {_describe_cells(mod.cells[first_train])}"
            )
        raise InputError(
            mods[0].files[0] if len(mods) == 1 else run_dir,
            "no train has the same cell sequence in every module: " + "; ".join(parts),
        )
    return kept, reference, notes


def _segments(mod: _Module, kept: np.ndarray, entries_per_train: int) -> np.ndarray:
    """int64 (segment, 4) of :class:`_RawBlock` for the kept trains of one module."""
    rows = []
    for out, t in enumerate(kept.tolist()):
        index, first, _ = mod.trains[t]
        if rows and rows[-1][0] == index and rows[-1][1] + rows[-1][2] * entries_per_train == first:
            rows[-1][2] += 1
        else:
            rows.append([index, first, 1, out])
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


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
    differs from the run's, are dropped and said so in ``attrs["notes"]``.
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

    run = _open_run_directory(run_dir)
    detector_id, sources = _find_sources(run, run_dir, det, detector_id, modules)
    mods = [_module_frames(run, m, s, det) for m, s in sources.items()]
    n_run_trains = len(run.train_ids)
    for fa in run.files:  # metadata read: close EXtra-data's handles now rather than at garbage collection,
        fa.close()  # or a file replaced or damaged meanwhile is read through the stale handle
    del run
    kept, reference, notes = _select_trains(mods, run_dir)
    cell_ids = np.frombuffer(reference, dtype=np.uint16).astype(np.int64)
    n_cells, n_frames = cell_ids.size, kept.size
    absent = sorted(set(range(det.n_modules)) - {m.number for m in mods}) if modules is None else []
    if absent:
        notes.insert(0, f"{det.n_modules - len(absent)} of {det.name}'s {det.n_modules} modules in the run; no data source for {_ranges(absent)}")
    with_data = set().union(*(m.trains for m in mods))
    only_suspect = set().union(*(m.suspect for m in mods)) - with_data
    if only_suspect:
        notes.append(
            f"ignored {len(only_suspect)} of {n_run_trains} trains flagged suspect (INDEX/flag = 0) in every module"
        )
    no_frames = n_run_trains - len(with_data) - len(only_suspect)
    if no_frames > 0:
        notes.append(f"{no_frames} of {n_run_trains} trains of the run have no frames of these modules")

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
    tasks = {}
    for i, mod in enumerate(mods):
        segments = _segments(mod, kept, 1 if flavour.per_train else n_cells)
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
    name = "euxfel-raw-" + tokenize(
        file_token(files), detector_id, sorted(sources.items()), kept, reference, cells_per_chunk, frame_shape
    )
    chunks = ((1,) * len(mods), cell_chunks, (2,), (n_frames,), (frame_shape[1],), (frame_shape[2],))
    raw = graph_array(name, tasks, chunks, np.uint16)

    coords = {
        "module": ("module", np.array([m.number for m in mods], dtype=np.int64)),
        "cell": ("cell", cell_ids),
        "frame": ("frame", np.arange(n_frames, dtype=np.int64)),
        "train_id": ("frame", kept.astype(np.uint64)),
    }
    if pulse_ids is not None:
        coords["pulse_id"] = ("cell", pulse_ids)
    return xr.Dataset(
        {"analog": (DIMS, raw[:, :, 0]), "gain": (DIMS, raw[:, :, 1])},
        coords=coords,
        attrs={
            "detector": det.name,
            "source": detector_id,
            "path": run_dir,
            "run": _run_number(run_dir, files),
            "format": "euxfel-raw",
            "notes": notes,
            "files": files,
        },
    )
