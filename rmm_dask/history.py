"""Pixel history across nights: the per-pixel counters one night's mask adds to, as numpy kernels.

A night is one published nightly version (one set of dark runs). For every pixel-plane
(module, gain, cell, y, x) the history keeps, over the nights so far:

* ``seen``: nights with data (the code has no NO_DATA bit: a night without data says
  nothing about the pixel, neither good nor bad);
* ``bad``: nights seen and flagged by any bit but ASIC_EDGE (geometry, the same every night);
* ``bad_bits[b]``: nights on which bit ``b`` (0..7, :class:`rmm_dask.codes.BadPixel`) was set;
* ``first_bad`` / ``last_bad``: the index of the first and last night bad (-1: never);
* ``changes``: good <-> bad transitions between consecutive nights seen;
* ``state``: the verdict of the last night seen (0 none yet, 1 good, 2 bad), what the next
  night's change is counted against;
* ``recent``: the bad verdicts of the last 64 nights, bit 0 the newest, so that counts over
  the last N <= 64 nights are exact;
* ``recent_seen``: the same of the nights seen (with data), so that the fraction of the last N
  nights a pixel was bad counts only the nights it was seen (``seen`` and ``bad`` are over all nights).

:func:`add_night` updates one block of these in place from the same block of a mask; no
Dask, no files (the store is rmm_dask/nightly/history.py). :func:`bad_in_last` and
:func:`pixel_recent` answer the queries of ``rmm history``; :func:`frequency` the fraction of
nights bad that ``rmm export --to frequency`` writes.
"""

from __future__ import annotations

import math

import numpy as np

from .codes import BadPixel

#: the bits one night's bad verdict ignores: geometry
NOT_BAD = int(BadPixel.ASIC_EDGE)
NO_DATA = int(BadPixel.NO_DATA)
NBITS = 8
RECENT = 64  #: nights the ``recent`` bitset holds

#: the counters of a pixel-plane: dtype and the value before any night (``bad_bits`` has a leading bit axis)
FIELDS = {
    "seen": (np.uint16, 0),
    "bad": (np.uint16, 0),
    "bad_bits": (np.uint16, 0),
    "first_bad": (np.int16, -1),
    "last_bad": (np.int16, -1),
    "changes": (np.uint16, 0),
    "state": (np.uint8, 0),
    "recent": (np.uint64, 0),
    "recent_seen": (np.uint64, 0),
}
MAX_NIGHTS = np.iinfo(np.int16).max  #: night indices are int16


def empty(shape: tuple) -> dict[str, np.ndarray]:
    """The counters of a block of pixel-planes of ``shape`` before the first night."""
    out = {}
    for name, (dtype, fill) in FIELDS.items():
        full = (NBITS, *shape) if name == "bad_bits" else shape
        out[name] = np.full(full, fill, dtype=dtype)
    return out


def verdicts(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seen, bad) of one night's codes: seen without NO_DATA; bad when seen and flagged by a bit but ASIC_EDGE."""
    seen = (code & NO_DATA) == 0
    bad = seen & ((code & ~np.uint8(NOT_BAD | NO_DATA)) != 0)
    return seen, bad


