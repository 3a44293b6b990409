"""A mask that remembers (``history: {min-fraction: 0.2, last: 20}`` in nightly.yaml; issue #23, item 3).

A nightly version of a detector that has the setting gets a layer of its own, ``layers/history``: uint8
``(module, gain, cell, y, x)``, 1 where the pixel-plane was bad on at least ``min-fraction`` of the last
``last`` nights of the pixel history (``<publish>/<name>/history.zarr``) before this version, so that a pixel
that misbehaves on some nights stays masked on the nights it looks good, and users see why (every export sets
a bit of its own for it).

* The nights counted are the history's (:func:`rmm_dask.nightly.history.nights_on_disk` order), without the
  night this version replaces (a version of the same darks: a late flat, changed files): its verdicts are
  skipped in the ``recent`` bitset, which also gives the nights before an older night. The fraction is of the
  nights counted (``min(last, nights before)``): on night 10 with ``last: 20``, 2 of the 9 nights before.
* The history is brought up to date first (:func:`~rmm_dask.nightly.history.update`: a pass that masks
  several sets appends each published one before the next is masked; a damaged history is rebuilt from the
  published versions first).
* The layer is not used in the model fits and the history records only the nights' own verdicts (``mask``):
  otherwise a pixel once remembered would stay bad forever.
* No layer, and a line saying why: no night before this one (the first version), a history of another
  layout (modules, cells or gain stages changed). A history that cannot be brought up to date or read (a
  symbolic link at its name, no space, a night's store damaged): no layer, and the version is held (its
  reason says why), so that ``current`` keeps a mask that remembers.

The layer is read lazily, chunk by chunk, from the history's ``recent`` bitset (verified chunks, as every
read of a store), inside the mask's own write tasks: nothing of the size of a mask is held on the client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import history as kernels
from ..errors import InputError, printable
from .history import NAME, open_history, update
from .settings import Remember


@dataclass
class Layer:
    """What :func:`history_layer` found: the layer (an ``xarray.DataArray``, lazily read) or None, and why."""

    data: object | None  #: xarray.DataArray uint8 (module, gain, cell, y, x) with the layer's attrs, or None
    note: str  #: one line for the log and the summary
    problem: str | None = None  #: why the version is held (the history could not be used), or None
    attrs: dict = field(default_factory=dict)  #: min_fraction, last, nights counted and their versions


def _darks(runs: dict) -> dict:
    return {role: str(p) for role, p in runs.items() if role != "flat"}


def night_of(root: Path, nights: list[dict], runs: dict) -> int | None:
    """The index of the history's night made of the dark runs of ``runs`` (None: a new set of darks), from the
    versions' summary.json (one small file per night, newest first: a replaced night is most often the newest)."""
    darks = _darks(runs)
    for i in range(len(nights) - 1, -1, -1):
        try:
            summary = json.loads((root / nights[i]["version"] / "summary.json").read_text(encoding="utf-8"))
            if _darks(dict(summary["runs"])) == darks:
                return i
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not readable now: no night of the history (nights_on_disk says so in the log)
    return None


def history_layer(root: Path, runs: dict, remember: Remember, shape: tuple, gains: list, say) -> Layer:
    """The layer ``layers/history`` of a version of ``runs`` (role -> run path) with pixel-planes ``shape`` and
    gain stages ``gains``, for the detector directory ``root``; the history brought up to date first."""
    import dask.array as da
    import xarray as xr
    from dask.base import tokenize

    what = remember.describe()
    path = root / NAME
    try:
        update(root, say)
        group = open_history(path) if path.exists() or path.is_symlink() else None
    except (InputError, OSError) as err:
        return _unusable(path, err, shape, what)
    if group is None:
        return Layer(None, f"history layer: none, no night before this one in the pixel history ({what})")
    recent = group["recent"]
    if tuple(recent.shape) != tuple(shape) or list(group.attrs.get("gain_stages") or []) != list(gains):
        return Layer(None, f"history layer: none, the pixel history holds pixel-planes {tuple(recent.shape)} of gain"
                           f" stages {list(group.attrs.get('gain_stages') or [])}, this mask {tuple(shape)} of"
                           f" {list(gains)} ({what}: it starts again from the nights of this layout)")
    nights = list(group.attrs["nights"])
    at = night_of(root, nights, runs)
    before = len(nights) if at is None else at  # the nights before this one
    skip = len(nights) - before  # the replaced night (and any after it) left out of the bitset
    counted = min(remember.last, before, kernels.RECENT - skip)
    if counted < 1:
        return Layer(None, f"history layer: none, no night before this one in the pixel history ({what})")
    versions = [n["version"] for n in nights[before - counted:before]]
    attrs = {"min_fraction": remember.min_fraction, "last": remember.last, "nights": counted,
             "versions": versions, "history": str(path)}
    name = "history-layer-" + tokenize(str(path), [n["digest"] for n in nights], remember, skip, counted)
    bits = da.from_array(recent, chunks=recent.chunks, name=name + "-recent", asarray=True)
    data = bits.map_blocks(kernels.remembered, counted, remember.min_fraction, skip, dtype=np.uint8, name=name)
    replaced = "" if at is None else f", without night {at + 1} ({nights[at]['version']}), which this version replaces"
    span = versions[0] if counted == 1 else f"{versions[0]} .. {versions[-1]}"
    note = f"history layer: {what}, over {counted} night(s) of the pixel history ({span}{replaced})"
    return Layer(xr.DataArray(data, dims=("module", "gain", "cell", "y", "x"), attrs=attrs), note, attrs=attrs)


def _unusable(path: Path, err: Exception, shape: tuple, what: str) -> Layer:
    """No layer: the history could not be brought up to date or read. Of another layout (cells changed: one history
    cannot hold both), that is a new start, said in one line; otherwise the version is held, as it lacks what the
    configuration promises its users."""
    problem = printable(str(err))
    try:
        old = open_history(path)
        other = tuple(old["recent"].shape) != tuple(shape)
    except (InputError, OSError):
        other = False
    if other:
        return Layer(None, f"history layer: none, the pixel history is of another layout ({problem}; {what})")
    return Layer(None, f"history layer: none, the pixel history could not be brought up to date ({problem})",
                 problem=f"no history layer ({what}): the pixel history could not be brought up to date or read"
                         f" ({problem})")
