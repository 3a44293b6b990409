"""Where the graph runs: a LocalCluster (default), Slurm worker jobs, or an existing scheduler; progress."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings

import dask
import dask.config

from . import config as _config  # noqa: F401  (the rmm-dask defaults in dask.config)
from . import interrupts
from .errors import ClusterError
from .processes import HOST
from .security import (
    attach_security,
    credentials_on_disk,
    dashboard_lines,
    drop_acting_pages,
    http_config,
    job_security,
    remove_dead,
    scheduler_host,
)


@contextlib.contextmanager
def dask_client(
    cluster: str = "local",
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit=None,
    max_workers: int | None = None,
    input_bytes: int | None = None,
    needs_scheduler: bool = False,
    echo=print,
):
    """Where the block's Dask computations run: a ``distributed.Client``, or None for threads of this process.

    ``cluster`` is ``"local"``, sized from the ``rmm-dask.cluster`` config: a job of less than
    ``local-threads-below`` bytes of input (``input_bytes``, :func:`local_processes`) runs on
    ``n-workers`` threads of this process with Dask's threaded scheduler, which opens no port
    (the block gets None); one that shows a dashboard (``rmm-dask.cluster.dashboard``: with
    worker processes only by default) or ``needs_scheduler`` (a performance report) runs on a
    LocalCluster, in worker processes for large jobs. ``"slurm"`` is dask-jobqueue's
    SLURMCluster from the ``jobqueue.slurm`` config, scaled adaptively up to ``max_workers``;
    else ``cluster`` is the address of a running scheduler (``tls://host:8786``, with the
    user's certificates: :func:`rmm_dask.security.attach_security`).

    Every cluster started here speaks TLS with this job's own credentials and binds to
    127.0.0.1, but for a Slurm scheduler, which binds to one address the worker jobs reach
    (:mod:`rmm_dask.security`); dashboards listen on 127.0.0.1 (``rmm-dask.cluster.dashboard-address``).
    The dashboard link is echoed at start, with the ssh tunnel to it. The workers end with
    the block, whether it succeeds, fails or is interrupted (Ctrl-C). The schedulers started
    here queue read tasks with ``rmm-dask.cluster.worker-saturation``.
    """
    import distributed  # noqa: F401  (its defaults in dask.config first: a set before them would drop them on exit)

    conf = dask.config.get("rmm-dask.cluster")
    with dask.config.set({"distributed.scheduler.worker-saturation": conf["worker-saturation"]}), quiet_distributed(), \
            warnings.catch_warnings():
        # another job's dashboard on the port: Dask takes another one and warns; the printed link says which
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
        with _client(cluster, conf, n_workers, threads_per_worker, memory_limit, max_workers, input_bytes,
                     needs_scheduler, echo) as client:
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
def _client(cluster, conf, n_workers, threads_per_worker, memory_limit, max_workers, input_bytes, needs_scheduler,
            echo):
    if cluster == "local":
        n = n_workers or conf["n-workers"]
        processes = local_processes(input_bytes, conf)
        dashboard = processes if conf.get("dashboard", "auto") == "auto" else bool(conf["dashboard"])
        threads = (threads_per_worker or conf["threads-per-worker"]) * (1 if processes else n)
        if not (processes or dashboard or needs_scheduler):
            echo(f"dashboard: none  ({n} worker thread(s) in this process, no port opened)")
            with _thread_pool(threads):
                yield None
            return
        memory = memory_limit or conf["memory-limit"]
        with _local_cluster(n if processes else 1, threads, memory, processes, dashboard) as local:
            client = _connect(local, local.security)
            try:
                what = f"{len(local.workers)} local worker process(es), TLS with this job's key" if processes else \
                    f"{n} worker thread(s) in this process"
                echo(_dashboard(local, what) if dashboard else f"dashboard: none  ({what})")
                yield client
            finally:
                _close(client, CLOSE_TIMEOUT)
    elif cluster == "slurm":
        with _slurm_client(conf["slurm"], n_workers=n_workers, max_workers=max_workers, echo=echo) as client:
            yield client
    elif "://" in cluster:
        client = _connect(cluster, attach_security(cluster))
        with client:
            echo(f"dashboard: {client.dashboard_link}  (scheduler {cluster})")
            yield client
    else:
        raise ValueError(f"cluster must be 'local', 'slurm' or a scheduler address (tls://host:8786), not {cluster!r}")


def _connect(cluster, security):
    """A Client of ``cluster`` (a cluster or an address) with ``security``; ClusterError if it cannot be reached."""
    from distributed import Client

    try:
        return Client(cluster, security=security)
    except OSError as err:  # nothing listens, or no answer (or TLS handshake) within distributed.comm.timeouts.connect
        address = getattr(cluster, "scheduler_address", cluster)
        raise ClusterError(f"cannot reach the scheduler {address} ({err}); nothing was published") from None


@contextlib.contextmanager
def _thread_pool(threads: int):
    """Dask's threaded scheduler on ``threads`` threads of this process for the block: no scheduler, no port.

    On the way out, also when interrupted, the tasks that run are waited for and the queued
    ones dropped, so that nothing writes into an output after the job has given it up.
    """
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(threads, thread_name_prefix="rmm-worker")
    token = _in_threads.set(True)  # compute(): these threads, not a Client the user has open in this process
    try:
        with dask.config.set(scheduler="threads", pool=pool):
            yield pool
    finally:
        _in_threads.reset(token)
        with interrupts.held():
            pool.shutdown(wait=False, cancel_futures=True)
        pool.shutdown(wait=True)  # a signal after the grace of the first still interrupts a task that hangs


@contextlib.contextmanager
def _local_cluster(n_workers, threads, memory_limit, processes, dashboard):
    """A LocalCluster on 127.0.0.1 speaking TLS with this job's credentials; its scratch space removed with it."""
    from distributed import LocalCluster

    if dashboard:
        drop_acting_pages()
    with _scratch_space(), dask.config.set(http_config(dashboard)):
        with _sigint_blocked(), interrupts.held():  # a Ctrl-C meanwhile: once it is up, to close it cleanly
            local = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads,
                memory_limit=memory_limit,
                processes=processes,
                host="127.0.0.1" if processes else None,  # threads talk in memory (inproc://): no host
                security=job_security() if processes else None,  # threads of one process talk in memory (inproc)
                # Dask starts the scheduler's HTTP server with or without a dashboard (bokeh's: seconds to start)
                dashboard_address=dashboard_address(),
                scheduler_kwargs={"dashboard": dashboard},
                # and one per worker: worker processes bind theirs to their host, 127.0.0.1; the worker of
                # threads in this process to the host of its inproc:// address, the machine's: told loopback
                worker_dashboard_address=None if processes else "127.0.0.1:0",
                silence_logs=logging.CRITICAL,  # in the workers: no "Compute Failed" before the client's one line
            )
        try:
            yield local
        finally:
            _close(local, CLOSE_TIMEOUT)


