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
import os
import signal
import threading
from pathlib import Path

import dask.config
import yaml

from .errors import InputError

DEFAULTS = Path(__file__).with_name("rmm.yaml")
JOBQUEUE_DEFAULTS = Path(__file__).with_name("jobqueue.yaml")
KEY = "rmm-dask"

with open(DEFAULTS) as f:
    dask.config.update_defaults(yaml.safe_load(f))


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

    with open(JOBQUEUE_DEFAULTS) as f:
        dask.config.update_defaults(yaml.safe_load(f))
    _jobqueue_registered = True


def read_yaml(path: str | os.PathLike):
    try:
        with open(path) as f:
            return yaml.safe_load(f) or {}
    except OSError as err:
        raise InputError(path, f"cannot read the configuration: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise InputError(path, f"not valid YAML: {err}") from None


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
    unknown = set(params) - set(dask.config.get(KEY))
    if unknown:
        raise InputError(path, f"unknown parameters {sorted(unknown)} under '{KEY}:'")
    if not isinstance(data.get("jobqueue", {}), dict):
        raise InputError(path, "expected dask-jobqueue settings under 'jobqueue: slurm:'")
    return {k: data[k] for k in (KEY, "jobqueue") if data.get(k)}


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
