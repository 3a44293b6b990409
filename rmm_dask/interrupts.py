"""Ctrl-C and SIGTERM as KeyboardInterrupt, once, and never in the middle of a clean-up.

``rmm`` turns SIGINT (Ctrl-C: the terminal sends it to the whole process group) and
SIGTERM (scancel, Slurm's time limit, systemd) into one KeyboardInterrupt in the main
thread for the duration of a command (:func:`handled`): the command cancels its tasks,
stops its workers and worker jobs and removes its temporary files on the way out, and
the command line exits with 130. Signals in the :data:`GRACE` seconds after the first
are ignored, so that pressing Ctrl-C again does not cut that clean-up short; a later one
interrupts it too (a clean-up that hangs can still be stopped). Inside :func:`held`
(closing a cluster, starting a LocalCluster) a signal is remembered and raised when the
block ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: seconds after an interrupt in which further signals are ignored
GRACE = 10.0

_held = 0
_pending: int | None = None
_first: float | None = None  #: when the last KeyboardInterrupt was raised (time.monotonic)


def _raise(signum: int):
    global _first
    _first = time.monotonic()
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _interrupted(signum, frame):
    global _pending
    if _first is not None and time.monotonic() - _first < GRACE:
        return  # the clean-up the first one started goes on
    if _held:
        _pending = signum
        return
    _raise(signum)


@contextlib.contextmanager
def handled():
    """SIGINT and SIGTERM raise KeyboardInterrupt in the block (main thread only; elsewhere a no-op)."""
    global _pending, _first
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupted) for sig in SIGNALS}
    _pending = _first = None
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
            _raise(signum)