def dashboard_address() -> str:
    """Where dashboards listen: ``rmm-dask.cluster.dashboard-address`` (127.0.0.1:8787; another port if taken)."""
    return str(dask.config.get("rmm-dask.cluster.dashboard-address", None) or "127.0.0.1:8787")


def _dashboard(cluster, what: str) -> str:
    """'dashboard: <link>  (<what>)' with the link as it is bound (Dask's dashboard_link names the scheduler's
    host instead), and how to reach it from elsewhere on the next lines."""
    server = cluster.scheduler.http_server
    host = {"0.0.0.0": socket.gethostname(), "::": socket.gethostname(), "": socket.gethostname(),
            "127.0.0.1": "localhost"}.get(server.address, server.address)  # localhost: the origin its websockets take
    return dashboard_lines(f"http://{host}:{server.port}/status", what)


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
#: inside dask_client's threads of this process (:func:`_thread_pool`)
_in_threads = contextvars.ContextVar("rmm_dask_in_threads", default=False)


@contextlib.contextmanager
def _scratch_space():
    """Dask's temporary directory for the scheduler and the workers of a LocalCluster: a new one,
    ``rmm-dask-scratch-<host>-<pid>-<random>``, removed with the cluster (Dask's own
    ``dask-scratch-space`` stays in the temporary directory for good, with its lock files),
    inside ``temporary-directory`` if that is configured. Those of killed jobs (this host,
    the pid gone, ours) are removed first."""
    base = dask.config.get("temporary-directory", None) or tempfile.gettempdir()
    remove_dead(base, SCRATCH_PREFIX)
    scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{HOST}-{os.getpid()}-", dir=base)
    try:
        with dask.config.set({"temporary-directory": scratch}):
            yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _slurm_client(conf: dict, *, n_workers=None, max_workers=None, echo=print):
    _config.register_jobqueue_defaults()  # imports dask_jobqueue (keeping our SIGINT handler)
    from dask_jobqueue import SLURMCluster

    maximum = n_workers or min(conf["maximum-workers"], max_workers or conf["maximum-workers"])
    minimum = n_workers or min(conf["minimum-workers"], maximum)
    timeout = float(conf["worker-start-timeout"])
    drop_acting_pages()
    with _scratch_space(), credentials_on_disk() as security, dask.config.set(http_config()):  # the scheduler's scratch
        with interrupts.held():  # a Ctrl-C meanwhile: once the cluster object exists, to close it
            slurm = SLURMCluster(**slurm_options(security))
        with _slurm_jobs(slurm, minimum, maximum, timeout, security, echo) as client:
            yield client


