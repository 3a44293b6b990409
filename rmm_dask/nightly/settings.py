"""The nightly service's configuration file (configs/nightly.yaml), read and checked.

One YAML file holds up to three sections: ``nightly:`` (what to watch and where to
publish, below), ``rmm-dask:`` (mask parameters, as in configs/rmm.yaml) and
``jobqueue:`` (SLURMCluster settings, as in configs/jobqueue.yaml). Relative paths
are taken from the file's directory.

The service never writes into what it watches: a ``publish:`` or ``state:`` directory equal
to, inside or containing a watched tree (``trees:`` globs, compared component by component
and with symbolic links resolved) is refused when the file is read. Published versions
there would be written into input run directories, or make directories that look like runs
and stop the tree's scan.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..detectors import get_detector
from ..errors import InputError
from ..security import address_problem

DEFAULT_ROLES = {
    "dark-high": {"runType": "*dark*high*"},
    "dark-medium": {"runType": "*dark*medium*"},
    "dark-low": {"runType": "*dark*low*"},
    "flat": {"runType": "*flat*"},
}


@dataclass(frozen=True)
class Sanity:
    """Bounds a new mask must meet before ``current`` points to it; otherwise it is held."""

    bad_fraction: tuple[float, float] = (0.0, 0.10)  #: pixel-planes flagged (bits other than ASIC_EDGE)
    max_change: float | None = 0.02  #: (newly bad + recovered) / pixel-planes against current


@dataclass(frozen=True)
class Remember:
    """``history: {min-fraction: 0.2, last: 20}``: a pixel-plane bad on at least ``min_fraction`` of the last
    ``last`` nights of the pixel history before a version stays masked in it, as its layer ``layers/history``."""

    min_fraction: float  #: in (0, 1]
    last: int  #: nights, 1..64 (the history's ``recent`` bitset)

    def describe(self) -> str:
        return f"bad in >= {self.min_fraction:.0%} of the last {self.last} nights"


@dataclass(frozen=True)
class Watch:
    """One detector: where its runs appear and how to tell what they are."""

    name: str  #: label: the publication directory and the catalog use it
    detector: str  #: detector description (rmm_dask.detectors)
    trees: tuple[str, ...]  #: glob patterns of directories holding r<NNNN>/ run directories
    roles: dict  #: role -> {metadata key: pattern}; the first role whose patterns all match
    run_list: Path | None = None  #: YAML {run number: role or "skip"}, taking precedence over the rules
    detector_id: str | None = None  #: e.g. SPB_DET_AGIPD1M-1, for runs holding several detectors
    gains: tuple[str, ...] = ()  #: the dark roles a set needs (dark-<gain>); default: every gain stage
    flat: str = "latest"  #: "latest": a flat run of the same tree (by ``flat_window``); "none": darks only
    cells_per_chunk: int = 1
    #: seconds: a flat run taken up to this long before the set's first dark or after its last dark
    #: belongs to it (the nearest one; see discover.py); None: the newest flat run before its last dark
    flat_window: float | None = None
    #: a mask that remembers (``history:``; nightly-wide or per detector): None, today's masks alone
    history: Remember | None = None


@dataclass(frozen=True)
class Settings:
    path: Path  #: the configuration file
    state: Path  #: catalog.sqlite and nightly.lock (a local disk: SQLite's WAL needs one)
    publish: Path  #: <publish>/<watch name>/v0001/, ..., current -> vNNNN
    detectors: tuple[Watch, ...]
    interval: float = 3600.0  #: seconds between scans when not --once
    settle: float = 600.0  #: a run is complete once none of its files changed for this long
    max_attempts: int = 3  #: failed sets are retried on later scans up to this many attempts
    not_before: dt.datetime | None = None  #: ignore runs last written before this time
    cluster: str = "local"  #: local | slurm | tcp://scheduler:port
    workers: int | None = None
    sanity: Sanity = field(default_factory=Sanity)
    sections: dict = field(default_factory=dict)  #: the file's rmm-dask: and jobqueue: sections


_TOP = {"nightly", "rmm-dask", "jobqueue"}
_NIGHTLY = {"state", "publish", "detectors", "interval", "settle", "max-attempts", "not-before", "cluster", "workers",
            "sanity", "flat-window", "history"}
_WATCH = {"name", "detector", "trees", "roles", "run-list", "detector-id", "gains", "flat", "cells-per-chunk",
          "flat-window", "history"}
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def read_settings(path: str | os.PathLike) -> Settings:
    """Read and check a nightly configuration; InputError naming the file and the problem."""
    from ..config import read_yaml

    path = Path(path).absolute()
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("nightly"), dict):
        raise InputError(path, "expected the service's settings under 'nightly:'")
    _no_unknown(path, data, _TOP, "top-level sections")
    n = data["nightly"]
    _no_unknown(path, n, _NIGHTLY, "keys under 'nightly:'")
    for key in ("state", "publish", "detectors"):
        if not n.get(key):
            raise InputError(path, f"'nightly: {key}:' is required")
    here = path.parent

    def resolve(value) -> Path:
        return (here / os.path.expanduser(str(value))).absolute()

    sanity = n.get("sanity") or {}
    _no_unknown(path, sanity, {"bad-fraction", "max-change"}, "keys under 'sanity:'")
    try:
        lo, hi = (float(v) for v in sanity.get("bad-fraction", Sanity.bad_fraction))
        change = sanity.get("max-change", Sanity.max_change)
        settings = Settings(
            path=path,
            state=resolve(n["state"]),
            publish=resolve(n["publish"]),
            detectors=tuple(_watch(path, w, resolve, duration(path, "flat-window", n.get("flat-window")),
                                   remember(path, "history", n.get("history")))
                            for w in _as_list(path, n["detectors"], "detectors")),
            interval=float(n.get("interval", Settings.interval)),
            settle=float(n.get("settle", Settings.settle)),
            max_attempts=int(n.get("max-attempts", Settings.max_attempts)),
            not_before=_time(n.get("not-before")),
            cluster=str(n.get("cluster", Settings.cluster)),
            workers=None if n.get("workers") is None else int(n["workers"]),
            sanity=Sanity((lo, hi), None if change is None else float(change)),
            sections={k: data[k] for k in ("rmm-dask", "jobqueue") if k in data},
        )
    except InputError:  # a key's own line (flat-window, history), already naming the file
        raise
    except (TypeError, ValueError) as err:
        raise InputError(path, f"invalid setting: {err}") from None
    if not 0 <= lo <= hi <= 1:
        raise InputError(path, f"sanity: bad-fraction must be [low, high] within [0, 1], not {[lo, hi]}")
    if settings.cluster not in ("local", "slurm"):  # a scheduler's address, checked as rmm mask checks --cluster
        insecure = settings.sections.get("rmm-dask", {}).get("cluster", {}).get("allow-insecure")
        problem = address_problem(settings.cluster, True if insecure else None)
        if problem:
            raise InputError(path, f"cluster: {settings.cluster}: {problem}")
    if settings.max_attempts < 1 or settings.interval <= 0 or settings.settle < 0:
        raise InputError(path, "max-attempts must be at least 1, interval positive and settle non-negative")
    names = [w.name for w in settings.detectors]
    if len(set(names)) != len(names):
        raise InputError(path, f"detector names must be unique, not {names}")
    for key, where in (("publish", settings.publish), ("state", settings.state)):
        for watch in settings.detectors:
            for tree in watch.trees:
                relation = overlap(where, tree)
                if relation is not None:
                    raise InputError(
                        path, f"{key}: {where} {relation} the watched tree {tree} of {watch.name}: the service would"
                        " write among its input runs; choose a directory outside every watched tree",
                    )
    return settings


def overlap(directory: Path, pattern: str) -> str | None:
    """How ``directory`` overlaps a directory the glob ``pattern`` matches (now or once it exists):
    'is', 'is inside' or 'contains' (with ', once links are resolved' when only the real paths
    do), or None when it does not.

    Compared component by component (shell patterns per component), as given and with symbolic links
    resolved on both sides (the pattern's fixed leading part, and each directory it matches now).
    """
    given, real = os.path.abspath(directory), os.path.realpath(directory)
    fixed = []
    for part in Path(pattern).parts:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    rest = Path(pattern).parts[len(fixed):]
    resolved = {str(Path(os.path.realpath(Path(*fixed)), *rest))} | {os.path.realpath(t) for t in glob.glob(pattern)}
    relation = _relation(given, pattern)
    if relation is not None:
        return relation
    for other in (given, real):
        for tree in resolved:
            relation = _relation(other, tree)
            if relation is not None:
                return f"{relation}, once links are resolved ({other} and {tree}),"
    return None


def _relation(path: str, pattern: str) -> str | None:
    """'is', 'is inside' or 'contains' when the shorter path's components all match the other's, in order."""
    parts, pattern_parts = Path(path).parts, Path(pattern).parts
    n = min(len(parts), len(pattern_parts))
    if not all(fnmatch.fnmatchcase(parts[i], pattern_parts[i]) for i in range(n)):
        return None
    return "is" if len(parts) == len(pattern_parts) else "is inside" if len(parts) > len(pattern_parts) else "contains"


def duration(path: Path, key: str, value) -> float | None:
    """A duration setting in seconds: a number of seconds or a text with a unit (``90 s``, ``30m``, ``12h``,
    ``2d``); None for null. InputError naming the key otherwise."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-z]*)\s*", str(value).lower())
        if m is None or m.group(2) not in (*_UNITS, ""):
            raise InputError(path, f"{key}: {value!r} is not a duration (seconds, or a number with s, m, h or d: 12h)")
        seconds = float(m.group(1)) * _UNITS.get(m.group(2), 1)
    if not 0 <= seconds < float("inf"):
        raise InputError(path, f"{key}: {value!r} must be a duration of 0 or more")
    return seconds


