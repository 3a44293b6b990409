"""Chip (ASIC) boundaries from a detector's own pixel mask: the regions between its virtual and gap pixels.

A hybrid pixel module is a sensor bonded to a grid of readout chips. Where two chips meet,
the detector marks it in the NXmx ``pixel_mask`` it writes: LAMBDA (Medipix3) modules have
large pixels at every chip boundary, each split into 3 virtual pixels (bit 31), so a
boundary is a run of 6 virtual rows or columns; high-Z LAMBDA modules (GaAs, CdTe; 516 x
1554) join two sensor tiles with a gap of pixels without sensor (bit 0); EIGER marks the
2-pixel gaps between its chips with bit 0. The manufacturers do not publish every layout,
but every file says it: this module finds the boundaries in the mask.

A row (column) is a *line* when most of its pixels carry bit 31 or bit 0 (a dead pixel,
bit 1, is no boundary; a few marked pixels in a line are not either). Each run of lines
away from the module's border is one boundary: in the middle of the run when it holds
virtual pixels (the split pixels belong half to each chip, as the large pixel did), after
the run when it is gap only (the gap is counted with the chip before it, as EIGER's 258-pixel
chip pitch does). Pure numpy; nothing here reads files.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NEXUS_GAP", "NEXUS_VIRTUAL", "MIN_CHIP", "boundaries", "lines"]

NEXUS_GAP = np.uint32(1 << 0)  #: NXmx pixel_mask: a gap pixel (no sensor behind it)
NEXUS_VIRTUAL = np.uint32(1 << 31)  #: NXmx pixel_mask: a virtual pixel (a large pixel's counts split over it)
NEXUS_REJECT = np.uint32(0xFFFF)  #: NXmx pixel_mask: software rejects a pixel with any of bits 0-15 (16-31: information)
MIN_CHIP = 8  #: the narrowest chip a mask may give (pixels): fewer means the marks are not chip boundaries


def lines(mask: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(boundary line?, virtual line?) per row (``axis`` 0) or column (1) of a (y, x) NXmx pixel mask:
    more than half of the line's pixels are virtual or gap pixels (the second: virtual ones)."""
    mask = np.asarray(mask, dtype=np.uint32)
    other = 1 - axis
    virtual = (mask & NEXUS_VIRTUAL) != 0
    marked = virtual | ((mask & NEXUS_GAP) != 0)
    half = mask.shape[other] / 2
    return marked.sum(axis=other) > half, virtual.sum(axis=other) > half


def boundaries(mask: np.ndarray, axis: int) -> tuple[int, ...] | None:
    """Chip boundaries ``(0, ..., size)`` along ``axis`` of one module's (y, x) NXmx pixel mask, or None
    when it marks none there. ValueError when the marks would make a chip narrower than MIN_CHIP."""
    line, virtual = lines(mask, axis)
    size = line.size
    edges = np.flatnonzero(np.diff(np.concatenate(([0], line.astype(np.int8), [0]))))
    inner = []
    for start, stop in zip(edges[::2], edges[1::2]):  # runs of lines [start, stop)
        if start == 0 or stop == size:
            continue  # marks along the border belong to the outer chip
        inner.append(int(start + (stop - start) // 2) if virtual[start:stop].any() else int(stop))
    if not inner:
        return None
    bounds = (0, *inner, size)
    narrowest = min(b - a for a, b in zip(bounds, bounds[1:]))
    if narrowest < MIN_CHIP:
        what = "rows" if axis == 0 else "columns"
        raise ValueError(f"its virtual and gap pixels make chips of {narrowest} {what} "
                         f"(boundaries {list(bounds)}): not a chip layout")
    return bounds
