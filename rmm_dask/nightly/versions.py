"""Versioned publication of one detector's masks, and the atomic ``current`` pointer.

Layout under ``<publish>/<detector>/``::

    v0001/            one version, immutable once in place (files read-only):
        mask.zarr     the mask store
        summary.json  status (published or held, and why), inputs, counts, timings
        summary.html  the same with the figures, one self-contained page
        diff.json     against the version current pointed to (absent for the first)
    v0002/ ...
    current -> v0002  a relative symbolic link, switched with one rename

A version is assembled in a hidden ``.v0002.partial-<host>-<pid>-<random>`` directory
and moved into place whole and read-only, never over an existing version; ``current`` is
replaced by renaming a new link over it, so readers always find a complete version
through it, old or new. Both go through :mod:`rmm_dask.publish`: nothing is written or
changed through a symbolic link planted at a version's, a temporary's or ``current``'s
name, and the leftovers of a killed pass are removed by the next one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .. import publish

CURRENT = "current"
_VERSION = re.compile(r"^v(\d{4,})$")


def version_name(version: int) -> str:
    return f"v{version:04d}"


class Versions:
    """The versions of one detector under ``root`` (created on first use)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._partials: dict[int, publish.Temporary] = {}

    def path(self, version: int) -> Path:
        return self.root / version_name(version)

    def list(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _VERSION.match(p.name)) and p.is_dir() and not p.is_symlink())

    def current(self) -> int | None:
        """The version ``current`` points to, or None."""
        try:
            target = os.readlink(self.root / CURRENT)
        except FileNotFoundError:
            return None
        m = _VERSION.match(Path(target).name)
        return int(m.group(1)) if m else None

    def new_partial(self, version: int) -> Path:
        """A fresh hidden directory to assemble ``version`` in (dead leftovers of earlier passes removed)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = publish.create_temporary(self.path(version), directory=True, what=f"version {version_name(version)}")
        self._partials[version] = tmp
        return tmp.tmp

    def remove_partials(self, version: int) -> None:
        """Remove this pass's temporary of ``version`` and the dead ones of earlier passes (never through a link)."""
        tmp = self._partials.pop(version, None)
        if tmp is not None:
            publish.discard(tmp)
        if self.root.is_dir():
            publish.tidy(self.path(version))

    def publish(self, tmp: Path, version: int) -> Path:
        """Make the assembled ``tmp`` read-only and move it to its version; never over an existing one."""
        assembled = self._partials.pop(version, None)
        if assembled is None or assembled.tmp != Path(tmp):
            raise ValueError(f"{tmp} is not the temporary of {version_name(version)} made by new_partial")
        return publish.commit(assembled, overwrite=False)

    def switch(self, version: int) -> None:
        """Point ``current`` at ``version`` with one atomic rename of a new link over the old."""
        if not (self.path(version) / "mask.zarr").is_dir():
            raise FileNotFoundError(f"{self.path(version)} has no mask.zarr: not switching current to it")
        publish.publish_symlink(version_name(version), self.root / CURRENT, what="the current link")
