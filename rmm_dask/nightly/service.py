"""`rmm nightly`: find new calibration sets, mask them, publish versions, move ``current``.

One pass (``--once``; without it, a pass every ``interval`` seconds):

1. take the service lock (``<state>/nightly.lock``, an flock): a second pass started
   meanwhile (cron, a manual run) says so and does nothing;
2. a lost or corrupt catalog is rebuilt from the published versions' summary.json
   (recover.py: a corrupt file is moved aside), so no published set is masked again;
   sets the catalog still shows running were left by a process that died: they are
   marked interrupted and will be processed again, under the same version number;
3. for every watched detector, find the complete sets (discover.py: runs settled by
   their ctimes, opened by the reader) and, oldest first, process those not yet published
   or held (failed ones again, up to max-attempts): open the runs, compute the mask on the
   configured cluster into a hidden partial version directory, compare it with the version
   ``current`` points to, check the sanity bounds, check that no run changed meanwhile,
   write diff.json, summary.json (with the fingerprint of every input file) and
   summary.html, rename the version into place; then, if it passed, switch ``current`` to
   it, and record the outcome;
4. bring each detector's pixel history (``<publish>/<name>/history.zarr``, history.py) to
   the published versions: the new nights appended, or rebuilt when missing or damaged.
   A detector with ``history:`` (a mask that remembers, remember.py) brings it up to date
   before each of its sets too, and the set's version gets the layer ``layers/history``:
   the pixel-planes bad on enough of the last nights before it; the sanity bounds then count
   what the version masks (its mask or that layer).

A set's identity is its runs and their files' fingerprints: when a run of a published set
changes later (sequence files added, a file replaced), the set is masked again as a new
version that names the one it replaces and what changed (also in the log). ``current``
moves to it only if it is not older than the set ``current`` shows (sets are ordered by
their first version): the re-mask of an old set does not hide a newer one.

A failure leaves no version and does not move ``current``; a crash at any point is
resumed by the next pass without processing a set twice (a version found complete is
only pointed to and recorded). Every log line is one line: control characters in paths
(a newline in a proposal directory's name) are escaped, as in --status.
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
from ..errors import ClusterError, InputError, printable
from .catalog import DONE, Catalog
from .discover import CalibrationSet, current_inputs, find_sets, input_changes
from .recover import catalog_for_dry_run, catalog_for_pass, histories_for_pass
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


def discover(settings: Settings, echo, catalog: Catalog | None = None) -> list[tuple[Watch, CalibrationSet]]:
    """The complete sets of every watch, oldest first per watch; ``catalog`` remembers the runs seen."""
    not_before = settings.not_before.timestamp() if settings.not_before else None
    found = []
    for watch in settings.detectors:
        sets, notes = find_sets(watch, settle=settings.settle, not_before=not_before, memory=catalog)
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
    """Log lines with a time stamp each, one line per message whatever the paths in it hold."""
    return lambda message: echo(f"[{_stamp()}] {printable(message)}")


def match_set(catalog: Catalog, watch: Watch, cset: CalibrationSet) -> tuple:
    """The set's catalog row (or None: new to the catalog) and, for a set whose runs were masked
    before with other files, or whose darks were masked before with another flat run (or none: a
    flat that arrived after the set was decided), the newest such row (else None).

    A row of these runs made before rmm-dask recorded inputs is given the files as they are now
    (:meth:`Catalog.record_inputs`) and is the set's row.
    """
    row = catalog.get(watch.name, cset.key)
    if row is not None:
        return row, None
    earlier = catalog.of_runs(watch.name, cset.runs)
    if not earlier:  # the same darks with another flat (one that came late): a new version of them
        same_darks = catalog.of_darks(watch.name, cset.runs)
        return None, same_darks[0] if same_darks else None
    if earlier[0]["inputs"] is None:
        catalog.record_inputs(earlier[0]["id"], cset.key, cset.inputs)
        return catalog.get(watch.name, cset.key), None
    return None, earlier[0]


def changes_since(prior, cset: CalibrationSet) -> list[str]:
    """What changed in the set's runs since the set ``prior`` (a catalog row of the same darks) was made:
    another flat run, and the files of the runs both have."""
    label = f"{version_name(prior['version'])} ({prior['status']})"
    before = json.loads(prior["runs"])
    out = []
    old_flat, new_flat = before.get("flat"), cset.runs.get("flat")
    if old_flat != new_flat:
        old_name = "no flat" if old_flat is None else f"flat {Path(old_flat).name}"
        new_name = "no flat" if new_flat is None else f"flat {Path(new_flat).name}"
        out.append(f"{new_name} instead of {old_name} of {label}: the flat runs of its tree changed after that was"
                   f" decided ({cset.flat_note})")
    inputs = json.loads(prior["inputs"] or "{}")
    found = input_changes(inputs, {path: records for path, records in cset.inputs.items() if path in inputs})
    out += [f"run {Path(path).name} changed since {label}: {what}" for path, what in found.items()]
    return out or [f"its files differ from {label}'s"]


def dry_run_pass(settings: Settings, say) -> int:
    """What a pass would do, without the lock and without changing anything."""
    catalog = catalog_for_dry_run(settings, settings.state / CATALOG, say)
    n = 0
    for watch, cset in discover(settings, say, catalog):
        row, prior = match_set(catalog, watch, cset)
        what = action(row, settings.max_attempts, _complete(settings, row))
        if what is None:
            say(f"done: {cset.describe()} ({row['status']} {version_name(row['version'])}, {row['attempts']} attempt(s))")
            continue
        n += 1
        where = version_name(row["version"]) if row else "a new version"
        why = f" ({'; '.join(changes_since(prior, cset))})" if prior is not None else ""
        say(f"would {what}: {cset.describe()} -> {watch.name}/{where}{why}; {cset.flat_note}")
    say(f"dry run: {n} set(s) would be processed; nothing was changed")
    catalog.close()
    return 0


def nightly_pass(settings: Settings, say) -> int:
    try:
        with service_lock(settings.state), catalog_for_pass(settings, settings.state / CATALOG, say) as catalog:
            for row in catalog.interrupt_stale():
                say(f"{row['detector']} {version_name(row['version'])}: the attempt started {row['started']} did not finish; it will be resumed")
            failed = done = 0
            for watch, cset in discover(settings, say, catalog):
                row, prior = match_set(catalog, watch, cset)
                changes = changes_since(prior, cset) if prior is not None else []
                if changes:
                    again = "masking the set again as a new version"
                    say(f"{watch.name}: {'; '.join(changes)}; {again}")
                    if prior["status"] not in DONE:  # never published: the new set takes its place
                        catalog.finish(prior["id"], "superseded", message=f"{'; '.join(changes)}; {again}")
                        Versions(settings.publish / watch.name).remove_partials(prior["version"])
                what = action(row, settings.max_attempts, _complete(settings, row))
                if what is None:
                    if row["status"] not in DONE:
                        say(f"{cset.describe()}: {row['status']} after {row['attempts']} attempts, not retried ({row['message']})")
                    continue
                say(f"{what}: {cset.describe()}; {cset.flat_note}")
                replaces = prior if prior is not None and prior["status"] in ("published", "held") else None
                status = process_set(settings, watch, cset, catalog, say, replaces=replaces, changes=changes)
                failed += status == "failed"
                done += 1
            unwritten = histories_for_pass(settings, say)
            say(f"pass complete: {done} set(s) processed, {failed} failed")
            return 1 if failed or unwritten else 0
    except Locked as err:
        say(f"another nightly pass is running ({err}); nothing done")
        return 0


def process_set(settings: Settings, watch: Watch, cset: CalibrationSet, catalog: Catalog, say, *, replaces=None,
                changes: list[str] = ()) -> str:
    """Mask one set and publish it as a version; 'published', 'held' or 'failed'.

    ``replaces``: the catalog row of the version made of the same runs before they changed
    (``changes`` says how), named in the summary.
    """
    from ..config import params_from_config

    params = params_from_config()
    versions = Versions(settings.publish / watch.name)
    # numbers from the catalog and from the directories: a catalog lost or recreated never reuses one
    floor = max(versions.list(), default=0)
    row = catalog.claim(watch.name, cset.key, cset.runs, parameters=dataclasses.asdict(params),
                        software=f"rmm-dask {__version__}", floor=floor, inputs=cset.inputs)
    version = row["version"]
    final = versions.path(version)
    t0 = time.perf_counter()
    try:
        if (final / "summary.json").is_file():
            summary = json.loads((final / "summary.json").read_text())
            if summary.get("runs") != cset.runs or summary.get("inputs", cset.inputs) != cset.inputs:
                raise RuntimeError(f"{final} holds the mask of other runs or files ({summary.get('runs')});"
                                   " not reusing its number")
            say(f"{final} is complete from an earlier attempt: finishing its publication")
        else:
            provenance = {"replaces": None if replaces is None else version_name(replaces["version"]),
                          "changes": list(changes)}
            summary = make_version(settings, watch, cset, versions, version, params, say, provenance)
        current = versions.current()
        later = _newer_than(catalog, watch.name, current, cset)
        if summary["status"] == "published" and current != version and not later:
            versions.switch(version)
            say(f"{watch.name}/current -> {version_name(version)}")
        elif summary["status"] == "published" and current != version:
            say(f"{final} published; current stays at {version_name(current)}, the mask of a later set")
        if versions.current() is not None and catalog.pointer(watch.name) != versions.current():
            catalog.set_pointer(watch.name, versions.current(), row["id"])  # also after a crash between the two
        elif summary["status"] == "held":
            say(f"{final} held, current stays at {_name_or_none(versions.current())}: {'; '.join(summary['reasons'])}")
        diff = summary.get("diff") or {}
        catalog.finish(
            row["id"],
            summary["status"],
            message="; ".join([*summary.get("changes", []), *summary["reasons"]]) or None,
            store=str(final / "mask.zarr"),
            seconds=summary["timings"]["total"],
            bad_fraction=summary["counts"]["bad_fraction"],
            newly_bad=diff.get("newly_bad"),
            recovered=diff.get("recovered"),
        )
        changes = (f", {diff['newly_bad']} pixel-planes newly bad ({diff['newly_bad_distinct']} distinct pixels) and "
                   f"{diff['recovered']} recovered ({diff['recovered_distinct']}) against {diff['against']}") if diff else ""
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


def _first_version(catalog: Catalog, detector: str, runs: dict) -> int | None:
    """The first version number given to a set of these dark runs (whatever its flat): the sets' order of discovery."""
    return min((r["version"] for r in catalog.of_darks(detector, runs)), default=None)