def add_night(h: dict[str, np.ndarray], code: np.ndarray, night: int) -> dict[str, np.ndarray]:
    """Add night ``night`` (its index, 0 first) with the mask codes ``code`` to the counters ``h`` of the same block, in
    place. Returns that night's counts of pixel-planes per index of the block's first axis (its modules): ``seen``,
    ``flagged`` (bad), ``newly_bad`` (bad, and good on the last night seen before), ``healed`` (good, and bad on the
    last night seen before), and ``bits`` (``(NBITS, modules)``: planes with each bit set)."""
    if not 0 <= night <= MAX_NIGHTS:
        raise ValueError(f"night index {night} outside 0..{MAX_NIGHTS}")
    code = np.asarray(code, dtype=np.uint8)
    seen, bad = verdicts(code)
    before = h["state"]
    newly = bad & (before == 1)
    healed = seen & ~bad & (before == 2)
    h["seen"] += seen
    h["bad"] += bad
    bits = np.empty((NBITS, code.shape[0]), dtype=np.int64)
    for b in range(NBITS):
        set_b = (code >> b) & 1
        h["bad_bits"][b] += set_b
        bits[b] = _per_first(set_b)
    h["first_bad"][bad & (h["first_bad"] < 0)] = night
    h["last_bad"][bad] = night
    h["changes"] += newly | healed
    h["state"][seen] = np.where(bad[seen], 2, 1).astype(np.uint8)
    h["recent"] <<= np.uint64(1)
    h["recent"] |= bad.astype(np.uint64)
    h["recent_seen"] <<= np.uint64(1)
    h["recent_seen"] |= seen.astype(np.uint64)
    return {"seen": _per_first(seen), "flagged": _per_first(bad), "newly_bad": _per_first(newly),
            "healed": _per_first(healed), "bits": bits}


def _per_first(x: np.ndarray) -> np.ndarray:
    """Sum over all axes but the first."""
    return x.reshape(x.shape[0], -1).sum(axis=1, dtype=np.int64)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (SWAR, no Python loop)."""
    x = x.astype(np.uint64, copy=True)
    x -= (x >> np.uint64(1)) & np.uint64(0x5555555555555555)
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return ((x * np.uint64(0x0101010101010101)) >> np.uint64(56)).astype(np.uint8)


def last_bits(n: int) -> np.uint64:
    """The ``recent`` bits of the last ``n`` (1..64) nights."""
    if not 1 <= n <= RECENT:
        raise ValueError(f"--last {n}: the history keeps the verdicts of the last {RECENT} nights")
    return np.uint64((1 << n) - 1)


def pixel_recent(recent: np.ndarray, plane_axes: tuple[int, ...]) -> np.ndarray:
    """The recent bitsets of distinct pixels: a pixel is bad on a night if any of its planes (``plane_axes``: gain
    and cell) is."""
    return np.bitwise_or.reduce(recent, axis=plane_axes)


def bad_in_last(recent: np.ndarray, n: int) -> np.ndarray:
    """Per element, on how many of the last ``n`` nights it was bad (from its ``recent`` bitset)."""
    return _popcount(recent & last_bits(n))


def frequency(recent: np.ndarray, recent_seen: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fraction, seen, bad) over the last ``n`` nights, per element of the ``recent`` and ``recent_seen`` bitsets:
    nights bad, nights seen (uint16) and their ratio (float32, NaN where never seen): a night without data says
    nothing, so it is in neither count."""
    window = last_bits(n)
    bad = _popcount(recent & window).astype(np.uint16)
    seen = _popcount(recent_seen & window).astype(np.uint16)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(seen > 0, bad.astype(np.float32) / seen, np.float32(np.nan)).astype(np.float32)
    return fraction, seen, bad


def remembered(recent: np.ndarray, nights: int, min_fraction: float, skip: int = 0) -> np.ndarray:
    """uint8, 1 where an element was bad on at least ``min_fraction`` of ``nights`` nights: those before the ``skip``
    newest of its ``recent`` bitset (``skip`` 1: the history before its newest night, which a version of the same
    darks replaces). The caller counts ``nights`` within the window (``skip + nights`` <= 64); at least one bad night
    is needed, whatever the fraction. What a mask that remembers keeps masked (``layers/history``)."""
    if not 1 <= nights or skip + nights > RECENT or not 0 <= skip:
        raise ValueError(f"{nights} nights after skipping {skip}: the history keeps {RECENT} nights")
    need = max(1, math.ceil(round(min_fraction * nights, 9)))  # 0.2 x 10 is 2 nights, not 3 by a rounding error
    before = recent >> np.uint64(skip)
    return (bad_in_last(before, nights) >= need).astype(np.uint8)
