"""Versioned publication of one detector's masks, and the atomic ``current`` pointer.

Layout under ``<publish>/<detector>/``::

    v0001/            one version, immutable once in place (files read-only):
        mask.zarr     the mask store
        summary.json  status (published or held, and why), inputs, counts, timings
        summary.html  the same with the figures, one self-contained page
        diff.json     against the version current pointed to (absent for the first)
    v0002/ ...
    current -> v0002  a relative symbolic link, switched with one rename

A version is assembled in a hidden ``.v0002.partial-<random>`` directory and renamed
into place whole; ``current`` is replaced by renaming a new link over it, so readers
always find a complete version through it, old or new.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import uuid
from pathlib import Path

CURRENT = "current"
_VERSION = re.compile(r"^v(\d{4,})$")


def version_name(version: int) -> str:
    return f"v{version:04d}"


class Versions:
    """The versions of one detector under ``root`` (created on first use)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, version: int) -> Path:
        return self.root / version_name(version)

    def list(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _VERSION.match(p.name)) and p.is_dir())

    def current(self) -> int | None:
        """The version ``current`` points to, or None."""
        try:
            target = os.readlink(self.root / CURRENT)
        except FileNotFoundError:
            return None
        m = _VERSION.match(Path(target).name)
        return int(m.group(1)) if m else None

    def new_partial(self, version: int) -> Path:
        """A fresh hidden directory to assemble ``version`` in (earlier leftovers of it removed)."""
        self.remove_partials(version)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{version_name(version)}.partial-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        return tmp

    def remove_partials(self, version: int) -> None:
        for p in self.root.glob(f".{version_name(version)}.partial-*"):
            _make_writable(p)
            shutil.rmtree(p, ignore_errors=True)

    def publish(self, tmp: Path, version: int) -> Path:
        """Make the assembled ``tmp`` read-only and rename it to its version; never over an existing one."""
        target = self.path(version)
        if target.exists():
            raise FileExistsError(f"{target} exists already: versions are immutable")
        _make_readonly(tmp)
        os.rename(tmp, target)
        _fsync_dir(self.root)
        return target

    def switch(self, version: int) -> None:
        """Point ``current`` at ``version`` with one atomic rename of a new link over the old."""
        if not (self.path(version) / "mask.zarr").is_dir():
            raise FileNotFoundError(f"{self.path(version)} has no mask.zarr: not switching current to it")
        link = self.root / f".{CURRENT}.{uuid.uuid4().hex[:8]}"
        os.symlink(version_name(version), link)
        try:
            os.replace(link, self.root / CURRENT)
        except BaseException:
            link.unlink(missing_ok=True)
            raise
        _fsync_dir(self.root)


def _make_readonly(path: Path) -> None:
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(dirpath, name)
            os.chmod(p, os.stat(p).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _make_writable(path: Path) -> None:
    for dirpath, _dirs, files in os.walk(path):
        os.chmod(dirpath, os.stat(dirpath).st_mode | stat.S_IWUSR)
        for name in files:
            p = os.path.join(dirpath, name)
            os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
