"""An operator's decisions on nightly versions: release a held one, hold a published one.

``rmm nightly --config F --release NAME/vNNNN --reason TEXT``: a held version (the sanity
bounds kept it from ``current``) becomes the current one; the version ``current`` showed
before stays published, in the history. ``--hold NAME/vNNNN --reason TEXT``: a published
version is held; if it was current, ``current`` goes back to the newest published version
before it whose mask verifies (or is removed when there is none).

Each decision is recorded with the reason, the user and the time, and where ``current``
pointed before and after:

* in the version's ``summary.json`` (``status``, ``decisions``; a release moves the reasons it
  was held for to ``held_for``) and its ``summary.html``, both republished through
  :mod:`rmm_dask.publish`: written beside, swapped in with one rename, read-only again (the
  version's directory gets ``u+w`` for the swap only); the mask is not touched. The version
  thus carries its decisions: a lost catalog is rebuilt with them (recover.py);
* in the catalog (one transaction): the set's status, a ``decisions`` row, the events, the
  pointer. ``--status`` shows each set's decisions after its message.

Refused in one line, nothing changed: a name the configuration does not watch, a version the
catalog does not know or whose directory is gone, a release of a version that is not held, a
hold of one that is not published, a release of a version whose files are damaged (its
summary unreadable or of other runs; its store failing :func:`rmm_dask.integrity.verify` or a
chunk of its mask not matching its checksum), an empty reason, and a decision while a pass
runs (the service lock: a pass and a decision never interleave).

The files change first, then the catalog: a decision interrupted midway is completed by
running the same command again (the catalog still shows the earlier status).
"""

from __future__ import annotations

import getpass
import json
import os
import re
from pathlib import Path

from .. import publish
from ..errors import InputError, printable
from .catalog import now
from .recover import catalog_for_pass
from .service import CATALOG, Locked, service_lock
from .settings import Settings, Watch
from .versions import CURRENT, Versions, version_name

_TARGET = re.compile(r"^(?P<name>[^/]+)/v?(?P<version>\d+)$")
ACTIONS = {"release": "released", "hold": "held"}


def user_name() -> str:
    """Who decides: the login name, and the account it acts as when run through sudo."""
    user = getpass.getuser()
    invoking = os.environ.get("SUDO_USER")
    return f"{invoking} (as {user})" if invoking and invoking != user else user


def parse_target(settings: Settings, option: str, text: str) -> tuple[Watch, int]:
    """The watch and version number that ``NAME/vNNNN`` names; InputError for a malformed or unknown name."""
    m = _TARGET.match(text)
    if m is None:
        raise InputError(option, f"{text!r} is not NAME/vNNNN (e.g. {settings.detectors[0].name}/v0003)")
    for watch in settings.detectors:
        if watch.name == m.group("name"):
            return watch, int(m.group("version"))
    known = ", ".join(w.name for w in settings.detectors)
    raise InputError(settings.path, f"{option} {text}: no detector {m.group('name')!r} in this configuration"
                                    f" (it watches {known}); nothing was changed")


def decide(settings: Settings, action: str, target: str, reason: str | None, *, echo=print) -> int:
    """Release or hold (``action``) the version ``target`` (NAME/vNNNN) for ``reason``; 0 when done."""
    option = f"--{action}"
    reason = " ".join((reason or "").split())
    if not reason:
        raise InputError("--reason", f"{option} {target} needs a reason (recorded with your user name and the time"
                                     " in the catalog and the version's summary); nothing was changed")
    watch, version = parse_target(settings, option, target)
    label = f"{watch.name}/{version_name(version)}"
    versions = Versions(settings.publish / watch.name)
    try:
        with service_lock(settings.state), catalog_for_pass(settings, settings.state / CATALOG, echo) as catalog:
            row = catalog.of_version(watch.name, version)
            path = versions.path(version)
            if row is None or not path.is_dir():
                known = ", ".join(version_name(v) for v in versions.list()) or "none"
                gone = "its directory is gone" if row is not None else f"no such version (versions on disk: {known})"
                raise InputError(path, f"{gone}; nothing was changed")
            summary = _summary(path, row)
            current = versions.current()
            if action == "release":
                if row["status"] != "held":
                    what = (f"published already (current -> {_name(current)})" if row["status"] == "published"
                            else f"not a published version (status {row['status']})")
                    raise InputError(path, f"is {what}: only a held version can be released; nothing was changed")
                _check_version(path, f"{label} not released, current stays at {_name(current)}")
                after = version
            else:
                if row["status"] != "published":
                    what = "held already" if row["status"] == "held" else f"not published (status {row['status']})"
                    raise InputError(path, f"is {what}: only a published version can be held; nothing was changed")
                after = _fallback(catalog, versions, watch.name, version, echo) if current == version else current
            decision = {"action": ACTIONS[action], "user": user_name(), "time": now(), "reason": reason,
                        "current_before": current, "current_after": after}
            _republish_summary(path, summary, decision)
            if after != current:
                if after is None:
                    publish.remove(versions.root / CURRENT, what="the current link")
                else:
                    versions.switch(after)
            catalog.decide(row["id"], decision)
    except Locked as err:
        raise InputError(settings.state / "nightly.lock", f"a nightly pass is running ({err}); nothing was changed:"
                                                          " run the command again when it has ended") from None
    moved = f"current -> {_name(after)}" + (f" (was {_name(current)})" if after != current else " (unchanged)")
    echo(printable(f"{label} {ACTIONS[action]} by {decision['user']}: {reason}; {moved}"))
    return 0


