"""Writers of European XFEL RAW runs (file format 1.x), for synthetic data and tests.

* :func:`write_raw_run`: an AGIPD-like (XTDF) detector, one file per module and sequence,
  ``RAW-R0001-AGIPD00-S00000.h5``, source ``<detector id>/DET/<module>CH0:xtdf`` with
  ``image/data`` ``(frame, 2, y, x)`` uint16 (analog, gain), frames train-major,
  cell-minor, and the per-frame ``cellId``, ``pulseId``, ... (see rmm_dask.io.euxfel).
* :func:`write_jungfrau_run`: JUNGFRAU, ``RAW-R0001-JNGFR01-S00000.h5``, source
  ``<detector id>/DET/JNGFR01:daqOutput`` with ``data/adc`` ``(train, cell, y, x)``
  uint16 (14 bits), ``data/gain`` uint8 (0 = G0, 1 = G1, 3 = G2), ``data/memoryCell``
  ``(train, cell)``, ``frameNumber``, ``timestamp``, ``trainId``: the receiver at
  EuXFEL splits the raw word's gain bits off into ``gain``.

Both write INDEX and METADATA as the DAQ does, so that EXtra-data opens the runs, and
write a run under a temporary name renamed into place when complete.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from .run_dir import write_run_dir

__all__ = ["write_raw_run", "write_jungfrau_run", "raw_file_name", "DEFAULT_DETECTOR_ID", "JUNGFRAU_DETECTOR_ID"]

DEFAULT_DETECTOR_ID = "SPB_DET_AGIPD1M-1"
JUNGFRAU_DETECTOR_ID = "SPB_IRDA_JF4M"
FORMAT_VERSION = "1.2"
CHANNEL = "CH0:xtdf"
_TRAIN_PARTS = ("detector", "header", "trailer")
_DETECTOR_DATA_SIZE = 5408  #: bytes of AGIPD detector-specific data per train
_MAGIC = np.frombuffer(b"XTDF\x00\x00\x00\x00", dtype=np.int8)
_TIMESTAMP_BASE = 1_600_000_000 * 10**9  #: ns since the epoch at train id 0 (10 Hz trains)
#: JUNGFRAU gain bits per stage, as the receiver stores them in data/gain
JUNGFRAU_GAIN_BITS = {"high": 0, "medium": 1, "low": 3}


def raw_file_name(run_number: int, module: int, sequence: int) -> str:
    """Name of the RAW file of one AGIPD module and sequence."""
    return f"RAW-R{run_number:04d}-AGIPD{module:02d}-S{sequence:05d}.h5"


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
    analog, gain = np.asarray(analog), np.asarray(gain)
    if analog.dtype != np.uint16 or gain.dtype != np.uint16:
        raise ValueError(f"RAW data is uint16; got analog {analog.dtype} and gain {gain.dtype}")
    tids, module_numbers, cells, per_file = _check_run(
        analog, gain, run_number, first_train_id, train_ids, module_numbers, cell_ids, trains_per_file, compression
    )
    n_frames = tids.size

    def write(tmp: Path) -> None:
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

    return write_run_dir(Path(run_dir), write)


def _check_run(analog, gain, run_number, first_train_id, train_ids, module_numbers, cell_ids, trains_per_file, compression):
    """Check the arrays and options of a run to write: (train ids, module numbers, cell ids (module, frame, cell), trains per file)."""
    if analog.ndim != 5 or analog.shape != gain.shape:
        raise ValueError(
            "analog and gain must be (module, cell, frame, y, x) arrays of one shape,"
            f" not {analog.shape} and {gain.shape}"
        )
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
    return tids, module_numbers, cells, per_file


def _write_module_file(path, analog, gain, cells, tids, *, source, compression, run_number, sequence, proposal, run_type):
    """One RAW file: one module's source for the trains ``tids``; analog/gain (cell, train, y, x)."""
    n_cells, n_trains, ny, nx = analog.shape
    n_frames = n_trains * n_cells
    inst = f"INSTRUMENT/{source}"
    with h5py.File(path, "w") as f:
        f.create_group("CONTROL")
        f.create_group("RUN")

        _write_index(f, tids, source, {"image": n_cells, **{part: 1 for part in _TRAIN_PARTS}})

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

        ids = [f"INSTRUMENT/{source}/{part}" for part in ("detector", "header", "image", "trailer")]
        _write_metadata(f, ids, run_number=run_number, sequence=sequence, proposal=proposal, run_type=run_type)