@contextlib.contextmanager
def _slurm_jobs(slurm, minimum, maximum, timeout, security, echo):
    try:
        _check_job_script(slurm.job_script())
        slurm.adapt(minimum=minimum, maximum=maximum)
        client = _connect(slurm, security)
        try:
            echo(_dashboard(slurm, f"Slurm worker jobs, {minimum} to {maximum}, TLS with this job's key"))
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


def slurm_options(security) -> dict:
    """SLURMCluster's arguments beyond the ``jobqueue.slurm`` config: TLS with ``security``, ports bound narrowly.

    The scheduler binds to the configured ``interface`` (or ``scheduler-options``' host), else to
    this host's own address (:func:`rmm_dask.security.scheduler_host`), never to all; its
    dashboard to 127.0.0.1 (:func:`dashboard_address`). Each worker listens on the configured
    interface, else on the address its host reaches the scheduler from (worked out in the job
    script; the scheduler's host is known before it starts), and serves no HTTP route; no
    worker dashboard. The job script names the credential files, never their contents. Without a
    ``local-directory``, each worker job makes its scratch space in the node's ``$TMPDIR`` and
    removes it as it ends.
    """
    jobqueue = dask.config.get("jobqueue.slurm")
    scheduler = dict(jobqueue.get("scheduler-options") or {})
    scheduler.setdefault("dashboard_address", dashboard_address())
    prologue = list(jobqueue.get("job-script-prologue") or []) + ["export DASK_DISTRIBUTED__WORKER__HTTP__ROUTES='[]'"]
    extra = list(jobqueue.get("worker-extra-args") or []) + ["--dashboard-address", "127.0.0.1:0", "--no-dashboard"]
    if not (jobqueue.get("interface") or scheduler.get("interface") or scheduler.get("host")):
        scheduler["host"] = scheduler_host()
    if not jobqueue.get("interface") and "--host" not in extra and "--interface" not in extra:
        to = scheduler.get("host")
        if to:  # the address a UDP socket would leave from towards the scheduler (connect sends nothing)
            prologue.append(
                f"RMM_WORKER_HOST=$({shlex.quote(sys.executable)} -c 'import socket, sys; "
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                f"s.connect((sys.argv[1], 9)); print(s.getsockname()[0])' {shlex.quote(to)})"
            )
            extra += ["--host", '"$RMM_WORKER_HOST"']
    options = dict(security=security, protocol="tls://", scheduler_options=scheduler, job_script_prologue=prologue,
                   worker_extra_args=extra)
    if not jobqueue.get("local-directory"):  # Dask's dask-scratch-space would stay in the node's $TMPDIR for good
        prologue += [f'RMM_SCRATCH=$(mktemp -d "${{TMPDIR:-/tmp}}/{SCRATCH_PREFIX}$(hostname)-$$-XXXXXXXX")',
                     "trap 'rm -rf \"$RMM_SCRATCH\"' EXIT"]
        options["local_directory"] = '"$RMM_SCRATCH"'
    return options


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

        client = None if _in_threads.get() else get_client()
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
