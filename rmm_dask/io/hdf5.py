"""HDF5 stacks of frames (plain, CXI, NeXus/NXmx).

:func:`open_hdf5_stack` reads a dataset of frames, full detector frames ``(frame, Y, X)``,
``(frame, module, y, x)`` or ``(frame, y, x)``, in one file, in part files joined along
frames, or in one file per module, as the same lazy dataset as a EuXFEL run: dims
``(module, cell, frame, y, x)`` with a single memory cell (id 0). One read task per
module, ``(_read_region, region)``; a region carries file paths, never an open file, and
``region.frames(start, stop)`` is the same region limited to those frames (a sample, or
one block of frames streamed through the pipeline; see :mod:`rmm_dask.io.regions`).
Which files make one acquisition is decided in :mod:`rmm_dask.io.files`; the helpers every
reader shares are in :mod:`rmm_dask.io.common`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import h5py
import numpy as np
import xarray as xr
from dask.base import tokenize
from h5py import h5s

from ..detectors import Detector
from ..errors import InputError
from .common import (
    DIMS,
    file_token,
    graph_array,
    negative_as_nan,
    one_cell_dataset,
    open_hdf5,
    resolve_detector,
    select_modules,
)
from .regions import grid_of, register

__all__ = ["open_hdf5_stack"]


# ---------------------------------------------------------------------------- writing (moves to the test-data package)


# ---------------------------------------------------------------------------- stacks


class _Region:
    """One read task of a stack: one module's pixels in some frames, as (1, 1, frame, y, x).

    ``segments`` are the (file, dataset, first frame, frames) the frames are concatenated
    from, in order (one dataset; the ``data_000001``, ... datasets of a NeXus master file;
    the part files of a series); ``index`` the fixed indices between the frame axis and the
    module's pixels (``()``, or the module's index); ``origin`` the module's first pixel
    (y, x) in the frame; ``shape`` (frames, y, x) of the result. Holds paths, never open files.
    """

    __slots__ = ("segments", "index", "origin", "shape", "dtype")

    def __init__(self, segments: tuple, index: tuple, origin: tuple, shape: tuple, dtype: str):
        self.segments, self.index, self.origin, self.shape, self.dtype = segments, index, origin, shape, dtype

    def __reduce__(self):
        return type(self), (self.segments, self.index, self.origin, self.shape, self.dtype)

    def __repr__(self):
        return f"_Region({len(self.segments)} segments, index={self.index}, origin={self.origin}, shape={self.shape}, dtype={self.dtype})"

    @property
    def n_frames(self) -> int:
        return self.shape[0]

    def frames(self, start: int, stop: int) -> _Region:
        """The same region limited to its frames ``[start, stop)`` (cut to the frames it has);
        ``_read_region`` of it reads only the segments those frames are in."""
        start, stop = max(0, int(start)), min(int(stop), self.shape[0])
        if stop <= start:
            raise ValueError(f"frames({start}, {stop}) of a region of {self.shape[0]} frames holds no frame")
        segments, at = [], 0
        for path, dataset, first, count in self.segments:
            lo, hi = max(start, at), min(stop, at + count)
            if lo < hi:
                segments.append((path, dataset, first + lo - at, hi - lo))
            at += count
        return _Region(tuple(segments), self.index, self.origin, (stop - start, *self.shape[1:]), self.dtype)


def _read_region(region: _Region) -> np.ndarray:
    """Read one module of the region's frames, one HDF5 chunk of frames at a time, straight into the output.

    One read per chunk: a single selection spanning many chunks is several times slower in HDF5 1.14.
    """
    n_frames, ny, nx = region.shape
    out = np.empty((1, 1, n_frames, ny, nx), dtype=region.dtype)
    ones, f0 = (1,) * len(region.index), 0
    for path, dataset, first, n_seg in region.segments:
        try:
            with h5py.File(path, "r") as f:
                ds = f[dataset]
                if ds.shape[0] < first + n_seg:
                    raise InputError(path, f"dataset {dataset} changed shape since it was opened: {ds.shape}")
                step = ds.chunks[0] if ds.chunks else max(1, (4 << 20) // (ny * nx * ds.dtype.itemsize))
                space = ds.id.get_space()
                a = first
                while a < first + n_seg:
                    n = min(step - a % step, first + n_seg - a)  # up to the end of the HDF5 chunk a is in
                    space.select_hyperslab((a, *region.index, *region.origin), (n, *ones, ny, nx))
                    mem = (n, *ones, ny, nx)
                    ds.id.read(h5s.create_simple(mem), space, out[0, 0, f0 + a - first : f0 + a - first + n].reshape(mem))
                    a += n
        except InputError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise InputError(path, f"cannot read dataset {dataset}: {e}") from None
        f0 += n_seg
    return out


def _low_bits(raw: np.ndarray) -> np.ndarray:
    """The analog value of a detector with its gain stage in bits 14-15: bits 0-13."""
    return raw & np.uint16(0x3FFF)


def _high_bits(raw: np.ndarray) -> np.ndarray:
    """The gain stage of such a detector: bits 14-15."""
    return raw >> np.uint16(14)


def _candidates(f: h5py.File) -> list[str]:
    """Datasets that could be stacks of frames (3 or 4 dims), for error messages."""
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim in (3, 4) and len(found) < 5:
            found.append("/" + name)

    try:
        f.visititems(visit)
    except Exception:  # noqa: BLE001  (a broken link must not hide the real problem)
        pass
    return found


_NXMX_DATA = re.compile(r"^data_\d{6}$")


def _data_files(path: str, d: h5py.Dataset) -> list[str]:
    """The files holding a dataset's values: the file it is in, and for a virtual dataset (VDS)
    the files of its sources, each checked to hold its mapped dataset (:func:`_check_source`)."""
    holder = os.path.abspath(d.file.filename)
    if not d.is_virtual:
        return [holder]
    out = [holder]
    for source in d.virtual_sources():
        if source.file_name == ".":
            _check_source(holder, d, source, d.file)
            continue
        name = os.path.join(os.path.dirname(holder), source.file_name)  # HDF5 looks beside the VDS file
        if not os.path.exists(name) and os.path.exists(source.file_name):
            name = source.file_name
        if not os.path.isfile(name):
            raise InputError(holder, f"virtual dataset {d.name} has a missing source file {source.file_name}")
        with open_hdf5(name) as f:  # a damaged source file is named as such
            _check_source(holder, d, source, f)
        out.append(os.path.abspath(name))
    return sorted(set(out))


def _needed_shape(source) -> tuple | None:
    """The least shape a VDS source dataset must have for its mapping: one past the selected
    block's end in each dimension (the whole declared source for an all-selection); None when
    HDF5 cannot say (an unlimited mapping)."""
    src, vspace = source.src_space, source.vspace
    try:
        if src.get_select_type() == h5s.SEL_ALL:
            if src.shape:
                return tuple(src.shape)
            lo, hi = vspace.get_select_bounds()  # the whole source fills the virtual selection
            return tuple(b - a + 1 for a, b in zip(lo, hi))
        _, hi = src.get_select_bounds()
        return tuple(b + 1 for b in hi)
    except ValueError:
        return None


def _check_source(holder: str, d: h5py.Dataset, source, f: h5py.File) -> None:
    """InputError unless the source file ``f`` of a VDS mapping holds the mapped dataset with at least
    the shape the mapping reads: HDF5 would quietly give the virtual dataset's fill value instead."""
    where = f"{source.dset_name} in {source.file_name if source.file_name != '.' else os.path.basename(holder)}"
    try:
        target = f.get(source.dset_name)
    except (OSError, KeyError, ValueError) as e:
        raise InputError(holder, f"virtual dataset {d.name} maps frames from {where},"
                                 f" which cannot be opened ({e})") from None
    if not isinstance(target, h5py.Dataset):
        raise InputError(holder, f"virtual dataset {d.name} maps frames from {where}, which that file lacks"
                                 " (HDF5 would read fill values for them)")
    need = _needed_shape(source)
    if need is not None and (len(need) != target.ndim or any(n > s for n, s in zip(need, target.shape))):
        raise InputError(holder, f"virtual dataset {d.name} maps frames from {where}, which has shape {target.shape}:"
                                 f" the mapping needs {need} (HDF5 would read fill values for the rest)")


