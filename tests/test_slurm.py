"""Mask jobs on a real Slurm (dask-jobqueue): same store as on a LocalCluster, robust to a
cancelled worker, batch submission, clear failure when no worker can start, no job left over.

Run for real in CI (.ci/run starts a single-node Slurm from deploy/slurm-local/); skipped
elsewhere when no Slurm is reachable, failed instead when RMM_REQUIRE_SLURM=1.
"""

import re
import subprocess
import tempfile
import threading
import time

import dask
import pytest

from rmm_dask.cli import main
from rmm_dask.config import register_jobqueue_defaults
from rmm_dask.io import open_run
from rmm_dask.pipeline import build_mask
from rmm_dask.store import write_store
from rmm_dask.synth import GAINS, SynthConfig, synthesize
from rmm_dask.synth.on_disk import write_synthetic

from .conftest import slurm_interface_yaml, wait_queue_empty, wait_until
from .ports import attack, connectable, intrusions, listening
from .stores import assert_same_store

pytestmark = pytest.mark.slurm


def make_runs(tmp_path_factory, name, **cfg):
    """Synthetic runs on disk and the store a LocalCluster-free local computation gives."""
    out = tmp_path_factory.mktemp(name)
    paths = write_synthetic(synthesize(SynthConfig(**cfg)), out / "data")
    darks = {g: open_run(paths[f"dark-{g}"]) for g in GAINS}
    ref = write_store(build_mask(darks, open_run(paths["flat"])), out / "local.zarr", compute=lambda d: dask.compute(d, scheduler="threads"))
    jobqueue = out / "jobqueue.yaml"
    jobqueue.write_text(f"jobqueue:\n  slurm:\n    memory: 2GiB\n    walltime: '00:20:00'\n    log-directory: {out / 'logs'}\n"
                        + slurm_interface_yaml())
    return out, paths, ref, jobqueue


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_runs(tmp_path_factory, "small", modules=2, cells=2, frames=30, flat_frames=30, seed=4)


@pytest.fixture(scope="module")
def long_runs(tmp_path_factory):
    return make_runs(tmp_path_factory, "long", modules=2, cells=4, frames=100, flat_frames=100, seed=5)


def mask_argv(paths, out, jobqueue, *extra):
    return [
        "mask", *(a for g in GAINS for a in (f"--dark-{g}", str(paths[f"dark-{g}"]))), "--flat", str(paths["flat"]),
        "--out", str(out), "--cluster", "slurm", "--jobqueue", str(jobqueue), *extra,
    ]


def chunk_stored(directory, prefix: str) -> bool:
    """Whether a Zarr store being written (a temporary ``prefix*`` in ``directory``) holds a chunk (``<array>/c.0.0...``)."""
    return any(
        f.is_file() and f.name.startswith("c.") for tmp in directory.glob(prefix + "*") for f in tmp.rglob("*")
    )


def squeue(*args) -> list[str]:
    return subprocess.run(["squeue", "-h", *args], capture_output=True, text=True).stdout.split("\n")


def test_slurm_store_identical_to_local(slurm, small, capsys, tmp_path, monkeypatch):
    out, paths, ref, jobqueue = small
    scratch = tmp_path / "TMP"  # this job's TMPDIR, and its worker jobs' (sbatch passes the environment on)
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert main(mask_argv(paths, out / "slurm.zarr", jobqueue)) == 0
    text = capsys.readouterr().out
    assert re.search(r"Slurm worker jobs: \d+", text) and "dashboard: http" in text
    assert_same_store(ref, out / "slurm.zarr")
    assert wait_queue_empty(), "worker jobs left behind"
    # no dask-scratch-space (of the scheduler here or of a worker job) is left in TMPDIR
    assert wait_until(lambda: not list(scratch.iterdir()), timeout=10), list(scratch.iterdir())


def test_cancelled_worker_job_does_not_fail_the_mask(slurm, long_runs, tmp_path):
    _, paths, ref, jobqueue = long_runs
    out = tmp_path
    target = out / "slurm.zarr"
    result = {}
    register_jobqueue_defaults()  # dask-jobqueue sets a signal handler on import: in the main thread, not the job's
    job = threading.Thread(target=lambda: result.setdefault("code", main(mask_argv(paths, target, jobqueue, "--workers", "2"))))
    job.start()
    # wait until both worker jobs run and the store is being written, then until the workers have
    # stored a first chunk (they hold results now), then cancel one
    running = []

    def both_running_and_writing() -> bool:
        running[:] = [line.split()[0] for line in squeue("-n", "rmm-worker", "-t", "R", "-o", "%i") if line.strip()]
        return len(running) == 2 and any(p.name.startswith(".slurm.zarr.partial") for p in out.iterdir())

    if not wait_until(both_running_and_writing, timeout=120, interval=0.5):
        pytest.fail("the worker jobs did not start")
    assert wait_until(lambda: chunk_stored(out, ".slurm.zarr.partial"), timeout=60), "no chunk was stored"
    assert job.is_alive() and not target.exists(), "the job ended before a worker could be cancelled"
    subprocess.run(["scancel", running[0]], check=True)
    job.join(timeout=300)
    assert not job.is_alive() and result["code"] == 0
    assert_same_store(ref, target)
    assert wait_queue_empty(), "worker jobs left behind"


