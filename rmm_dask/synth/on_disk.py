"""A synthetic calibration set on disk: raw runs as the detector writes them, plus the truth.

Layout written by :func:`write_synthetic` under ``out_dir`` (AGIPD; other detectors'
runs are ``raw/r0001`` EuXFEL JUNGFRAU runs, ``raw/r0001.cxi``, CBF directories
``raw/r0001/``, ``raw/r0001_master.h5``, or LAMBDA acquisition directories ``raw/r0001/``
of ``r0001_m<k>_part<NNNNN>.nxs`` files, with one run per gain stage and the flat)::

    raw/r0001/   dark run, high gain      (RAW-R0001-AGIPD00-S00000.h5, ...)
    raw/r0002/   dark run, medium gain
    raw/r0003/   dark run, low gain
    raw/r0004/   flat run (high gain)
    truth.h5     /defects          uint16 (module, gain, cell, y, x)  Defect flags, gain in stage order
                 /outlier_frames/<gain>  bool (module, cell, frame)   outlying dark frames
                 /edges            bool (y, x)                        ASIC edge pixels
                 attrs: the SynthConfig, the gain stages, the Defect kinds and the mask bits that find each
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import h5py
import numpy as np

from .. import publish
from ..errors import InputError
from ..io.hdf5 import open_hdf5
from .model import EXPECTED, Defect, SyntheticCalibration, Truth
from .write_cbf import write_cbf_series
from .write_euxfel import write_jungfrau_run, write_raw_run
from .write_hdf5 import write_cxi, write_nxmx
from .write_lambda import write_lambda_run

__all__ = ["write_synthetic", "read_truth", "layout_of", "full_frames", "RUN_TYPES"]

#: run key -> the run type recorded in METADATA/runType (what `rmm nightly`'s rules match)
RUN_TYPES = {"dark-high": "Dark (high gain)", "dark-medium": "Dark (medium gain)", "dark-low": "Dark (low gain)", "flat": "Flat field"}
_TRAIN_SPACING = 100_000  #: first train ids of consecutive runs are this far apart


#: how synthetic runs of each kind of detector are written: by the detector's name
LAYOUTS = {"JUNGFRAU": "euxfel-jungfrau", "CSPAD": "cxi", "PILATUS": "cbf", "EIGER": "nxmx", "LAMBDA": "lambda"}


def layout_of(det) -> str:
    """The file layout real runs of ``det`` come in: euxfel-xtdf (AGIPD), euxfel-jungfrau, cxi, cbf, nxmx or lambda."""
    return next((layout for prefix, layout in LAYOUTS.items() if det.name.upper().startswith(prefix)), "euxfel-xtdf")


def write_synthetic(
    calib: SyntheticCalibration,
    out_dir: str | os.PathLike,
    *,
    compression: str | None = None,
    run_numbers: dict | None = None,
    truth: str | os.PathLike | None = "truth.h5",
) -> dict:
    """Write the dark runs and the flat run under ``out_dir/raw``, and ``out_dir/truth.h5``.

    The runs are written as the detector's real runs come (:func:`layout_of`): EuXFEL
    RAW run directories ``raw/r0001`` (AGIPD, JUNGFRAU), CXI files ``raw/r0001.cxi``
    (CSPAD), directories of CBF frames ``raw/r0001/`` (PILATUS) or NXmx master files
    ``raw/r0001_master.h5`` with their data files (EIGER, with the manufacturer's
    ``pixel_mask``) or LAMBDA acquisition directories ``raw/r0001/`` of one file per module
    and part (:func:`rmm_dask.synth.write_lambda.write_lambda_run`, with the manufacturer's
    ``pixel_mask``: dead and virtual pixels). Returns ``{"dark-high", ..., "flat": run path, "truth": truth file}``.
    ``run_numbers`` (default: dark runs 1-3 in gain order, flat 4) chooses the runs and
    their numbers, e.g. ``{"dark-high": 5, "dark-medium": 6, "dark-low": 7}`` for a
    second night's darks; ``truth`` is the truth file's path relative to ``out_dir``
    (None: not written). EuXFEL runs record their :data:`RUN_TYPES` entry as run type.
    Only integer sets can be written as raw runs (ValueError for float32 ones).
    """
    config, det = calib.config, calib.config.detector
    layout = layout_of(det)
    if config.dtype == "float32":
        raise ValueError(f"raw data is integer: cannot write a {config.dtype} synthetic set as {layout} runs")
    out = Path(out_dir)
    runs = {f"dark-{gain}": calib.dark[gain] for gain in calib.dark}
    runs["flat"] = calib.flat
    numbers = run_numbers or {key: i + 1 for i, key in enumerate(runs)}
    if set(numbers) - set(runs):
        raise ValueError(f"run_numbers has unknown keys {sorted(set(numbers) - set(runs))}; known: {sorted(runs)}")
    paths = {}
    for key, number in numbers.items():
        run, name = runs[key], f"r{number:04d}"
        if layout == "euxfel-xtdf":
            paths[key] = write_raw_run(
                out / "raw" / name, run.analog, run.gain, run_number=number,
                first_train_id=10000 + (number - 1) * _TRAIN_SPACING, compression=compression, run_type=RUN_TYPES[key],
            )
        elif layout == "euxfel-jungfrau":
            paths[key] = write_jungfrau_run(
                out / "raw" / name, run.analog, run.gain, run_number=number,
                first_train_id=10000 + (number - 1) * _TRAIN_SPACING, compression=compression, run_type=RUN_TYPES[key],
            )
        elif layout == "lambda":
            paths[key] = write_lambda_run(out / "raw" / name, run.analog[:, 0], det, pixel_mask=calib.model["pixel_mask"])
        else:
            frames = full_frames(run.analog, det, layout)
            if layout == "cxi":
                paths[key] = write_cxi(out / "raw" / f"{name}.cxi", frames.astype(np.int16), det)
            elif layout == "cbf":
                paths[key] = write_cbf_series(out / "raw" / name, frames, det)
            else:
                mask = det.gap_mask().astype(np.uint32) | det.join_frame(calib.model["pixel_mask"])
                paths[key] = write_nxmx(out / "raw" / f"{name}_master.h5", frames, det, pixel_mask=mask)
    if truth is not None:
        paths["truth"] = write_truth(calib, out / truth)
    return paths


def layout_problem(det, modules: int) -> str | None:
    """Why a set of ``modules`` modules cannot be written in ``det``'s real layout, or None.

    CXI, CBF and NXmx files hold full frames: every module of the detector."""
    layout = layout_of(det)
    if layout in ("cxi", "cbf", "nxmx") and modules != det.n_modules:
        return f"{layout} frames hold all {det.n_modules} modules of {det.name}; the set has {modules}"
    return None


def full_frames(analog: np.ndarray, det, layout: str) -> np.ndarray:
    """(module, 1, frame, y, x) -> (frame, Y, X) full frames; gaps -1 in CBF frames (as PILATUS marks them)."""
    problem = layout_problem(det, analog.shape[0])
    if problem:
        raise ValueError(problem)
    return det.join_frame(np.moveaxis(analog[:, 0], 0, 1), fill=-1 if layout == "cbf" else 0)


def write_truth(calib: SyntheticCalibration, path: str | os.PathLike) -> Path:
    """Write ``truth.h5`` (see the module docstring) through :func:`rmm_dask.publish.output`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    truth, config = calib.truth, calib.config
    with publish.output(path, what="the truth file", read_only=False) as tmp:
        with h5py.File(tmp.tmp, "w") as f:
            for field in dataclasses.fields(config):
                value = getattr(config, field.name)
                f.attrs[field.name] = value.name if field.name == "detector" else value
            f.attrs["gains"] = list(calib.dark)
            kinds = list(Defect)
            f.attrs["defect_names"] = [k.name for k in kinds]
            f.attrs["defect_values"] = np.array([int(k) for k in kinds], dtype=np.uint16)
            expected = truth.expected or EXPECTED
            f.attrs["expected_bits"] = np.array([int(expected.get(k, 0)) for k in kinds], dtype=np.uint8)
            d = f.create_dataset("defects", data=truth.defects.astype(np.uint16), compression="gzip")
            d.attrs["dims"] = ["module", "gain", "cell", "y", "x"]
            for gain in calib.dark:
                o = f.create_dataset(f"outlier_frames/{gain}", data=truth.outlier_frames[gain].astype(bool))
                o.attrs["dims"] = ["module", "cell", "frame"]
            e = f.create_dataset("edges", data=truth.edges.astype(bool))
            e.attrs["dims"] = ["y", "x"]
    return path


def read_truth(path: str | os.PathLike) -> Truth:
    """Read a ``truth.h5`` written by :func:`write_synthetic` (InputError if missing or corrupt)."""
    path = os.path.abspath(os.fspath(path))
    with open_hdf5(path) as f:
        try:
            defects = f["defects"][()]
            gains = [str(g) for g in f.attrs.get("gains", ("high", "medium", "low"))]
            outliers = {gain: f[f"outlier_frames/{gain}"][()] for gain in gains}
            expected = {Defect[n]: int(b) for n, b in zip(f.attrs["defect_names"], f.attrs["expected_bits"]) if b}
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
    return Truth(defects=defects, outlier_frames=outliers, edges=edges.astype(bool), expected=expected)