def _newer_than(catalog: Catalog, detector: str, current: int | None, cset: CalibrationSet) -> bool:
    """Whether ``current`` shows the mask of a set discovered after ``cset`` (then it stays).

    For a set masked the first time this is never so (its number is the highest); for a set
    masked again because its runs changed, a later set's mask stays current.
    """
    if current is None:
        return False
    shown = catalog.of_version(detector, current)
    first_shown = _first_version(catalog, detector, json.loads(shown["runs"])) if shown is not None else current
    return first_shown > _first_version(catalog, detector, cset.runs)


def make_version(settings: Settings, watch: Watch, cset: CalibrationSet, versions: Versions, version: int, params, say,
                 provenance: dict | None = None) -> dict:
    """Compute the mask of ``cset`` and assemble version ``version`` (mask, diff, summary); return the summary.

    ``provenance``: ``replaces`` (the version of the same runs before they changed) and
    ``changes``, for the summary. A run whose files changed while it was masked publishes
    nothing (InputError): the next pass masks the set again from its new files.
    """
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
    layer = remembering(versions, watch, cset, darks, det, say)
    store = run_mask(darks, flat, tmp / "mask.zarr", params=params, detector=det, cluster=settings.cluster,
                     n_workers=settings.workers, echo=say, history=None if layer is None else layer.data)
    timings["mask"], t = time.perf_counter() - t, time.perf_counter()

    root = open_store(store)
    counts = count_bits(root)
    # what the version masks: tonight's flagged planes, or remembered ones (the history layer), if it has one
    counts["flagged"] = counts["history"]["flagged"] if "history" in counts else counts["total"]["flagged"]
    counts["bad_fraction"] = counts["flagged"] / counts["pixels"]
    reasons = layout_problems(root, det, watch)
    if layer is not None and layer.problem:
        reasons.append(layer.problem)
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
        "flat": cset.flat_note,
        "inputs": cset.inputs,
        **(provenance or {"replaces": None, "changes": []}),
        "software": f"rmm-dask {__version__}",
        "parameters": dataclasses.asdict(params),
        "counts": counts,
        "diff": None if diff is None else {k: diff[k] for k in (
            "against", "newly_bad", "recovered", "newly_bad_distinct", "recovered_distinct", "bits", "newly_bad_pixels",
            "pixels_truncated", *(("history",) if diff.get("history") else ()))},
        **({} if layer is None else {"history": {
            "min_fraction": watch.history.min_fraction, "last": watch.history.last, "layer": layer.data is not None,
            "note": layer.note, **layer.attrs, **(counts.get("history") or {})}}),
        "timings": timings,
        "started": started,
        "finished": _stamp(),
    }
    if diff is not None:
        _write_json(tmp / "diff.json", diff)
    _write_json(tmp / "summary.json", summary)
    (tmp / "summary.html").write_text(summary_html(summary, root, counts, figures), encoding="utf-8", errors="surrogateescape")
    check_inputs_unchanged(cset)
    return summary | {"path": str(versions.publish(tmp, version))}


