"""Stores and exports: the Zarr v3 store of a mask, atomic publication, the HDF5 export.

Layout (DESIGN.md, Stores), the same in Zarr and HDF5:

    /mask                      uint8 (module, gain, cell, y, x)
    /features/<name>           float32 (module, gain, cell, y, x); flat_snr (module, cell, y, x)
    /snr/<name>                float32: each feature's SNR against its ASIC model
    /rejected_frames/<stage>   bool (module, cell, frame): F1
    /layers/manufacturer       uint32 (module, y, x): the detector's own pixel mask (NeXus bits), if any
    /layers/user               uint8 (module, y, x): the user's mask (beamstop, shadows), if given
    /module, /gain, /cell      coordinates; /rejected_frames/train_id_<stage>
    attrs                      software version, parameters, inputs, detector, start/end time

A store is written under a hidden temporary name beside its target and renamed into
place only when every array is written: a reader never sees half a mask, and a job
that fails or is interrupted leaves the previous store as it was (see ``_publish`` for
how ``--overwrite`` swaps a directory).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import uuid
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from . import __version__
from .errors import InputError

STORE_FORMAT = "rmm-dask mask store 1"


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


def _partial_path(target: Path, what: str) -> Path:
    return target.with_name(f".{target.name}.{what}-{uuid.uuid4().hex[:8]}")


def _new_output(path, overwrite: bool, what: str) -> tuple[Path, Path]:
    """The absolute target and a temporary name beside it, after checking the target may be written."""
    target = Path(path).absolute()
    if target.exists() and not overwrite:
        raise InputError(target, "exists already (give --overwrite to replace it)")
    if not target.parent.is_dir():
        raise InputError(target.parent, f"no such directory for {what}")
    return target, _partial_path(target, "partial")


def _publish(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the complete ``tmp`` into place; never over an existing target unless ``overwrite``.

    A file is published with one atomic step (a hard link that fails if the target
    appeared meanwhile, or ``os.replace`` when overwriting). A directory store cannot be
    swapped atomically: an existing one is renamed aside, the new one renamed in, and
    the old one deleted only then (restored if the second rename fails); readers may
    see no store for the moment between the two renames, never a partial one.
    """
    if tmp.is_file():
        if overwrite:
            os.replace(tmp, target)
            return
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise InputError(target, "exists already (give --overwrite to replace it)") from None
        tmp.unlink()
        return
    if not target.exists():
        os.rename(tmp, target)
        return
    if not overwrite:
        raise InputError(target, "exists already (give --overwrite to replace it)")
    old = _partial_path(target, "old")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    _remove(old)


def remove_partial(path: Path) -> None:
    """Remove a temporary store left by a failed job, if it is there."""
    _remove(Path(path))


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def write_store(ds: xr.Dataset, path, *, overwrite: bool = False, compute=None, extra_attrs: dict | None = None, partials: list | None = None) -> Path:
    """Compute the lazy mask ``ds`` (from :func:`rmm_dask.pipeline.build_mask`) into a Zarr v3 store.

    ``compute`` is called with the dask collection that writes every array (default:
    :func:`rmm_dask.cluster.compute`, with a progress bar); the store appears at
    ``path`` only when it is complete. An existing ``path`` is refused unless
    ``overwrite``, and is then replaced only after the new store is complete. The
    temporary store is removed on failure; ``partials``, if given, receives its path, for
    the caller to remove it again once the cluster is shut down (a write task that was
    already running on a worker when the job failed may still land after the removal).
    """
    import dask.array as da

    from .cluster import compute as default_compute

    target, tmp = _new_output(path, overwrite, "the output store")
    if partials is not None:
        partials.append(tmp)
    attrs = {
        "format": STORE_FORMAT,
        "software": f"rmm-dask {__version__}",
        "host": socket.gethostname(),
        "start_time": _now(),
        **ds.attrs,
        **(extra_attrs or {}),
    }
    try:
        root = zarr.open_group(tmp, mode="w-", zarr_format=3)
        for name in ("module", "gain", "cell"):
            root.create_array(name, data=np.asarray(ds[name].values), dimension_names=[name])
        sources, targets = [], []
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
            )
            sources.append(data.rechunk(chunks))
            targets.append(arr)
        for name, coord in ds.coords.items():
            if name.startswith("train_id_"):
                stage = name.removeprefix("train_id_")
                root.create_array(f"rejected_frames/train_id_{stage}", data=np.asarray(coord.values), dimension_names=list(coord.dims))
        (compute or default_compute)(da.store(sources, targets, lock=False, compute=False))
        attrs["end_time"] = _now()
        root.attrs.update(json.loads(json.dumps(attrs, default=str)))
        with warnings.catch_warnings():  # zarr warns that v3 has no consolidated metadata in its spec yet;
            warnings.simplefilter("ignore")  # xarray reads it, and opening a store is much faster with it
            zarr.consolidate_metadata(tmp)
        _validate(tmp, ds)
        _publish(tmp, target, overwrite)
    except BaseException:
        _remove(tmp)
        raise
    return target


def _validate(path: Path, ds: xr.Dataset) -> None:
    """Re-open the written store and check every array has the expected shape and dtype."""
    root = zarr.open_group(path, mode="r")
    for name, var in ds.data_vars.items():
        arr = root[_group_path(name, var)]
        if arr.shape != var.shape or arr.dtype != var.dtype:
            raise RuntimeError(f"{path}: {name} written as {arr.shape} {arr.dtype}, expected {var.shape} {var.dtype}")


def open_store(path) -> zarr.Group:
    """Open a published mask store read-only, or raise InputError saying why not."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such mask store")
    try:
        root = zarr.open_group(path, mode="r")
    except Exception as err:  # zarr raises several kinds for a non-store
        raise InputError(path, f"not a Zarr store ({err.__class__.__name__}: {err})") from None
    if root.attrs.get("format") != STORE_FORMAT or "mask" not in root:
        raise InputError(path, "not an rmm-dask mask store (no 'mask' array or format attribute)")
    return root


def walk_arrays(group: zarr.Group, prefix: str = ""):
    """(path, array) for every array below ``group``, depth first, in name order."""
    for name in sorted(group.array_keys()):
        yield prefix + name, group[name]
    for name in sorted(group.group_keys()):
        yield from walk_arrays(group[name], f"{prefix}{name}/")


def export_h5(store, out, *, overwrite: bool = False) -> Path:
    """Write the store's layout to one HDF5 file (same paths, dims and attrs), atomically."""
    import h5py

    root = open_store(store)
    target, tmp = _new_output(out, overwrite, "the export")
    try:
        with h5py.File(tmp, "w") as f:
            for path, arr in walk_arrays(root):
                plane = arr.chunks if arr.ndim >= 3 else None
                ds = f.create_dataset(
                    path, shape=arr.shape, dtype=arr.dtype, chunks=plane, compression="gzip" if plane else None, compression_opts=1 if plane else None, shuffle=bool(plane)
                )
                step = arr.chunks[0]
                for i in range(0, arr.shape[0], step):  # one module at a time: memory bounded by a module
                    ds[i : i + step] = arr[i : i + step]
                ds.attrs["dimension_names"] = json.dumps(arr.metadata.dimension_names)
                for k, v in arr.attrs.items():
                    ds.attrs[k] = _h5_attr(v)
            for k, v in root.attrs.items():
                f.attrs[k] = _h5_attr(v)
        _publish(tmp, target, overwrite)
    except BaseException:
        _remove(tmp)
        raise
    return target


def _h5_attr(value):
    """HDF5 attributes: strings and numbers as they are, anything nested as JSON text."""
    if isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value)
