"""Finding calibration sets in facility trees: runs, their roles, and complete sets.

A tree is a directory of EuXFEL run directories ``r<NNNN>/`` (``<proposal>/raw``).
A run's role (``dark-high``, ``dark-medium``, ``dark-low``, ``flat``) comes from a run
list, or else from the first rule whose patterns all match the run's metadata: the
``METADATA`` datasets of its first RAW file (``runType``, ``sample``, ``proposalNumber``,
``runNumber``, ...; what EXtra-data's ``run_metadata()`` reports), plus ``run`` and
``path``. Patterns are shell-style and case-insensitive. Only the metadata is read.

Runs are taken in run-number order; a set is complete when a dark run of every
required gain has been seen since the previous set (a repeated dark replaces the
earlier one). Its flat run (:func:`choose_flat`), by the watch's ``flat-window``:

* a window (``flat-window: 2h``): the flat runs of the tree taken at most that long
  before the set's first dark or after its last dark (or between its darks) are its
  candidates, and it takes the nearest in time; at equal distance the earlier one (the
  flat before the darks). A run's time is the newest modification time of its files (the
  end of its acquisition; ``rsync -a`` and ``cp -p`` keep it). A flat taken later could
  still be nearer until ``last dark + distance of the nearest candidate`` (``+ window``
  when there is none): the set waits until then, plus ``settle`` for a run being copied
  in, and while its tree's scan stops at a run not ready yet that may be that flat
  (its files' newest modification time is within the reach); a note says until when.
  Then it is decided, with its flat or darks only. A flat that arrives even later (a
  copy days late, with its old modification time) makes another set of the same darks:
  masked as a new version that names the one it replaces (service.py);
* no window (``flat-window`` absent or null, the rule of earlier versions): the newest
  flat run before its last dark by run number, at any distance in time; a flat run
  after its darks (before the next set's) is not used, and the set's note says so.

Each set carries a note (``flat_note``) saying which flat it took and why, or why none,
for the service's log and the version's summary.

A run is used only once it is complete, as far as the run itself can tell:

* it has not changed for ``settle`` seconds: not by the modification times of its files
  alone (``rsync -a`` and ``cp -p`` set them back to the source's, so a run copied in
  now looks old), but by the newest of its files' and its directory's modification and
  status-change times (ctime: set by the kernel whenever a file arrives, is renamed in
  or changes; no copy tool can set it back) and, with a catalog, by the pass that last
  saw its file set (names, sizes, modification times) differ from the pass before;
* the reader opens it (:func:`rmm_dask.io.open_run`, metadata only): what the format
  says of completeness (every module's sequence files from ``S00000`` without a gap,
  trains consistent) is the reader's to check; a run it refuses is not ready yet, and
  the reason goes to the log. A run that opened is not opened again while its files
  stay the same (the catalog remembers).

A run that is not ready stops the scan of its tree: it and the runs after it wait for
the next pass, so a set never forms across it.

Every set carries the fingerprint of its runs' files (:func:`run_files`: name, size,
modification time, inode and ctime of each ``.h5`` file), whose digest (:func:`inputs_digest`:
all but the ctime) is part of its identity in the catalog: when a run of a published set changes (more sequence files arrived, a
file replaced), the set is new to the catalog and is masked again
(:func:`input_changes` says what changed).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import glob
import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from ..config import read_yaml
from ..errors import InputError
from ..io.fingerprint import difference, fingerprint
from .settings import Watch

_RUN_DIR = re.compile(r"^r(\d{4})$")
_SKIP_HINT = " (to go on without it, give it the role 'skip' in the run list)"


@dataclass(frozen=True)
class Run:
    path: Path
    number: int
    role: str | None
    mtime: float  #: newest modification time of its files
    files: tuple = ()  #: the fingerprints of its .h5 files (:func:`run_files`)


def runs_key(runs: dict) -> str:
    """A set's runs as text (role -> path, in the set's order): the first part of its key in the catalog."""
    return ";".join(f"{role}={path}" for role, path in runs.items())


def inputs_digest(inputs: dict) -> str:
    """A short digest of what a set's files hold (``{run path: [record, ...]}``): each file's name, size,
    modification time and inode. Not its ctime: a chmod or chown (raw data made read-only once it is
    migrated) changes no pixel and must not re-mask every set; a copy renamed over a file (``rsync``)
    has a new inode."""
    content = {run: [(os.path.basename(r["path"]), r["size"], r["mtime_ns"], r["inode"]) for r in records]
               for run, records in inputs.items()}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def set_key(runs: dict, inputs: dict | None) -> str:
    """A set's identity in the catalog: its runs and, when known, the digest of their files' fingerprints.

    The same runs with other files (a sequence file more, one replaced) are another set.
    Without ``inputs`` (a version published before rmm-dask recorded them): the runs alone.
    """
    return f"{runs_key(runs)}#{inputs_digest(inputs)}" if inputs else runs_key(runs)


@dataclass(frozen=True)
class CalibrationSet:
    """Dark runs per gain stage and an optional flat run of one detector."""

    detector: str  #: the watch name
    darks: dict  #: gain -> run directory (Path)
    flat: Path | None
    mtime: float  #: newest file of its runs
    inputs: dict = field(default_factory=dict)  #: run path -> the fingerprints of its files (:func:`run_files`)
    flat_note: str = ""  #: which flat run the set took and why, or why none (:func:`choose_flat`)

    @property
    def key(self) -> str:
        """The set's identity in the catalog: its runs' paths by role and their files' fingerprints."""
        return set_key(self.runs, self.inputs)

    @property
    def runs(self) -> dict:
        runs = {f"dark-{g}": str(p) for g, p in self.darks.items()}
        if self.flat is not None:
            runs["flat"] = str(self.flat)
        return runs

    def describe(self) -> str:
        names = [f"{role} {Path(p).name}" for role, p in self.runs.items()]
        return f"{self.detector}: {', '.join(names)} in {Path(next(iter(self.darks.values()))).parent}"


