"""Applying a published mask to data: :func:`open_mask` and :func:`bad_pixels`.

``open_mask(store)`` is the store as a lazy ``xarray.Dataset`` (dask arrays in the store's
chunks, nothing read until computed): ``mask`` uint8 ``(module, gain, cell, y, x)`` with
the gain stages by name on ``gain``, and the layers kept apart from the bits, when the
store has them: ``pixel_mask`` (the manufacturer's, uint32 NeXus bits, ``(module, y, x)``)
and ``user_mask`` (uint8, non-zero = masked by the user), and ``history_mask`` (uint8 ``(module,
gain, cell, y, x)``, 1 = kept masked by a mask that remembers: bad on enough of the last nights,
nightly ``history:``). ``bad_pixels(mask, "dark")``
is one boolean array, True = bad, for a named group of bits:

=========  ==========================================================  =================
preset     bits                                                        from
=========  ==========================================================  =================
``dark``   OFFSET, NOISE, GAIN_SEPARATION, GAIN_LEVEL, NO_DATA          the dark runs
``flat``   FLAT_HIGH, FLAT_LOW, NO_DATA                                 the flat run
``all``    every bit, ASIC_EDGE included                                geometry too
=========  ==========================================================  =================

or any :class:`~rmm_dask.codes.BadPixel` combination (``BadPixel.NOISE | BadPixel.ASIC_EDGE``),
a bit's name, or a list of these (their union). The layers are included by default
(``layers=False``: the analysis alone; ``layers=("user",)``: one of them; ``"history"``: the
remembered pixel-planes, reduced over gain as the bits are); a manufacturer's
pixel is bad when it has any of the NeXus reject bits 0-15 (bit 31, virtual, alone is not).

Its dims are ``(module, cell, y, x)`` with the store's module and memory-cell ids as
coordinates: gain is reduced with *any* (corrected data mixes gain stages frame by frame,
so a pixel bad in any stage is masked), or one stage is picked with ``gain="high"``. Given
``like=data``, the result follows EXtra-data's labels: the pixel dims take the names of
``data``'s last two (``slow_scan``, ``fast_scan`` from ``AGIPD1M.get_array``, ``dim_0``,
``dim_1`` from ``get_dask_array``), its modules are numbered as EXtra-data numbers them
(JUNGFRAU from 1: JNGFR01 is module 1, rmm's module 0), and frames stacked on one dim with a ``cell`` or
``cellId`` level (``subtrain_index="cellId"``, not unstacked) get each frame's cell. Select data by memory cell (``subtrain_index="cellId"``; pulse ids do not name
cells). ``data.where(~bad)`` then aligns on ``module`` and ``cell`` by label (xarray keeps the
labels both have) and sets the bad pixels to NaN.
"""

from __future__ import annotations

import os
from functools import reduce

import numpy as np
import xarray as xr

from .chips import NEXUS_REJECT
from .codes import BadPixel, describe
from .store import gain_names, open_tree

__all__ = ["PRESETS", "open_mask", "bad_pixels", "bits_of"]

_DARK = BadPixel.OFFSET | BadPixel.NOISE | BadPixel.GAIN_SEPARATION | BadPixel.GAIN_LEVEL
#: named groups of bits; NO_DATA (nothing to judge the pixel by) is in each
PRESETS = {
    "dark": _DARK | BadPixel.NO_DATA,
    "flat": BadPixel.FLAT_HIGH | BadPixel.FLAT_LOW | BadPixel.NO_DATA,
    "all": BadPixel(0xFF),
}
#: the store's layers, by their name in the Dataset of open_mask
LAYERS = {"manufacturer": "pixel_mask", "user": "user_mask", "history": "history_mask"}


def open_mask(store) -> xr.Dataset:
    """The published mask ``store`` as a lazy Dataset: ``mask`` (module, gain, cell, y, x), its layers, the store's attrs.

    Nothing is read but metadata and coordinates; the arrays are dask arrays in the store's
    chunks. The features and their SNRs are in ``rmm_dask.store.open_tree(store, chunks={})``.
    The store is verified here (its metadata as written, every chunk there) and each chunk
    again when it is computed (:mod:`rmm_dask.integrity`): a damaged store raises InputError
    naming the chunk, now or at compute time, never reads as good pixels.
    """
    tree = open_tree(store, chunks={})
    ds = tree.to_dataset(inherit=False)[["mask"]].assign_coords(gain=gain_names(tree))
    if "layers" in tree.children:
        for name, var in tree["layers"].data_vars.items():
            ds[LAYERS.get(name, f"{name}_mask")] = var.variable
    ds.attrs = {**tree.attrs, "store": os.fspath(store) if isinstance(store, (str, os.PathLike)) else ""}
    return ds


