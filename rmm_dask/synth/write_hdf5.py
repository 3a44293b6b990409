"""Writers of the HDF5 layouts the readers take, for synthetic data and tests.

* :func:`write_cxi`: a CXI file as Cheetah writes one (``/cxi_version`` 130,
  ``/entry_1/instrument_1/detector_1/data`` ``(frame, Y, X)``, ``/entry_1/data_1`` a soft
  link to that group, pixel sizes and distance);
* :func:`write_nxmx`: a NeXus/NXmx master file as Dectris EIGER detectors write it
  (``/entry/data/data_000001`` an external link to ``<name>_data_000001.h5``,
  ``/entry/instrument/detector/pixel_mask`` uint32 with the NeXus bits, also under
  ``detectorSpecific/``, and the detector's sizes and counting parameters).

Files are published through :func:`rmm_dask.publish.output` (a temporary name beside
the target, moved into place when complete; never through a link), left writable as a
detector's own files are (tests corrupt them on purpose).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from .. import publish
from ..detectors import Detector

__all__ = ["write_cxi", "write_nxmx"]


def _new(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return publish.prepare(path, what="the synthetic file")


def _output(path: Path):
    return publish.output(path, what="the synthetic file", read_only=False)


def write_cxi(path, frames, det: Detector, *, pixel_size: float = 110e-6, distance: float = 0.1) -> Path:
    """Write ``(frame, Y, X)`` frames (the detector's full-frame layout) as a CXI file."""
    path = _new(path)
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[1:] != det.frame_shape:
        raise ValueError(f"{det.name} CXI frames are (frame, {det.frame_shape[0]}, {det.frame_shape[1]}), not {frames.shape}")
    with _output(path) as tmp:
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


def write_nxmx(path, frames, det: Detector, *, pixel_mask=None, frames_per_file: int = 1000, count_time: float = 0.1) -> Path:
    """Write ``(frame, Y, X)`` counts as an NXmx master file with external data files beside it.

    ``pixel_mask`` (uint32 ``(Y, X)``, NeXus bits) defaults to the gaps between modules (bit 0).
    """
    path = _new(path)
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[1:] != det.frame_shape:
        raise ValueError(f"{det.name} frames are (frame, {det.frame_shape[0]}, {det.frame_shape[1]}), not {frames.shape}")
    mask = det.gap_mask().astype(np.uint32) if pixel_mask is None else np.asarray(pixel_mask, dtype=np.uint32)
    stem = path.name.removesuffix(".h5").removesuffix("_master")
    written = []
    try:
        for i, start in enumerate(range(0, len(frames), frames_per_file)):
            name = f"{stem}_data_{i + 1:06d}.h5"
            data_path = path.with_name(name)
            with _output(data_path) as tmp, h5py.File(tmp.tmp, "w") as f:
                part = frames[start : start + frames_per_file]
                d = f.create_dataset("entry/data/data", data=part, chunks=(1, *part.shape[1:]))
                d.attrs["image_nr_low"] = start + 1
                d.attrs["image_nr_high"] = start + len(part)
            written.append(data_path)
        with _output(path) as tmp, h5py.File(tmp.tmp, "w") as f:
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            data = entry.create_group("data")
            data.attrs["NX_class"] = "NXdata"
            for i, data_path in enumerate(written):
                data[f"data_{i + 1:06d}"] = h5py.ExternalLink(data_path.name, "entry/data/data")
            detector = f.create_group("entry/instrument/detector")
            detector.attrs["NX_class"] = "NXdetector"
            detector["description"] = f"Dectris {det.name} (synthetic)"
            detector["count_time"] = count_time
            detector["bit_depth_image"] = np.int32(32)
            detector["pixel_mask_applied"] = False
            detector.create_dataset("pixel_mask", data=mask, compression="gzip")
            specific = detector.create_group("detectorSpecific")
            specific["pixel_mask"] = h5py.SoftLink("/entry/instrument/detector/pixel_mask")
            specific["x_pixels_in_detector"] = np.uint32(det.frame_shape[1])
            specific["y_pixels_in_detector"] = np.uint32(det.frame_shape[0])
            specific["nimages"] = np.uint64(len(frames))
            specific["ntrigger"] = np.uint64(1)
    except BaseException:
        for p in written:  # the data files published before the master failed
            publish.discard(p)
        raise
    return path
