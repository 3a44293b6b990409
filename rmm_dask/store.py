"""Stores and exports: the Zarr v3 store of a mask, atomic publication, the HDF5 export.

Layout (DESIGN.md, Stores), the same in Zarr and HDF5:

    /mask                      uint8 (module, gain, cell, y, x)
    /features/<name>           float32 (module, gain, cell, y, x); flat_snr (module, cell, y, x)
    /snr/<name>                float32: each feature's SNR against its ASIC model
    /rejected_frames/<stage>   bool (module, cell, frame): F1
    /layers/manufacturer       uint32 (module, y, x): the detector's own pixel mask (NeXus bits), if any
    /layers/user               uint8 (module, y, x): the user's mask (beamstop, shadows), if given
    /layers/history            uint8 (module, gain, cell, y, x): a mask that remembers (nightly ``history:``):
                               1 = bad on enough of the last nights; attrs min_fraction, last, nights, versions
    /module, /gain, /cell      coordinates; /rejected_frames/train_id_<stage>
    attrs                      software version, parameters, inputs, detector, start/end time

A store is written under a hidden temporary name beside its target and moved into
place, read-only, only when every array is written (:mod:`rmm_dask.publish`): a reader
never sees half a mask, and a job that fails or is interrupted leaves the previous store
as it was; ``--overwrite`` swaps the new store with the old in one atomic step.

Every chunk of every array is written (also one equal to the fill value) and ends with its
crc32c checksum, and the root's ``arrays`` attribute records each array's shape, chunk
shape and dtype (:mod:`rmm_dask.integrity`, store format :data:`STORE_FORMAT`).

Stores are read back through xarray: :func:`open_tree` gives the layout above as an
``xarray.DataTree`` (lazily indexed, or dask arrays with ``chunks={}``); ``show``, ``diff``
and ``export`` read it one module at a time, and :func:`rmm_dask.apply.open_mask` makes of
it the Dataset users apply to their data. :func:`open_store` (a Zarr group) is for
checking a store's arrays directly. Both verify the store first (the metadata as written,
every chunk there) and read through :class:`rmm_dask.integrity.VerifiedStore`, which checks
each chunk as it is read: a damaged store is refused in one InputError line naming the chunk.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from . import __version__, integrity, interrupts, publish
from .errors import InputError, printable

#: the ``format`` attribute of the stores written (stores of format 1 are read, unverified: integrity.note)
STORE_FORMAT = integrity.FORMAT


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _group_path(name: str, var: xr.DataArray) -> str:
    role = var.attrs.get("role")
    if role == "feature":
        return f"features/{name}"
    if role == "snr":
        return f"snr/{var.attrs['feature']}"
    if role == "rejected_frames":
        return f"rejected_frames/{var.attrs['gain_stage']}"
    if role == "layer":
        return f"layers/{var.attrs['layer']}"
    return name


def remove_partial(path: Path) -> None:
    """Remove a temporary store left by a failed job, if it is there (never following a link)."""
    publish.discard(path)


def write_store(ds: xr.Dataset, path, *, overwrite: bool = False, compute=None, extra_attrs: dict | None = None, partials: list | None = None, verify=None) -> Path:
    """Compute the lazy mask ``ds`` (from :func:`rmm_dask.pipeline.build_mask`) into a Zarr v3 store.

    ``compute`` is called with the dask collection that writes every array (default:
    :func:`dask.compute`, on dask's current scheduler; ``rmm mask`` passes
    :func:`rmm_dask.cluster.compute`, with a progress bar: stores know no clusters); the store appears at
    ``path`` only when it is complete. An existing ``path`` is refused unless
    ``overwrite``, and is then replaced only after the new store is complete. The
    temporary store is removed on failure (no space left, no permission: one InputError
    line naming the store); ``partials``, if given, receives its path, for
    the caller to remove it again once the cluster is shut down (a write task that was
    already running on a worker when the job failed may still land after the removal).
    ``verify``, if given, is called once everything is written, before the store is published:
    an error it raises (the inputs changed while the job ran) publishes nothing.
    """
    import dask

    attrs = {
        "format": STORE_FORMAT,
        "software": f"rmm-dask {__version__}",
        "host": socket.gethostname(),
        "start_time": _now(),
        **ds.attrs,
        **(extra_attrs or {}),
    }
    with publish.output(path, overwrite=overwrite, directory=True, what="the output store") as out:
        tmp = out.tmp
        if partials is not None:
            partials.append(tmp)
        # zarr writes metadata from its own IO thread: a Ctrl-C must not end this thread's wait while that
        # one still writes (it would make the temporary again, with a zarr.json, after it was removed)
        with interrupts.held():
            root = zarr.open_group(tmp, mode="w-", zarr_format=3)
            writes = store_writes(ds, root)
        attrs["arrays"] = integrity.manifest(root)  # what readers check the store against
        (compute or dask.compute)(writes)
        attrs["end_time"] = _now()
        with interrupts.held(), warnings.catch_warnings():
            root.attrs.update(json.loads(json.dumps(attrs, default=str)))
            warnings.simplefilter("ignore")  # zarr warns that v3 has no consolidated metadata in its spec yet;
            zarr.consolidate_metadata(tmp)  # xarray reads it, and opening a store is much faster with it
        _validate(tmp, ds)
        if verify is not None:
            verify()
    return out.target


def store_writes(ds: xr.Dataset, root: zarr.Group):
    """Create the store's arrays in ``root`` and return the lazy dask collection (or tuple of them) that fills them.

    When every array is chunked on the mask's (module, cells) grid (what
    :func:`rmm_dask.pipeline.build_mask` makes; the per-module layers too), one task per
    chunk writes them all (:func:`_store_per_chunk`); otherwise :func:`dask.array.store`
    writes each array's chunks. Nothing is computed here. Every array gets
    :func:`rmm_dask.integrity.array_options`: checksummed chunks, all of them written.
    """
    import dask.array as da

    options = integrity.array_options()
    for name in ("module", "gain", "cell"):
        root.create_array(name, data=np.asarray(ds[name].values), dimension_names=[name], **options)
    grid = _chunk_grid(ds)
    arrays = []
    for name, var in ds.data_vars.items():
        data = var.data if isinstance(var.data, da.Array) else da.from_array(var.data)
        chunks = tuple(max(c) for c in data.chunks)
        arr = root.create_array(
            _group_path(name, var),
            shape=data.shape,
            chunks=chunks,
            dtype=data.dtype,
            dimension_names=list(var.dims),
            fill_value=0,
            attributes={k: v for k, v in var.attrs.items() if k != "role"},
            **options,
        )
        arrays.append((var, data, arr))
    for name, coord in ds.coords.items():
        if name.startswith("train_id_"):
            stage = name.removeprefix("train_id_")
            root.create_array(f"rejected_frames/train_id_{stage}", data=np.asarray(coord.values),
                              dimension_names=list(coord.dims), **options)
    if all(_on_grid(var, data, grid) for var, data, _ in arrays):
        return _store_per_chunk([(var.dims, data, arr) for var, data, arr in arrays], grid)
    return da.store([data.rechunk(arr.chunks) for _, data, arr in arrays], [arr for _, _, arr in arrays], lock=False, compute=False)


# ------------------------------------------------------------------ one write task per chunk


def _chunk_grid(ds: xr.Dataset) -> tuple | None:
    """The (module, cell) chunks of the mask, if it is a dask array: the grid the pipeline computes on."""
    import dask.array as da

    mask = ds.get("mask")
    if mask is None or not isinstance(mask.data, da.Array) or mask.dims[0] != "module" or "cell" not in mask.dims:
        return None
    return mask.data.chunks[0], mask.data.chunks[mask.dims.index("cell")]


def _on_grid(var: xr.DataArray, data, grid) -> bool:
    """Whether ``var`` is chunked by the grid's modules (and cells, if it has them), whole along its
    other dims, and every dask chunk is one Zarr chunk (all but the last as large as the largest):
    then no two write tasks ever share a Zarr chunk."""
    if grid is None or var.dims[0] != "module" or any(len(set(c[:-1]) | {max(c)}) > 1 for c in grid):
        return False
    for dim, chunks in zip(var.dims, data.chunks):
        want = grid[0] if dim == "module" else grid[1] if dim == "cell" else (var.sizes[dim],)
        if tuple(chunks) != tuple(want):
            return False
    return True


def _store_per_chunk(aligned: list, grid: tuple):
    """One task per (module, cells) chunk that writes the chunk of every array in ``aligned``
    (``(dims, dask array, zarr array)``; an array without cells, such as a layer, by the
    module's first chunk), rather than one task per array and chunk: the
    pipeline's output layers then fuse into it, and a full AGIPD-1M set is two tasks per
    chunk (its stages and verdicts, and this), not fifteen. Each Zarr chunk is written by
    exactly one task (the arrays' Zarr chunks are the dask chunks), so no lock is needed.
    """
    import dask.array as da
    from dask.layers import ArrayBlockwiseDep

    class Starts(ArrayBlockwiseDep):
        """The first module and cell of each chunk, as a blockwise argument."""

        def __getitem__(self, index):
            return tuple(int(sum(c[:i])) for c, i in zip(self.chunks, index))

    args = [Starts(grid), ("module", "cell")]
    for dims, data, _ in aligned:
        args += [data, dims]
    targets = [(arr, dims.index("cell") if "cell" in dims else None) for dims, _, arr in aligned]
    # every dim of the inputs in the output (one block each): no dim is contracted, so the
    # output layers of the pipeline (also without contraction) fuse into this one
    index = ("module", "cell", *dict.fromkeys(d for dims, _, _ in aligned for d in dims if d not in ("module", "cell")))
    return da.blockwise(
        _write_chunk, index, *args, targets=targets, ndim=len(index), adjust_chunks={d: 1 for d in index[1:]}, dtype=bool, align_arrays=False
    )


def _write_chunk(start, *blocks, targets, ndim):
    m0, c0 = start
    for block, (target, cell_axis) in zip(blocks, targets):
        region = [slice(None)] * block.ndim
        region[0] = slice(m0, m0 + block.shape[0])
        if cell_axis is not None:
            region[cell_axis] = slice(c0, c0 + block.shape[cell_axis])
        elif c0 != 0:
            continue  # a per-module array (a layer): written by the module's first chunk
        target[tuple(region)] = block
    return np.ones((1,) * ndim, dtype=bool)


def _validate(path: Path, ds: xr.Dataset) -> None:
    """Re-open the written store and check every array has the expected shape and dtype, and that
    it passes the readers' check (:func:`rmm_dask.integrity.verify`: every chunk there): what is
    published, readers accept."""
    integrity.verify(Path(path))
    root = zarr.open_group(path, mode="r")
    for name, var in ds.data_vars.items():
        arr = root[_group_path(name, var)]
        if arr.shape != var.shape or arr.dtype != var.dtype:
            raise RuntimeError(f"{path}: {name} written as {arr.shape} {arr.dtype}, expected {var.shape} {var.dtype}")


def open_store(path) -> zarr.Group:
    """Open a published mask store read-only as a Zarr group, or raise InputError saying why not.

    The store is verified first (:func:`rmm_dask.integrity.verify`) and read through a
    :class:`~rmm_dask.integrity.VerifiedStore`: a chunk that is missing or damaged raises
    InputError when it is read.
    """
    path = _existing(path)
    verified = integrity.verify(path)
    try:
        root = zarr.open_group(verified, mode="r")
    except Exception as err:  # zarr raises several kinds for a non-store
        raise _not_a_store(path, err) from None
    _check_store(path, root.attrs, root["mask"].shape if "mask" in root else None)
    return root


def _not_a_store(path: Path, err: Exception) -> InputError:
    """The one line for a store zarr or xarray cannot open (their messages may span lines)."""
    first = (str(err).strip().splitlines() or [""])[0]
    return InputError(path, f"not a Zarr store ({err.__class__.__name__}: {printable(first)})")


def open_tree(store, *, chunks=None) -> xr.DataTree:
    """A published mask store as an ``xarray.DataTree`` (the layout above, one node per group), lazily.

    ``store``: a path, a group from :func:`open_store`, or a tree already open (returned as it is).
    Values are read when indexed (``chunks=None``: one module read as ``tree["mask"][i].values``),
    or as dask arrays in the store's chunks (``chunks={}``). Attributes and dtypes are the
    stored ones (no CF decoding). A path that is not a mask store, or a damaged one, raises
    InputError; so does reading a chunk that is missing or damaged (see :func:`open_store`).
    """
    if isinstance(store, xr.DataTree):
        return store
    if isinstance(store, zarr.Group):
        if isinstance(store.store, integrity.VerifiedStore):  # from open_store: verified
            verified, path = store.store, Path(store.store.root)
        elif isinstance(store.store, zarr.storage.LocalStore):  # opened by zarr itself: verify it
            return open_tree(store.store.root, chunks=chunks)
        else:  # a store in memory or elsewhere (tests): read as it is
            return xr.open_datatree(store.store, engine="zarr", chunks=chunks, decode_cf=False)
    else:
        path = _existing(store)
        verified = integrity.verify(path)
    try:
        tree = xr.open_datatree(verified, engine="zarr", chunks=chunks, decode_cf=False)
    except InputError:
        raise
    except Exception as err:  # zarr and xarray raise several kinds for a non-store
        raise _not_a_store(path, err) from None
    _check_store(path, tree.attrs, tree["mask"].shape if "mask" in tree.data_vars else None)
    return tree


def _existing(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such mask store")
    return path


def _check_store(path: Path, attrs, mask_shape: tuple | None) -> None:
    """A mask store (format attribute, a mask) whose recorded detector description is sane and describes
    its arrays (:func:`rmm_dask.detectors.detector_of`): readers allocate per-module maps from it, and a
    store's attributes are a file anyone may edit."""
    from .detectors import detector_of

    if attrs.get("format") not in (STORE_FORMAT, integrity.LEGACY) or mask_shape is None:
        raise InputError(path, "not an rmm-dask mask store (no 'mask' array or format attribute)")
    detector_of(attrs, where=path, shape=mask_shape)


def gain_names(tree: xr.DataTree) -> list[str]:
    """The store's gain stages by name, in the order of its ``gain`` axis."""
    return list(tree.attrs.get("gain_stages") or [str(g) for g in tree["gain"].values])


def walk_arrays(group: zarr.Group, prefix: str = ""):
    """(path, array) for every array below ``group``, depth first, in name order (tests compare stores with it)."""
    for name in sorted(group.array_keys()):
        yield prefix + name, group[name]
    for name in sorted(group.group_keys()):
        yield from walk_arrays(group[name], f"{prefix}{name}/")


def walk_variables(tree: xr.DataTree):
    """(path, variable) for every array of a store's tree, each group's own arrays in name order, then its groups."""
    prefix = "" if tree.is_root else tree.path.lstrip("/") + "/"
    own = tree.to_dataset(inherit=False).variables
    for name in sorted(own):
        yield prefix + name, own[name]
    for name in sorted(tree.children):
        yield from walk_variables(tree.children[name])


def export_h5(store, out, *, overwrite: bool = False) -> Path:
    """Write the store's layout to one HDF5 file (same paths, dims and attrs), atomically."""
    import h5py

    tree = open_tree(store)
    with publish.output(out, overwrite=overwrite, what="the export") as tmp:
        with h5py.File(tmp.tmp, "w") as f:
            for path, var in walk_variables(tree):
                chunks = tuple(var.encoding.get("chunks") or var.shape)
                plane = chunks if var.ndim >= 3 else None
                ds = f.create_dataset(
                    path, shape=var.shape, dtype=var.dtype, chunks=plane, compression="gzip" if plane else None, compression_opts=1 if plane else None, shuffle=bool(plane)
                )
                for i in range(0, var.shape[0], chunks[0]):  # one module at a time: memory bounded by a module
                    block = var[i : i + chunks[0]].values
                    tmp.ensure_room(block.nbytes)  # HDF5 must not meet a full disk (see publish.Temporary.ensure_room)
                    ds[i : i + chunks[0]] = block
                ds.attrs["dimension_names"] = json.dumps(list(var.dims))
                for k, v in var.attrs.items():
                    ds.attrs[k] = _h5_attr(v)
            for k, v in tree.attrs.items():
                f.attrs[k] = _h5_attr(v)
    return tmp.target


def _h5_attr(value):
    """HDF5 attributes: strings and numbers as they are, anything nested as JSON text."""
    if isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value)