def remembering(versions: Versions, watch: Watch, cset: CalibrationSet, darks: dict, det, say):
    """The history layer of a detector with ``history:`` (:func:`rmm_dask.nightly.remember.history_layer`: the
    pixel history brought up to date first), its line said; None without the setting (the masks of today)."""
    if watch.history is None:
        return None
    from .remember import history_layer

    ref = next(iter(darks.values()))
    shape = (ref.sizes["module"], len(darks), ref.sizes["cell"], *det.module_shape)
    layer = history_layer(versions.root, cset.runs, watch.history, shape, list(watch.gains), say)
    say(f"{watch.name}: {layer.note}")
    return layer


def check_inputs_unchanged(cset: CalibrationSet) -> None:
    """InputError naming the first run whose files differ now from when the set was found (files added,
    removed, replaced or modified while it was masked): such a version would not be what it says."""
    for run, what in input_changes(cset.inputs, current_inputs(cset)).items():
        raise InputError(run, f"changed while the set was masked ({what}); nothing was published,"
                              " the next pass masks it again")


def _write_json(path: Path, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
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
    """Why a mask should not become current: flagged fraction or change outside the bounds. With a history layer,
    both count what the version masks (``counts["bad_fraction"]``: flagged or remembered; the change of that)."""
    problems = []
    lo, hi = sanity.bad_fraction
    if not lo <= counts["bad_fraction"] <= hi:
        problems.append(f"{counts['bad_fraction']:.2%} of pixel-planes flagged, outside the bounds [{lo:.2%}, {hi:.2%}]")
    if diff is not None and sanity.max_change is not None:
        # with a history layer in either: changes of what the versions mask (a remembered pixel good tonight: none)
        changed = (diff.get("history") or {}).get("union") or diff
        change = (changed["newly_bad"] + changed["recovered"]) / counts["pixels"]
        of = " of what the versions mask (mask or history layer)" if changed is not diff else ""
        if change > sanity.max_change:
            problems.append(
                f"{change:.2%} of pixel-planes changed{of} against {diff['against']} ({changed['newly_bad']} newly"
                f" bad, {changed['recovered']} recovered), more than max-change {sanity.max_change:.2%}"
            )
    return problems


def _printable_row(row: dict, decided: str = "") -> dict:
    """A catalog row for display: control characters in its detector, runs' paths and message escaped,
    so that a path with a newline cannot forge a row of --status; ``decided``: its operators' decisions
    (:func:`decision_text`), after the message."""
    runs = {printable(role): printable(p) for role, p in json.loads(row["runs"]).items()}
    message = "; ".join(m for m in (row["message"], decided) if m) or None
    return row | {"detector": printable(row["detector"]), "runs": json.dumps(runs),
                  "message": None if message is None else printable(message)}


def decision_text(decisions) -> dict[int, str]:
    """Per set id, its operators' releases and holds for --status: 'released by alice at 2026-12-08 10:00
    UTC (current v0002 -> v0003): checked the column by hand'."""
    out: dict[int, list[str]] = {}
    for d in decisions:
        stamp = (d["time"] or "")[:16].replace("T", " ")
        moved = "" if d["current_before"] == d["current_after"] else (
            f" (current {_name_or_none(d['current_before'])} -> {_name_or_none(d['current_after'])})")
        out.setdefault(d["set_id"], []).append(f"{d['action']} by {d['user']} at {stamp} UTC{moved}: {d['reason']}")
    return {set_id: "; ".join(texts) for set_id, texts in out.items()}


def status_rows(settings: Settings) -> tuple[list, dict]:
    """The catalog's sets and each detector's current version, for --status (display text escaped)."""
    path = settings.state / CATALOG
    if not path.exists():
        return [], {}
    try:
        with Catalog(path, readonly=True) as catalog:
            catalog.verify()
            decided = decision_text(catalog.decisions())
            rows = [_printable_row(dict(r), decided.get(r["id"], "")) for r in catalog.sets()]
            pointers = {printable(w.name): catalog.pointer(w.name) for w in settings.detectors}
    except sqlite3.DatabaseError as err:
        raise InputError(path, f"is not a readable catalog ({' '.join(str(err).split())}); the next pass moves it aside and rebuilds it from the published versions") from None
    return rows, pointers