def run_files(run_dir: Path) -> list[dict]:
    """The fingerprints (:func:`rmm_dask.io.fingerprint.fingerprint`) of the run's ``.h5`` files, by name.

    Hidden files (``rsync``'s temporaries) are left out: they are not the run's yet.
    """
    names = sorted(e.name for e in os.scandir(run_dir) if e.name.endswith(".h5") and not e.name.startswith(".")
                   and e.is_file())
    return [fingerprint(run_dir / name) for name in names]


def last_change(run_dir: Path) -> float:
    """The newest modification or status-change time of the run directory and everything in it.

    A file copied in with its modification time preserved still has a new ctime; a file
    being copied (a hidden temporary) or renamed into place changes the directory's.
    """
    st = run_dir.stat()
    times = [st.st_mtime, st.st_ctime]
    for entry in os.scandir(run_dir):
        try:
            est = entry.stat()
        except FileNotFoundError:  # a temporary renamed meanwhile: the directory's ctime says it
            continue
        times += [est.st_mtime, est.st_ctime]
    return max(times)


def listing_digest(files: list[dict]) -> str:
    """What the service compares between passes: the names, sizes and modification times of the files."""
    listing = [(os.path.basename(f["path"]), f["size"], f["mtime_ns"]) for f in files]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def input_changes(old: dict, new: dict) -> dict[str, str]:
    """What changed between two fingerprints of a set's files (``{run path: [record, ...]}``): run path -> text.

    E.g. ``2 files added (RAW-R0004-AGIPD00-S00001.h5, RAW-R0004-AGIPD00-S00002.h5)``; runs that
    did not change are not listed.
    """
    out = {}
    for path, records in new.items():
        before = {os.path.basename(r["path"]): r for r in old.get(path, [])}
        now = {os.path.basename(r["path"]): r for r in records}
        kinds: dict[str, list[str]] = {}
        for name in sorted(set(before) | set(now)):
            kind = _file_change(before.get(name), now.get(name))
            if kind:
                kinds.setdefault(kind, []).append(name)
        if kinds:
            parts = [f"{len(names)} {'file' if len(names) == 1 else 'files'} {kind} ({_names(names)})"
                     for kind, names in kinds.items()]
            out[path] = ", ".join(parts)
    return out


def _file_change(old: dict | None, new: dict | None) -> str | None:
    """How one file changed between two fingerprints, in a word or two, or None."""
    if old is None:
        return "added"
    if new is None:
        return "removed"
    kind = difference(old, new)
    return "with a new ctime (rewritten in place, or its owner or mode changed)" if kind == "rewritten" else kind


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f", ... ({len(names) - 3} more)" if len(names) > 3 else "")


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


def _used(role: str | None, watch: Watch) -> bool:
    """Whether a run of this role can be part of the watch's sets (only those are opened)."""
    if role == "flat":
        return watch.flat == "latest"
    return role is not None and role.removeprefix("dark-") in watch.gains