def _name(version: int | None) -> str:
    return "none" if version is None else version_name(version)


def _summary(path: Path, row) -> dict:
    """The version's summary.json, checked to be of the catalog's runs; InputError when it is not."""
    try:
        summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
        runs = summary["runs"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        why = err.strerror if isinstance(err, OSError) else "not the summary of a version"
        raise InputError(path / "summary.json", f"damaged ({printable(why)}); nothing was changed") from None
    if runs != json.loads(row["runs"]):
        raise InputError(path / "summary.json", "names other runs than the catalog records for this version"
                                                "; nothing was changed")
    return summary


def _check_version(path: Path, consequence: str) -> None:
    """InputError unless the version's store verifies and every chunk of its mask matches its checksum."""
    from ..store import open_store

    try:
        root = open_store(path / "mask.zarr")
        root["mask"][...]  # every chunk read through the verified store: checksums
    except InputError as err:
        raise InputError(err.path, f"{err.problem.removesuffix('; not reading it')}; {consequence}") from None


def _fallback(catalog, versions: Versions, detector: str, held: int, echo) -> int | None:
    """The version ``current`` goes back to when ``held`` (the current one) is held: the newest
    published version before it whose mask verifies, or None."""
    earlier = sorted((r["version"] for r in catalog.sets(detector)
                      if r["status"] == "published" and r["version"] < held), reverse=True)
    for version in earlier:
        path = versions.path(version)
        try:
            _check_version(path, "not made current again")
        except InputError as err:
            echo(printable(f"{detector}/{version_name(version)} skipped: {err}"))
            continue
        return version
    return None


def _plain_page(summary: dict, problem: str) -> str:
    """The page of a version whose store cannot be read: its status, reasons and decisions, and the problem."""
    from html import escape

    lines = [f"<h1>{escape(summary['detector'])} {escape(summary['version'])}: {escape(summary['status'])}</h1>",
             *(f"<p>{escape(r)}</p>" for r in summary.get("reasons") or []),
             *(f"<p>{escape(d['action'])} by {escape(d['user'])} at {escape(d['time'])}: {escape(d['reason'])}</p>"
               for d in summary["decisions"]),
             f"<p>The mask cannot be shown: {escape(problem)}</p>"]
    title = escape(f"{summary['detector']} {summary['version']} ({summary['status']})")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body>\n"
            + "\n".join(lines) + "\n</body></html>\n")


def _republish_summary(path: Path, summary: dict, decision: dict) -> None:
    """The version's summary.json and summary.html again with the decision, each swapped in whole."""
    from ..report import summary_html
    from ..store import open_store

    summary = dict(summary)
    if decision["action"] == "released":
        summary["held_for"] = summary.get("reasons") or []
        summary["reasons"] = []
        summary["status"] = "published"
    else:
        stamp = decision["time"][:16].replace("T", " ")
        summary["reasons"] = [f"held by {decision['user']} at {stamp} UTC: {decision['reason']}"]
        summary["status"] = "held"
    summary["decisions"] = [*(summary.get("decisions") or []), decision]
    figures = sorted((path / "figures").glob("*.png"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    try:
        html = summary_html(summary, open_store(path / "mask.zarr"), summary["counts"], figures)
    except InputError as err:  # a damaged store can be held (not released): its page says why it shows no mask
        html = _plain_page(summary, str(err))
    with publish.reopened(path, what=f"the version {path.name}"):
        with publish.output(path / "summary.json", overwrite=True, what="the version's summary") as out:
            with open(out.tmp, "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=1, default=str)
        with publish.output(path / "summary.html", overwrite=True, what="the version's page") as out:
            Path(out.tmp).write_text(html, encoding="utf-8", errors="surrogateescape")
