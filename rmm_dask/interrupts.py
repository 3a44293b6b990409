"""Ctrl-C and SIGTERM as KeyboardInterrupt, once, and never in the middle of a clean-up.

``rmm`` turns SIGINT (Ctrl-C: the terminal sends it to the whole process group) and
SIGTERM (scancel, Slurm's time limit, systemd) into one KeyboardInterrupt in the main
thread for the duration of a command (:func:`handled`): the command cancels its tasks,
stops its workers and worker jobs and removes its temporary files on the way out, and
the command line exits with 130. Signals after the first are ignored, so that a second
Ctrl-C does not cut that clean-up short. Inside :func:`held` (closing a cluster,
starting a LocalCluster) a signal is remembered and raised when the block ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_held = 0
_pending: int | None = None


def _interrupted(signum, frame):
    global _pending
    for sig in SIGNALS:  # the first one counts; the clean-up it starts runs to its end
        signal.signal(sig, signal.SIG_IGN)
    if _held:
        _pending = signum
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def handled():
    """SIGINT and SIGTERM raise KeyboardInterrupt in the block (main thread only; elsewhere a no-op)."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupted) for sig in SIGNALS}
    _pending = None
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def held():
    """A signal that comes during the block is raised (as KeyboardInterrupt) when it ends."""
    global _held, _pending
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _pending is not None:
            signum, _pending = _pending, None
            raise KeyboardInterrupt(signal.Signals(signum).name)
