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

Python runs a signal handler at the next bytecode of the main thread, which may be a
weakref callback or a ``__del__`` (h5py and Dask run many, e.g. while the flat check reads
its frames): Python drops what those raise (it prints "Exception ignored in ..." and goes
on), and the job would run to its end. A KeyboardInterrupt dropped there is caught by
``sys.unraisablehook`` (:func:`_dropped`, installed by :func:`handled`), not printed, and
raised again a moment later (:data:`REDELIVER` s), once the callback has returned. What
other callbacks raise after an interrupt is its consequence (an object whose constructor it
cut short fails in its ``__del__``: numba's llvmlite when Ctrl-C comes while a kernel
compiles) and is not printed, then and after the command, which exits.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import threading
import time

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: seconds after an interrupt in which further signals are ignored
GRACE = 10.0
#: seconds after which a KeyboardInterrupt that Python dropped (in a callback) is raised again
REDELIVER = 0.02

_held = 0
_pending: int | None = None
_first: float | None = None  #: when the last KeyboardInterrupt was raised (time.monotonic)
_active = False  #: inside handled(): the handler is ours
_raised: KeyboardInterrupt | None = None  #: the last one raised
_dropped_signal: int | None = None  #: the signal of a KeyboardInterrupt Python dropped, to raise again
_lock = threading.Lock()


def _raise(signum: int):
    global _first, _raised
    _first = time.monotonic()
    _raised = KeyboardInterrupt(signal.Signals(signum).name)
    raise _raised


def _interrupted(signum, frame):
    global _pending, _dropped_signal
    if not _active:
        return  # delivered after handled() ended: not for anyone
    again, _dropped_signal = _dropped_signal is not None, None
    if not again and _first is not None and time.monotonic() - _first < GRACE:
        return  # the clean-up the first one started goes on
    if _held:
        _pending = signum
        return
    _raise(signum)


def _dropped(unraisable, previous):
    """``sys.unraisablehook`` inside :func:`handled`: our KeyboardInterrupt, dropped where Python
    ignores exceptions, is raised again in :data:`REDELIVER` s; anything else goes to ``previous``."""
    global _dropped_signal
    if _raised is None:
        previous(unraisable)
        return
    if unraisable.exc_value is not _raised:
        return  # a consequence of the interrupt (a __del__ of an object it cut short: llvmlite's), not news
    _dropped_signal = signal.Signals[str(_raised)]
    timer = threading.Timer(REDELIVER, _redeliver)
    timer.daemon = True
    timer.start()


def _redeliver():
    """(a timer thread) The signal again, to the main thread, while handled() lasts."""
    with _lock:
        if _active and _dropped_signal is not None:
            _thread.interrupt_main(_dropped_signal)  # runs _interrupted at the main thread's next bytecode


@contextlib.contextmanager
def handled():
    """SIGINT and SIGTERM raise KeyboardInterrupt in the block (main thread only; elsewhere a no-op)."""
    global _pending, _first, _active, _raised, _dropped_signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupted) for sig in SIGNALS}
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: _dropped(unraisable, hook)
    _pending = _first = _raised = _dropped_signal = None
    _active = True
    try:
        yield
    finally:
        with _lock:  # no timer raises the signal again from here on
            _active = False
        signal.getsignal(signal.SIGINT)  # a signal raised just before is handled here, by _interrupted: nothing
        # after an interrupt the command ends: what the destructors of objects it cut short raise is not printed
        sys.unraisablehook = hook if _raised is None else (lambda unraisable: None)
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
