"""Where the graph runs: a LocalCluster (default) or an existing scheduler, and progress."""

from __future__ import annotations

import contextlib
import sys

import dask
import dask.config

from . import config as _config  # noqa: F401  (the rmm-dask defaults in dask.config)


@contextlib.contextmanager
def dask_client(cluster: str = "local", *, n_workers: int | None = None, threads_per_worker: int | None = None, memory_limit=None, echo=print):
    """A ``distributed.Client`` for the duration of the block, shut down afterwards.

    ``cluster`` is ``"local"`` (a LocalCluster of worker processes sized from the
    ``rmm-dask.cluster`` config) or a scheduler address (``tcp://host:8786``). The
    dashboard link is echoed at start.
    """
    from distributed import Client, LocalCluster

    conf = dask.config.get("rmm-dask.cluster")
    if cluster == "local":
        local = LocalCluster(
            n_workers=n_workers or conf["n-workers"],
            threads_per_worker=threads_per_worker or conf["threads-per-worker"],
            memory_limit=memory_limit or conf["memory-limit"],
            processes=True,
            dashboard_address=":0",
        )
        with local, Client(local) as client:
            echo(f"dashboard: {client.dashboard_link}  ({len(local.workers)} local workers)")
            yield client
    elif "://" in cluster:
        with Client(cluster) as client:
            echo(f"dashboard: {client.dashboard_link}  (scheduler {cluster})")
            yield client
    else:
        raise ValueError(f"cluster must be 'local' or a scheduler address like tcp://host:8786, not {cluster!r}")


def compute(*collections, progress: bool = True):
    """Compute dask collections together on the current scheduler, with a progress bar."""
    try:
        from distributed import get_client, progress as distributed_progress

        client = get_client()
    except (ImportError, ValueError):
        client = None
    if client is None:
        from dask.diagnostics import ProgressBar

        ctx = ProgressBar(out=sys.stderr) if progress else contextlib.nullcontext()
        with ctx:
            return dask.compute(*collections)
    futures = client.compute(list(collections))
    try:
        if progress:
            distributed_progress(futures)
            print(file=sys.stderr)
        return tuple(client.gather(futures))
    except BaseException:
        client.cancel(futures)
        raise
