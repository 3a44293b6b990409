"""HDF5 stacks of frames (plain, CXI, NeXus/NXmx).

:func:`open_hdf5_stack` reads a dataset of frames, full detector frames ``(frame, Y, X)``,
``(frame, module, y, x)`` or ``(frame, y, x)``, in one file, in part files joined along
frames, or in one file per module, as the same lazy dataset as a EuXFEL run: dims
``(module, cell, frame, y, x)``: one memory cell (id 0), or the cells of a description with
``cells: N`` (interleaved) or ``cell-ids`` (:func:`_cells_of_run`). The chip boundaries may come
from the files' pixel mask (``chips-from-pixel-mask``: :func:`_chips_of_run`). One read task per
module and block of cells, ``(_read_region, region)``; a region carries file paths, never an open file, and
``region.frames(start, stop)`` is the same region limited to those frames (a sample, or
one block of frames streamed through the pipeline; see :mod:`rmm_dask.io.regions`).
Which files make one acquisition is decided in :mod:`rmm_dask.io.files`; the helpers every
reader shares are in :mod:`rmm_dask.io.common`.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping

import h5py
import numpy as np
import xarray as xr
from dask.base import tokenize
from h5py import h5s

from ..chips import boundaries
from ..detectors import Detector, builtin, with_chips
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
    """One read task of a stack: one module's pixels in some frames of some memory cells, as (1, cells, frame, y, x).

    ``segments`` are the (file, dataset, first frame, frames) the raw frames are concatenated
    from, in order (one dataset; the ``data_000001``, ... datasets of a NeXus master file;
    the part files of a series); ``index`` the fixed indices between the frame axis and the
    module's pixels (``()``, or the module's index); ``origin`` the module's first pixel
    (y, x) in the frame; ``shape`` (frames, y, x) of the result, frames per cell. The raw
    frames cycle through ``period`` memory cells: frame ``f`` of the cell at ``phase`` p is
    raw frame ``f * period + p``; ``phases`` are the region's cells. Holds paths, never open files.
    """

    __slots__ = ("segments", "index", "origin", "shape", "dtype", "period", "phases")

    def __init__(self, segments: tuple, index: tuple, origin: tuple, shape: tuple, dtype: str,
                 period: int = 1, phases: tuple = (0,)):
        self.segments, self.index, self.origin, self.shape, self.dtype = segments, index, origin, shape, dtype
        self.period, self.phases = period, phases

    def __reduce__(self):
        return type(self), (self.segments, self.index, self.origin, self.shape, self.dtype, self.period, self.phases)

    def __repr__(self):
        cells = f", cells {list(self.phases)} of {self.period}" if self.period > 1 else ""
        return (f"_Region({len(self.segments)} segments, index={self.index}, origin={self.origin}, shape={self.shape}, "
                f"dtype={self.dtype}{cells})")

    @property
    def n_frames(self) -> int:
        return self.shape[0]

    def frames(self, start: int, stop: int) -> _Region:
        """The same region limited to its frames ``[start, stop)`` (cut to the frames it has);
        ``_read_region`` of it reads only the segments those frames are in."""
        start, stop = max(0, int(start)), min(int(stop), self.shape[0])
        if stop <= start:
            raise ValueError(f"frames({start}, {stop}) of a region of {self.shape[0]} frames holds no frame")
        raw_start, raw_stop = start * self.period, stop * self.period  # whole cycles of cells: phases kept
        segments, at = [], 0
        for path, dataset, first, count in self.segments:
            lo, hi = max(raw_start, at), min(raw_stop, at + count)
            if lo < hi:
                segments.append((path, dataset, first + lo - at, hi - lo))
            at += count
        return _Region(tuple(segments), self.index, self.origin, (stop - start, *self.shape[1:]), self.dtype,
                       self.period, self.phases)


def _read_region(region: _Region) -> np.ndarray:
    """Read one module of the region's frames and cells, one HDF5 chunk of frames at a time, straight into the output.

    One read per chunk and cell (a cell's frames within a chunk are one strided selection): a single
    selection spanning many chunks is several times slower in HDF5 1.14.
    """
    n_frames, ny, nx = region.shape
    period = region.period
    out = np.empty((1, len(region.phases), n_frames, ny, nx), dtype=region.dtype)
    ones, at = (1,) * len(region.index), 0  # at: the region's raw frame at the segment's start
    for path, dataset, first, n_seg in region.segments:
        try:
            with h5py.File(path, "r") as f:
                ds = f[dataset]
                if ds.shape[0] < first + n_seg:
                    raise InputError(path, f"dataset {dataset} changed shape since it was opened: {ds.shape}")
                step = ds.chunks[0] if ds.chunks else max(1, (4 << 20) // (ny * nx * ds.dtype.itemsize))
                space = ds.id.get_space()
                for c, phase in enumerate(region.phases):
                    r = at + (phase - at) % period  # the cell's first raw frame in this segment
                    while r < at + n_seg:
                        a = first + r - at  # in the file
                        stop = min((a // step + 1) * step, first + n_seg)  # to the end of the HDF5 chunk a is in
                        n = -(-(stop - a) // period)
                        space.select_hyperslab((a, *region.index, *region.origin), (n, *ones, ny, nx),
                                               (period, *ones, 1, 1))
                        mem = (n, *ones, ny, nx)
                        frame = (r - phase) // period
                        ds.id.read(h5s.create_simple(mem), space, out[0, c, frame : frame + n].reshape(mem))
                        r += n * period
        except InputError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise InputError(path, f"cannot read dataset {dataset}: {e}") from None
        at += n_seg
    return out


class _Measured:
    """View of raw values as float32 with no measurement as NaN: below 0 (counting detectors' integers: gaps
    and bad pixels, Dectris -1, -2; unless an underload value is given), above ``saturation_value`` or below
    ``underload_value`` (NXmx: the detector's marks of gap, dead and overflowing pixels, e.g. 2^32 - 1).
    Picklable, for the read tasks."""

    __slots__ = ("negative", "low", "high")

    def __init__(self, negative: bool, low=None, high=None):
        self.negative, self.low, self.high = negative, low, high

    def __call__(self, block: np.ndarray) -> np.ndarray:
        out = negative_as_nan(block) if self.negative else block.astype(np.float32)
        if self.high is not None:
            out[block > self.high] = np.nan
        if self.low is not None:
            out[block < self.low] = np.nan
        return out

    def __reduce__(self):
        return type(self), (self.negative, self.low, self.high)

    def __dask_tokenize__(self):
        return ("rmm-measured", self.negative, self.low, self.high)


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
    variable ``pixel_mask`` uint32 ``(module, y, x)``. Memory cells as the description says
    (:func:`_cells_of_run`), ``cells_per_chunk`` of them per read task; ``modules`` selects
    module numbers. Only metadata is read here (and the pixel mask where the chips come from it).
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
    det, chips = _chips_of_run(opened, det, tuple(first.shape[1:]))
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
            unmarked = det.chips_from_mask and first.mask  # the shape would have come from the marks
            problem = f"{where} has shape {first.shape}"
            expected = f"one module's file of {det.name} holds (frame, {det.module_shape[0]}, {det.module_shape[1]})"
            if unmarked:
                problem += " and its pixel mask marks no chip boundaries"
                expected += ": describe the module in a YAML file with its chip-rows and chip-columns"
            raise InputError(first.path, f"{problem}; {expected}")
        m0, n_frames = next(iter(frames.items()))
        for m, n in frames.items():
            if n != n_frames:
                raise InputError(opened[m][0].path, f"module m{m + 1} has {n} frames, module m{m0 + 1} ({opened[m0][0].path}) has {n_frames}")
        available = {m: (tuple(s for part in parts for s in part.segments), (), (0, 0)) for m, parts in opened.items()}
        layout = "module files"
    cells, phases, cell_note = _cells_of_run(opened, det, label, where, n_frames)
    n_frames //= len(phases)
    if n_frames < 2:
        raise InputError(label, f"{where} has {n_frames} frame(s){' per memory cell' if len(phases) > 1 else ''},"
                                " need at least 2")
    wanted = select_modules(label, sorted(available), modules, where)
    files = sorted({name for parts in opened.values() for part in parts for name in part.files})
    frame_shape = (n_frames, *det.module_shape)
    name = "hdf5-stack-" + tokenize(file_token(files), [available[m] for m in wanted], str(dtype), wanted, det, phases)
    blocks = [tuple(range(a, min(a + cells_per_chunk, len(cells)))) for a in range(0, len(cells), cells_per_chunk)]
    grid = np.empty((len(wanted), len(blocks)), dtype=object)
    for (i, m), (j, block) in itertools.product(enumerate(wanted), enumerate(blocks)):
        grid[i, j] = _Region(*available[m], frame_shape, dtype.str, len(phases), tuple(phases[c] for c in block))
    tasks = {(i, j, 0, 0, 0): (_read_region, grid[i, j]) for i, j in np.ndindex(grid.shape)}
    chunks = ((1,) * len(wanted), tuple(map(len, blocks)), (n_frames,), (det.module_shape[0],), (det.module_shape[1],))
    raw = graph_array(name, tasks, chunks, dtype)
    views = {"analog": None}
    limits = (det.underload_value, det.saturation_value)
    negative = det.counting and dtype.kind == "i" and det.underload_value is None  # else: below underload missing
    if negative or limits != (None, None):  # no measurement: missing
        views = {"analog": _Measured(negative, *limits)}
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
    notes += [note for note in (chips, cell_note) if note]
    return one_cell_dataset(data, wanted, n_frames, det, source=dataset, path=label, format=f"hdf5-stack ({layout} layout)",
                            notes=notes, files=files, chips=chips or "from the description", cells=cells)


def _cells_of_run(opened: dict, det: Detector, label: str, where: str, n_raw: int) -> tuple[list, list, str | None]:
    """The memory cells of a stack's raw frames: (cell ids, the phase of each in the cycle, a note).

    One cell (id 0) for a detector of one, and (with a note) for a built-in description, whose cells are
    those of EuXFEL runs (AGIPD1M, JUNGFRAU1M); ``cells: N`` > 1: N cells interleaved (frame i is cell
    i mod N); with ``cell-ids: PATH`` the cell of each frame from that dataset in the files (EuXFEL's
    ``image.cellId``), which must repeat one sequence of distinct cells. InputError (one line) for a
    frame count that is no whole number of cycles, or ids that do not repeat.
    """
    if det.n_cells == 1 and det.cell_ids is None:
        return [0], [0], None
    if det.cell_ids is None and builtin(det):
        return [0], [0], (f"read as one memory cell: {det.name}'s {det.n_cells} cells are those of EuXFEL runs; for a "
                          "stack of several, describe it in a YAML file with cells: N (interleaved) or cell-ids: PATH")
    if det.cell_ids is None:
        period, sequence = det.n_cells, list(range(det.n_cells))
        how = f"frame i is cell i mod {period} (cells: {period} of {det.name})"
        source = f"the {period} memory cells of {det.name}"
    else:
        ids = _read_cell_ids(opened, det.cell_ids, n_raw)
        repeat = np.flatnonzero(ids[1:] == ids[0])
        period = int(repeat[0]) + 1 if repeat.size else len(ids)
        sequence = [int(c) for c in ids[:period]]
        source = f"the cycle of {period} cells in {det.cell_ids}"
        if len(set(sequence)) < period or period > det.n_cells:
            raise InputError(label, f"{det.cell_ids}: the first {period} frames' cells {_cut(sequence)} are not "
                                    f"one cycle of distinct cells of {det.name}'s {det.n_cells}")
        if n_raw % period == 0:
            wrong = np.flatnonzero(ids != np.tile(ids[:period], n_raw // period))
            if wrong.size:
                i = int(wrong[0])
                raise InputError(label, f"{det.cell_ids}: frame {i} has cell {int(ids[i])}, but the cycle of the "
                                        f"first {period} frames puts cell {sequence[i % period]} there: "
                                        "not one repeating sequence of cells (a frame dropped?)")
        how = f"cells {_cut(sorted(sequence))} from {det.cell_ids}, a cycle of {period} frames"
    if n_raw % period:
        raise InputError(label, f"{where} has {n_raw} frames, not a whole number of cycles of {source}: "
                                f"{n_raw % period} frame(s) more than {n_raw // period} cycles (a frame missing or extra?)")
    cells = sorted(sequence)
    return cells, [sequence.index(c) for c in cells], f"frames read as {period} memory cells: {how}"


def _read_cell_ids(opened: dict, path: str, n_raw: int) -> np.ndarray:
    """The cell id of every raw frame, from dataset ``path`` of each file of (the first module's) stack."""
    parts = next(iter(opened.values()))
    ids = []
    for part in parts:
        with open_hdf5(part.path) as f:
            d = f.get(path)
            if not isinstance(d, h5py.Dataset):
                raise InputError(part.path, f"no dataset {path} (cell-ids: the memory cell of each frame)")
            values = np.asarray(d[()])
        if values.dtype.kind not in "iu" or values.reshape(len(values), -1).shape[1] != 1 or len(values) != part.frames:
            raise InputError(part.path, f"cell-ids dataset {path} holds {values.dtype} {values.shape}: expected one "
                                        f"integer per frame ({part.frames})")
        ids.append(values.reshape(-1).astype(np.int64))
    return np.concatenate(ids)


def _cut(values: list) -> str:
    return str(values) if len(values) <= 8 else f"[{values[0]}, ..., {values[-1]}] ({len(values)})"


def _chips_of_run(opened: dict, det: Detector, tail: tuple) -> tuple[Detector, str | None]:
    """``det`` with the chip boundaries (and, for a module's own files, the module shape) that the run's
    pixel mask marks (:mod:`rmm_dask.chips`), and a note saying so, for a description that asks for it
    (``chips-from-pixel-mask: true``); ``(det, None)`` otherwise, or where the files have no pixel mask or
    mark none. Reads the pixel masks of each module's first file (metadata-sized).
    Every module must mark the same boundaries (the detector has one layout); InputError otherwise."""
    firsts = [parts[0] for parts in opened.values() if parts[0].mask]
    if not det.chips_from_mask or not firsts:
        return det, None
    one_module = None not in opened or (len(tail) == 2 and tail != det.frame_shape)  # the files' frames: one module
    shape = tail if one_module else tuple(det.module_shape)
    found = {}
    for part in firsts:
        dataset = part.mask[0]
        with open_hdf5(part.path) as f:
            plane = np.asarray(f[dataset][()], dtype=np.uint32)
        planes = plane.reshape(-1, *shape) if one_module and plane.size == np.prod(shape) else det.module_stack(plane)
        if planes.ndim != 3 or planes.shape[1:] != shape:
            return det, None  # a mask of another shape: refused with its shape by _pixel_mask
        for m, module in enumerate(planes):
            try:
                bounds = (boundaries(module, 0), boundaries(module, 1))
            except ValueError as e:
                raise InputError(part.path, f"pixel mask {dataset}: {e}") from None
            found.setdefault(bounds, part.path if len(planes) == 1 else f"{part.path} (module {m})")
    if len(found) > 1:
        (a, first_file), (b, other) = list(found.items())[:2]
        raise InputError(other, f"its pixel mask marks chip rows {_listed(b[0])} and columns {_listed(b[1])}, but "
                                f"{first_file}'s {_listed(a[0])} and {_listed(a[1])}: not one detector's modules")
    (rows, columns), where = next(iter(found.items()))
    if rows is None and columns is None:
        return det, None
    try:
        adapted = with_chips(det, shape, rows, columns)
    except ValueError as e:
        raise InputError(where, f"{det.name}: {e}") from None
    note = (f"chip rows {_listed(adapted.chip_rows or rows)}, columns {_listed(adapted.chip_columns or columns)} "
            f"from the pixel mask {det.pixel_mask} of {where}")
    return adapted, note


def _listed(bounds) -> str:
    return "as described" if bounds is None else str(list(bounds))


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
