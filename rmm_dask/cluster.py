"""Where the graph runs: a LocalCluster (default), Slurm worker jobs, or an existing scheduler; progress."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import dask
import dask.config

from . import config as _config  # noqa: F401  (the rmm-dask defaults in dask.config)
from .errors import ClusterError


@contextlib.contextmanager
def dask_client(
    cluster: str = "local",
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit=None,
    max_workers: int | None = None,
    echo=print,
):
    """A ``distributed.Client`` for the duration of the block; its workers are shut down afterwards.

    ``cluster`` is ``"local"`` (a LocalCluster of worker processes sized from the
    ``rmm-dask.cluster`` config), ``"slurm"`` (dask-jobqueue's SLURMCluster from the
    ``jobqueue.slurm`` config, scaled adaptively up to ``max_workers``), or a scheduler
    address (``tcp://host:8786``). The dashboard link is echoed at start. The workers
    end with the block, whether it succeeds, fails or is interrupted (Ctrl-C). The
    schedulers started here queue read tasks with ``rmm-dask.cluster.worker-saturation``.
    """
    conf = dask.config.get("rmm-dask.cluster")
    with dask.config.set({"distributed.scheduler.worker-saturation": conf["worker-saturation"]}):
        with _client(cluster, conf, n_workers, threads_per_worker, memory_limit, max_workers, echo) as client:
            yield client


@contextlib.contextmanager
def _client(cluster, conf, n_workers, threads_per_worker, memory_limit, max_workers, echo):
    from distributed import Client, LocalCluster

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
    elif cluster == "slurm":
        with _slurm_client(conf["slurm"], n_workers=n_workers, max_workers=max_workers, echo=echo) as client:
            yield client
    elif "://" in cluster:
        with Client(cluster) as client:
            echo(f"dashboard: {client.dashboard_link}  (scheduler {cluster})")
            yield client
    else:
        raise ValueError(f"cluster must be 'local', 'slurm' or a scheduler address like tcp://host:8786, not {cluster!r}")


@contextlib.contextmanager
def _slurm_client(conf: dict, *, n_workers=None, max_workers=None, echo=print):
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    maximum = n_workers or min(conf["maximum-workers"], max_workers or conf["maximum-workers"])
    minimum = n_workers or min(conf["minimum-workers"], maximum)
    timeout = float(conf["worker-start-timeout"])
    with SLURMCluster() as slurm:
        _check_job_script(slurm.job_script())
        slurm.adapt(minimum=minimum, maximum=maximum)
        with Client(slurm) as client:
            echo(f"dashboard: {client.dashboard_link}  (Slurm worker jobs, {minimum} to {maximum})")
            try:
                client.wait_for_workers(1, timeout=timeout)
            except TimeoutError:
                raise ClusterError(
                    f"no Slurm worker job started within {timeout:g} s (jobs {_job_ids(slurm) or 'none'}); "
                    f"see squeue, the partition and account in configs/jobqueue.yaml, and the worker logs in "
                    f"{dask.config.get('jobqueue.slurm.log-directory') or 'the working directory'}"
                ) from None
            echo(f"Slurm worker jobs: {_job_ids(slurm)}")
            try:
                yield client
            finally:
                echo(f"stopping Slurm worker jobs {_job_ids(slurm) or '(none left)'}")
                slurm.scale(0)  # ends adaptive scaling; the jobs are cancelled as the cluster closes


def _job_ids(cluster) -> str:
    return ", ".join(str(job.job_id) for job in cluster.workers.values() if getattr(job, "job_id", None))


def _check_job_script(script: str) -> None:
    """Ask Slurm whether it would accept the worker job (sbatch --test-only) before waiting for it."""
    try:
        proc = subprocess.run(["sbatch", "--test-only"], input=script, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ClusterError("sbatch not found: --cluster slurm needs the Slurm client commands on this host") from None
    except subprocess.TimeoutExpired:
        raise ClusterError("sbatch --test-only did not answer within 60 s: is slurmctld reachable?") from None
    if proc.returncode != 0:
        message = " ".join((proc.stderr or proc.stdout).split())
        raise ClusterError(f"Slurm refuses the worker job ({message}); check configs/jobqueue.yaml")


def compute(*collections, progress: bool | None = None):
    """Compute dask collections together on the current scheduler, with a progress bar.

    ``progress`` defaults to whether stderr is a terminal: a bar redrawn ten times a
    second is for people, not for the logs of batch jobs, timers and cron.
    """
    if progress is None:
        progress = sys.stderr.isatty()
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
            distributed_progress(futures, interval="100ms")
            print(file=sys.stderr)
            # the scheduler's progress feed notices the closed bar on its next write (every
            # 100 ms); a cluster shut down before that logs the feed's cancellation as an error
            time.sleep(0.3)
        return tuple(client.gather(futures))
    except BaseException:
        client.cancel(futures)
        raise
