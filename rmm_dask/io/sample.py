"""A few frames of a run, read on the client before any worker starts.

The readers build dask arrays whose read tasks are ``(read_function, region)``, where
``region`` is a small picklable object saying what to read (:class:`hdf5._Region`,
:class:`euxfel._RawBlock`, :class:`cbf._CbfBlock`). A region that has a ``head(n)``
method can read only the run's first ``n`` frames of what it covers: a region whose
frames all lie beyond the first ``n`` gives an empty block. :func:`sample_frames` takes
one (module, cells) block of a lazy array, swaps every read task it depends on for
``read_function(region.head(n))`` and computes it synchronously in this process, so
that a check of the runs costs a few frames, not a run. Read tasks of other readers
(no ``head``) are computed as they are, and the frames cut afterwards.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np

__all__ = ["sample_frames"]


def _with_head(task, n: int):
    """The task reading only the first ``n`` frames, or the task unchanged."""
    if isinstance(task, tuple) and len(task) == 2 and callable(task[0]) and hasattr(task[1], "head"):
        return (task[0], task[1].head(n))
    try:
        from dask._task_spec import Task
    except ImportError:  # an older dask: its graphs hold tuples only
        return task
    if isinstance(task, Task) and len(task.args) == 1 and not task.kwargs and hasattr(task.args[0], "head"):
        return Task(task.key, task.func, task.args[0].head(n))
    return task


def sample_frames(array: da.Array, module: int = 0, cell_block: int = 0, n: int = 16) -> np.ndarray:
    """The first ``n`` frames (axis 2) of block ``(module, cell_block)`` of a ``(module, cell, frame, y, x)`` array.

    Returns a numpy array ``(modules in the block, cells in the block, <= n, y, x)``
    with every pixel of the module. Computed with the synchronous scheduler in this
    process, whatever scheduler is configured: it is meant for checks before a cluster
    exists.
    """
    if not isinstance(array, da.Array):
        return np.asarray(array[module : module + 1][:, :, :n])
    part = array.blocks[module, cell_block][:, :, :n].rechunk(-1)
    key = (part.name,) + (0,) * part.ndim
    graph = dict(part.__dask_graph__().cull({key}))
    graph = {k: _with_head(task, n) for k, task in graph.items()}
    out = dask.get(graph, key)
    return np.asarray(out)[:, :, :n]
