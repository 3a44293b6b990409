"""Where the graph runs: a LocalCluster (default), Slurm worker jobs, or an existing scheduler; progress."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import dask
import dask.config

from . import config as _config  # noqa: F401  (the rmm-dask defaults in dask.config)
from . import interrupts
from .errors import ClusterError


@contextlib.contextmanager
def dask_client(
    cluster: str = "local",
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit=None,
    max_workers: int | None = None,
    input_bytes: int | None = None,
    echo=print,
):
    """A ``distributed.Client`` for the duration of the block; its workers are shut down afterwards.

    ``cluster`` is ``"local"`` (a LocalCluster sized from the ``rmm-dask.cluster`` config: for a
    job of less than ``local-threads-below`` bytes of input (``input_bytes``), one worker of
    ``n-workers`` threads in this process, else worker processes; :func:`local_processes`;
    the dashboard with worker processes only, unless ``rmm-dask.cluster.dashboard`` is true or false), ``"slurm"`` (dask-jobqueue's SLURMCluster from the
    ``jobqueue.slurm`` config, scaled adaptively up to ``max_workers``), or a scheduler
    address (``tcp://host:8786``). The dashboard link is echoed at start. The workers
    end with the block, whether it succeeds, fails or is interrupted (Ctrl-C). The
    schedulers started here queue read tasks with ``rmm-dask.cluster.worker-saturation``.
    """
    import distributed  # noqa: F401  (its defaults in dask.config first: a set before them would drop them on exit)

    conf = dask.config.get("rmm-dask.cluster")
    with dask.config.set({"distributed.scheduler.worker-saturation": conf["worker-saturation"]}), quiet_distributed():
        with _client(cluster, conf, n_workers, threads_per_worker, memory_limit, max_workers, input_bytes, echo) as client:
            yield client


@contextlib.contextmanager
def quiet_distributed(level=logging.CRITICAL):
    """Distributed's own log lines off for the block, in this process.

    The scheduler and the nannies of a LocalCluster run here. What they log is for Dask's
    developers: a task's error (which reaches the user as the exception the client raises,
    one line for an InputError), the tasks cancelled after it, workers killed when they do
    not stop within 4 s of a close that was asked for, heartbeats lost at shutdown; and
    asyncio's "Task exception was never retrieved" for the client's wait on the tasks that
    an interrupt cancelled.
    """
    loggers = [logging.getLogger(name) for name in ("distributed", "asyncio")]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, previous):
            logger.setLevel(old)


@contextlib.contextmanager
def _sigint_blocked():
    """SIGINT blocked in this thread for the block, so that threads started in it block it too.

    The worker processes of a LocalCluster are started by the threads of its event loop,
    which LocalCluster starts in its constructor: started there, they keep SIGINT blocked
    for their lifetime (restarted workers too) and a Ctrl-C at the terminal, which goes to
    the whole process group, reaches only ``rmm`` itself. It cancels the job and closes
    the cluster, which stops the workers; a worker never prints its own KeyboardInterrupt.
    A Ctrl-C while the cluster starts is delivered once it has started.

    multiprocessing's resource tracker is started first, here: starting it unblocks SIGINT
    in the starting thread (Python 3.11 ``resource_tracker.ensure_running``), which would
    otherwise be the event loop's thread, before it starts the workers.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _client(cluster, conf, n_workers, threads_per_worker, memory_limit, max_workers, input_bytes, echo):
    from distributed import Client, LocalCluster

    if cluster == "local":
        n = n_workers or conf["n-workers"]
        processes = local_processes(input_bytes, conf)
        dashboard = processes if conf.get("dashboard", "auto") == "auto" else bool(conf["dashboard"])
        with _scratch_space():
            with _sigint_blocked(), interrupts.held():  # a Ctrl-C meanwhile: once it is up, to close it cleanly
                local = LocalCluster(
                    n_workers=n if processes else 1,
                    threads_per_worker=(threads_per_worker or conf["threads-per-worker"]) * (1 if processes else n),
                    memory_limit=memory_limit or conf["memory-limit"],
                    processes=processes,
                    dashboard_address=":0" if dashboard else None,  # bokeh's server: seconds to start
                    silence_logs=logging.CRITICAL,  # in the workers: no "Compute Failed" before the client's one line
                )
            try:
                client = Client(local)
                try:
                    what = f"{len(local.workers)} local worker process(es)" if processes else f"{n} worker thread(s) in this process"
                    echo(f"dashboard: {client.dashboard_link if dashboard else 'none'}  ({what})")
                    yield client
                finally:
                    _close(client, CLOSE_TIMEOUT)
            finally:
                _close(local, CLOSE_TIMEOUT)
    elif cluster == "slurm":
        with _slurm_client(conf["slurm"], n_workers=n_workers, max_workers=max_workers, echo=echo) as client:
            yield client
    elif "://" in cluster:
        try:
            client = Client(cluster)
        except OSError as err:  # nothing listens there, or no answer within distributed.comm.timeouts.connect
            raise ClusterError(f"cannot reach the scheduler {cluster} ({err}); nothing was published") from None
        with client:
            echo(f"dashboard: {client.dashboard_link}  (scheduler {cluster})")
            yield client
    else:
        raise ValueError(f"cluster must be 'local', 'slurm' or a scheduler address like tcp://host:8786, not {cluster!r}")