def remember(path: Path, key: str, value) -> Remember | None:
    """The ``history:`` setting (``{min-fraction: 0.2, last: 20}``; null: none); InputError naming the key otherwise.
    Both keys are required: a mask that remembers is a promise to its users, so nothing about it is guessed."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError(path, f"{key}: expected {{min-fraction: 0.2, last: 20}} (or null), not {value!r}")
    unknown = sorted(set(value) - {"min-fraction", "last"})
    if unknown:
        raise InputError(path, f"{key}: unknown keys {unknown}; known: ['last', 'min-fraction']")
    missing = [k for k in ("min-fraction", "last") if k not in value]
    if missing:
        raise InputError(path, f"{key}: {' and '.join(missing)} missing (e.g. {{min-fraction: 0.2, last: 20}})")
    fraction, last = value["min-fraction"], value["last"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise InputError(path, f"{key}: min-fraction must be a number in (0, 1] (0.2: bad on 20% of the nights),"
                               f" not {fraction!r}")
    if isinstance(last, bool) or not isinstance(last, int) or not 1 <= last <= 64:
        raise InputError(path, f"{key}: last must be a whole number of nights from 1 to 64 (the pixel history keeps"
                               f" the verdicts of the last 64 nights), not {last!r}")
    return Remember(float(fraction), int(last))


def _watch(path: Path, w, resolve, flat_window: float | None = None, history: Remember | None = None) -> Watch:
    if not isinstance(w, dict):
        raise InputError(path, f"each entry of 'detectors:' must be a mapping, not {w!r}")
    _no_unknown(path, w, _WATCH, "keys of a detector entry")
    for key in ("name", "detector", "trees"):
        if not w.get(key):
            raise InputError(path, f"a detector entry needs '{key}:' ({w})")
    name = str(w["name"])
    if "/" in name or name.startswith("."):
        raise InputError(path, f"detector name {name!r} must be a plain directory name")
    try:
        det = get_detector(w["detector"])
    except KeyError as err:
        raise InputError(path, err.args[0]) from None
    given = list(w.get("gains") or det.gain_stages)
    if set(given) - set(det.gain_stages) or len(set(given)) != len(given):
        raise InputError(path, f"{name}: gains {given} must be distinct gain stages of {det.name} {list(det.gain_stages)}")
    gains = tuple(g for g in det.gain_stages if g in given)  # the detector's order, as the stores list them
    known = {f"dark-{g}" for g in det.gain_stages} | {"flat"}
    roles = w.get("roles", {role: rule for role, rule in DEFAULT_ROLES.items() if role in known})
    if not isinstance(roles, dict) or not all(isinstance(r, dict) for r in roles.values()):
        raise InputError(path, f"{name}: 'roles:' maps a role to {{metadata key: pattern}}")
    if set(roles) - known:
        raise InputError(path, f"{name}: unknown roles {sorted(set(roles) - known)}; known: {sorted(known)}")
    if w.get("flat", "latest") not in ("latest", "none"):
        raise InputError(path, f"{name}: flat must be 'latest' or 'none', not {w['flat']!r}")
    trees = tuple(str(resolve(t)) for t in _as_list(path, w["trees"], "trees"))
    return Watch(
        name=name,
        detector=det.name,
        trees=trees,
        roles={role: {str(k): str(v) for k, v in rule.items()} for role, rule in roles.items()},
        run_list=resolve(w["run-list"]) if w.get("run-list") else None,
        detector_id=w.get("detector-id"),
        gains=gains,
        flat=w.get("flat", "latest"),
        cells_per_chunk=int(w.get("cells-per-chunk", 1)),
        flat_window=duration(path, f"{name}: flat-window", w["flat-window"]) if "flat-window" in w else flat_window,
        history=remember(path, f"{name}: history", w["history"]) if "history" in w else history,
    )


def _as_list(path, value, what) -> list:
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InputError(path, f"'{what}:' must be a non-empty list")
    return value


def _no_unknown(path, data, known: set, what: str) -> None:
    if not isinstance(data, dict):
        raise InputError(path, f"expected a mapping for the {what}, not {data!r}")
    unknown = set(data) - known
    if unknown:
        raise InputError(path, f"unknown {what} {sorted(unknown)}; known: {sorted(known)}")


def _time(value) -> dt.datetime | None:
    if value is None:
        return None
    t = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return t if t.tzinfo else t.astimezone()