def test_rmm_submit_runs_as_a_batch_job(slurm, small, capsys):
    out, paths, ref, jobqueue = small
    target = out / "submitted.zarr"
    argv = mask_argv(paths, target, jobqueue)
    argv[0] = "submit"
    cut = argv.index("--cluster")
    del argv[cut : cut + 2]
    assert main(argv) == 0
    text = capsys.readouterr().out
    job_id = re.search(r"submitted batch job (\d+)", text).group(1)
    log = re.search(r"log: (\S+)", text).group(1)
    assert re.search(rf"result: {re.escape(str(target))}", text)
    script = open(re.search(r"script: (\S+)", text).group(1)).read()
    assert "PRIVATE KEY" not in script and "tls" not in script.lower()  # the batch job makes its own credentials

    # the batch job's scheduler, attacked while it waits for its worker jobs (in a node's namespace with two nodes)
    def batch_scheduler():
        pids = subprocess.run(["pgrep", "-f", f"rmm_dask mask .*{target}"], capture_output=True, text=True).stdout.split()
        return {p: int(pid) for pid in pids for p in listening(int(pid)) if p[0] != "127.0.0.1"}

    assert wait_until(lambda: batch_scheduler(), timeout=120, interval=0.1), "the batch job's scheduler was not seen"
    ports = batch_scheduler()
    results = attack([connectable(p) for p in ports], out / "marker")
    assert intrusions(results) == [] and all(p[0] != "0.0.0.0" for p in ports), results
    wait_until(lambda: not any(line.strip() for line in squeue("-j", job_id)), timeout=240, interval=1)
    content = open(log).read()
    assert "mask store:" in content and "finished" in content, content[-3000:]
    assert_same_store(ref, target)
    assert not (out / "marker").exists()
    assert wait_queue_empty(), "jobs left behind"


def test_workers_that_never_start_fail_clearly(slurm, small, tmp_path, capsys):
    out, paths, _, _ = small
    pending = tmp_path / "jobqueue.yaml"
    # accepted by Slurm, but never started within the timeout
    pending.write_text("jobqueue:\n  slurm:\n    memory: 1GiB\n    job-extra-directives: ['--begin=now+3600']\n")
    cfg = tmp_path / "rmm.yaml"
    cfg.write_text("rmm-dask:\n  cluster:\n    slurm:\n      worker-start-timeout: 5\n")
    t0 = time.monotonic()
    assert main(mask_argv(paths, tmp_path / "m.zarr", pending, "--config", str(cfg))) == 3
    assert time.monotonic() - t0 < 60
    err = capsys.readouterr().err.strip()
    assert "no Slurm worker job started within 5 s" in err and err.count("\n") == 0
    assert not (tmp_path / "m.zarr").exists()
    assert wait_queue_empty(), "the pending worker job was not cancelled"

    refused = tmp_path / "refused.yaml"
    refused.write_text("jobqueue:\n  slurm:\n    queue: no-such-partition\n")
    assert main(mask_argv(paths, tmp_path / "m.zarr", refused)) == 3
    assert "Slurm refuses the worker job" in capsys.readouterr().err