def _frame_datasets(f: h5py.File, path: str, dataset: str) -> list[tuple[str, str, tuple, np.dtype, list]]:
    """(file, dataset, shape, dtype, files the data is in) of the frames: the dataset, or a NeXus
    data group's data_NNNNNN (external links: the data files are named for provenance), or the
    ``data`` dataset of the group in an NXmx data file; virtual datasets name their source files."""
    try:
        obj = f.get(dataset)
    except (OSError, KeyError, ValueError) as e:
        raise InputError(path, f"cannot open {dataset}: {e}") from None
    if obj is None:
        hint = _candidates(f)
        hint = f" (datasets with 3 or 4 dims: {', '.join(hint)})" if hint else ""
        raise InputError(path, f"no dataset {dataset}{hint}")
    if isinstance(obj, h5py.Dataset):
        return [(path, dataset, obj.shape, obj.dtype, _data_files(path, obj))]
    names = sorted(n for n in obj if _NXMX_DATA.match(n))
    if not names and isinstance(obj.get("data"), h5py.Dataset) and "image_nr_low" in obj["data"].attrs:  # an NXmx data file (no master)
        d = obj["data"]
        return [(path, f"{dataset.rstrip('/')}/data", d.shape, d.dtype, _data_files(path, d))]
    if not names:
        raise InputError(path, f"{dataset} is a group without data_NNNNNN datasets, not a stack of frames")
    out = []
    for n in names:
        try:
            d = obj[n]  # external links open here: a missing data file is named
        except (OSError, KeyError) as e:
            link = obj.get(n, getlink=True)
            data_file = os.path.join(os.path.dirname(os.path.abspath(path)), getattr(link, "filename", ""))
            if isinstance(link, h5py.ExternalLink) and os.path.isfile(data_file):  # there, but without the frames?
                with open_hdf5(data_file) as g:  # a damaged data file is named as such
                    there = isinstance(g.get(link.path), h5py.Dataset)
                if not there:
                    raise InputError(path, f"{dataset}/{n} links to {link.path} in {link.filename},"
                                           " which that file lacks") from None
            raise InputError(path, f"cannot open {dataset}/{n} (a missing or unreadable data file?): {e}") from None
        out.append((path, f"{dataset.rstrip('/')}/{n}", d.shape, d.dtype, _data_files(path, d)))
    return out


