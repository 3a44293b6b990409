"""Parameters in dask.config under ``rmm-dask``: package defaults, a user's YAML, the command line.

As dask-jobqueue does, the defaults ship as YAML inside the package (``rmm_dask/rmm.yaml``,
also at ``configs/rmm.yaml``) and are merged into ``dask.config`` at import, so that a
user's file, ``DASK_RMM_DASK__...`` environment variables and explicit options override them
in Dask's usual order. The key is ``rmm-dask``, not ``rmm``: distributed renames a
top-level ``rmm`` (the RAPIDS memory manager's old key) to ``distributed.rmm``.

Importing this module loads neither the kernels (numba) nor dask-jobqueue: the SLURMCluster
defaults (``rmm_dask/jobqueue.yaml`` over dask-jobqueue's own) are registered by
:func:`register_jobqueue_defaults` when a Slurm cluster or batch script is made, or a
``jobqueue:`` section is read. A user's file changes dask.config for one command only:
:func:`load_config` and :func:`check_sections` return the sections, :func:`scoped` sets them
for a block (``dask.config.set``).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import threading
from pathlib import Path

import dask.config

from .errors import InputError
from .yamlload import load_yaml

DEFAULTS = Path(__file__).with_name("rmm.yaml")
JOBQUEUE_DEFAULTS = Path(__file__).with_name("jobqueue.yaml")
KEY = "rmm-dask"

_DEFAULT_TREE = load_yaml(DEFAULTS)[KEY]  #: the keys a user's ``rmm-dask:`` section may hold, as shipped
dask.config.update_defaults({KEY: _DEFAULT_TREE})


@contextlib.contextmanager
def _keep_sigint():
    """dask-jobqueue replaces the SIGINT handler on import with one that exits with status 0
    (``sys.exit()``): Ctrl-C would end ``rmm`` as a success, and worker processes that
    unpickle our tasks would print their own tracebacks. Keep whatever handler was there."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if previous is not None:  # None: set from C, cannot be restored from Python
            signal.signal(signal.SIGINT, previous)


_jobqueue_registered = False


def register_jobqueue_defaults() -> None:
    """Our SLURMCluster defaults over dask-jobqueue's own (which it registers on import); once.

    update_defaults replaces only values still equal to the previous defaults, so a
    user's ~/.config/dask/jobqueue.yaml, DASK_JOBQUEUE__... variables and a ``jobqueue:``
    section set before keep winning.
    """
    global _jobqueue_registered
    if _jobqueue_registered:
        return
    with _keep_sigint():
        import dask_jobqueue  # noqa: F401  (registers its defaults first)

    dask.config.update_defaults(load_yaml(JOBQUEUE_DEFAULTS))
    _jobqueue_registered = True


def read_yaml(path: str | os.PathLike):
    """A configuration file's data ({} when empty), read by the one safe loader (rmm_dask.yamlload:
    bounded, no aliases, any locale); InputError naming the file."""
    return load_yaml(path, "configuration file") or {}


def load_config(path: str | os.PathLike) -> dict:
    """A user's YAML file (keys under ``rmm-dask:``, as in configs/rmm.yaml), checked: its sections for :func:`scoped`."""
    data = read_yaml(path)
    if not isinstance(data, dict) or set(data) - {KEY}:
        raise InputError(path, f"expected a mapping with the parameters under '{KEY}:'")
    return check_sections(path, data)


def load_jobqueue_config(path: str | os.PathLike) -> dict:
    """A dask-jobqueue YAML file (``jobqueue: slurm: ...``), checked: its section for :func:`scoped`."""
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("jobqueue"), dict):
        raise InputError(path, "expected dask-jobqueue settings under 'jobqueue: slurm:'")
    return check_sections(path, {"jobqueue": data["jobqueue"]})


