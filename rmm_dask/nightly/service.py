"""`rmm nightly`: find new calibration sets, mask them, publish versions, move ``current``.

One pass (``--once``; without it, a pass every ``interval`` seconds):

1. take the service lock (``<state>/nightly.lock``, an flock): a second pass started
   meanwhile (cron, a manual run) says so and does nothing;
2. a lost or corrupt catalog is rebuilt from the published versions' summary.json
   (recover.py: a corrupt file is moved aside), so no published set is masked again;
   sets the catalog still shows running were left by a process that died: they are
   marked interrupted and will be processed again, under the same version number;
3. for every watched detector, find the complete sets (discover.py) and, oldest first,
   process those not yet published or held (failed ones again, up to max-attempts):
   open the runs, compute the mask on the configured cluster into a hidden partial
   version directory, compare it with the version ``current`` points to, check the
   sanity bounds, write diff.json, summary.json and summary.html, rename the version
   into place; then, if it passed, switch ``current`` to it, and record the outcome.

A failure leaves no version and does not move ``current``; a crash at any point is
resumed by the next pass without processing a set twice (a version found complete is
only pointed to and recorded).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import os
import socket
import sqlite3
import time
from pathlib import Path

from .. import __version__
from ..errors import ClusterError, InputError
from .catalog import DONE, Catalog
from .discover import CalibrationSet, find_sets
from .recover import catalog_for_dry_run, catalog_for_pass
from .settings import Sanity, Settings, Watch
from .versions import Versions, version_name

CATALOG = "catalog.sqlite"
LOCK = "nightly.lock"


class Locked(Exception):
    """Another nightly pass holds the lock."""


@contextlib.contextmanager
def service_lock(state: Path):
    """Hold ``<state>/nightly.lock`` for the block, or raise Locked saying who holds it."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
            raise Locked(f"{path} is held by {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {_stamp()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _stamp() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def action(row, max_attempts: int, complete: bool = False) -> str | None:
    """What a pass does with a set given its catalog row: 'mask', 'retry', 'resume' or None (nothing).

    ``complete``: the set's version is already in place; finishing it (pointer, catalog)
    costs nothing and is always done, whatever the attempts so far.
    """
    if row is None:
        return "mask"
    if row["status"] in DONE:
        return None
    if complete:
        return "resume"
    if row["status"] == "failed":
        return "retry" if row["attempts"] < max_attempts else None
    return "resume" if row["attempts"] < max_attempts else None  # interrupted (or running, seen by --dry-run)


def _complete(settings: Settings, row) -> bool:
    return row is not None and (Versions(settings.publish / row["detector"]).path(row["version"]) / "summary.json").is_file()


def discover(settings: Settings, echo) -> list[tuple[Watch, CalibrationSet]]:
    not_before = settings.not_before.timestamp() if settings.not_before else None
    found = []
    for watch in settings.detectors:
        sets, notes = find_sets(watch, settle=settings.settle, not_before=not_before)
        for note in notes:
            echo(note)
        found += [(watch, s) for s in sets]
    return found


def run_nightly(settings: Settings, *, once: bool = False, dry_run: bool = False, echo=print) -> int:
    """Passes until interrupted (one with ``once``); exit code 1 if a set failed in the last pass."""
    say = _timestamped(echo)
    while True:
        code = dry_run_pass(settings, say) if dry_run else nightly_pass(settings, say)
        if once or dry_run:
            return code
        say(f"next scan in {settings.interval:g} s")
        time.sleep(settings.interval)


def _timestamped(echo):
    return lambda message: echo(f"[{_stamp()}] {message}")


def dry_run_pass(settings: Settings, say) -> int:
    """What a pass would do, without the lock and without changing anything."""
    catalog = catalog_for_dry_run(settings, settings.state / CATALOG, say)
    n = 0
    for watch, cset in discover(settings, say):
        row = catalog.get(watch.name, cset.key)
        what = action(row, settings.max_attempts, _complete(settings, row))
        if what is None:
            say(f"done: {cset.describe()} ({row['status']} {version_name(row['version'])}, {row['attempts']} attempt(s))")
            continue
        n += 1
        where = version_name(row["version"]) if row else "a new version"
        say(f"would {what}: {cset.describe()} -> {watch.name}/{where}")
    say(f"dry run: {n} set(s) would be processed; nothing was changed")
    catalog.close()
    return 0


def nightly_pass(settings: Settings, say) -> int:
    try:
        with service_lock(settings.state), catalog_for_pass(settings, settings.state / CATALOG, say) as catalog:
            for row in catalog.interrupt_stale():
                say(f"{row['detector']} {version_name(row['version'])}: the attempt started {row['started']} did not finish; it will be resumed")
            failed = done = 0
            for watch, cset in discover(settings, say):
                row = catalog.get(watch.name, cset.key)
                what = action(row, settings.max_attempts, _complete(settings, row))
                if what is None:
                    if row["status"] not in DONE:
                        say(f"{cset.describe()}: {row['status']} after {row['attempts']} attempts, not retried ({row['message']})")
                    continue
                say(f"{what}: {cset.describe()}")
                status = process_set(settings, watch, cset, catalog, say)
                failed += status == "failed"
                done += 1
            say(f"pass complete: {done} set(s) processed, {failed} failed")
            return 1 if failed else 0
    except Locked as err:
        say(f"another nightly pass is running ({err}); nothing done")
        return 0


def process_set(settings: Settings, watch: Watch, cset: CalibrationSet, catalog: Catalog, say) -> str:
    """Mask one set and publish it as a version; 'published', 'held' or 'failed'."""
    from ..config import params_from_config

    params = params_from_config()
    versions = Versions(settings.publish / watch.name)
    # numbers from the catalog and from the directories: a catalog lost or recreated never reuses one
    floor = max(versions.list(), default=0)
    row = catalog.claim(watch.name, cset.key, cset.runs, parameters=dataclasses.asdict(params), software=f"rmm-dask {__version__}", floor=floor)
    version = row["version"]
    final = versions.path(version)
    t0 = time.perf_counter()
    try:
        if (final / "summary.json").is_file():
            summary = json.loads((final / "summary.json").read_text())
            if summary.get("runs") != cset.runs:
                raise RuntimeError(f"{final} holds the mask of other runs ({summary.get('runs')}); not reusing its number")
            say(f"{final} is complete from an earlier attempt: finishing its publication")
        else:
            summary = make_version(settings, watch, cset, versions, version, params, say)
        if summary["status"] == "published" and (versions.current() or 0) < version:
            versions.switch(version)
            say(f"{watch.name}/current -> {version_name(version)}")
        if versions.current() is not None and catalog.pointer(watch.name) != versions.current():
            catalog.set_pointer(watch.name, versions.current(), row["id"])  # also after a crash between the two
        elif summary["status"] == "held":
            say(f"{final} held, current stays at {_name_or_none(versions.current())}: {'; '.join(summary['reasons'])}")
        diff = summary.get("diff") or {}
        catalog.finish(
            row["id"],
            summary["status"],
            message="; ".join(summary["reasons"]) or None,
            store=str(final / "mask.zarr"),
            seconds=summary["timings"]["total"],
            bad_fraction=summary["counts"]["bad_fraction"],
            newly_bad=diff.get("newly_bad"),
            recovered=diff.get("recovered"),
        )
        changes = f", {diff['newly_bad']} newly bad and {diff['recovered']} recovered against {diff['against']}" if diff else ""
        say(f"{final} {summary['status']}: {summary['counts']['bad_fraction']:.2e} of pixel-planes flagged{changes} ({summary['timings']['total']:.0f} s)")
        return summary["status"]
    except KeyboardInterrupt:
        versions.remove_partials(version)
        catalog.finish(row["id"], "interrupted", message="interrupted (Ctrl-C or SIGTERM); resumed by the next pass", seconds=time.perf_counter() - t0)
        raise
    except Exception as err:  # the set failed; the service goes on with the next one
        versions.remove_partials(version)
        message = str(err) if isinstance(err, (InputError, ClusterError)) else f"{type(err).__name__}: {err}"
        catalog.finish(row["id"], "failed", message=message, seconds=time.perf_counter() - t0)
        say(f"failed: {cset.describe()}: {message}")
        return "failed"


def _name_or_none(version: int | None) -> str:
    return "none" if version is None else version_name(version)


def make_version(settings: Settings, watch: Watch, cset: CalibrationSet, versions: Versions, version: int, params, say) -> dict:
    """Compute the mask of ``cset`` and assemble version ``version`` (mask, diff, summary); return the summary."""
    from ..detectors import get_detector
    from ..diff import diff_masks
    from ..io import open_run
    from ..job import run_mask
    from ..report import summary_html
    from ..store import open_store
    from ..summary import count_bits, write_figures

    started = _stamp()
    tmp = versions.new_partial(version)
    timings = {}
    t0 = t = time.perf_counter()
    det = get_detector(watch.detector)
    opened = {
        role: open_run(path, det, cells_per_chunk=watch.cells_per_chunk, detector_id=watch.detector_id)
        for role, path in cset.runs.items()
    }
    flat = opened.pop("flat", None)
    darks = {role.removeprefix("dark-"): ds for role, ds in opened.items()}
    timings["open"], t = time.perf_counter() - t, time.perf_counter()
    store = run_mask(darks, flat, tmp / "mask.zarr", params=params, detector=det, cluster=settings.cluster, n_workers=settings.workers, echo=say)
    timings["mask"], t = time.perf_counter() - t, time.perf_counter()

    root = open_store(store)
    counts = count_bits(root)
    counts["flagged"] = counts["total"]["flagged"]
    counts["bad_fraction"] = counts["flagged"] / counts["pixels"]
    reasons = layout_problems(root, det, watch)
    current = versions.current()
    diff = None
    if current is not None:
        try:
            # named as published (the store is still in the hidden partial directory)
            diff = diff_masks(versions.path(current) / "mask.zarr", store) | {"against": version_name(current), "new": str(versions.path(version) / "mask.zarr")}
        except InputError as err:
            reasons.append(f"cannot compare with {version_name(current)}: {err.problem}")
    reasons += sanity_problems(counts, diff, settings.sanity)
    figures = write_figures(root, tmp / "figures")
    timings["summary"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    summary = {
        "detector": watch.name,
        "version": version_name(version),
        "status": "held" if reasons else "published",
        "reasons": reasons,
        "runs": cset.runs,
        "software": f"rmm-dask {__version__}",
        "parameters": dataclasses.asdict(params),
        "counts": counts,
        "diff": None if diff is None else {k: diff[k] for k in ("against", "newly_bad", "recovered", "bits", "newly_bad_pixels", "pixels_truncated")},
        "timings": timings,
        "started": started,
        "finished": _stamp(),
    }
    if diff is not None:
        _write_json(tmp / "diff.json", diff)
    _write_json(tmp / "summary.json", summary)
    (tmp / "summary.html").write_text(summary_html(summary, root, counts, figures))
    return summary | {"path": str(versions.publish(tmp, version))}


def _write_json(path: Path, data) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=str)


def layout_problems(root, det, watch: Watch) -> list[str]:
    """The mask's dtype and shape against the detector and the watched gain stages."""
    from ..codes import MASK_DTYPE

    mask, problems = root["mask"], []
    if mask.dtype != MASK_DTYPE or mask.ndim != 5:
        problems.append(f"mask is {mask.dtype} with {mask.ndim} dims, expected {MASK_DTYPE.__name__} (module, gain, cell, y, x)")
    elif tuple(mask.shape[3:]) != tuple(det.module_shape):
        problems.append(f"module image {tuple(mask.shape[3:])} is not {det.name}'s {tuple(det.module_shape)}")
    gains = list(root.attrs.get("gain_stages") or [])
    if gains != list(watch.gains):
        problems.append(f"gain stages {gains}, expected {list(watch.gains)}")
    return problems


def sanity_problems(counts: dict, diff: dict | None, sanity: Sanity) -> list[str]:
    """Why a mask should not become current: flagged fraction or change outside the bounds."""
    problems = []
    lo, hi = sanity.bad_fraction
    if not lo <= counts["bad_fraction"] <= hi:
        problems.append(f"{counts['bad_fraction']:.2%} of pixel-planes flagged, outside the bounds [{lo:.2%}, {hi:.2%}]")
    if diff is not None and sanity.max_change is not None:
        change = (diff["newly_bad"] + diff["recovered"]) / counts["pixels"]
        if change > sanity.max_change:
            problems.append(
                f"{change:.2%} of pixel-planes changed against {diff['against']} ({diff['newly_bad']} newly bad,"
                f" {diff['recovered']} recovered), more than max-change {sanity.max_change:.2%}"
            )
    return problems


def status_rows(settings: Settings) -> tuple[list, dict]:
    """The catalog's sets and each detector's current version, for --status."""
    path = settings.state / CATALOG
    if not path.exists():
        return [], {}
    try:
        with Catalog(path, readonly=True) as catalog:
            catalog.verify()
            rows = [dict(r) for r in catalog.sets()]
            pointers = {w.name: catalog.pointer(w.name) for w in settings.detectors}
    except sqlite3.DatabaseError as err:
        raise InputError(path, f"is not a readable catalog ({' '.join(str(err).split())}); the next pass moves it aside and rebuilds it from the published versions") from None
    return rows, pointers
