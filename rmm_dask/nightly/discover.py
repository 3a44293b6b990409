"""Finding calibration sets in facility trees: runs, their roles, and complete sets.

A tree is a directory of EuXFEL run directories ``r<NNNN>/`` (``<proposal>/raw``).
A run's role (``dark-high``, ``dark-medium``, ``dark-low``, ``flat``) comes from a run
list, or else from the first rule whose patterns all match the run's metadata: the
``METADATA`` datasets of its first RAW file (``runType``, ``sample``, ``proposalNumber``,
``runNumber``, ...; what EXtra-data's ``run_metadata()`` reports), plus ``run`` and
``path``. Patterns are shell-style and case-insensitive. Only the metadata is read.

Runs are taken in run-number order; a set is complete when a dark run of every
required gain has been seen since the previous set (a repeated dark replaces the
earlier one), and it takes the newest flat run before its last dark. A run is used
only when none of its files has changed for ``settle`` seconds (the DAQ may still be
writing it).
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import h5py

from ..config import read_yaml
from ..errors import InputError
from .settings import Watch

_RUN_DIR = re.compile(r"^r(\d{4})$")
_SKIP_HINT = " (to go on without it, give it the role 'skip' in the run list)"


@dataclass(frozen=True)
class Run:
    path: Path
    number: int
    role: str | None
    mtime: float  #: newest modification time of its files


def runs_key(runs: dict) -> str:
    """A set's identity in the catalog from its runs (role -> path, in the set's order)."""
    return ";".join(f"{role}={path}" for role, path in runs.items())


@dataclass(frozen=True)
class CalibrationSet:
    """Dark runs per gain stage and an optional flat run of one detector."""

    detector: str  #: the watch name
    darks: dict  #: gain -> run directory (Path)
    flat: Path | None
    mtime: float  #: newest file of its runs

    @property
    def key(self) -> str:
        """The set's identity in the catalog: its runs' paths by role."""
        return runs_key(self.runs)

    @property
    def runs(self) -> dict:
        runs = {f"dark-{g}": str(p) for g, p in self.darks.items()}
        if self.flat is not None:
            runs["flat"] = str(self.flat)
        return runs

    def describe(self) -> str:
        names = [f"{role} {Path(p).name}" for role, p in self.runs.items()]
        return f"{self.detector}: {', '.join(names)} in {Path(next(iter(self.darks.values()))).parent}"


def run_metadata(run_dir: Path) -> dict:
    """METADATA of the run's first RAW file as plain values (InputError if there is none)."""
    files = sorted(run_dir.glob("RAW-*.h5"))
    if not files:
        raise InputError(run_dir, "no RAW-*.h5 files")
    meta = {}
    try:
        with h5py.File(files[0], "r") as f:
            group = f.get("METADATA")
            if group is None:
                raise InputError(files[0], "no METADATA group")
            for key, item in group.items():
                if isinstance(item, h5py.Dataset) and item.shape in ((1,), ()):
                    value = item[()] if item.shape == () else item[0]
                    meta[key] = value.decode(errors="replace") if isinstance(value, bytes) else value.item() if hasattr(value, "item") else value
    except OSError as err:
        raise InputError(files[0], f"cannot read the run's metadata: {err}") from None
    return meta


def role_of(meta: dict, rules: dict) -> str | None:
    """The first role whose patterns all match the metadata (case-insensitive), or None."""
    for role, patterns in rules.items():
        if all(key in meta and fnmatch.fnmatchcase(str(meta[key]).lower(), pattern.lower()) for key, pattern in patterns.items()):
            return role
    return None


def _newest_mtime(run_dir: Path) -> float:
    return max((e.stat().st_mtime for e in os.scandir(run_dir) if e.is_file()), default=run_dir.stat().st_mtime)


def _run_list(path: Path | None) -> dict:
    if path is None:
        return {}
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise InputError(path, "expected a mapping {run number: role}")
    try:
        return {int(str(k).lstrip("r")): str(v) for k, v in data.items()}
    except ValueError as err:
        raise InputError(path, f"run numbers must be integers or r<NNNN>: {err}") from None


def scan_tree(tree: Path, watch: Watch, *, settle: float, not_before: float | None, now: float | None = None) -> tuple[list[Run], list[str]]:
    """Runs of one tree with their roles, up to the first run that cannot be used yet, and notes.

    A run still being written (or unreadable) stops the scan: a set never forms across
    a run whose role is not known yet, and runs after it wait for the next pass.
    """
    now = time.time() if now is None else now
    listed = _run_list(watch.run_list)
    runs, notes = [], []
    try:
        entries = sorted(tree.iterdir())
    except OSError as err:
        return [], [f"{tree}: cannot list the runs ({err.strerror}); tree skipped"]
    for entry in entries:
        m = _RUN_DIR.match(entry.name)
        if not m or not entry.is_dir():
            continue
        number = int(m.group(1))
        if listed.get(number) == "skip":  # the operator's way past a run that will never be read
            continue
        try:
            mtime = _newest_mtime(entry)
        except OSError as err:  # unreadable, or removed since the listing
            notes.append(f"{entry}: cannot list the run ({err.strerror}); it and later runs wait for the next pass{_SKIP_HINT}")
            break
        if not_before is not None and mtime < not_before:
            continue
        if now - mtime < settle:
            notes.append(f"{entry}: written {now - mtime:.0f} s ago, less than settle = {settle:g} s; it and later runs wait")
            break
        if number in listed:
            role = listed[number]
        else:
            try:
                meta = run_metadata(entry)
            except InputError as err:
                notes.append(f"{err}; it and later runs wait for the next pass{_SKIP_HINT}")
                break
            role = role_of({**meta, "run": number, "path": str(entry)}, watch.roles)
        if role is not None:
            runs.append(Run(entry, number, role, mtime))
    return runs, notes


def group_sets(runs: list[Run], watch: Watch) -> list[CalibrationSet]:
    """Complete sets from the runs of one tree, in run-number order (see the module docstring)."""
    sets, pending, flat = [], {}, None
    for run in sorted(runs, key=lambda r: r.number):
        if run.role == "flat":
            flat = run
            continue
        gain = run.role.removeprefix("dark-")
        if gain not in watch.gains:
            continue
        pending[gain] = run
        if len(pending) == len(watch.gains):
            use_flat = flat if watch.flat == "latest" else None
            members = list(pending.values()) + ([use_flat] if use_flat else [])
            sets.append(
                CalibrationSet(
                    watch.name,
                    {g: pending[g].path for g in watch.gains},
                    use_flat.path if use_flat else None,
                    max(r.mtime for r in members),
                )
            )
            pending = {}
    return sets


def find_sets(watch: Watch, *, settle: float, not_before: float | None = None) -> tuple[list[CalibrationSet], list[str]]:
    """Every complete set in the watch's trees (oldest first), and notes on skipped runs."""
    sets, notes = [], []
    trees = sorted({Path(p) for pattern in watch.trees for p in glob.glob(pattern)})
    if not trees:
        notes.append(f"{watch.name}: no directory matches {list(watch.trees)}")
    for tree in trees:
        if not tree.is_dir():
            continue
        runs, skipped = scan_tree(tree, watch, settle=settle, not_before=not_before)
        sets += group_sets(runs, watch)
        notes += skipped
    return sorted(sets, key=lambda s: (s.mtime, s.key)), notes