def not_readable(run_dir: Path, watch: Watch, files: list[dict], memory=None) -> str | None:
    """Why the reader refuses the run now (one line), or None when it opens (metadata only).

    A run that opened is remembered in ``memory`` (the catalog) with its files' digest and
    not opened again until they change.
    """
    from ..io import open_run

    digest = inputs_digest({str(run_dir): files})
    if memory is not None and memory.opened(watch.name, str(run_dir)) == digest:
        return None
    try:
        open_run(run_dir, watch.detector, detector_id=watch.detector_id)
    except InputError as err:
        return str(err)
    if memory is not None:
        memory.mark_opened(watch.name, str(run_dir), digest)
    return None


def scan_tree(tree: Path, watch: Watch, *, settle: float, not_before: float | None, now: float | None = None,
              memory=None) -> tuple[list[Run], list[str]]:
    """Runs of one tree with their roles, up to the first run that cannot be used yet, and notes.

    A run still being written, copied in, incomplete or unreadable stops the scan: a set
    never forms across a run whose role or files are not known yet, and runs after it wait
    for the next pass. ``memory`` (the catalog) remembers each run's file set between passes.
    """
    runs, notes, _ = scan_tree_until(tree, watch, settle=settle, not_before=not_before, now=now, memory=memory)
    return runs, notes


def scan_tree_until(tree: Path, watch: Watch, *, settle: float, not_before: float | None, now: float | None = None,
                    memory=None) -> tuple[list[Run], list[str], tuple[Path, float] | None]:
    """:func:`scan_tree`, and where the scan stopped: the run not ready yet and the newest modification
    time of its files so far (``now`` when unknown), or None when it read the whole tree. The sets
    before it whose flat may be that run wait for it (:func:`group_sets`)."""
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
            changed = last_change(entry)
            files = run_files(entry)
        except OSError as err:  # unreadable, or removed since the listing
            notes.append(f"{entry}: cannot list the run ({err.strerror}); it and later runs wait for the next pass{_SKIP_HINT}")
            return runs, notes, (entry, now)
        if not_before is not None and mtime < not_before:
            continue
        seen = memory.seen_change(watch.name, str(entry), listing_digest(files), now) if memory is not None else None
        if now - changed < settle:
            notes.append(
                f"{entry}: changed {now - changed:.0f} s ago (the newest modification or status-change time of its"
                f" files: a file copied in counts from its arrival), less than settle = {settle:g} s;"
                " it and later runs wait"
            )
            return runs, notes, (entry, mtime)
        if seen is not None and now - seen < settle:
            notes.append(f"{entry}: its files differ from those the previous pass saw, less than settle = {settle:g} s"
                         " ago; it and later runs wait")
            return runs, notes, (entry, mtime)
        if number in listed:
            role = listed[number]
        else:
            try:
                meta = run_metadata(entry)
            except InputError as err:
                notes.append(f"{err}; it and later runs wait for the next pass{_SKIP_HINT}")
                return runs, notes, (entry, mtime)
            role = role_of({**meta, "run": number, "path": str(entry)}, watch.roles)
        if _used(role, watch):
            problem = not_readable(entry, watch, files, memory)
            if problem is not None:
                notes.append(f"{problem}: not complete or not readable yet; it and later runs wait for the next pass"
                             f"{_SKIP_HINT}")
                return runs, notes, (entry, mtime)
        if role is not None:
            runs.append(Run(entry, number, role, mtime, tuple(files)))
    return runs, notes, None


def group_sets(runs: list[Run], watch: Watch, *, now: float | None = None, settle: float = 0.0,
               stop: tuple[Path, float] | None = None) -> tuple[list[CalibrationSet], list[str]]:
    """Complete sets from the runs of one tree, in run-number order (see the module docstring), and
    notes on the sets that wait for their flat (``stop``: where the tree's scan stopped, see
    :func:`scan_tree_until`)."""
    now = time.time() if now is None else now
    ordered = sorted(runs, key=lambda r: r.number)
    flats = [r for r in ordered if r.role == "flat"]
    groups, pending = [], {}
    for run in ordered:
        gain = (run.role or "").removeprefix("dark-")
        if run.role == "flat" or gain not in watch.gains:
            continue
        pending[gain] = run
        if len(pending) == len(watch.gains):
            groups.append([pending[g] for g in watch.gains])
            pending = {}
    sets, notes = [], []
    for i, darks in enumerate(groups):
        following = groups[i + 1][0].number if i + 1 < len(groups) else None
        flat, note, decided = choose_flat(darks, flats, watch, following=following, settle=settle)
        members = darks + ([flat] if flat else [])
        cset = CalibrationSet(
            watch.name, {g: d.path for g, d in zip(watch.gains, darks)}, flat.path if flat else None,
            max(r.mtime for r in members), {str(r.path): list(r.files) for r in members}, note,
        )
        if now < decided and flat is None:
            notes.append(f"{cset.describe()}: waits until {_clock(decided)} for a flat run taken after its darks"
                         f" (none within flat-window {_span(watch.flat_window)} so far; then darks only)")
        elif now < decided:
            notes.append(f"{cset.describe()}: waits until {_clock(decided)}: a flat run taken after its darks could"
                         f" still be nearer than {note.split(':')[0]}")
        elif stop is not None and decided > -math.inf and stop[1] <= decided - settle:
            notes.append(f"{cset.describe()}: waits for {stop[0].name}, not ready yet, which may be its flat ({note})")
        else:
            sets.append(cset)
    return sets, notes


