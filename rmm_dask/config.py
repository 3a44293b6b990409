"""Parameters in dask.config under ``rmm-dask``: package defaults, a user's YAML, the command line.

As dask-jobqueue does, the defaults ship as YAML inside the package (``rmm_dask/rmm.yaml``,
also at ``configs/rmm.yaml``) and are merged into ``dask.config`` at import, so that a
user's file, ``DASK_RMM_DASK__...`` environment variables and explicit options override them
in Dask's usual order. The key is ``rmm-dask``, not ``rmm``: distributed renames a
top-level ``rmm`` (the RAPIDS memory manager's old key) to ``distributed.rmm``.
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
from .mask import FEATURES, Params

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


def _jobqueue_defaults() -> None:
    """Our SLURMCluster defaults over dask-jobqueue's own (which it registers on import).

    update_defaults replaces only values still equal to the previous defaults, so a
    user's ~/.config/dask/jobqueue.yaml and DASK_JOBQUEUE__... variables keep winning.
    """
    with _keep_sigint():
        import dask_jobqueue  # noqa: F401  (registers its defaults first)

    with open(JOBQUEUE_DEFAULTS) as f:
        dask.config.update_defaults(yaml.safe_load(f))


_jobqueue_defaults()


def read_yaml(path: str | os.PathLike):
    try:
        with open(path) as f:
            return yaml.safe_load(f) or {}
    except OSError as err:
        raise InputError(path, f"cannot read the configuration: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise InputError(path, f"not valid YAML: {err}") from None


def load_config(path: str | os.PathLike) -> dict:
    """Merge a user's YAML file (keys under ``rmm-dask:``, as in configs/rmm.yaml) into dask.config."""
    data = read_yaml(path)
    if not isinstance(data, dict) or set(data) - {KEY}:
        raise InputError(path, f"expected a mapping with the parameters under '{KEY}:'")
    merge_sections(path, data)
    return data


def load_jobqueue_config(path: str | os.PathLike) -> None:
    """Merge a dask-jobqueue YAML file (``jobqueue: slurm: ...``) into dask.config."""
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("jobqueue"), dict):
        raise InputError(path, "expected dask-jobqueue settings under 'jobqueue: slurm:'")
    merge_sections(path, {"jobqueue": data["jobqueue"]})


def merge_sections(path: str | os.PathLike, data: dict) -> None:
    """Merge the ``rmm-dask:`` and ``jobqueue:`` sections of a file's ``data`` into dask.config."""
    params = data.get(KEY, {})
    if not isinstance(params, dict):
        raise InputError(path, f"expected a mapping with the parameters under '{KEY}:'")
    unknown = set(params) - set(dask.config.get(KEY))
    if unknown:
        raise InputError(path, f"unknown parameters {sorted(unknown)} under '{KEY}:'")
    if not isinstance(data.get("jobqueue", {}), dict):
        raise InputError(path, "expected dask-jobqueue settings under 'jobqueue: slurm:'")
    sections = {k: data[k] for k in (KEY, "jobqueue") if data.get(k)}
    dask.config.update(dask.config.config, sections, priority="new")


def params_from_config(**overrides) -> Params:
    """Params from dask.config's ``rmm-dask`` section; keyword overrides (None = not given) win."""
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
