"""Where the readers' lazy arrays come from: their read regions, by array name.

A reader builds its lazy array from read tasks ``(read, region)``, where ``region`` is a
small picklable object saying what one block is (:class:`.hdf5._Region`,
:class:`.euxfel._RawBlock`, :class:`.cbf._CbfBlock`): it holds paths, never open files,
knows its ``n_frames`` and gives the same block limited to frames ``[start, stop)`` with
``region.frames(start, stop)``. The reader :func:`register`\\ s each data variable it
returns, by the dask name of its array, with the grid of regions over the (module, cell)
blocks and the ``view`` that turns what ``read`` returns into the variable's values.

:func:`frame_sources` gives the pipeline (and :mod:`.sample`) those regions back without
looking into dask's graphs: per (module, cell) block one :class:`FrameSource` that reads any
range of frames of one or more variables in one read. An array the readers did not make as
it is (numpy-backed, sliced, rechunked, computed on) has no name here: its callers use the
array itself.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

__all__ = ["FrameSource", "register", "frame_sources"]

_MAX_GRIDS = 1024  #: registered arrays kept (the oldest are forgotten: a long session opens many runs)
_GRIDS: OrderedDict = OrderedDict()


class _Grid:
    """The read regions of one reader array: ``regions[module block, cell block]``, all frames each."""

    __slots__ = ("read", "regions")

    def __init__(self, read, regions: np.ndarray):
        self.read, self.regions = read, regions


def register(array, read, regions: np.ndarray, view=None, *, stream: bool = True):
    """Record that ``array`` (a dask array ``(module, cell, frame, y, x)``, one chunk along the
    frames) is ``view(read(region))`` block by block; returns ``array``.

    ``regions`` is an object array ``(module blocks, cell blocks)`` (or a grid already
    registered for another variable of the same read, so that both are read at once: pass
    the grid returned by :func:`grid_of`); ``view`` a picklable function of what ``read``
    returns (None: as it is). ``stream=False``: the regions are for reading a few frames only
    (:mod:`.sample`), not for the pipeline to stream whole runs through (each would read more
    than its block, e.g. a frame of several modules decoded once per module).
    """
    grid = regions if isinstance(regions, _Grid) else _Grid(read, np.asarray(regions, dtype=object))
    if grid.regions.shape != tuple(array.numblocks[:2]) or array.numblocks[2:] != (1, 1, 1):
        raise ValueError(f"a grid of {grid.regions.shape} regions does not fit an array of {array.numblocks} blocks")
    _GRIDS[array.name] = (grid, view, stream)
    _GRIDS.move_to_end(array.name)
    while len(_GRIDS) > _MAX_GRIDS:
        _GRIDS.popitem(last=False)
    return array


def grid_of(array) -> _Grid | None:
    """The registered grid of ``array``, to register another variable read with it."""
    entry = _GRIDS.get(getattr(array, "name", None))
    return None if entry is None else entry[0]


class FrameSource:
    """One (module, cells) block of one or more variables of a run, readable by ranges of frames.

    ``read()`` returns a tuple with one numpy array ``(1, cells, frames, y, x)`` per variable,
    from one read of the region; ``frames(start, stop)`` is the same block limited to those
    frames of the run. Picklable: a task carries it instead of the data.
    """

    __slots__ = ("reader", "region", "views")

    def __init__(self, read, region, views: tuple):
        self.reader, self.region, self.views = read, region, tuple(views)

    @property
    def n_frames(self) -> int:
        return int(self.region.n_frames)

    def frames(self, start: int, stop: int) -> FrameSource:
        return FrameSource(self.reader, self.region.frames(start, stop), self.views)

    def read(self) -> tuple:
        raw = self.reader(self.region)
        return tuple(raw if view is None else view(raw) for view in self.views)

    def __reduce__(self):
        return type(self), (self.reader, self.region, self.views)

    def __repr__(self):
        return f"FrameSource({self.region!r}, {len(self.views)} variables)"


def frame_sources(*arrays, streaming: bool = True) -> np.ndarray | None:
    """Per (module block, cell block) of ``arrays`` a :class:`FrameSource` reading all of them at
    once, or None when one is not a registered reader array, they are not views of one read, or
    (``streaming``) one was registered for a few frames only."""
    entries = [_GRIDS.get(getattr(a, "name", None)) for a in arrays]
    if not arrays or any(e is None or (streaming and not e[2]) for e in entries):
        return None
    grid = entries[0][0]
    if any(e[0] is not grid for e in entries):
        return None
    views = tuple(e[1] for e in entries)
    out = np.empty(grid.regions.shape, dtype=object)
    for index, region in np.ndenumerate(grid.regions):
        out[index] = FrameSource(grid.read, region, views)
    return out