def local_processes(input_bytes: int | None, conf: dict) -> bool:
    """Whether a local job of ``input_bytes`` runs in worker processes rather than threads of this process.

    The kernels release the GIL (numba ``nogil``), so threads compute as fast as processes;
    a process cluster costs seconds to start (each worker imports the modules, numba loads
    its cache) and moves every chunk's result between processes. That pays only for large
    jobs, where a worker that runs out of memory is restarted by its nanny and the job goes
    on: below ``rmm-dask.cluster.local-threads-below`` (bytes, or a size like ``4GB``;
    0: always processes) a job runs in threads. Measured in benchmarks/bench_e2e.py.
    """
    from dask.utils import parse_bytes

    below = conf.get("local-threads-below", 0) or 0
    below = parse_bytes(below) if isinstance(below, str) else int(below)
    return input_bytes is None or input_bytes >= below


SCRATCH_PREFIX = "rmm-dask-scratch-"
_HOST = socket.gethostname().replace("/", "_") or "localhost"


@contextlib.contextmanager
def _scratch_space():
    """Dask's temporary directory for the scheduler and the workers of a LocalCluster: a new one,
    ``rmm-dask-scratch-<host>-<pid>-<random>``, removed with the cluster (Dask's own
    ``dask-scratch-space`` stays in the temporary directory for good, with its lock files),
    inside ``temporary-directory`` if that is configured. Those of killed jobs (this host,
    the pid gone, ours) are removed first."""
    base = dask.config.get("temporary-directory", None) or tempfile.gettempdir()
    _remove_dead_scratch(base)
    scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{_HOST}-{os.getpid()}-", dir=base)
    try:
        with dask.config.set({"temporary-directory": scratch}):
            yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _remove_dead_scratch(base: str) -> None:
    """Remove the scratch directories (:func:`_scratch_space`) that killed jobs of this user left in ``base``."""
    name = re.compile(rf"^{re.escape(SCRATCH_PREFIX)}{re.escape(_HOST)}-(\d+)-[^/]+$")
    try:
        entries = list(os.scandir(base))
    except OSError:
        return
    for entry in entries:
        m = name.match(entry.name)
        try:
            if not m or not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
        except OSError:
            continue
        if not _alive(int(m[1])):
            shutil.rmtree(entry.path, ignore_errors=True)  # never follows links inside


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _slurm_client(conf: dict, *, n_workers=None, max_workers=None, echo=print):
    _config.register_jobqueue_defaults()  # imports dask_jobqueue (keeping our SIGINT handler)
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    maximum = n_workers or min(conf["maximum-workers"], max_workers or conf["maximum-workers"])
    minimum = n_workers or min(conf["minimum-workers"], maximum)
    timeout = float(conf["worker-start-timeout"])
    with interrupts.held():  # a Ctrl-C meanwhile: once the cluster object exists, to close it
        slurm = SLURMCluster()
    try:
        _check_job_script(slurm.job_script())
        slurm.adapt(minimum=minimum, maximum=maximum)
        client = Client(slurm)
        try:
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
            yield client
        finally:
            echo(f"stopping Slurm worker jobs {_job_ids(slurm) or '(none left)'}")
            with interrupts.held():
                slurm.scale(0)  # ends adaptive scaling; the jobs are cancelled (scancel) as the cluster closes
            _close(client, CLOSE_TIMEOUT)
    finally:
        _close(slurm, SLURM_CLOSE_TIMEOUT)


#: seconds for the client, then the cluster, to close (the nannies give a worker 4 s, then kill it)
CLOSE_TIMEOUT = 20
#: seconds for a SLURMCluster to close: scancel for each worker job
SLURM_CLOSE_TIMEOUT = 60


def _close(thing, timeout: float) -> None:
    """Close a client or cluster within ``timeout`` s; a Ctrl-C or SIGTERM meanwhile is raised once it is closed."""
    with interrupts.held():
        try:
            thing.close(timeout=timeout)
        except (TimeoutError, OSError, RuntimeError):  # closing is best effort: the process ends anyway
            pass


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
        from distributed import get_client
        from distributed import progress as distributed_progress

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
