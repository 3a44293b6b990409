"""``rmm remove PATH [...]``: delete outputs of rmm, which are published read-only.

rmm publishes every output read-only, directories too (rmm_dask/publish.py), so that a
finished mask cannot be changed by mistake; the price is that ``rm -rf`` fails for its owner
("Permission denied" on every file of a store). ``rmm remove`` takes a path only after it
has recognised it as an rmm output (:func:`what_output`):

* a mask store: a directory whose ``zarr.json`` names the format ``rmm-dask mask store N``
  (damaged or not: a damaged store is what one most wants to remove);
* a nightly version ``<publish>/<name>/vNNNN`` (its ``summary.json`` names it, ``mask.zarr``
  beside it), unless ``<name>/current`` points to it: hold it first (``rmm nightly --hold``,
  which makes the previous published version current);
* an export or report file: HDF5 whose root attributes name rmm-dask (``rmm export`` to
  h5, nexus, euxfel, cheetah, crystfel), a CrystFEL geometry file of ``rmm export --to
  crystfel``, the HTML page of ``rmm show --html``, Dask's performance report of
  ``rmm mask --report``, the JSON counts of ``rmm diff --json``;
* a figures directory of ``rmm show --png``: a read-only directory of PNG files alone.

Anything else is refused in one line (a symbolic link, ``/``, a directory that is not an rmm
store, a part of a nightly version, something owned by another user), and all paths are
checked before the first is removed. Each is withdrawn by :func:`rmm_dask.publish.withdraw`:
renamed away in one step, then removed, never following a link.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from . import publish
from .errors import InputError, printable

_VERSION = re.compile(r"^v\d{4,}$")
_HINT = "; if it is yours and you mean it: chmod -R u+w PATH && rm -rf PATH"


def what_output(path) -> str:
    """What rmm output ``path`` is ('the mask store', 'the nightly version', ...); InputError saying why
    it is not one, or why it may not be removed."""
    path = Path(os.path.abspath(os.fspath(path)))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise InputError(path, "no such file or directory; nothing was removed") from None
    except OSError as err:
        raise InputError(path, f"cannot look at it ({printable(err.strerror)}); nothing was removed") from None
    if stat.S_ISLNK(st.st_mode):
        raise InputError(path, f"is a symbolic link (to {printable(os.readlink(path))}): rmm remove does not follow"
                               " links; remove the link itself with rm, or name what it points to")
    if path == Path(path.anchor) or path.parent == path:
        raise InputError(path, "is the root directory: not removing it")
    if st.st_uid != os.geteuid():
        raise InputError(path, f"is owned by uid {st.st_uid}, not by you: not removing it")
    if is_version(path.parent):
        raise InputError(path, f"is part of the nightly version {path.parent}: remove the whole version"
                               f" (rmm remove {path.parent}), or nothing")
    if stat.S_ISDIR(st.st_mode):
        what = _directory_kind(path)
    elif stat.S_ISREG(st.st_mode):
        what = _file_kind(path)
    else:
        what = None
    if what is None:
        raise InputError(path, f"is not an output of rmm (a mask store, nightly version, export, report or figures"
                               f" directory): not removing it{_HINT}")
    if what == "the nightly version":
        _check_not_current(path)
    return what


def is_version(path: Path) -> bool:
    """Whether ``path`` is a nightly version directory: ``vNNNN`` with a summary.json naming it, and a mask.zarr."""
    if not (_VERSION.match(path.name) and path.is_dir() and not path.is_symlink()):
        return False
    try:
        summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and summary.get("version") == path.name and (path / "mask.zarr").is_dir()


def _check_not_current(path: Path) -> None:
    """Refuse a version that ``current`` beside it points to."""
    try:
        target = os.readlink(path.parent / "current")
    except OSError:
        return
    if Path(target).name == path.name:
        name = path.parent.name
        raise InputError(path, f"is the current version of {name} ({path.parent / 'current'} -> {target}): hold it"
                               f" first (rmm nightly --config FILE --hold {name}/{path.name} --reason TEXT makes the"
                               " previous published version current), then remove it; nothing was removed")


def _directory_kind(path: Path) -> str | None:
    if is_version(path):
        return "the nightly version"
    meta = _json(path / "zarr.json")
    fmt = str((meta.get("attributes") or {}).get("format", "")) if isinstance(meta, dict) else ""
    if fmt.startswith("rmm-dask mask store"):
        return "the mask store"
    try:
        entries = list(os.scandir(path))
    except OSError:
        return None
    read_only = not os.lstat(path).st_mode & stat.S_IWUSR  # published: rmm seals what it writes
    if read_only and entries and all(e.name.endswith(".png") and e.is_file(follow_symlinks=False) for e in entries):
        return "the figures"
    return None


def _file_kind(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "the export" if _h5_by_rmm(path) else None
    if head.startswith(b"; rmm-dask mask of"):
        return "the CrystFEL geometry"
    text = head.decode("utf-8", errors="replace")
    if text.lstrip().lower().startswith("<!doctype html"):
        if "Dask Performance Report" in text:
            return "the performance report"
        with open(path, "rb") as f:
            body = f.read()
        return "the report" if b"data-figures-loaded" in body else None
    data = _json(path)
    if isinstance(data, dict) and {"old", "new", "newly_bad", "recovered"} <= set(data):
        return "the JSON counts"
    return None


def _h5_by_rmm(path: Path) -> bool:
    """An HDF5 file whose root attributes say rmm-dask wrote it (``creator`` of the exports, ``software`` of h5)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            values = [f.attrs.get(key) for key in ("creator", "software")]
    except OSError:
        return False
    return any((v.decode() if isinstance(v, bytes) else str(v)).startswith("rmm-dask") for v in values if v is not None)


def _json(path: Path):
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def remove_outputs(paths, *, echo=print) -> int:
    """Check every path (:func:`what_output`), then withdraw each; 0 when all are gone."""
    checked = [(Path(os.path.abspath(os.fspath(p))), what_output(p)) for p in paths]
    for path, what in checked:
        publish.withdraw(path, what=what)
        echo(printable(f"removed {what}: {path}"))
    return 0
