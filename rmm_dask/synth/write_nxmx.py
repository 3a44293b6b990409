"""Synthetic NXmx master files with their data files, laid out as two detectors' file writers do.

* :func:`write_nxmx_files`: the master and its data files for a :class:`Detector` whose modules tile a
  frame, in a :class:`Style`: the ``NXdetector``'s ``description``, ``type``, ``saturation_value`` and
  ``underload_value``, one ``NXdetector_module`` group per module (``data_origin``, ``data_size``,
  ``module_offset``, ``fast_pixel_direction`` and ``slow_pixel_direction`` with the transformation
  attributes the NXmx definition gives them), the ``pixel_mask`` (uint32, NeXus bits, gaps bit 0) and
  the frames: ``/entry/data/data_000001``, ... external links (Dectris) or one virtual dataset
  ``/entry/data/data`` over the data files (Jungfraujoch);
* :func:`write_eiger_nxmx`: a 2-module EIGER 1M as Dectris' FileWriter writes one: uint32 counts,
  pixels the pixel mask flags (gaps, dead) at 2^32 - 1, the count cutoff as ``saturation_value`` and
  as ``detectorSpecific/countrate_correction_count_cutoff``; modules ``module_0``, ``module_1``;
* :func:`write_jungfraujoch_nxmx`: a 2-module JUNGFRAU 1M as PSI's Jungfraujoch writes converted data:
  int32 photon counts of summed frames, modules of 514 x 1030 (each large pixel at a chip border split in
  two) stacked with a 36-row gap, modules ``ARRAY_D0M0``, ``ARRAY_D0M1``, type "adaptive gain
  switching pixel array detector", ``saturation_value`` ``s * 32767 - 4`` and ``underload_value``
  ``s * -32768 + 4`` for a summation of ``s`` frames rounded up to a power of 2 (Jungfraujoch's
  ``DiffractionExperiment::GetOverflow``/``GetUnderflow``), pixels the mask flags at INT32_MIN (below
  the underload value), a virtual ``/entry/data/data``.

Files are published through :func:`rmm_dask.publish.output`, data files first and the master last,
left writable as a detector's own files are (tests corrupt them on purpose).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .. import publish
from ..detectors import Detector, get_detector

__all__ = ["Style", "write_nxmx_files", "write_eiger_nxmx", "write_jungfraujoch_nxmx", "dectris_style",
           "EIGER_1M", "JUNGFRAU_1M", "EIGER_COUNT_CUTOFF", "JUNGFRAUJOCH_SUMMATION", "jungfraujoch_limits"]

PIXEL_SIZE = 75e-6  #: m, EIGER and JUNGFRAU alike
EIGER_1M = get_detector("EIGER1M")  #: 2 modules of 514 x 1030 stacked with a 37-row gap
#: the JUNGFRAU 1M of Jungfraujoch's converted frames: 2 modules of 514 x 1030 one above the other,
#: 36 rows apart (Jungfraujoch's gap between module rows must be even)
JUNGFRAU_1M = Detector(
    name="JUNGFRAU 1M", n_modules=2, module_shape=(514, 1030), asic_shape=(258, 258), module_grid=(2, 1),
    module_gap=(36, 0), dataset="/entry/data/data", pixel_mask="/entry/instrument/detector/pixel_mask",
)
EIGER_COUNT_CUTOFF = 200_000  #: counts a frame: Dectris' count-rate correction cutoff is of this order
JUNGFRAUJOCH_SUMMATION = 2  #: frames summed into one image: Jungfraujoch then writes int32 (one frame: int16)


@dataclass(frozen=True)
class Style:
    """How a file writer lays out an NXmx master (see the module's docstring)."""

    description: str
    type: str | None
    module_name: str = "module_{}"  #: the NXdetector_module groups' names, by module index
    fast_vector: tuple = (1.0, 0.0, 0.0)  #: fast_pixel_direction@vector of every module
    slow_vector: tuple = (0.0, 1.0, 0.0)
    saturation_value: int | None = None
    underload_value: int | None = None
    count_cutoff: bool = False  #: also write detectorSpecific/countrate_correction_count_cutoff (Dectris)
    virtual: bool = False  #: frames as one virtual /entry/data/data (Jungfraujoch), not data_NNNNNN links
    fill_value: int = 0  #: the virtual dataset's fill value


def dectris_style(det: Detector) -> Style:
    """What :func:`rmm_dask.synth.write_hdf5.write_nxmx` writes for ``det``: Dectris' layout, no limits."""
    kind = "photon counting hybrid pixel detector" if det.counting else "charge integrating hybrid pixel detector"
    return Style(description=f"Dectris {det.name} (synthetic)", type=kind)


def jungfraujoch_limits(summation: int) -> tuple[int, int]:
    """(saturation_value, underload_value) Jungfraujoch writes for images of ``summation`` summed frames."""
    rounded = 2 ** math.ceil(math.log2(summation))
    return rounded * 32767 - 4, rounded * -32768 + 4


def write_eiger_nxmx(path, frames, *, pixel_mask=None, frames_per_file: int = 1000) -> Path:
    """An EIGER 1M master and data files as Dectris writes them: ``frames`` ``(frame, 1065, 1030)`` counts
    as uint32, the pixels ``pixel_mask`` flags (default: the gap) at 2^32 - 1."""
    det = EIGER_1M
    mask = det.gap_mask().astype(np.uint32) if pixel_mask is None else np.asarray(pixel_mask, dtype=np.uint32)
    counts = np.array(frames, dtype=np.uint32)
    counts[:, mask != 0] = np.iinfo(np.uint32).max
    style = Style(description="Dectris EIGER2 Si 1M", type="photon counting hybrid pixel detector",
                  saturation_value=EIGER_COUNT_CUTOFF, count_cutoff=True)
    return write_nxmx_files(path, counts, det, style, pixel_mask=mask, frames_per_file=frames_per_file)


def write_jungfraujoch_nxmx(path, frames, *, pixel_mask=None, frames_per_file: int = 1000,
                            summation: int = JUNGFRAUJOCH_SUMMATION) -> Path:
    """A JUNGFRAU 1M master and data files as Jungfraujoch writes converted images: ``frames``
    ``(frame, 1064, 1030)`` photon counts as int32, the pixels ``pixel_mask`` flags (default: the gap) at
    INT32_MIN, a virtual ``/entry/data/data`` over the data files."""
    det = JUNGFRAU_1M
    mask = det.gap_mask().astype(np.uint32) if pixel_mask is None else np.asarray(pixel_mask, dtype=np.uint32)
    counts = np.array(frames, dtype=np.int32)
    counts[:, mask != 0] = np.iinfo(np.int32).min
    saturation, underload = jungfraujoch_limits(summation)
    style = Style(description="PSI JUNGFRAU 1M", type="adaptive gain switching pixel array detector",
                  module_name="ARRAY_D0M{}", fast_vector=(-1.0, 0.0, 0.0), slow_vector=(0.0, -1.0, 0.0),
                  saturation_value=saturation, underload_value=underload, virtual=True,
                  fill_value=int(np.iinfo(np.int32).min))
    return write_nxmx_files(path, counts, det, style, pixel_mask=mask, frames_per_file=frames_per_file)


def write_nxmx_files(path, frames, det: Detector, style: Style, *, pixel_mask=None, frames_per_file: int = 1000,
                     count_time: float = 0.1) -> Path:
    """Write ``(frame, Y, X)`` frames of ``det`` (its full-frame layout) as an NXmx master file ``path``
    (``<stem>_master.h5``) with data files ``<stem>_data_000001.h5``, ... beside it, in ``style``.

    ``pixel_mask`` (uint32 ``(Y, X)``, NeXus bits) defaults to the gaps between modules (bit 0).
    Returns the master's path; on failure the data files already published are removed again.
    """
    path = prepare_file(path)
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[1:] != det.frame_shape:
        raise ValueError(f"{det.name} frames are (frame, {det.frame_shape[0]}, {det.frame_shape[1]}), "
                         f"not {frames.shape}")
    mask = det.gap_mask().astype(np.uint32) if pixel_mask is None else np.asarray(pixel_mask, dtype=np.uint32)
    stem = path.name.removesuffix(".h5").removesuffix("_master")
    written = []
    try:
        for i, start in enumerate(range(0, len(frames), frames_per_file)):
            data_path = path.with_name(f"{stem}_data_{i + 1:06d}.h5")
            with output_file(data_path) as tmp, h5py.File(tmp.tmp, "w") as f:
                part = frames[start : start + frames_per_file]
                d = f.create_dataset("entry/data/data", data=part, chunks=(1, *part.shape[1:]))
                d.attrs["image_nr_low"] = start + 1
                d.attrs["image_nr_high"] = start + len(part)
            written.append((data_path, start, len(part)))
        with output_file(path) as tmp, h5py.File(tmp.tmp, "w") as f:
            entry = _group(f, "entry", "NXentry")
            entry["definition"] = "NXmx"
            _frames(_group(entry, "data", "NXdata"), frames, written, style)
            _detector(_group(_group(entry, "instrument", "NXinstrument"), "detector", "NXdetector"),
                      det, style, mask, frames, count_time)
    except BaseException:
        for p, *_ in written:  # the data files published before the master failed
            publish.discard(p)
        raise
    return path


def prepare_file(path) -> Path:
    """``path`` checked as a new synthetic file (its directory made), by :func:`rmm_dask.publish.prepare`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return publish.prepare(path, what="the synthetic file")


def output_file(path: Path):
    """The publication of a synthetic file: writable, as a detector's own files are (tests corrupt them)."""
    return publish.output(path, what="the synthetic file", read_only=False)


def _group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    group = parent.create_group(name)
    group.attrs["NX_class"] = nx_class
    return group


def _frames(data: h5py.Group, frames: np.ndarray, written: list, style: Style) -> None:
    """The master's frames: external links to each data file's frames, or one virtual dataset over them."""
    if not style.virtual:
        for i, (data_path, _, _) in enumerate(written):
            data[f"data_{i + 1:06d}"] = h5py.ExternalLink(data_path.name, "entry/data/data")
        return
    layout = h5py.VirtualLayout(shape=frames.shape, dtype=frames.dtype)
    for data_path, start, n in written:  # sources named relative to the master, as Jungfraujoch does
        layout[start : start + n] = h5py.VirtualSource(data_path.name, "entry/data/data", shape=(n, *frames.shape[1:]))
    d = data.create_virtual_dataset("data", layout, fillvalue=style.fill_value)
    d.attrs["image_nr_low"] = np.int32(1)
    d.attrs["image_nr_high"] = np.int32(len(frames))


def _detector(detector: h5py.Group, det: Detector, style: Style, mask: np.ndarray, frames: np.ndarray,
              count_time: float) -> None:
    """The NXdetector's fields, its modules and detectorSpecific (Dectris' and Jungfraujoch's own group)."""
    detector["description"] = style.description
    if style.type is not None:
        detector["type"] = style.type
    detector["count_time"] = count_time
    detector["count_time"].attrs["units"] = "s"
    detector["bit_depth_image"] = np.int32(8 * frames.dtype.itemsize)
    for axis in ("x", "y"):
        detector[f"{axis}_pixel_size"] = PIXEL_SIZE
        detector[f"{axis}_pixel_size"].attrs["units"] = "m"
    detector["sensor_material"] = "Si"
    if style.saturation_value is not None:
        detector["saturation_value"] = np.int64(style.saturation_value)
    if style.underload_value is not None:
        detector["underload_value"] = np.int64(style.underload_value)
    detector["pixel_mask_applied"] = False
    detector.create_dataset("pixel_mask", data=mask, compression="gzip")
    distance = _group(detector, "transformations", "NXtransformations").create_dataset("translation", data=0.1)
    _transformation(distance, ".", (0.0, 0.0, 1.0), (0.0, 0.0, 0.0))  # the detector 0.1 m downstream
    for m, (y, x) in enumerate(det.module_origins()):
        _module(_group(detector, style.module_name.format(m), "NXdetector_module"), det, style, (y, x), distance.name)
    specific = _group(detector, "detectorSpecific", "NXcollection")
    specific["pixel_mask"] = h5py.SoftLink(f"{detector.name}/pixel_mask")
    specific["x_pixels_in_detector"] = np.uint32(det.frame_shape[1])
    specific["y_pixels_in_detector"] = np.uint32(det.frame_shape[0])
    specific["nimages"] = np.uint64(len(frames))
    specific["ntrigger"] = np.uint64(1)
    if style.count_cutoff and style.saturation_value is not None:
        specific["countrate_correction_count_cutoff"] = np.uint32(style.saturation_value)


def _module(module: h5py.Group, det: Detector, style: Style, origin: tuple[int, int], depends_on: str) -> None:
    """One NXdetector_module: where its pixels are in the frame (slow, fast), and where it is in space."""
    module["data_origin"] = np.array(origin, dtype=np.int32)
    module["data_size"] = np.array(det.module_shape, dtype=np.int32)
    offset = module.create_dataset("module_offset", data=0.0)
    # the module's corner in the detector's plane, metres: along the fast (x) and slow (y) axes
    _transformation(offset, depends_on, (0.0, 0.0, 1.0), (origin[1] * PIXEL_SIZE, origin[0] * PIXEL_SIZE, 0.0))
    for key, vector in (("fast_pixel_direction", style.fast_vector), ("slow_pixel_direction", style.slow_vector)):
        d = module.create_dataset(key, data=PIXEL_SIZE)
        _transformation(d, offset.name, vector, (0.0, 0.0, 0.0))


def _transformation(d: h5py.Dataset, depends_on: str, vector, offset) -> None:
    """The NXtransformations attributes of a translation field (NXmx's module fields carry them)."""
    d.attrs["transformation_type"] = "translation"
    d.attrs["vector"] = np.asarray(vector, dtype=np.float64)
    d.attrs["offset"] = np.asarray(offset, dtype=np.float64)
    d.attrs["units"] = "m"
    d.attrs["depends_on"] = depends_on
