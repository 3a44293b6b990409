"""Writer of X-Spectrum LAMBDA acquisitions as the detector writes them, for synthetic data and tests.

A LAMBDA acquisition is one NeXus/HDF5 file per module and part of the series::

    <acq>_m1_part00000.nxs  <acq>_m1_part00001.nxs  ...   module 1, frames in parts
    <acq>_m2_part00000.nxs  ...                           module 2 (LAMBDA 2M: m1..m3)

(module files ``_m1``/``_m01`` as DESY's LAMBDA software names them, parts as in Dioptas'
test data ``testasapo1_1009_00002_m1_part00001.nxs``). Each file holds, under
``/entry/instrument/detector`` (the group dxtbx's ``FormatHDF5Lambda`` and fabio's
``LambdaImage`` read):

* ``data``: int32 ``(frame, 516, 1556)`` counts of this part's frames; gap pixels -1;
* ``pixel_mask``: uint32 ``(516, 1556)``, the module's NXmx bits (0 gap, 1 dead, ...,
  31 virtual pixel: a large pixel's counts split over logical pixels);
* ``description`` ``"Lambda"``, ``local_name``, pixel sizes, sensor, ``translation/distance``
  (the module's place in the assembled detector, ``[x, y, z]`` pixels as at DESY P03),
  ``flatfield_applied``, ``pixel_mask_applied``, ``virtual_pixel_correction_applied``
  and the part's ``frame_numbers`` (0-based numbers of its frames in the acquisition).

Every file is written under a temporary name inside a temporary directory that is renamed
into place when all are complete.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..detectors import Detector
from ..exports import nx_detector
from .run_dir import write_run_dir

__all__ = ["write_lambda_run", "lambda_file_name", "PART_FRAMES", "MODULE_GAP_ROWS"]

PART_FRAMES = 12  #: frames per part file by default
MODULE_GAP_ROWS = 132  #: rows between stacked modules of a LAMBDA 2M (DESY P03: ~131-134)
PIXEL_SIZE = 55e-6  #: m, Medipix3


def lambda_file_name(acquisition: str, module: int, part: int) -> str:
    """``<acq>_m<module>_part<NNNNN>.nxs``: ``module`` counted from 1, ``part`` from 0."""
    return f"{acquisition}_m{module}_part{part:05d}.nxs"


def write_lambda_run(
    run_dir,
    counts,
    det: Detector,
    *,
    pixel_mask=None,
    acquisition: str | None = None,
    frames_per_part: int = PART_FRAMES,
    compression: str | None = "gzip",
) -> Path:
    """Write ``counts`` (``(module, frame, y, x)`` integers, -1 = gap) as a LAMBDA acquisition in ``run_dir``.

    ``pixel_mask`` is uint32 ``(module, y, x)`` (default: none set); ``acquisition`` the
    files' stem (default: the directory's name). Returns ``run_dir``, which must not exist
    or be empty.
    """
    counts = np.asarray(counts)
    if counts.ndim != 4 or counts.shape[2:] != tuple(det.module_shape) or not 1 <= counts.shape[0] <= det.n_modules:
        raise ValueError(f"{det.name} counts are (module, frame, {det.module_shape[0]}, {det.module_shape[1]}) "
                         f"with 1 to {det.n_modules} modules, not {counts.shape}")
    if counts.dtype.kind not in "iu":
        raise ValueError(f"LAMBDA counts are integers, not {counts.dtype}")
    if frames_per_part < 1:
        raise ValueError("frames_per_part must be at least 1")
    n_mod, n_frames = counts.shape[:2]
    mask = np.zeros((n_mod, *det.module_shape), np.uint32) if pixel_mask is None else np.asarray(pixel_mask, np.uint32)
    if mask.shape != (n_mod, *det.module_shape):
        raise ValueError(f"pixel_mask is {mask.shape}, expected {(n_mod, *det.module_shape)}")
    run_dir = Path(run_dir)
    stem = acquisition or run_dir.name

    def write(tmp: Path):
        for m in range(n_mod):
            for part, start in enumerate(range(0, n_frames, frames_per_part)):
                frames = counts[m, start : start + frames_per_part].astype(np.int32)
                path = tmp / lambda_file_name(stem, m + 1, part)
                _write_part(path, frames, mask[m], det, m, np.arange(start, start + len(frames)), compression)

    return write_run_dir(run_dir, write)


def _write_part(path: Path, frames, mask, det: Detector, module: int, numbers, compression) -> None:
    with h5py.File(path, "w") as f:  # inside the run's temporary directory (write_run_dir)
        f.attrs["default"] = "entry"
        d = nx_detector(f)
        data = d.create_dataset("data", data=frames, chunks=(1, *frames.shape[1:]), compression=compression)
        data.attrs["interpretation"] = "image"
        d.create_dataset("pixel_mask", data=mask, compression=compression)
        d["description"] = "Lambda"
        d["local_name"] = f"{det.name} (synthetic) module {module + 1}"
        d["x_pixel_size"] = PIXEL_SIZE
        d["y_pixel_size"] = PIXEL_SIZE
        d["x_pixel_size"].attrs["units"] = d["y_pixel_size"].attrs["units"] = "m"
        d["sensor_material"] = "Si"
        d["sensor_thickness"] = 300e-6
        d["sensor_thickness"].attrs["units"] = "m"
        d["translation/distance"] = np.array([0, module * (det.module_shape[0] + MODULE_GAP_ROWS), 0], dtype=np.int64)
        d["flatfield_applied"] = np.int32(0)
        d["pixel_mask_applied"] = np.int32(0)
        d["virtual_pixel_correction_applied"] = np.int32(1)
        d["frame_numbers"] = np.asarray(numbers, dtype=np.int64)
