"""A run directory written whole: filled under a temporary name, then published in one step."""

from __future__ import annotations

from pathlib import Path

from .. import publish
from ..errors import InputError

__all__ = ["write_run_dir"]


def write_run_dir(run_dir: Path, write) -> Path:
    """Call ``write(tmp)`` to fill a temporary directory beside ``run_dir``, then publish it
    (:func:`rmm_dask.publish.output`; files left writable, as a detector's own). An empty
    directory at ``run_dir`` is replaced, anything else refused."""
    empty = run_dir.is_dir() and not run_dir.is_symlink() and not any(run_dir.iterdir())
    if run_dir.exists() and not empty and not run_dir.is_symlink():
        raise InputError(run_dir, "exists and is not an empty directory; not overwriting it")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with publish.output(run_dir, overwrite=empty, directory=True, what="the run", read_only=False) as tmp:
        write(tmp.tmp)
    return run_dir
