"""Shared test helpers: :func:`raise_if_dask_computes` for laziness tests, a real Slurm when one
is reachable (tests/test_slurm.py), :func:`wait_until` instead of fixed sleeps, and the small
synthetic set and mask store the command-line tests share (written once per session)."""

import contextlib
import os
import shutil
import subprocess
import time

import dask
import pytest


class CountingScheduler:
    """A Dask scheduler that counts compute calls and fails once there are more than ``max_computes``."""

    def __init__(self, max_computes: int = 0):
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk, keys, **kwargs):
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise AssertionError(
                f"something was computed: {self.total_computes} dask computes, {self.max_computes} allowed"
            )
        return dask.get(dsk, keys, **kwargs)


@contextlib.contextmanager
def raise_if_dask_computes(max_computes: int = 0):
    """Within the block, any Dask compute beyond ``max_computes`` raises AssertionError
    ("something was computed ..."); yields the scheduler (``total_computes``). As xarray's test helper."""
    scheduler = CountingScheduler(max_computes)
    with dask.config.set(scheduler=scheduler):
        yield scheduler


def wait_until(condition, timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll ``condition()`` until it is true (returns True) or ``timeout`` seconds pass (returns False)."""
    end = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


def _slurm_problem() -> str | None:
    """Why no Slurm can be used here, or None when sinfo answers with an idle node."""
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return "no Slurm client commands (sinfo, sbatch) on this host"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 15 s"
    if proc.returncode != 0:
        return f"sinfo failed: {' '.join(proc.stderr.split())}"
    states = proc.stdout.split()
    if not any(s in ("idle", "mix", "alloc") for s in states):
        return f"no usable Slurm node (states: {states or 'none'})"
    return None


@pytest.fixture(scope="session")
def slurm():
    """A reachable Slurm, or skip (fail when RMM_REQUIRE_SLURM=1, as in CI). Leaves no job behind."""
    problem = _slurm_problem()
    if problem:
        message = f"Slurm needed: {problem} (deploy/slurm-local/start.sh starts one on this host)"
        if os.environ.get("RMM_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    yield
    assert wait_queue_empty(), "jobs left in squeue: " + subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout


SLURM_LOCAL = "/run/rmm-slurm-local"  #: what deploy/slurm-local/start.sh started: mode, nodes, netns-problem


def slurm_mode() -> str:
    """``netns`` (two nodes, each in its own network namespace) or ``single`` (deploy/slurm-local/start.sh)."""
    try:
        with open(f"{SLURM_LOCAL}/mode") as f:
            return f.read().strip()
    except OSError:
        return "single"


def slurm_interface_yaml() -> str:
    """The jobqueue.slurm line that makes the scheduler and the workers meet on the namespaces' bridge (netns mode)."""
    return "    interface: rmm0\n" if slurm_mode() == "netns" else ""


@pytest.fixture(scope="session")
def slurm_nodes(slurm):
    """{node name: address} of the two-node Slurm in network namespaces, or skip with the reason why there is none
    (fail when RMM_REQUIRE_SLURM=1)."""
    if slurm_mode() != "netns":
        try:
            with open(f"{SLURM_LOCAL}/netns-problem") as f:
                problem = f.read().strip()
        except OSError:
            problem = "this Slurm was not started by deploy/slurm-local/start.sh in its two-node mode"
        message = f"two Slurm nodes in network namespaces needed: {problem}"
        if os.environ.get("RMM_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with open(f"{SLURM_LOCAL}/nodes") as f:
        return dict(line.split() for line in f if line.strip())


def wait_queue_empty(timeout=30.0) -> bool:
    """True once squeue lists no job (cancelled jobs take a few seconds to leave)."""
    return wait_until(
        lambda: not subprocess.run(["squeue", "-h", "-o", "%i %T %j"], capture_output=True, text=True).stdout.strip(),
        timeout, interval=0.5,
    )


# ---------------------------------------------------------------------------- a small set for the command line


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """A small synthetic AGIPD set written by ``rmm synth`` (1 module, 2 cells, 24 frames), once per
    session for test_cli, test_exits and test_faults; tests copy what they damage."""
    from rmm_dask.cli import main

    out = tmp_path_factory.mktemp("synth")
    assert main(["synth", "--out", str(out), "--modules", "1", "--cells", "2", "--frames", "24", "--seed", "2"]) == 0
    return out


def raw(runs, n):
    return str(runs / "raw" / f"r{n:04d}")


def mask_args(runs, out, *extra):
    return ["mask", "--dark-high", raw(runs, 1), "--dark-medium", raw(runs, 2), "--dark-low", raw(runs, 3), "--flat", raw(runs, 4), "--out", str(out), "--workers", "1", *extra]


@pytest.fixture(scope="session")
def store(runs, tmp_path_factory):
    """The mask store (read-only once published) and its ``--report`` of ``runs``, made once per session."""
    from rmm_dask.cli import main

    out = tmp_path_factory.mktemp("mask") / "mask.zarr"
    report = out.with_name("report.html")
    assert main(mask_args(runs, out, "--report", str(report), "--lambda", "8")) == 0
    assert report.stat().st_size > 10_000
    return out
