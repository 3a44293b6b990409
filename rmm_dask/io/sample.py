"""A few frames of a run, read on the client before any worker starts.

:func:`sample_frames` reads the first ``n`` frames of one (module, cells) block of a lazy
array synchronously in this process, so that a check of the runs costs a few frames, not
a run. For an array a reader registered (:mod:`rmm_dask.io.regions`) only those frames are
read; any other array's block is computed as it is and the frames cut afterwards.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from .regions import frame_sources

__all__ = ["sample_blocks", "sample_frames"]


def sample_blocks(ds) -> list[tuple[int, int]]:
    """(module index, cell block index) of the blocks the checks before a job sample (the flat
    check, the signal check: the same frames for both): the first, and the last module's middle one."""
    data = ds.analog.data
    n_mod, n_cb = (len(data.chunks[0]), len(data.chunks[1])) if hasattr(data, "chunks") and data.chunks else (ds.sizes["module"], 1)
    return list(dict.fromkeys([(0, 0), (n_mod - 1, n_cb // 2)]))


def sample_frames(array, module: int = 0, cell_block: int = 0, n: int = 16) -> np.ndarray:
    """The first ``n`` frames (axis 2) of block ``(module, cell_block)`` of a ``(module, cell, frame, y, x)`` array.

    Returns a numpy array ``(modules in the block, cells in the block, <= n, y, x)``
    with every pixel of the module. Computed with the synchronous scheduler in this
    process, whatever scheduler is configured: it is meant for checks before a cluster
    exists.
    """
    if not isinstance(array, da.Array):
        return np.asarray(array[module : module + 1][:, :, :n])
    sources = frame_sources(array, streaming=False)
    if sources is not None:
        source = sources[module, cell_block]
        (values,) = source.frames(0, min(n, source.n_frames)).read()
        return np.asarray(values)
    part = array.blocks[module, cell_block][:, :, :n]
    return np.asarray(part.compute(scheduler="sync"))
