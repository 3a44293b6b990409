"""``python -m rmm_dask`` is the ``rmm`` command (used in Slurm batch scripts)."""

import contextlib
import os
import sys


def run() -> None:
    """The program: :func:`rmm_dask.cli.main`, then exit at once with its code.

    Exit handlers run and the output is flushed, but Python does not then tear down its
    modules one by one, which takes 1-2 s once numba, xarray, dask and distributed are loaded
    (measured on the 2-core machine): a small job ends that much sooner. Only when every
    thread left is a daemon (none still working); otherwise Python's usual shutdown.
    """
    import atexit
    import threading

    from .cli import main

    code = main()
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()  # what Python's shutdown runs first: logging, temporary directories
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