def test_ctrl_c_to_the_process_group_cancels_the_worker_jobs(slurm, small, tmp_path):
    """SIGINT as a terminal sends it (to the whole group) while the store is written: exit 130, one line, no job left."""
    import os
    import signal
    import sys

    _, paths, _, jobqueue = small
    target = tmp_path / "m.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "rmm_dask", *mask_argv(paths, target, jobqueue)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    # the worker jobs are submitted before the store is begun; sbatch and squeue take seconds on a loaded
    # machine, so they are seen first and the signal follows the store's temporary name at once
    # (a small job may otherwise be published between the two)
    while not [line for line in squeue("-n", "rmm-worker", "-o", "%i") if line.strip()]:
        assert proc.poll() is None and time.monotonic() < deadline, f"no worker job to cancel: {proc.stderr.read()}"
        time.sleep(0.1)
    while not any(p.name.startswith(".m.zarr.partial") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    assert proc.stderr.read() == "rmm mask: interrupted; nothing was published\n"
    assert list(tmp_path.iterdir()) == []
    assert wait_queue_empty(), "worker jobs left behind"


# ---------------------------------------------------------------------------- two nodes, each in its own network namespace


def two_node_jobqueue(out) -> str:
    """Worker jobs that meet the scheduler on the namespaces' bridge, one per node (--exclusive)."""
    path = out / "two-nodes.yaml"
    path.write_text(f"jobqueue:\n  slurm:\n    memory: 2GiB\n    walltime: '00:20:00'\n    log-directory: {out / 'logs'}\n"
                    "    interface: rmm0\n    job-extra-directives: ['--exclusive']\n")
    return str(path)


def dask_worker_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "distributed.cli.dask_worker"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def running_nodes() -> set[str]:
    return {line.split()[1] for line in squeue("-n", "rmm-worker", "-t", "R", "-o", "%i %N") if line.strip()}


def test_two_nodes_over_tls_give_the_local_mask_and_keep_a_stranger_out(slurm_nodes, long_runs, tmp_path):
    """`rmm mask --cluster slurm` with a worker job on each node, at the node's own address: the local store, bit
    for bit. The scheduler binds the bridge and loopback only; from another process, across the bridge, the
    nanny of each worker job is attacked (while the scheduler's process is stopped, SIGSTOP, so that this quick
    job cannot end first: the nannies listen, then wait for it); nothing gets in. (The scheduler of such a job is
    attacked live in test_security and in test_rmm_submit_runs_as_a_batch_job.)"""
    import os
    import signal
    import sys

    out, paths, ref, _ = long_runs
    target = tmp_path / "two.zarr"
    argv = mask_argv(paths, target, two_node_jobqueue(tmp_path), "--workers", "2")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "rmm_dask", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    nodes, stopped = set(), False
    try:
        submitted = lambda: len([j for j in squeue("-n", "rmm-worker", "-o", "%i") if j.strip()]) == 2  # noqa: E731
        assert wait_until(lambda: submitted() or proc.poll() is not None, timeout=60, interval=0.05)
        os.kill(proc.pid, signal.SIGSTOP)
        stopped = True
        scheduler = listening(proc.pid)
        assert {host for host, _ in scheduler} == {"198.18.0.1", "127.0.0.1"}, scheduler  # bridge and dashboard only

        def nannies_listen():
            nodes.update(running_nodes())
            return len([pid for pid in dask_worker_pids() if listening(pid)]) >= 2

        assert wait_until(nannies_listen, timeout=180, interval=0.2), "the two worker jobs did not start"
        nannies = {p: pid for pid in dask_worker_pids() for p in listening(pid)}
        assert {host for host, _ in nannies} == set(slurm_nodes.values()), nannies  # each at its node's address
        results = attack([connectable(p) for p in nannies], tmp_path / "marker")
        assert len(results) == 2 and intrusions(results) == [], results
    finally:
        if stopped:
            os.kill(proc.pid, signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert nodes == set(slurm_nodes), f"worker jobs ran on {nodes}"
    print(f"two-node run on {sorted(nodes)}: {time.monotonic() - t0:.1f} s")
    assert_same_store(ref, target)
    assert not (tmp_path / "marker").exists()
    assert wait_queue_empty(), "worker jobs left behind"


def test_a_worker_node_cut_off_mid_run_changes_nothing(slurm_nodes, long_runs, tmp_path):
    """A node's network goes down while its worker holds results: the scheduler drops the worker (its comm times
    out: Dask's distributed.comm.timeouts.tcp, 30 s), reruns its tasks on the other node, and publishes the local
    store, bit for bit."""
    from pathlib import Path

    out, paths, ref, _ = long_runs
    target = tmp_path / "cut.zarr"
    cut = Path(__file__).parents[1] / "deploy" / "slurm-local" / "cut-node.sh"
    result = {}
    argv = mask_argv(paths, target, two_node_jobqueue(tmp_path), "--workers", "2")
    register_jobqueue_defaults()  # dask-jobqueue sets a signal handler on import: in the main thread, not the job's
    job = threading.Thread(target=lambda: result.setdefault("code", main(argv)))
    job.start()
    try:
        assert wait_until(lambda: running_nodes() == set(slurm_nodes), timeout=180, interval=0.5), "no worker on each node"
        assert wait_until(lambda: chunk_stored(tmp_path, ".cut.zarr.partial"), timeout=120), "no chunk was stored"
        assert job.is_alive() and not target.exists(), "the job ended before a node could be cut off"
        subprocess.run([str(cut), "rmm-node2", "down"], check=True)
        t0 = time.monotonic()
        job.join(timeout=600)
        print(f"finished {time.monotonic() - t0:.1f} s after rmm-node2 was cut off")
    finally:
        subprocess.run([str(cut), "rmm-node2", "up"])
        job.join(timeout=120)
    assert not job.is_alive() and result["code"] == 0
    assert_same_store(ref, target)
    assert wait_queue_empty(timeout=120), "worker jobs left behind"