def _layout(shape: tuple, det: Detector) -> tuple[list, str]:
    """Per module (index, origin) in a (frame, ...) dataset's shape, and the layout's name."""
    tail, module = tuple(shape[1:]), tuple(det.module_shape)
    if det.frame_shape is not None and tail == det.frame_shape:
        return [((), origin) for origin in det.module_origins()], "frame"
    if len(tail) == 3 and tail[1:] == module and 1 <= tail[0] <= det.n_modules:
        return [((m,), (0, 0)) for m in range(tail[0])], "modules"
    if tail == module:
        return [((), (0, 0))], "module"
    expected = [f"(frame, {module[0]}, {module[1]})", f"(frame, module, {module[0]}, {module[1]})"]
    if det.frame_shape is not None:
        expected.insert(0, f"(frame, {det.frame_shape[0]}, {det.frame_shape[1]})")
    raise InputError("", f"has shape {shape}; {det.name} data is {' or '.join(expected)}")


class _Part:
    """What opening one file of a stack found (metadata only)."""

    __slots__ = ("path", "segments", "shape", "dtype", "files", "mask")

    def __init__(self, path: str, dataset: str, det: Detector):
        self.path = path
        with open_hdf5(path) as f:
            segments = _frame_datasets(f, path, dataset)
            has_mask = det.pixel_mask and isinstance(f.get(det.pixel_mask), h5py.Dataset)
            self.mask = (det.pixel_mask, f[det.pixel_mask].shape) if has_mask else None
        shapes = {s[2][1:] for s in segments}
        if len(shapes) > 1:
            raise InputError(path, f"dataset {dataset}: its parts hold frames of different shapes {sorted(shapes)}")
        self.segments = [(p, d, 0, int(shape[0])) for p, d, shape, _, _ in segments]
        self.shape, self.dtype = segments[0][2], segments[0][3]
        self.files = [path, *(name for *_, names in segments for name in names)]

    @property
    def frames(self) -> int:
        return sum(n for *_, n in self.segments)

    def check_like(self, first: _Part, dataset: str):
        """InputError naming both files when this part's frames differ from the first part's."""
        if self.shape[1:] != first.shape[1:] or self.dtype != first.dtype:
            raise InputError(
                self.path,
                f"dataset {dataset} holds {self.dtype} frames of shape {self.shape[1:]}, but {first.path} holds {first.dtype} frames of shape {first.shape[1:]}",
            )


