"""``rmm export HISTORY --to frequency``: how often each pixel-plane was bad over the last N nights, for users who
choose their own cut.

HISTORY is a nightly detector's directory ``PUBLISH/NAME`` or its ``history.zarr``
(:mod:`rmm_dask.nightly.history`). The HDF5 file holds, per pixel-plane ``(module, gain, cell, y, x)``:
``/frequency`` float32, nights bad / nights seen over the last N nights (NaN where never seen), and
``/seen``, ``/bad`` uint16 over the same nights, from the history's ``recent`` and ``recent_seen``
bitsets (exact for N <= 64); its attributes name the nights, N, the history and how to cut. It is
published through :func:`rmm_dask.publish.output` (read-only; an existing file only with
``--overwrite``, a symbolic link never), written block by block in the history's chunks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import __version__, publish
from . import history as kernels
from .errors import InputError, printable

#: what every file says about its numbers and how to cut them
DESCRIPTION = ("frequency = bad / seen over the last N nights, per pixel-plane (module, gain, cell, y, x). A night is "
               "one published nightly version of a set of dark runs (held versions are no night); seen: nights with "
               "data (no NO_DATA bit); bad: nights seen and flagged by any bit but ASIC_EDGE. NaN: never seen in "
               "those nights (no data: mask it too). Choose your own cut, e.g. mask = (frequency >= 0.2) | "
               "isnan(frequency): bad on at least 20% of the nights it was seen.")
CUT = "frequency >= 0.2"


def _format(path: Path) -> str | None:
    """The ``format`` attribute of the Zarr store at ``path`` (None: not a store, or unreadable)."""
    try:
        meta = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
        return str((meta.get("attributes") or {}).get("format"))
    except (OSError, ValueError, AttributeError):
        return None


def history_of(path) -> Path | None:
    """The pixel history ``path`` names: ``path`` itself when it is a ``history.zarr`` (by name, or by its format
    attribute), ``path/history.zarr`` when there is one (a nightly detector's directory), else None."""
    from .nightly.history import NAME

    path = Path(path)
    if path.name == NAME or (_format(path) or "").startswith("rmm-dask pixel history"):
        return path
    if (path / NAME).exists() or (path / NAME).is_symlink():
        return path / NAME
    return None


def check_export(store, to: str, last: int | None) -> None:
    """Refuse, in one line each, what ``rmm export`` cannot do before anything is read or written: a history with
    another ``--to`` than frequency, ``--to frequency`` of anything but a history (a mask store, a directory of
    versions without a history yet), and ``--last`` with another format."""
    from .integrity import FORMAT, LEGACY
    from .nightly.history import NAME, nights_on_disk

    path, history = Path(store), history_of(store)
    if to != "frequency":
        if last is not None:
            raise InputError("--last", "counts nights: it goes with --to frequency (the export of a pixel history)")
        if history == path:
            raise InputError(path, f"is a pixel history, not a mask store: it exports only --to frequency; nothing "
                                   f"was written (a mask: {path.parent}/current/mask.zarr)")
        if history is not None:
            raise InputError(path, f"is a nightly detector's directory, not a mask store: --to frequency exports its "
                                   f"{NAME}, {path}/current/mask.zarr is its current mask; nothing was written")
        return
    if history is not None:
        return
    if _format(path) in (FORMAT, LEGACY):
        raise InputError(path, "is a mask store, not a pixel history: --to frequency exports the history of a "
                               "nightly detector (PUBLISH/NAME or its history.zarr); nothing was written")
    if not path.exists():
        raise InputError(path, "no such pixel history (give PUBLISH/NAME or PUBLISH/NAME/history.zarr)")
    nights = nights_on_disk(path) if path.is_dir() else []
    if nights:
        raise InputError(path / NAME, f"no pixel history yet ({len(nights)} published version(s)): the next nightly "
                                      f"pass builds it, or: rmm history {path} --rebuild; nothing was written")
    raise InputError(path, f"not a pixel history (no {NAME} in it, and not one itself): --to frequency exports "
                           "PUBLISH/NAME or its history.zarr; nothing was written")


def export_frequency(store, out, *, last: int | None = None, overwrite: bool = False, say=None) -> list[Path]:
    """Write the frequency file of the history ``store`` (PUBLISH/NAME or its history.zarr) to ``out`` over its
    last ``last`` nights (None: all, up to 64); the paths written (one). ``say`` (a callable) is told the nights
    counted and any note (a history behind the published versions). InputError for a missing, damaged or outdated
    history (nothing is written), an output that may not be published, no room."""
    import h5py

    from .nightly import history

    path = history_of(store)
    if path is None:
        check_export(store, "frequency", last)  # raises: says what it is instead
    group = history.open_history(path)
    nights = list(group.attrs["nights"])
    n, notes = history.window(nights, last)
    notes += history.behind(path.parent, nights)
    counted = nights[len(nights) - n:]
    publish.prepare(out, overwrite=overwrite, what="the export")  # before any pixel is read
    recent = group["recent"]
    shape, chunks = tuple(recent.shape), tuple(recent.chunks)
    attrs = {
        "creator": f"rmm-dask {__version__} export --to frequency",
        "software": f"rmm-dask {__version__}",
        "history": str(path.absolute()),
        "N": n,
        "nights": json.dumps([{"night": len(nights) - n + i + 1, "version": night["version"],
                               "date": night.get("date")} for i, night in enumerate(counted)]),
        "dims": json.dumps(["module", "gain", "cell", "y", "x"]),
        "modules": json.dumps(group.attrs.get("modules") or list(range(shape[0]))),
        "gain_stages": json.dumps(list(group.attrs.get("gain_stages") or [])),
        "description": DESCRIPTION,
        "cut": CUT,
    }
    block_bytes = int(np.prod(chunks)) * (4 + 2 + 2)
    with publish.output(out, overwrite=overwrite, what="the export") as tmp:
        tmp.ensure_room(block_bytes)
        with h5py.File(tmp.tmp, "w") as f:
            options = {"chunks": chunks, "compression": "gzip", "compression_opts": 1, "shuffle": True}
            frequency = f.create_dataset("frequency", shape=shape, dtype=np.float32, fillvalue=np.nan, **options)
            seen = f.create_dataset("seen", shape=shape, dtype=np.uint16, **options)
            bad = f.create_dataset("bad", shape=shape, dtype=np.uint16, **options)
            for name, value in attrs.items():
                f.attrs[name] = value
            for region in history.chunk_regions(shape, chunks):
                tmp.ensure_room(block_bytes)
                values = kernels.frequency(history.read_array(group, "recent", region, path),
                                           history.read_array(group, "recent_seen", region, path), n)
                for dataset, value in zip((frequency, seen, bad), values):
                    dataset[region] = value
    if say is not None:
        first, newest = counted[0], counted[-1]
        say(printable(f"{path}: the last {n} night(s), {first['version']} ({first.get('date')}) to "
                      f"{newest['version']} ({newest.get('date')})"))
        for note in notes:
            say(printable(f"note: {note}"))
    return [tmp.target]
