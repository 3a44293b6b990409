"""A synthetic calibration set on disk: EuXFEL RAW runs plus the truth of what was planted.

Layout written by :func:`write_synthetic` under ``out_dir``::

    raw/r0001/   dark run, high gain      (RAW-R0001-AGIPD00-S00000.h5, ...)
    raw/r0002/   dark run, medium gain
    raw/r0003/   dark run, low gain
    raw/r0004/   flat run (high gain)
    truth.h5     /defects          uint16 (module, gain, cell, y, x)  Defect flags, gain in GAINS order
                 /outlier_frames/<gain>  bool (module, cell, frame)   outlying dark frames
                 /edges            bool (y, x)                        ASIC edge pixels
                 attrs: the SynthConfig, the Defect kinds and the mask bits EXPECTED for each
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError
from ..synth import EXPECTED, GAINS, Defect, SyntheticCalibration, Truth
from .euxfel_write import write_raw_run
from .hdf5 import open_hdf5

__all__ = ["write_synthetic", "read_truth", "RUNS", "RUN_TYPES"]

#: run key -> run number, by default
RUNS = {"dark-high": 1, "dark-medium": 2, "dark-low": 3, "flat": 4}
#: run key -> the run type recorded in METADATA/runType (what `rmm nightly`'s rules match)
RUN_TYPES = {"dark-high": "Dark (high gain)", "dark-medium": "Dark (medium gain)", "dark-low": "Dark (low gain)", "flat": "Flat field"}
_TRAIN_SPACING = 100_000  #: first train ids of consecutive runs are this far apart


def write_synthetic(
    calib: SyntheticCalibration,
    out_dir: str | os.PathLike,
    *,
    compression: str | None = None,
    run_numbers: dict | None = None,
    truth: str | os.PathLike | None = "truth.h5",
) -> dict:
    """Write the dark runs, the flat run (EuXFEL RAW under ``out_dir/raw``) and ``out_dir/truth.h5``.

    Returns ``{"dark-high", "dark-medium", "dark-low", "flat": run directory, "truth": truth file}``.
    ``run_numbers`` (default :data:`RUNS`) chooses the runs and their numbers, e.g.
    ``{"dark-high": 5, "dark-medium": 6, "dark-low": 7}`` for a second night's darks;
    ``truth`` is the truth file's path relative to ``out_dir`` (None: not written). Each
    run records its :data:`RUN_TYPES` entry as run type. Only uint16 sets can be written
    as RAW (ValueError for float32 ones).
    """
    config = calib.config
    if config.dtype != "uint16":
        raise ValueError(f"EuXFEL RAW data is uint16: cannot write a {config.dtype} synthetic set as RAW runs")
    out = Path(out_dir)
    runs = {f"dark-{gain}": calib.dark[gain] for gain in GAINS}
    runs["flat"] = calib.flat
    numbers = RUNS if run_numbers is None else run_numbers
    if set(numbers) - set(runs):
        raise ValueError(f"run_numbers has unknown keys {sorted(set(numbers) - set(runs))}; known: {sorted(runs)}")
    paths = {}
    for key, number in numbers.items():
        run = runs[key]
        paths[key] = write_raw_run(
            out / "raw" / f"r{number:04d}",
            run.analog,
            run.gain,
            run_number=number,
            first_train_id=10000 + (number - 1) * _TRAIN_SPACING,
            compression=compression,
            run_type=RUN_TYPES[key],
        )
    if truth is not None:
        paths["truth"] = write_truth(calib, out / truth)
    return paths


def write_truth(calib: SyntheticCalibration, path: str | os.PathLike) -> Path:
    """Write ``truth.h5`` (see the module docstring), atomically: a temporary name, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    truth, config = calib.truth, calib.config
    try:
        with h5py.File(tmp, "w") as f:
            for field in dataclasses.fields(config):
                value = getattr(config, field.name)
                f.attrs[field.name] = value.name if field.name == "detector" else value
            f.attrs["gains"] = list(GAINS)
            kinds = list(Defect)
            f.attrs["defect_names"] = [k.name for k in kinds]
            f.attrs["defect_values"] = np.array([int(k) for k in kinds], dtype=np.uint16)
            f.attrs["expected_bits"] = np.array([int(EXPECTED[k]) for k in kinds], dtype=np.uint8)
            d = f.create_dataset("defects", data=truth.defects.astype(np.uint16), compression="gzip")
            d.attrs["dims"] = ["module", "gain", "cell", "y", "x"]
            for gain in GAINS:
                o = f.create_dataset(f"outlier_frames/{gain}", data=truth.outlier_frames[gain].astype(bool))
                o.attrs["dims"] = ["module", "cell", "frame"]
            e = f.create_dataset("edges", data=truth.edges.astype(bool))
            e.attrs["dims"] = ["y", "x"]
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_truth(path: str | os.PathLike) -> Truth:
    """Read a ``truth.h5`` written by :func:`write_synthetic` (InputError if missing or corrupt)."""
    path = os.path.abspath(os.fspath(path))
    with open_hdf5(path) as f:
        try:
            defects = f["defects"][()]
            outliers = {gain: f[f"outlier_frames/{gain}"][()] for gain in GAINS}
            edges = f["edges"][()]
        except KeyError as e:
            raise InputError(path, f"not a truth file: missing {e.args[0] if e.args else 'dataset'}") from None
        except OSError as e:
            raise InputError(path, f"cannot read the truth: {e}") from None
    if defects.ndim != 5 or defects.dtype != np.uint16:
        raise InputError(
            path, f"/defects is {defects.dtype} {defects.shape}, expected uint16 (module, gain, cell, y, x)"
        )
    if edges.shape != defects.shape[-2:]:
        raise InputError(path, f"/edges has shape {edges.shape}, expected {defects.shape[-2:]}")
    for gain, o in outliers.items():
        if o.ndim != 3 or o.shape[:2] != (defects.shape[0], defects.shape[2]):
            raise InputError(path, f"/outlier_frames/{gain} has shape {o.shape}, expected (module, cell, frame)")
    outliers = {gain: o.astype(bool) for gain, o in outliers.items()}
    return Truth(defects=defects, outlier_frames=outliers, edges=edges.astype(bool))