def check_sections(path: str | os.PathLike, data: dict) -> dict:
    """The ``rmm-dask:`` and ``jobqueue:`` sections of a file's ``data``, checked (InputError naming ``path``)."""
    params = data.get(KEY, {})
    if not isinstance(params, dict):
        raise InputError(path, f"expected a mapping with the parameters under '{KEY}:'")
    unknown = sorted(_unknown(params, _DEFAULT_TREE))
    if unknown:
        raise InputError(path, f"unknown parameters {unknown} under '{KEY}:'")
    problem = params_problem(params)
    if problem:
        raise InputError(path, f"invalid parameters under '{KEY}:': {problem}")
    jobqueue = data.get("jobqueue", {})
    if not isinstance(jobqueue, dict) or not isinstance(jobqueue.get("slurm", {}), dict):
        raise InputError(path, "expected dask-jobqueue settings under 'jobqueue: slurm:'")
    problem = _jobqueue_problem(jobqueue.get("slurm") or {})
    if problem:
        raise InputError(path, f"invalid settings under 'jobqueue: slurm:': {problem}")
    return {k: data[k] for k in (KEY, "jobqueue") if data.get(k)}


def check_effective(overridden=()) -> None:
    """The ``rmm-dask`` parameters dask.config holds now, checked as a file's are: values set by
    ``DASK_RMM_DASK__...`` variables or YAML files of Dask's own (~/.config/dask) are not seen by
    :func:`check_sections`. The dotted keys ``overridden`` (by options given) are not used, so not
    checked. InputError naming where such values come from."""
    problem = params_problem(_dashed(dask.config.get(KEY)), skip=set(overridden))
    if problem:
        raise InputError(f"dask.config '{KEY}'", f"{problem} (set by a DASK_RMM_DASK__ variable or a YAML file of "
                                                 f"Dask's, e.g. in ~/.config/dask)")


def _dashed(tree: dict) -> dict:
    """``tree`` with the keys as rmm.yaml spells them: Dask keeps a DASK_..._CELLS_PER_CHUNK variable's
    key as ``cells_per_chunk`` (its lookups take either)."""
    return {k.replace("_", "-"): _dashed(v) if isinstance(v, dict) else v for k, v in tree.items()}


def _unknown(tree: dict, known: dict, prefix: str = ""):
    """Dotted keys of ``tree`` that the shipped defaults ``known`` do not have."""
    for key, value in tree.items():
        if key not in known:
            yield f"{prefix}{key}"
        elif isinstance(value, dict) and isinstance(known[key], dict):
            yield from _unknown(value, known[key], f"{prefix}{key}.")


# ---- the values of the rmm-dask keys: each checked as its option is (one check per leaf of rmm.yaml)

def _number(v) -> float | None:
    """``v`` as the float its consumer makes of it (YAML reads 1e3 as a text), None when it is no number."""
    if isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _integer(v) -> int | None:
    """``v`` as the int its consumer makes of it, None when it is no whole number (a float, a bool)."""
    if isinstance(v, (bool, float)):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _positive(v) -> str | None:
    x = _number(v)
    return None if x is not None and 0 < x < math.inf else f"must be a finite number above 0, not {_shown(v)}"


def _at_least(low: int):
    def check(v) -> str | None:
        x = _integer(v)
        return None if x is not None and x >= low else f"must be an integer of at least {low}, not {_shown(v)}"
    return check


def _one_of(*choices):
    def check(v) -> str | None:
        if any(v is c or (isinstance(v, str) and v == c) for c in choices):
            return None
        return f"must be one of {', '.join(_shown(c) for c in choices)}, not {_shown(v)}"
    return check


def _method(v) -> str | None:
    return None if v in _METHODS else f"names unknown statistics {_shown(v)}; choose one of {', '.join(_METHODS)}"


def _flag(v) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, not {_shown(v)}"


def _sizes(allow_null: bool):
    def check(v) -> str | None:
        if (v is None and allow_null) or (
                isinstance(v, (list, tuple)) and len(v) == 2 and all((_integer(x) or 0) >= 1 for x in v)):
            return None
        return f"must be two positive sizes [y, x]{' or null' if allow_null else ''}, not {_shown(v)}"
    return check


