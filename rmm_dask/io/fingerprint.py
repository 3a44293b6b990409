"""What the provenance records of every input file, and the check that none changed while a job ran.

A file's fingerprint is its size, modification time, inode and status-change time (ctime).
A file rewritten in place changes its ctime even when its mtime is set back (``touch -d``,
``rsync -a``); a file replaced by another (a new copy renamed over it) changes its inode.
No pixel is read: a job on a full AGIPD-1M run stats a few hundred files at its end.
"""

from __future__ import annotations

import datetime as dt
import os

from ..errors import InputError


def fingerprint(path) -> dict:
    """The provenance record of one input file (``path``, ``size``, ``mtime`` as ISO text,
    and ``mtime_ns``, ``inode``, ``ctime_ns`` for :func:`check_unchanged`)."""
    st = os.stat(path)
    mtime = dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc).isoformat(timespec="seconds")
    return {"path": os.fspath(path), "size": st.st_size, "mtime": mtime, "mtime_ns": st.st_mtime_ns,
            "inode": st.st_ino, "ctime_ns": st.st_ctime_ns}


def change(record: dict) -> str | None:
    """How the file of ``record`` (from :func:`fingerprint`) differs from it now, or None if it is the same."""
    try:
        now = fingerprint(record["path"])
    except FileNotFoundError:
        return "was removed"
    except OSError as err:
        return f"cannot be read any more ({err.strerror})"
    return {
        None: None,
        "replaced": "was replaced by another file",
        "resized": f"changed size ({record['size']} -> {now['size']} bytes)",
        "modified": f"was modified ({record['mtime']} -> {now['mtime']})",
        "rewritten": "was rewritten or its attributes changed (status-change time)",
    }[difference(record, now)]


def difference(old: dict, new: dict) -> str | None:
    """What differs between two fingerprints of one file, in a word: ``replaced`` (another inode),
    ``resized``, ``modified`` (mtime), ``rewritten`` (ctime only: rewritten in place with its mtime
    set back, or its owner or mode changed), or None when they are the same."""
    for key, kind in (("inode", "replaced"), ("size", "resized"), ("mtime_ns", "modified"), ("ctime_ns", "rewritten")):
        if old[key] != new[key]:
            return kind
    return None


def check_unchanged(inputs: dict) -> None:
    """Raise InputError naming the first input file that changed since it was recorded.

    ``inputs``: the provenance of the runs (``{"dark-high": {"files": [record, ...]}, ...}``, the
    store's ``inputs`` attribute). Called once a job has computed everything, before it publishes.
    """
    for role, info in inputs.items():
        for record in info.get("files", []):
            if "inode" not in record:  # a store of an earlier rmm-dask: sizes and times only
                continue
            what = change(record)
            if what is not None:
                raise InputError(record["path"], f"{what} while the job read it ({role} run): the mask would mix "
                                 "old and new data; nothing was published")
