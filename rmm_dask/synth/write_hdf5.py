"""Writers of the HDF5 layouts the readers take, for synthetic data and tests.

* :func:`write_cxi`: a CXI file as Cheetah writes one (``/cxi_version`` 130,
  ``/entry_1/instrument_1/detector_1/data`` ``(frame, Y, X)``, ``/entry_1/data_1`` a soft
  link to that group, pixel sizes and distance);
* :func:`write_nxmx`: a NeXus/NXmx master file as Dectris EIGER detectors write it
  (``/entry/data/data_000001`` an external link to ``<name>_data_000001.h5``,
  ``/entry/instrument/detector/pixel_mask`` uint32 with the NeXus bits, also under
  ``detectorSpecific/``, the detector's sizes and an ``NXdetector_module`` per module; written by
  :mod:`.write_nxmx`, which also writes EIGER and Jungfraujoch JUNGFRAU files as those writers do).

Files are published through :func:`rmm_dask.publish.output` (a temporary name beside
the target, moved into place when complete; never through a link), left writable as a
detector's own files are (tests corrupt them on purpose).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..detectors import Detector
from .write_nxmx import dectris_style, output_file, prepare_file, write_nxmx_files

__all__ = ["write_cxi", "write_nxmx"]


def write_cxi(path, frames, det: Detector, *, pixel_size: float = 110e-6, distance: float = 0.1) -> Path:
    """Write ``(frame, Y, X)`` frames (the detector's full-frame layout) as a CXI file."""
    path = prepare_file(path)
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[1:] != det.frame_shape:
        raise ValueError(f"{det.name} CXI frames are (frame, {det.frame_shape[0]}, {det.frame_shape[1]}), not {frames.shape}")
    with output_file(path) as tmp:
        with h5py.File(tmp.tmp, "w") as f:
            f["cxi_version"] = np.int32(130)
            group = f.create_group("entry_1/instrument_1/detector_1")
            group.create_dataset("data", data=frames, chunks=(1, *frames.shape[1:]))
            group["x_pixel_size"] = pixel_size
            group["y_pixel_size"] = pixel_size
            group["distance"] = distance
            group["description"] = det.name
            f["entry_1/data_1"] = h5py.SoftLink("/entry_1/instrument_1/detector_1")
    return path


def write_nxmx(path, frames, det: Detector, *, pixel_mask=None, frames_per_file: int = 1000,
               count_time: float = 0.1) -> Path:
    """Write ``(frame, Y, X)`` counts as an NXmx master file with external data files beside it.

    ``pixel_mask`` (uint32 ``(Y, X)``, NeXus bits) defaults to the gaps between modules (bit 0). Dectris'
    layout (:func:`rmm_dask.synth.write_nxmx.dectris_style`): one ``NXdetector_module`` per module, so
    that :func:`rmm_dask.io.nxmx.describe_nxmx` can describe the file; the frames are written as given.
    """
    return write_nxmx_files(path, frames, det, dectris_style(det), pixel_mask=pixel_mask,
                            frames_per_file=frames_per_file, count_time=count_time)