def _size_of(v) -> int | None:
    """Bytes of a size such as 8GB or 4GiB, or of a whole number; None when ``v`` is neither."""
    from dask.utils import parse_bytes

    try:
        return parse_bytes(v) if isinstance(v, str) else _integer(v)
    except ValueError:
        return None


def _bytes(low: int):
    def check(v) -> str | None:
        n = _size_of(v)
        return None if n is not None and n >= low else f"must be a size such as 8GB, at least {low} B, not {_shown(v)}"
    return check


def _memory_limit(v) -> str | None:
    """What distributed takes per worker: auto, null or 0 (no limit), a fraction of the host's memory, a size."""
    x = _number(v)
    if v is None or v == "auto" or (x is not None and 0 <= x < math.inf) or (_size_of(v) or 0) >= 1:
        return None
    return f"must be auto, null, a fraction of the host's memory or a size such as 4GiB, not {_shown(v)}"


def _saturation(v) -> str | None:
    x = _number(v)
    return None if x is not None and x > 0 else f"must be a number above 0 (or .inf), not {_shown(v)}"


def _address(v) -> str | None:
    match = isinstance(v, str) and re.fullmatch(r"[^\s/]*:(\d{1,5})", v)
    return None if match and int(match[1]) < 65536 else f"must be host:port (e.g. 127.0.0.1:8787), not {_shown(v)}"


def _directory(v) -> str | None:
    ok = v is None or (isinstance(v, str) and v.strip() and v.isprintable())
    return None if ok else f"must be a directory or null, not {_shown(v)}"


#: Slurm's --time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
_WALLTIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}")


def _walltime(v) -> str | None:
    if isinstance(v, str) and _WALLTIME.fullmatch(v):
        return None
    if isinstance(v, int) and not isinstance(v, bool):  # 04:00:00 unquoted is YAML 1.1's base-60 number 14400
        return f"must be a quoted Slurm time such as \"04:00:00\", not the number {v} (YAML's reading of it unquoted)"
    return f"must be a Slurm time such as \"04:00:00\" or \"1-00:00:00\", not {_shown(v)}"


_METHODS = ("rmm", "mad", "nonrobust")  #: rmm_dask.robust.METHODS (not imported: it loads numba)
#: leaf key of rmm.yaml -> its check (a problem with the value, or None); "features.*": each key under features
_CHECKS = {
    "lambda": _positive,
    "method": _method,
    "window": _sizes(allow_null=True),
    "flat-tile": _sizes(allow_null=False),
    "min-frames": _at_least(2),
    "counting-test": _one_of("poisson", "floor"),
    "f1.lambda": _positive,
    "f1.min-sigma": _positive,
    "f1.pixels": _at_least(1),
    "features.*": _flag,
    "chunking.cells-per-chunk": _at_least(1),
    "cluster.n-workers": _at_least(1),
    "cluster.threads-per-worker": _at_least(1),
    "cluster.local-threads-below": _bytes(0),
    "cluster.dashboard": _one_of("auto", True, False),
    "cluster.dashboard-address": _address,
    "cluster.credentials-directory": _directory,
    "cluster.allow-insecure": _flag,
    "cluster.memory-limit": _memory_limit,
    "cluster.worker-saturation": _saturation,
    "cluster.slurm.minimum-workers": _at_least(0),
    "cluster.slurm.maximum-workers": _at_least(1),
    "cluster.slurm.worker-start-timeout": _positive,
    "submit.walltime": _walltime,
    "submit.memory": _bytes(1),
    "submit.cpus": _at_least(1),
    "submit.log-directory": _directory,
}
#: the options that set the same values: the message names them ("as --option")
_OPTIONS = {"lambda": "--lambda", "method": "--method", "chunking.cells-per-chunk": "--cells-per-chunk",
            "cluster.n-workers": "--workers", "submit.log-directory": "--log-dir"}


