"""Shared fixtures: a real Slurm when one is reachable (tests/test_slurm.py)."""

import os
import shutil
import subprocess
import time

import pytest


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


def wait_queue_empty(timeout=30.0) -> bool:
    """True once squeue lists no job (cancelled jobs take a few seconds to leave)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        out = subprocess.run(["squeue", "-h", "-o", "%i %T %j"], capture_output=True, text=True).stdout.strip()
        if not out:
            return True
        time.sleep(0.5)
    return False
