"""Writer of CBF series as PILATUS detectors write them (one mini-CBF file per frame), for synthetic data and tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..detectors import Detector
from ..io.hdf5 import resolve_detector
from .run_dir import write_run_dir

__all__ = ["write_cbf_series"]


def write_cbf_series(run_dir: str | os.PathLike, frames, detector: str | Detector, *, exposure: float = 0.1,
                     wavelength: float = 1.0332, distance: float = 0.25, oscillation: float = 0.1) -> Path:
    """Write ``(frame, Y, X)`` counts as ``frame_00001.cbf``, ... with a PILATUS mini-CBF header, atomically.

    The header carries what DIALS (dxtbx) needs to build the experiment: pixel size,
    exposure, wavelength (A), detector distance (m), beam centre (the frame's middle) and a
    rotation of ``oscillation`` degrees per frame.
    """
    import fabio.cbfimage

    det = resolve_detector(detector)
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (frame, y, x), not {frames.shape}")
    ny, nx = frames.shape[1:]

    def write(tmp: Path) -> None:
        for i, frame in enumerate(frames):
            contents = "".join(f"# {line}\r\n" for line in (
                f"Detector: {det.name}, S/N 00-0000 (synthetic)",
                "2026-01-01T00:00:00.000",
                "Pixel_size 172e-6 m x 172e-6 m",
                "Silicon sensor, thickness 0.000450 m",
                f"Exposure_time {exposure:.7f} s",
                f"Exposure_period {exposure:.7f} s",
                "Tau = 0 s",
                "Count_cutoff 1048500 counts",
                "Threshold_setting: 6000 eV",
                f"Wavelength {wavelength:.5f} A",
                f"Detector_distance {distance:.5f} m",
                f"Beam_xy ({nx / 2:.2f}, {ny / 2:.2f}) pixels",
                f"Start_angle {i * oscillation:.4f} deg.",
                f"Angle_increment {oscillation:.4f} deg.",
                "Phi 0.0000 deg.",
            ))
            header = {"_array_data.header_convention": "PILATUS_1.2", "_array_data.header_contents": contents}
            image = fabio.cbfimage.CbfImage(data=np.ascontiguousarray(frame, dtype=np.int32), header=header)
            image.write(str(tmp / f"frame_{i + 1:05d}.cbf"))

    return write_run_dir(Path(run_dir), write)