def params_problem(params: dict, skip=frozenset()) -> str | None:
    """The first value of an ``rmm-dask`` mapping that its key does not accept ('KEY must be ...,
    not VALUE'), or None; dotted keys in ``skip`` are not checked. Keys the defaults do not have
    are left to :func:`check_sections`."""
    for key, value, check in _walk(params, _DEFAULT_TREE):
        problem = check(value) if check and key not in skip else None
        if problem:
            return f"{key} {problem}" + (f" (as {_OPTIONS[key]})" if key in _OPTIONS else "")
    slurm = params.get("cluster", {}).get("slurm", {})
    low, high = _integer(slurm.get("minimum-workers", 1)), _integer(slurm.get("maximum-workers", 16))
    if low is not None and high is not None and low > high:
        return f"cluster.slurm.minimum-workers ({low}) must not exceed cluster.slurm.maximum-workers ({high})"
    return None


def _walk(tree: dict, known: dict, prefix: str = ""):
    """(dotted key, value, its check) of every key of ``tree`` that the defaults ``known`` have, sections walked."""
    for key, value in tree.items():
        if key not in known:
            continue
        name = f"{prefix}{key}"
        if isinstance(known[key], dict) and isinstance(value, dict):
            yield from _walk(value, known[key], f"{name}.")
        elif isinstance(known[key], dict):
            yield name, value, _mapping
        else:
            yield name, value, _CHECKS.get(name) or _CHECKS.get(f"{prefix}*")


def _mapping(v) -> str:
    return f"must be a mapping of its keys, not {_shown(v)}"


def _shown(value) -> str:
    """A value as a message quotes it: as YAML writes it (null, true, 'text'), short, on one line."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    text = " ".join((repr(value) if isinstance(value, str) else str(value)).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _jobqueue_problem(slurm: dict) -> str | None:
    """The first ``jobqueue: slurm:`` value that rmm writes into a batch script or passes on, and that is
    not what it must be: a text where a list of lines belongs would become one #SBATCH line per character."""
    def one_line(v) -> bool:
        return isinstance(v, str) and not any(c in v for c in "\n\r\0")

    if slurm.get("walltime") is not None and _walltime(slurm["walltime"]):
        return f"walltime {_walltime(slurm['walltime'])}"
    for key in ("queue", "account", "log-directory", "interface"):
        value = slurm.get(key)
        if value is not None and not one_line(value):
            return f"{key} must be a text on one line or null, not {_shown(value)}"
    for key in ("job-extra-directives", "job-script-prologue", "worker-extra-args"):
        value = slurm.get(key)
        if value is not None and not (isinstance(value, list) and all(map(one_line, value))):
            return f"{key} must be a list of texts, one line each, not {_shown(value)}"
    return None


def scoped(sections: dict):
    """A ``dask.config.set`` context with every value of ``sections`` (nested mappings) set by its
    dotted key: the rest of each section keeps its value, and all is as before when the block ends."""
    if "jobqueue" in sections:  # dask-jobqueue's defaults first: they must not replace the file's values later
        register_jobqueue_defaults()
    return dask.config.set(dict(_leaves(sections)))


def _leaves(tree: dict, prefix: str = ""):
    """(dotted key, value) of every leaf; an empty mapping sets nothing (it would replace a whole section)."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def params_from_config(**overrides):
    """:class:`rmm_dask.mask.Params` from dask.config's ``rmm-dask`` section; keyword overrides (None = not given) win."""
    from .mask import FEATURES, Params  # the kernels (numba): only for the commands that compute

    c = dask.config.get(KEY)
    window = c.get("window")
    values = dict(
        lam=float(c["lambda"]),
        method=c["method"],
        window=tuple(window) if window else None,
        flat_tile=tuple(c["flat-tile"]),
        f1_lambda=float(c["f1"]["lambda"]),
        f1_min_sigma=float(c["f1"]["min-sigma"]),
        f1_pixels=int(c["f1"]["pixels"]),
        min_frames=int(c["min-frames"]),
        counting_test=str(c.get("counting-test", "poisson")),
        features=tuple(name for name in FEATURES if c["features"].get(name.replace("_", "-"), True)),
    )
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Params(**values)