def open_hdf5_stack(
    path,
    dataset: str | None = None,
    detector: str | Detector = "AGIPD1M",
    *,
    cells_per_chunk: int = 1,
    modules=None,
    label: str | None = None,
) -> xr.Dataset:
    """Open an HDF5 stack of frames, in one file or several, as a lazy ``(module, cell, frame, y, x)`` dataset.

    ``path`` is one file, a list of files (the parts of one series, joined along frames in
    the order given), or a mapping ``{module index: [part files]}`` of files that each hold
    one module (:mod:`rmm_dask.io.files` finds these from file names). ``dataset``
    (default: the detector's, e.g. ``/entry_1/data_1/data`` for CXI files,
    ``/entry/data`` for NeXus/NXmx) holds ``(frame, Y, X)`` full frames of a detector
    whose modules tile a frame (the gaps between modules are dropped), ``(frame, module,
    y, x)`` or ``(frame, y, x)`` of one module (always so in a module's own file); a
    NeXus data group with ``data_000001``, ... (external links as EIGER writes them) is
    read as one stack; a virtual dataset is read through HDF5 and its source files are
    listed in the ``files`` attribute. Every part has the same frame shape and dtype.
    Integer or float values (NaN means missing). For a detector whose gain stage is in
    the top bits (``gain: bits``) the values are split into ``analog`` (bits 0-13) and
    ``gain`` (bits 14-15); otherwise only ``analog``. The detector's manufacturer mask
    (``pixel_mask``, e.g. NXmx ``/entry/instrument/detector/pixel_mask``), when the file
    has it (the first part; each module's first part for module files), becomes the
    variable ``pixel_mask`` uint32 ``(module, y, x)``. One memory cell (id 0), one read
    task per module; ``modules`` selects module numbers. Only metadata is read here.
    """
    det = resolve_detector(detector)
    if cells_per_chunk < 1:
        raise ValueError("cells_per_chunk must be at least 1")
    if isinstance(path, Mapping):
        per_module = {int(m): [os.path.abspath(os.fspath(p)) for p in parts] for m, parts in sorted(path.items())}
    else:
        parts = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        per_module = {None: [os.path.abspath(os.fspath(p)) for p in parts]}
    if not per_module or not all(per_module.values()):
        raise ValueError("open_hdf5_stack needs at least one file")
    all_paths = [p for parts in per_module.values() for p in parts]
    label = label or (all_paths[0] if len(all_paths) == 1 else os.path.commonpath(all_paths))
    dataset = dataset or det.dataset
    if not dataset:
        raise InputError(label, f"no dataset given, and {det.name} names none: give the path of the frames inside the file")
    where = f"dataset {dataset}"
    opened = {m: [_Part(p, dataset, det) for p in parts] for m, parts in per_module.items()}
    first = next(iter(opened.values()))[0]
    for parts in opened.values():
        for part in parts:
            part.check_like(first, dataset)
    dtype = first.dtype
    if dtype.kind not in "iuf":
        raise InputError(first.path, f"{where} holds {dtype} values, expected integer or float numbers")
    dtype = dtype.newbyteorder("=")  # read into native byte order
    frames = {m: sum(p.frames for p in parts) for m, parts in opened.items()}
    if None in opened:  # every file holds every module: the layout of the frames says where each module is
        try:
            regions, layout = _layout(first.shape, det)
        except InputError as e:
            raise InputError(first.path, f"{where} {e.problem}") from None
        segments = tuple(s for part in opened[None] for s in part.segments)
        available = {m: (segments, *region) for m, region in enumerate(regions)}
        n_frames = frames[None]
    else:  # one file per module
        if tuple(first.shape[1:]) != tuple(det.module_shape):
            raise InputError(first.path, f"{where} has shape {first.shape}; one module's file of {det.name} holds (frame, {det.module_shape[0]}, {det.module_shape[1]})")
        m0, n_frames = next(iter(frames.items()))
        for m, n in frames.items():
            if n != n_frames:
                raise InputError(opened[m][0].path, f"module m{m + 1} has {n} frames, module m{m0 + 1} ({opened[m0][0].path}) has {n_frames}")
        available = {m: (tuple(s for part in parts for s in part.segments), (), (0, 0)) for m, parts in opened.items()}
        layout = "module files"
    if n_frames < 2:
        raise InputError(label, f"{where} has {n_frames} frame(s), need at least 2")
    wanted = select_modules(label, sorted(available), modules, where)
    files = sorted({name for parts in opened.values() for part in parts for name in part.files})
    frame_shape = (n_frames, *det.module_shape)
    name = "hdf5-stack-" + tokenize(file_token(files), [available[m] for m in wanted], str(dtype), wanted, det)
    grid = np.empty((len(wanted), 1), dtype=object)
    for i, m in enumerate(wanted):
        grid[i, 0] = _Region(*available[m], frame_shape, dtype.str)
    tasks = {(i, 0, 0, 0, 0): (_read_region, grid[i, 0]) for i in range(len(wanted))}
    chunks = ((1,) * len(wanted), (1,), (n_frames,), (det.module_shape[0],), (det.module_shape[1],))
    raw = graph_array(name, tasks, chunks, dtype)
    views = {"analog": None}
    if det.counting and dtype.kind == "i":  # counts below 0 mark gaps and bad pixels (Dectris -1, -2): missing
        views = {"analog": negative_as_nan}
    if det.gain == "bits":
        if dtype.kind != "u" or dtype.itemsize != 2:
            raise InputError(first.path, f"{where} holds {dtype}; {det.name} raw data with the gain in bits 14-15 is uint16")
        views = {"analog": _low_bits, "gain": _high_bits}
    data, shared = {}, grid
    for var, view in views.items():
        arr = raw if view is None else raw.map_blocks(view, dtype=view(np.zeros(1, dtype)).dtype)
        register(arr, _read_region, shared, view)
        shared = grid_of(arr)  # the other variables are views of the same read
        data[var] = (DIMS, arr)
    mask = _pixel_mask(opened, det, wanted)
    if mask is not None:
        data["pixel_mask"] = (("module", "y", "x"), mask)
    notes = [f"manufacturer pixel mask {det.pixel_mask} kept as its own layer"] if mask is not None else []
    return one_cell_dataset(data, wanted, n_frames, det, source=dataset, path=label, format=f"hdf5-stack ({layout} layout)", notes=notes, files=files)


