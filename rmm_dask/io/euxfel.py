"""European XFEL RAW runs of AGIPD-like (XTDF) detectors: writer and lazy reader.

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
import shutil
import sys
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import xarray as xr
from dask.base import tokenize
from h5py import h5s

from ..detectors import Detector
from ..errors import InputError
from .hdf5 import DIMS, file_token, graph_array, open_hdf5, resolve_detector

__all__ = ["open_euxfel_run", "write_raw_run", "raw_file_name", "DEFAULT_DETECTOR_ID"]

DEFAULT_DETECTOR_ID = "SPB_DET_AGIPD1M-1"
FORMAT_VERSION = "1.2"
CHANNEL = "CH0:xtdf"
IMAGE_KEY = "image.data"
_SOURCE = re.compile(r"^(?P<det>[^/]+)/DET/(?P<module>\d+)CH0:xtdf$")
_RUN_FILE = re.compile(r"^[A-Z]+-R(\d+)-")
_RUN_DIR = re.compile(r"^r(\d+)$")
_TRAIN_PARTS = ("detector", "header", "trailer")
_DETECTOR_DATA_SIZE = 5408  #: bytes of AGIPD detector-specific data per train
_MAGIC = np.frombuffer(b"XTDF\x00\x00\x00\x00", dtype=np.int8)
_TIMESTAMP_BASE = 1_600_000_000 * 10**9  #: ns since the epoch at train id 0 (10 Hz trains)


def raw_file_name(run_number: int, module: int, sequence: int) -> str:
    """Name of the RAW file of one AGIPD module and sequence."""
    return f"RAW-R{run_number:04d}-AGIPD{module:02d}-S{sequence:05d}.h5"


# ============================================================================ writer


def write_raw_run(
    run_dir: str | os.PathLike,
    analog,
    gain,
    *,
    run_number: int,
    cell_ids=None,
    first_train_id: int = 10000,
    detector_id: str = DEFAULT_DETECTOR_ID,
    trains_per_file: int | None = None,
    compression: str | None = None,
    train_ids=None,
    module_numbers=None,
    proposal: int = 700000,
    run_type: str = "synthetic",
) -> Path:
    """Write ``(module, cell, frame, y, x)`` uint16 analog and gain arrays as a EuXFEL RAW run.

    Frame ``t`` of every cell belongs to train ``first_train_id + t`` (or ``train_ids[t]``:
    strictly increasing, non-zero). ``cell_ids`` (default ``0..cells-1``) are the memory
    cell ids of the cells, in the order the detector stores them in a train; an array
    broadcastable to ``(module, frame, cell)`` gives every module and train its own
    sequence (to write irregular runs). ``module_numbers`` are the module numbers of the
    first axis (default ``0..modules-1``). ``run_type`` goes to ``METADATA/runType``, where
    the DAQ records the run type chosen by the operator. ``trains_per_file`` splits each module into
    sequence files (default: one file). ``compression="gzip"``: gzip level 1 with
    shuffle on ``image.data``, as the facility compresses RAW data.

    The run is written under a temporary name next to ``run_dir`` and renamed into
    place when complete. ``run_dir`` must not exist or be empty (else InputError).
    Returns ``run_dir`` as a :class:`pathlib.Path`.
    """
    run_dir = Path(run_dir)
    analog = np.asarray(analog)
    gain = np.asarray(gain)
    if analog.ndim != 5 or analog.shape != gain.shape:
        raise ValueError(
            "analog and gain must be (module, cell, frame, y, x) arrays of one shape,"
            f" not {analog.shape} and {gain.shape}"
        )
    if analog.dtype != np.uint16 or gain.dtype != np.uint16:
        raise ValueError(f"RAW data is uint16; got analog {analog.dtype} and gain {gain.dtype}")
    n_mod, n_cells, n_frames, ny, nx = analog.shape
    if min(n_mod, n_cells, n_frames) < 1:
        raise ValueError(f"nothing to write: shape {analog.shape}")
    if compression not in (None, "gzip"):
        raise ValueError(f"compression must be None or 'gzip', not {compression!r}")
    if not 0 <= run_number <= 9999:
        raise ValueError(f"run_number must be in 0..9999, not {run_number}")

    if train_ids is None:
        if first_train_id < 1:
            raise ValueError("first_train_id must be positive")
        tids = np.arange(first_train_id, first_train_id + n_frames, dtype=np.uint64)
    else:
        tids = np.asarray(train_ids, dtype=np.uint64)
        if tids.shape != (n_frames,):
            raise ValueError(f"train_ids must have one id per frame ({n_frames}), not shape {tids.shape}")
        if (tids == 0).any() or (np.diff(tids.astype(np.int64)) <= 0).any():
            raise ValueError("train_ids must be non-zero and strictly increasing")
    if module_numbers is None:
        module_numbers = range(n_mod)
    module_numbers = [int(m) for m in module_numbers]
    if len(module_numbers) != n_mod or len(set(module_numbers)) != n_mod or min(module_numbers) < 0:
        raise ValueError(f"module_numbers must be {n_mod} distinct non-negative numbers, not {module_numbers}")
    cells = np.arange(n_cells) if cell_ids is None else np.asarray(cell_ids)
    try:
        cells = np.broadcast_to(cells, (n_mod, n_frames, n_cells)).astype(np.uint16)
    except ValueError:
        raise ValueError(
            f"cell_ids of shape {np.shape(cell_ids)} do not broadcast to"
            f" (module, frame, cell) = {(n_mod, n_frames, n_cells)}"
        ) from None
    per_file = n_frames if trains_per_file is None else int(trains_per_file)
    if per_file < 1:
        raise ValueError("trains_per_file must be at least 1")

    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise InputError(run_dir, "exists and is not an empty directory; not overwriting it")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.partial-", dir=run_dir.parent))
    try:
        for i, module in enumerate(module_numbers):
            for seq, t0 in enumerate(range(0, n_frames, per_file)):
                t1 = min(t0 + per_file, n_frames)
                _write_module_file(
                    tmp / raw_file_name(run_number, module, seq),
                    analog[i, :, t0:t1],
                    gain[i, :, t0:t1],
                    cells[i, t0:t1],
                    tids[t0:t1],
                    source=f"{detector_id}/DET/{module}{CHANNEL}",
                    compression=compression,
                    run_number=run_number,
                    sequence=seq,
                    proposal=proposal,
                    run_type=run_type,
                )
        if run_dir.exists():
            run_dir.rmdir()  # empty (checked above)
        os.rename(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir


def _write_module_file(path, analog, gain, cells, tids, *, source, compression, run_number, sequence, proposal, run_type):
    """One RAW file: one module's source for the trains ``tids``; analog/gain (cell, train, y, x)."""
    n_cells, n_trains, ny, nx = analog.shape
    n_frames = n_trains * n_cells
    inst = f"INSTRUMENT/{source}"
    with h5py.File(path, "w") as f:
        f.create_group("CONTROL")
        f.create_group("RUN")

        # INDEX: trains of the file, then per source group where each train's entries are
        f.create_dataset("INDEX/trainId", data=tids, dtype="u8", maxshape=(None,))
        f.create_dataset("INDEX/timestamp", data=_TIMESTAMP_BASE + tids * 10**8, dtype="u8", maxshape=(None,))
        f.create_dataset("INDEX/flag", data=np.ones(n_trains), dtype="i4", maxshape=(None,))
        f.create_dataset("INDEX/origin", data=np.full(n_trains, -1), dtype="i4", maxshape=(None,))
        counts = {"image": n_cells, **{part: 1 for part in _TRAIN_PARTS}}
        for part, count in counts.items():
            f.create_dataset(
                f"INDEX/{source}/{part}/first", data=np.arange(n_trains) * count, dtype="u8", maxshape=(None,)
            )
            f.create_dataset(
                f"INDEX/{source}/{part}/count", data=np.full(n_trains, count), dtype="u8", maxshape=(None,)
            )

        # INSTRUMENT: per-frame image data and metadata, (frame, 1) as the DAQ stores them
        def per_frame(key, values, dtype):
            values = np.asarray(values).reshape(n_frames, 1)
            f.create_dataset(f"{inst}/image/{key}", data=values, dtype=dtype, maxshape=(None, 1))

        per_frame("trainId", np.repeat(tids, n_cells), "u8")
        per_frame("pulseId", np.tile(np.arange(n_cells), n_trains), "u8")
        per_frame("cellId", cells.reshape(-1), "u2")
        per_frame("length", np.full(n_frames, 2 * ny * nx * 2), "u4")
        per_frame("status", np.zeros(n_frames), "u2")
        kw = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if compression == "gzip" else {}
        data = f.create_dataset(
            f"{inst}/image/data",
            shape=(n_frames, 2, ny, nx),
            dtype="u2",
            chunks=(1, 2, ny, nx),
            maxshape=(None, 2, ny, nx),
            **kw,
        )
        step = max(1, (64 << 20) // (n_cells * 2 * ny * nx * 2))  # trains per write: ~64 MiB buffers
        for t0 in range(0, n_trains, step):
            t1 = min(t0 + step, n_trains)
            buf = np.empty((t1 - t0, n_cells, 2, ny, nx), dtype=np.uint16)
            buf[:, :, 0] = analog[:, t0:t1].swapaxes(0, 1)
            buf[:, :, 1] = gain[:, t0:t1].swapaxes(0, 1)
            data[t0 * n_cells : t1 * n_cells] = buf.reshape(-1, 2, ny, nx)

        # INSTRUMENT: the XTDF train envelope, one entry per train
        def per_train(key, values, dtype, dims=()):
            values = np.broadcast_to(np.asarray(values, dtype=dtype), (n_trains, *dims))
            f.create_dataset(f"{inst}/{key}", data=values, dtype=dtype, maxshape=(None, *dims))

        for part in _TRAIN_PARTS:
            per_train(f"{part}/trainId", tids, "u8")
        per_train("detector/data", 0, "u1", (_DETECTOR_DATA_SIZE,))
        per_train("header/dataId", 0, "u8")
        per_train("header/linkId", 0, "u8")
        per_train("header/magicNumberBegin", _MAGIC, "i1", (8,))
        per_train("header/majorTrainFormatVersion", 2, "u4")
        per_train("header/minorTrainFormatVersion", 1, "u4")
        per_train("header/pulseCount", n_cells, "u8")
        per_train("header/reserved", 0, "u1", (16,))
        per_train("trailer/checksum", 0, "i1", (16,))
        per_train("trailer/magicNumberEnd", _MAGIC, "i1", (8,))
        per_train("trailer/status", 0, "u8")

        # METADATA
        ids = [f"INSTRUMENT/{source}/{part}" for part in ("detector", "header", "image", "trailer")]
        vlen = h5py.special_dtype(vlen=bytes)
        sources = f.create_group("METADATA/dataSources")
        columns = {
            "dataSourceId": ids,
            "root": [s.split("/", 1)[0] for s in ids],
            "deviceId": [s.split("/", 1)[1] for s in ids],
        }
        for key, values in columns.items():
            sources.create_dataset(key, data=[v.encode() for v in values], dtype=vlen, maxshape=(None,))
        now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ").encode()
        meta = f["METADATA"]
        meta["dataFormatVersion"] = [FORMAT_VERSION.encode()]
        meta["creationDate"] = [now]
        meta["updateDate"] = [now]
        meta["daqLibrary"] = [b"rmm-dask"]
        meta["karaboFramework"] = [b"synthetic"]
        meta["runType"] = [run_type.encode()]
        meta["sample"] = [b"No Sample"]
        meta.create_dataset("proposalNumber", data=[proposal], dtype="u4")
        meta.create_dataset("runNumber", data=[run_number], dtype="u4")
        meta.create_dataset("sequenceNumber", data=[sequence], dtype="u4")


# ============================================================================ reader


class _RawBlock:
    """What one read task needs: plain values only (paths, dataset name, integer arrays), so it pickles."""

    __slots__ = ("files", "dataset", "segments", "n_cells", "positions", "n_frames", "frame_shape")

    def __init__(self, files, dataset, segments, n_cells, positions, n_frames, frame_shape):
        self.files = tuple(files)  #: sequence files of the module
        self.dataset = dataset  #: path of image.data inside them
        #: int64 (segment, 4): file index, first frame in the file, trains, first output frame;
        #: the trains of a segment are consecutive in the file, n_cells frames each
        self.segments = segments
        self.n_cells = n_cells
        self.positions = tuple(positions)  #: positions in the cell sequence of the cells of this block
        self.n_frames = n_frames
        self.frame_shape = tuple(frame_shape)

    def __reduce__(self):
        return type(self), (
            self.files,
            self.dataset,
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
    frame = np.empty((1, *block.frame_shape), dtype=np.uint16)
    step = block.n_cells
    for index, path in enumerate(block.files):
        segments = block.segments[block.segments[:, 0] == index]
        if not len(segments):
            continue
        try:
            with h5py.File(path, "r") as f:
                dsid = f[block.dataset].id
                file_space = dsid.get_space()
                if file_space.get_simple_extent_dims()[1:] != block.frame_shape:
                    raise InputError(path, f"{block.dataset} changed shape since the run was opened")
                mem_space = h5s.create_simple((1, *block.frame_shape))
                count = (1, *block.frame_shape)
                zeros = (0,) * len(block.frame_shape)
                for _, start, n, dest in segments.tolist():
                    for k in range(n):
                        for i, pos in enumerate(block.positions):
                            file_space.select_hyperslab((start + k * step + pos, *zeros), count)
                            dsid.read(mem_space, file_space, frame)
                            out[0, i, :, dest + k] = frame[0]
        except InputError:
            raise
        except (OSError, KeyError, ValueError) as e:
            raise InputError(path, f"cannot read {block.dataset}: {e}") from None
    return out


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
    """``extra_data.RunDirectory`` with its failures (and its files skipped as unusable) as InputError."""
    from extra_data import RunDirectory

    names = sorted(f for f in os.listdir(run_dir) if f.endswith(".h5") and f.lower() != "overview.h5")
    if not names:
        runs = sorted(d for d in os.listdir(run_dir) if _RUN_DIR.match(d) and os.path.isdir(os.path.join(run_dir, d)))
        hint = f" (it holds run directories: {', '.join(runs[:4])}{', ...' if len(runs) > 4 else ''})" if runs else ""
        raise InputError(run_dir, f"no .h5 files: not a EuXFEL run directory{hint}")
    log = io.StringIO()
    try:
        with contextlib.redirect_stderr(log):
            try:
                run = RunDirectory(run_dir, _use_voview=False)
            except TypeError:  # a later EXtra-data without the private switch
                run = RunDirectory(run_dir)
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
    found: dict[str, dict[int, str]] = {}
    for source in sorted(run.instrument_sources):
        match = _SOURCE.match(source)
        if match:
            found.setdefault(match["det"], {})[int(match["module"])] = source
    if not found:
        listed = ", ".join(sorted(run.instrument_sources)[:5]) or "none"
        raise InputError(
            run_dir, f"no {det.name} raw module sources (<detector>/DET/<n>{CHANNEL}) in the run; sources: {listed}"
        )
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


def _module_frames(run, number: int, source: str, det: Detector) -> _Module:
    """Read one module's index and per-frame cell/pulse ids (metadata only) from every file of its source."""
    mod = _Module(number, source)
    files = sorted(run[source].files, key=lambda fa: (int(fa.train_ids[0]) if len(fa.train_ids) else 0, fa.filename))
    expected = (2, *det.module_shape)
    for fa in files:
        path = fa.filename
        inst = f"INSTRUMENT/{source}/image"
        try:
            h5 = fa.file
            data = h5[f"{inst}/data"]
            if tuple(data.shape[1:]) != expected or data.dtype != np.uint16:
                raise InputError(
                    path,
                    f"{source} {IMAGE_KEY} holds {data.dtype} frames of {tuple(data.shape[1:])},"
                    f" expected uint16 {expected} (raw {det.name} data)",
                )
            n_data = data.shape[0]
            cells = np.asarray(h5[f"{inst}/cellId"][:]).reshape(-1)
            pulses = None
            if "pulseId" in h5[inst]:
                pulses = np.asarray(h5[f"{inst}/pulseId"][:]).reshape(-1).astype(np.uint64)
            firsts, counts = fa.get_index(source, "image")
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
            raise InputError(path, f"INDEX/{source}/image has {firsts.size} entries for {tids.size} trains")
        end = firsts + counts
        if len(end) and (end.max() > min(n_data, cells.size)):
            raise InputError(
                path,
                f"INDEX/{source}/image points to frame {end.max()} but {IMAGE_KEY} has {n_data} frames"
                f" and image.cellId {cells.size}",
            )
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
            mod.cells[t] = cells[first : first + count].astype(np.uint16).tobytes()
            if pulses is not None:
                mod.pulses[t] = pulses[first : first + count].tobytes()
    return mod


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


def _segments(mod: _Module, kept: np.ndarray, n_cells: int) -> np.ndarray:
    """int64 (segment, 4) of :class:`_RawBlock` for the kept trains of one module."""
    rows = []
    for out, t in enumerate(kept.tolist()):
        index, first, _ = mod.trains[t]
        if rows and rows[-1][0] == index and rows[-1][1] + rows[-1][2] * n_cells == first:
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

    pulse_keys = {m.pulses.get(int(t)) for m in mods for t in kept.tolist()}
    pulse_ids = None
    if len(pulse_keys) == 1 and None not in pulse_keys:
        pulse_ids = np.frombuffer(pulse_keys.pop(), dtype=np.uint64)
    else:
        notes.append("pulse ids differ between trains: no pulse_id coordinate")

    frame_shape = (2, *det.module_shape)
    starts = list(range(0, n_cells, cells_per_chunk))
    cell_chunks = tuple(min(cells_per_chunk, n_cells - s) for s in starts)
    files = [p for m in mods for p in m.files]
    tasks = {}
    for i, mod in enumerate(mods):
        segments = _segments(mod, kept, n_cells)
        used = sorted(set(segments[:, 0].tolist()))
        # keep only the files this module's kept trains are in, renumbered
        remap = np.full(len(mod.files), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        segments[:, 0] = remap[segments[:, 0]]
        mod_files = [mod.files[k] for k in used]
        dataset = f"INSTRUMENT/{mod.source}/image/data"
        for j, start in enumerate(starts):
            positions = range(start, start + cell_chunks[j])
            block = _RawBlock(mod_files, dataset, segments, n_cells, positions, n_frames, frame_shape)
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