def bits_of(which) -> BadPixel:
    """The bits of a preset name, a bit's name, a BadPixel or int, or a list of these (their union)."""
    if isinstance(which, str):
        key = which.strip()
        if key.lower() in PRESETS:
            return PRESETS[key.lower()]
        if key.upper() in BadPixel.__members__:
            return BadPixel[key.upper()]
        raise ValueError(f"unknown group of bits {which!r}: a preset ({', '.join(PRESETS)}) or a bit ({', '.join(BadPixel.__members__)})")
    if isinstance(which, (int, np.integer)):
        if not 0 < int(which) <= 0xFF:
            raise ValueError(f"bits {int(which)} out of the mask's range 1-255")
        return BadPixel(int(which))
    return reduce(lambda a, b: a | b, (bits_of(w) for w in which), BadPixel(0))


def bad_pixels(mask, which="all", *, layers=True, gain: str | int | None = None, like: xr.DataArray | None = None) -> xr.DataArray:
    """Bool DataArray, True = bad: the pixels with any of ``which``'s bits (see the module's docstring), lazily.

    ``mask``: the Dataset of :func:`open_mask`, or a store path. ``layers``: True (all the store has),
    False (none) or the names to include (``"user"``, ``"manufacturer"``, ``"history"``). ``gain``: None
    (bad in any gain stage) or one stage by name or index. ``like``: data to align with
    (EXtra-data's labels). Dims ``(module, cell, y, x)``, or ``like``'s pixel dims.
    """
    ds = mask if isinstance(mask, xr.Dataset) else open_mask(mask)
    bits = np.uint8(bits_of(which))

    def stage(var):
        if gain is None:
            return var
        return var.sel(gain=gain) if isinstance(gain, str) else var.isel(gain=int(gain))

    bad = (stage(ds["mask"]) & bits) != 0
    if "history" in _layer_names(layers) and LAYERS["history"] in ds:  # per pixel-plane, as the mask
        bad = bad | (stage(ds[LAYERS["history"]]) != 0)
    if "gain" in bad.dims:
        bad = bad.any("gain")
    for name in _layer_names(layers):
        var = ds.get(LAYERS[name])
        if var is not None and name != "history":
            bad = bad | ((var & NEXUS_REJECT) != 0 if name == "manufacturer" else var != 0)
    bad = bad.transpose("module", "cell", "y", "x").rename("bad_pixels")
    bad.attrs = {"bits": describe(int(bits)), "layers": ",".join(_layer_names(layers)), "store": ds.attrs.get("store", "")}
    return bad if like is None else _like(bad, like, _first_module(ds))


def _layer_names(layers) -> tuple[str, ...]:
    if layers is True:
        return tuple(LAYERS)
    if not layers:
        return ()
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    unknown = [n for n in names if n not in LAYERS]
    if unknown:
        raise ValueError(f"unknown layers {unknown}: choose from {list(LAYERS)}")
    return names


def _first_module(ds: xr.Dataset) -> int:
    """EXtra-data's number of the store's module 0 (JUNGFRAU: 1, JNGFR01), 0 where unknown."""
    from .detectors import detector_of
    from .io.euxfel_index import flavour_of

    try:
        return flavour_of(detector_of(ds.attrs)).first_module
    except (KeyError, TypeError, ValueError):
        return 0


def _like(bad: xr.DataArray, data: xr.DataArray, first_module: int = 0) -> xr.DataArray:
    """``bad`` labelled as ``data``: EXtra-data's module numbers, its pixel dims, and per frame
    where frames are stacked with a ``cell`` level."""
    if first_module:
        bad = bad.assign_coords(module=bad["module"] + first_module)
    y, x = data.dims[-2:]
    bad = bad.rename({"y": y, "x": x}) if (y, x) != ("y", "x") else bad
    per_frame = next((c for c in ("cell", "cellId") if c in data.coords and c not in data.dims), None)
    if "cell" not in data.dims and per_frame:  # frames stacked: train_pulse = (train, cell) or (trainId, cellId)
        (dim,) = data[per_frame].dims
        cells = xr.DataArray(data[per_frame].values, dims=dim)  # the cell of each frame, without the stacked index
        missing = sorted(set(np.unique(cells.values).tolist()) - set(bad["cell"].values.tolist()))
        if missing:
            raise ValueError(f"the data has frames of memory cells {missing[:10]} that the mask {bad.attrs.get('store', '')} has not")
        bad = bad.sel(cell=cells).drop_vars("cell").assign_coords(data[dim].coords)  # the frames' labels, index and all
    elif "cell" not in data.dims:  # no memory cells in the data: bad in any cell
        bad = bad.any("cell")
    return bad