def choose_flat(darks: list[Run], flats: list[Run], watch: Watch, *, following: int | None = None,
                settle: float = 0.0) -> tuple[Run | None, str, float]:
    """The flat run of a set of ``darks`` among the tree's ``flats`` (see the module docstring), a note
    saying which and why (or why none), and the time from which no flat run taken later can change the
    choice (``-inf``: never, without a window or with ``flat: none``).

    ``following``: the number of the next set's first dark run (a flat after this set's darks and
    before it is named in the note of the rule without a window).
    """
    last = max(d.number for d in darks)
    if watch.flat != "latest":
        return None, "darks only (flat: none)", -math.inf
    if watch.flat_window is None:
        before = [f for f in flats if f.number < last]
        after = [f for f in flats if f.number > last and (following is None or f.number < following)]
        unused = (f"; flat {after[0].path.name} after its darks not used (without flat-window only a flat before"
                  " the last dark is taken)") if after else ""
        if before:
            return before[-1], f"flat {before[-1].path.name}: the newest before its last dark{unused}", -math.inf
        return None, f"no flat run before its last dark: darks only{unused}", -math.inf
    window = watch.flat_window
    first_t, last_t = min(d.mtime for d in darks), max(d.mtime for d in darks)

    def distance(f: Run) -> float:
        return first_t - f.mtime if f.mtime < first_t else f.mtime - last_t if f.mtime > last_t else 0.0

    candidates = [f for f in flats if distance(f) <= window]
    if not candidates:
        nearest = min(flats, key=distance, default=None)
        beyond = f" (nearest: {nearest.path.name}, {_relative(nearest, distance(nearest), last_t)})" if nearest else ""
        note = f"no flat run within flat-window {_span(window)} of its darks{beyond}: darks only"
        return None, note, last_t + window + settle
    best = min(candidates, key=lambda f: (distance(f), f.mtime > last_t, -f.number))
    note = (f"flat {best.path.name}, {_relative(best, distance(best), last_t)}: the nearest within flat-window"
            f" {_span(window)}")
    others = [f.path.name for f in candidates if f is not best]
    if others:
        note += f" (also within it: {', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"
    return best, note, last_t + distance(best) + settle


def _relative(flat: Run, distance: float, last_t: float) -> str:
    """Where a flat run lies in time from a set's darks: '35 min before its darks', 'between its darks'."""
    if distance == 0:
        return "between its darks"
    return f"{_span(distance)} {'after' if flat.mtime > last_t else 'before'} its darks"


def _span(seconds: float | None) -> str:
    """A duration in the largest unit that keeps it readable: 40 s, 35 min, 2.5 h, 3 d."""
    if seconds is None:
        return "none"
    for unit, size, least in (("d", 86400, 2 * 86400), ("h", 3600, 3600), ("min", 60, 60)):
        if seconds >= least:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _clock(t: float) -> str:
    return dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def find_sets(watch: Watch, *, settle: float, not_before: float | None = None,
              memory=None, now: float | None = None) -> tuple[list[CalibrationSet], list[str]]:
    """Every complete set in the watch's trees (oldest first) whose flat is decided, and notes on
    skipped runs and on sets that wait for their flat."""
    now = time.time() if now is None else now
    sets, notes = [], []
    trees = sorted({Path(p) for pattern in watch.trees for p in glob.glob(pattern)})
    if not trees:
        notes.append(f"{watch.name}: no directory matches {list(watch.trees)}")
    for tree in trees:
        if not tree.is_dir():
            continue
        runs, skipped, stop = scan_tree_until(tree, watch, settle=settle, not_before=not_before, now=now, memory=memory)
        found, waiting = group_sets(runs, watch, now=now, settle=settle, stop=stop)
        sets += found
        notes += skipped + waiting
    return sorted(sets, key=lambda s: (s.mtime, s.key)), notes


def current_inputs(cset: CalibrationSet) -> dict:
    """The fingerprints of the set's files as they are now (to compare with ``cset.inputs``)."""
    return {path: run_files(Path(path)) for path in cset.inputs}