def _write_index(f: h5py.File, tids: np.ndarray, source: str, counts: dict) -> None:
    """INDEX: the file's trains, then per source group where each train's entries are (``counts`` per train)."""
    n_trains = tids.size
    f.create_dataset("INDEX/trainId", data=tids, dtype="u8", maxshape=(None,))
    f.create_dataset("INDEX/timestamp", data=_TIMESTAMP_BASE + tids * 10**8, dtype="u8", maxshape=(None,))
    f.create_dataset("INDEX/flag", data=np.ones(n_trains), dtype="i4", maxshape=(None,))
    f.create_dataset("INDEX/origin", data=np.full(n_trains, -1), dtype="i4", maxshape=(None,))
    for group, count in counts.items():
        f.create_dataset(f"INDEX/{source}/{group}/first", data=np.arange(n_trains) * count, dtype="u8", maxshape=(None,))
        f.create_dataset(f"INDEX/{source}/{group}/count", data=np.full(n_trains, count), dtype="u8", maxshape=(None,))


def _write_metadata(f: h5py.File, ids: list, *, run_number: int, sequence: int, proposal: int, run_type: str) -> None:
    """METADATA: the data sources (``INSTRUMENT/<source>/<group>`` ids), format version, run and sequence."""
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


def write_jungfrau_run(
    run_dir: str | os.PathLike,
    analog,
    gain,
    *,
    run_number: int,
    first_train_id: int = 10000,
    detector_id: str = JUNGFRAU_DETECTOR_ID,
    module_numbers=None,
    cell_ids=None,
    proposal: int = 700000,
    run_type: str = "synthetic",
    compression: str | None = None,
) -> Path:
    """Write ``(module, cell, frame, y, x)`` JUNGFRAU arrays as a EuXFEL RAW run.

    ``analog`` uint16 (14 bits used), ``gain`` the gain bits (0, 1 or 3) of each value.
    Frame ``t`` is train ``first_train_id + t``; ``cell_ids`` (default ``0..cells-1``)
    the storage cells in the order of a train; module ``m`` (default ``0..``) is written
    as source ``JNGFR<m+1>`` (EXtra-data and EXtra-geom number JUNGFRAU modules from 1).
    """
    analog, gain = np.asarray(analog), np.asarray(gain)
    if analog.dtype != np.uint16 or (analog > 0x3FFF).any():
        raise ValueError("JUNGFRAU adc values are uint16 of 14 bits")
    if not np.isin(gain, (0, 1, 3)).all():
        raise ValueError("JUNGFRAU gain bits are 0 (G0), 1 (G1) or 3 (G2)")
    tids, module_numbers, cells, _ = _check_run(
        analog, gain, run_number, first_train_id, None, module_numbers, cell_ids, None, compression
    )
    n_cells, n_trains, ny, nx = analog.shape[1:]
    kw = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if compression == "gzip" else {}

    def write(tmp: Path) -> None:
        for i, module in enumerate(module_numbers):
            name = f"JNGFR{module + 1:02d}"
            source = f"{detector_id}/DET/{name}:daqOutput"
            with h5py.File(tmp / f"RAW-R{run_number:04d}-{name}-S00000.h5", "w") as f:
                f.create_group("CONTROL")
                f.create_group("RUN")
                _write_index(f, tids, source, {"data": 1})
                inst = f"INSTRUMENT/{source}/data"
                for key, values in (("adc", analog[i]), ("gain", gain[i].astype(np.uint8))):
                    d = f.create_dataset(
                        f"{inst}/{key}", shape=(n_trains, n_cells, ny, nx), dtype=values.dtype,
                        chunks=(1, 1, ny, nx), maxshape=(None, n_cells, ny, nx), **kw,
                    )
                    for t in range(n_trains):
                        d[t] = values[:, t]
                f.create_dataset(f"{inst}/memoryCell", data=cells[i].astype(np.uint8), maxshape=(None, n_cells))
                frame_numbers = np.arange(n_trains * n_cells, dtype=np.uint64).reshape(n_trains, n_cells) + 1
                f.create_dataset(f"{inst}/frameNumber", data=frame_numbers, maxshape=(None, n_cells))
                f.create_dataset(f"{inst}/timestamp", data=(tids[:, None] * 0.1).repeat(n_cells, 1), maxshape=(None, n_cells))
                f.create_dataset(f"{inst}/trainId", data=tids, dtype="u8", maxshape=(None,))
                _write_metadata(f, [f"INSTRUMENT/{source}/data"], run_number=run_number, sequence=0, proposal=proposal, run_type=run_type)

    return write_run_dir(Path(run_dir), write)
