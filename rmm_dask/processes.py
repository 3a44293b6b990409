"""Who left a temporary: this host's name as names carry it, and whether a process of this host still lives.

Temporaries of a job (a store's partial, a LocalCluster's scratch space, a Slurm job's
credentials) are named ``...<host>-<pid>-<random>``, so that the next job on the host can
tell those of killed jobs (the pid gone) from those of jobs that still run, here or elsewhere.
"""

from __future__ import annotations

import os
import socket

HOST = socket.gethostname().replace("/", "_") or "localhost"


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (this process does; someone else's counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
