"""The catalog again from what was published: a lost or corrupt ``catalog.sqlite`` costs nothing.

The published version directories are the record that matters: each holds its
``summary.json`` (runs, status, parameters, counts, timings), and ``current`` says which one
readers use. Before every pass (under the service lock):

* a catalog SQLite cannot read, or whose integrity check fails, is moved aside to
  ``catalog.sqlite.corrupt-<time>`` (its ``-wal``/``-shm`` files with it) with one line in
  the log, and a new one is created;
* every version on disk whose set the catalog does not hold is recorded again from its
  summary (status published or held, runs and the fingerprints of their files, parameters,
  times, counts, changes, the operators' releases and holds: an event ``rebuilt``), and the
  catalog's pointer follows ``current``.

So no published set is masked a second time, and ``current`` never moves to an older mask.
Sets that failed or were interrupted left no version: they are processed again, as new.

After the pass's sets, each detector's pixel history is brought to the published versions the
same way (:func:`histories_for_pass`): appended night by night, or rebuilt from the versions
when it is missing, damaged or records other nights.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from pathlib import Path

from .catalog import Catalog
from .discover import set_key
from .settings import Settings
from .versions import Versions, version_name


def open_catalog(path: Path, say) -> Catalog:
    """The catalog at ``path`` for writing; a corrupt one is moved aside first and a new one created."""
    try:
        catalog = Catalog(path)
        try:
            catalog.verify()
        except sqlite3.DatabaseError:
            catalog.close()
            raise
        return catalog
    except sqlite3.DatabaseError as err:
        aside = move_aside(path)
        say(f"catalog {path} is corrupt ({' '.join(str(err).split())}): moved to {aside.name}; rebuilding it from the published versions")
        return Catalog(path)


def move_aside(path: Path) -> Path:
    """Rename the database and its -wal/-shm files to ``<name>.corrupt-<time>[-wal|-shm]``."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("-wal", "-shm", ""):  # the database last: a crash in between leaves it found corrupt again
        try:
            os.rename(f"{path}{suffix}", f"{aside}{suffix}")
        except FileNotFoundError:
            pass
    return aside


def adopt_published(catalog: Catalog, settings: Settings, say, *, dry_run: bool = False) -> int:
    """Record the versions on disk that the catalog lacks, and the pointer ``current``; how many sets were recorded."""
    adopted = 0
    for watch in settings.detectors:
        versions = Versions(settings.publish / watch.name)
        for version in versions.list():
            path = versions.path(version) / "summary.json"
            try:
                summary = json.loads(path.read_text())
                runs, status = dict(summary["runs"]), summary["status"]
                inputs = summary.get("inputs")  # absent in the summaries of earlier rmm-dask versions
                key = set_key(runs, inputs)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                say(f"{versions.path(version)}: no readable summary.json ({err}); not recorded in the catalog")
                continue
            if catalog.get(watch.name, key) is not None:
                continue
            if any(row["version"] == version for row in catalog.sets(watch.name)):
                say(f"{versions.path(version)}: the catalog gives {version_name(version)} to other runs; not recorded")
                continue
            diff = summary.get("diff") or {}
            set_id = catalog.adopt(
                watch.name, key, runs, version, status, source=str(path),
                parameters=json.dumps(summary.get("parameters")), software=summary.get("software"),
                started=summary.get("started"), finished=summary.get("finished"),
                seconds=(summary.get("timings") or {}).get("total"), store=str(versions.path(version) / "mask.zarr"),
                bad_fraction=(summary.get("counts") or {}).get("bad_fraction"),
                newly_bad=diff.get("newly_bad"), recovered=diff.get("recovered"),
                message="; ".join(summary.get("reasons") or []) or None,
                inputs=None if inputs is None else json.dumps(inputs),
            )
            decisions = [d for d in summary.get("decisions") or [] if isinstance(d, dict)]
            try:
                catalog.restore_decisions(set_id, watch.name, version, decisions)
            except (KeyError, sqlite3.Error) as err:  # a summary edited by hand: the set stays recorded
                say(f"{path}: its operators' decisions cannot be recorded again ({err}); the set is recorded")
            adopted += 1
        current = versions.current()
        if current is not None and catalog.pointer(watch.name) != current:
            catalog.set_pointer(watch.name, current)
    if adopted:
        if dry_run:
            say(f"a pass would record {adopted} published version(s) again from their summary.json")
        else:
            say(f"catalog: {adopted} published version(s) recorded again from their summary.json")
    return adopted


def catalog_for_pass(settings: Settings, path: Path, say) -> Catalog:
    """The pass's catalog: opened (a corrupt one replaced), then completed from the published versions."""
    catalog = open_catalog(path, say)
    try:
        adopt_published(catalog, settings, say)
    except BaseException:
        catalog.close()
        raise
    return catalog


def histories_for_pass(settings: Settings, say) -> int:
    """Bring every watched detector's pixel history (``<publish>/<name>/history.zarr``) to its published versions,
    as the catalog is brought to them (:func:`rmm_dask.nightly.history.update`: appended, or rebuilt when missing,
    damaged or of other nights); how many could not be written (each said in one line: the old history stays, the
    next pass tries again)."""
    from ..errors import InputError
    from .history import update

    failed = 0
    for watch in settings.detectors:
        root = settings.publish / watch.name
        if not root.is_dir():
            continue
        try:
            update(root, say)
        except (InputError, OSError) as err:
            say(f"{watch.name} history: not updated: {err}; the versions are as published, the next pass tries again")
            failed += 1
    return failed


def catalog_for_dry_run(settings: Settings, path: Path, say) -> Catalog:
    """What :func:`catalog_for_pass` would give, in memory: the file is neither changed nor moved."""
    source = None
    if path.exists():
        try:
            source = Catalog(path, readonly=True)
            source.verify()
        except sqlite3.DatabaseError as err:
            say(f"catalog {path} is corrupt ({' '.join(str(err).split())}): a pass would move it aside and rebuild it from the published versions")
            if source is not None:
                source.close()
            source = None
    catalog = Catalog.in_memory(source)
    if source is not None:
        source.close()
    adopt_published(catalog, settings, say, dry_run=True)
    return catalog