def _read_pixel_mask(sources: tuple, det: Detector) -> np.ndarray:
    """The manufacturer's mask as uint32 (module, y, x): from each (file, dataset, module indices)
    the planes of those modules (a full frame, a (module, y, x) stack or one module's (y, x))."""
    planes = []
    for path, dataset, indices in sources:
        with open_hdf5(path) as f:
            mask = np.asarray(f[dataset][()], dtype=np.uint32)
        planes.append(det.module_stack(mask)[list(indices)])
    return np.concatenate(planes)


def _pixel_mask(opened: dict, det: Detector, wanted: list):
    """Lazy (module, y, x) manufacturer mask from the first part (of each module's files), or
    None when the files have none; InputError now if its shape fits no layout, or if only some
    module files have one."""
    module_files = None not in opened
    firsts = [opened[m][0] for m in wanted] if module_files else [opened[None][0]]
    with_mask = [p for p in firsts if p.mask]
    if not with_mask:
        return None
    if len(with_mask) < len(firsts):
        lacking = next(p for p in firsts if not p.mask)
        raise InputError(lacking.path, f"has no pixel mask {det.pixel_mask}, but {with_mask[0].path} has one")
    fits = [tuple(det.module_shape), (1, *det.module_shape)]
    if not module_files:
        fits.append((det.n_modules, *det.module_shape))
        if det.frame_shape is not None:
            fits.append(det.frame_shape)
    for part in firsts:
        dataset, shape = part.mask
        if tuple(shape) not in fits:
            raise InputError(part.path, f"pixel mask {dataset} has shape {tuple(shape)}, expected one of {fits}")
    if module_files:
        sources = tuple((p.path, p.mask[0], (0,)) for p in firsts)
    else:
        sources = ((firsts[0].path, firsts[0].mask[0], tuple(wanted)),)
    name = "pixel-mask-" + tokenize(file_token([s[0] for s in sources]), sources, det)
    ny, nx = det.module_shape
    return graph_array(name, {(0, 0, 0): (_read_pixel_mask, sources, det)}, ((len(wanted),), (ny,), (nx,)), np.uint32)
