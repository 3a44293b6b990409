"""Issue 22 item 5: a flat before or after its darks (flat-window), an operator's release and hold of
nightly versions, and `rmm remove` for the read-only outputs. Real runs, stores and nightly trees."""

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import yaml

from rmm_dask.cli import main
from rmm_dask.nightly import read_settings
from rmm_dask.nightly.decide import user_name
from rmm_dask.nightly.discover import find_sets
from rmm_dask.nightly.service import service_lock
from rmm_dask.synth import SynthConfig, synthesize
from rmm_dask.synth.on_disk import write_synthetic
from tests.cli_errors import one_line_error

HOUR = 3600.0
T0 = time.time() - 3 * 86400  #: when the darks of the synthetic nights were taken (their files' mtimes)


def write_runs(tree: Path, numbers: dict, *, acquisition: int = 0) -> None:
    """Runs of one small synthetic AGIPD (1 module, 1 cell) under ``tree/raw``: ``{role: run number}``."""
    calib = synthesize(SynthConfig(modules=1, cells=1, frames=16, flat_frames=16, seed=5, acquisition=acquisition))
    write_synthetic(calib, tree, run_numbers=numbers, truth=None)


def taken(tree: Path, number: int, t: float) -> None:
    """Give run ``number``'s files the modification time ``t`` (when it was taken; rsync -a keeps it)."""
    for f in (tree / "raw" / f"r{number:04d}").iterdir():
        os.utime(f, (t, t))


def write_config(tmp_path: Path, *, sanity=None, **watch) -> Path:
    config = {
        "nightly": {
            "state": "state", "publish": "masks", "settle": 0, "workers": 1,
            "sanity": sanity or {"bad-fraction": [0.0, 0.5], "max-change": 0.5},
            "detectors": [{"name": "AGIPD", "detector": "AGIPD1M", "trees": ["facility/p*/raw"], **watch}],
        },
    }
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def names(cset) -> list[str]:
    return [f"{role} {Path(p).name}" for role, p in cset.runs.items()]


def masks(tmp_path: Path) -> Path:
    return tmp_path / "masks" / "AGIPD"


def current(tmp_path: Path) -> str | None:
    link = masks(tmp_path) / "current"
    return os.readlink(link) if link.is_symlink() else None


def summary(tmp_path: Path, version: str) -> dict:
    return json.loads((masks(tmp_path) / version / "summary.json").read_text())


def catalog(tmp_path: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(tmp_path / "state" / "catalog.sqlite")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def nightly(config: Path, *extra) -> int:
    return main(["nightly", "--config", str(config), *extra])


# ------------------------------------------------------------------------------------------ item 1: flat-window


def test_a_flat_before_or_after_its_darks_within_the_window(tmp_path):
    """The nearest flat within flat-window, before or after; a tie goes to the one before; one outside
    the window is not taken; without a window, the earlier rule, and the flat after is named as not used."""
    tree = tmp_path / "facility" / "p700000"
    write_runs(tree, {"flat": 1, "dark-high": 2, "dark-medium": 3, "dark-low": 4})
    write_runs(tree, {"flat": 5})
    for number, t in ((1, T0 - 3 * HOUR), (2, T0), (3, T0 + 60), (4, T0 + 120), (5, T0 + 120 + 1200)):
        taken(tree, number, t)
    config = write_config(tmp_path, **{"flat-window": "2h"})
    watch = read_settings(config).detectors[0]
    assert watch.flat_window == 2 * HOUR
    (cset,), notes = find_sets(watch, settle=0)
    assert names(cset) == ["dark-high r0002", "dark-medium r0003", "dark-low r0004", "flat r0005"] and notes == []
    assert cset.flat_note == "flat r0005, 20 min after its darks: the nearest within flat-window 2 h"

    taken(tree, 1, T0 - 1200)  # as far before as r0005 is after: the flat before wins the tie
    (cset,), _ = find_sets(watch, settle=0)
    assert cset.runs["flat"].endswith("r0001") and "(also within it: r0005)" in cset.flat_note
    taken(tree, 1, T0 - 600)  # nearer: the set could not be nearer to a flat after
    (cset,), _ = find_sets(watch, settle=0)
    assert cset.flat_note.startswith("flat r0001, 10 min before its darks: the nearest")

    for number in (1, 5):  # both out of the window: darks only, once the window has passed
        taken(tree, number, T0 + 120 + 3 * HOUR)
    (cset,), _ = find_sets(watch, settle=0)
    assert "flat" not in cset.runs
    assert cset.flat_note == ("no flat run within flat-window 2 h of its darks (nearest: r0001, 3 h after its darks):"
                              " darks only")

    earlier = read_settings(write_config(tmp_path)).detectors[0]  # no flat-window: the rule of earlier versions
    assert earlier.flat_window is None
    (cset,), _ = find_sets(earlier, settle=0)
    assert cset.runs["flat"].endswith("r0001")
    assert cset.flat_note == ("flat r0001: the newest before its last dark; flat r0005 after its darks not used"
                              " (without flat-window only a flat before the last dark is taken)")


def test_a_set_waits_while_its_flat_may_still_come(tmp_path):
    """Until last dark + the nearest candidate's distance (+ the window without one) + settle, and while
    the tree's scan stops at a run that may be its flat; then it is decided, with a log line saying so."""
    tree = tmp_path / "facility" / "p700000"
    write_runs(tree, {"dark-high": 2, "dark-medium": 3, "dark-low": 4})
    now = time.time()
    for number in (2, 3, 4):
        taken(tree, number, now - 600)
    watch = read_settings(write_config(tmp_path, **{"flat-window": "1h"})).detectors[0]
    sets, notes = find_sets(watch, settle=60, now=now + 600)  # 20 min after the darks
    assert sets == [] and len(notes) == 1
    assert "AGIPD: dark-high r0002, dark-medium r0003, dark-low r0004 in" in notes[0] and "waits until" in notes[0]
    assert "for a flat run taken after its darks (none within flat-window 1 h so far; then darks only)" in notes[0]
    (cset,), notes = find_sets(watch, settle=60, now=now - 600 + HOUR + 61)  # window and settle passed
    assert "flat" not in cset.runs and notes == [] and cset.flat_note.endswith(": darks only")

    write_runs(tree, {"flat": 1})  # a flat 30 min before: a flat after could still be nearer for 30 min
    taken(tree, 1, now - 600 - 1800)
    sets, notes = find_sets(watch, settle=0, now=now + 600)
    assert sets == [] and "could still be nearer than flat r0001, 30 min before its darks" in notes[0]
    (cset,), _ = find_sets(watch, settle=0, now=now + 1201)
    assert cset.runs["flat"].endswith("r0001")

    write_runs(tree, {"flat": 5})  # a run after them, not readable yet: it may be their nearer flat
    raw = next((tree / "raw" / "r0005").glob("*.h5"))
    with open(raw, "r+b") as f:
        f.truncate(1000)
    taken(tree, 5, now - 300)
    sets, notes = find_sets(watch, settle=0, now=now + 1201)
    assert sets == [] and any("waits for r0005, not ready yet, which may be its flat" in n for n in notes), notes


def test_flat_window_in_the_configuration(tmp_path, capsys):
    path = write_config(tmp_path, **{"flat-window": 900})
    data = yaml.safe_load(path.read_text())
    data["nightly"]["flat-window"] = "12h"
    path.write_text(yaml.safe_dump(data))
    assert read_settings(path).detectors[0].flat_window == 900  # the watch's own wins
    del data["nightly"]["detectors"][0]["flat-window"]
    path.write_text(yaml.safe_dump(data))
    assert read_settings(path).detectors[0].flat_window == 12 * HOUR
    data["nightly"]["flat-window"] = "soon"
    path.write_text(yaml.safe_dump(data))
    assert nightly(path, "--once") == 2
    one_line_error(capsys, str(path), "flat-window: 'soon' is not a duration")
    assert not (tmp_path / "state").exists() and not (tmp_path / "masks").exists()


def test_a_flat_that_comes_after_the_set_was_decided_makes_a_new_version(tmp_path, capsys):
    """Darks published darks-only once their window passed; a flat copied in later (its old mtime within
    the window) makes a new version of the same darks, naming the one it replaces, and current moves to it."""
    tree = tmp_path / "facility" / "p700000"
    write_runs(tree, {"dark-high": 2, "dark-medium": 3, "dark-low": 4})
    for number in (2, 3, 4):
        taken(tree, number, T0)
    config = write_config(tmp_path, **{"flat-window": "2h"})
    assert nightly(config, "--once") == 0
    out = capsys.readouterr().out
    assert "no flat run within flat-window 2 h of its darks: darks only" in out
    assert current(tmp_path) == "v0001" and summary(tmp_path, "v0001")["flat"].endswith("darks only")

    write_runs(tree, {"flat": 5})
    taken(tree, 5, T0 + 1800)
    assert nightly(config, "--once") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "flat r0005 instead of no flat of v0001 (published): the flat runs of its tree changed after" in out
    assert current(tmp_path) == "v0002"
    v2 = summary(tmp_path, "v0002")
    assert v2["replaces"] == "v0001" and v2["runs"]["flat"].endswith("r0005")
    assert v2["flat"] == "flat r0005, 30 min after its darks: the nearest within flat-window 2 h"
    assert catalog(tmp_path, "SELECT version, status FROM sets ORDER BY version") == [(1, "published"),
                                                                                      (2, "published")]


# ------------------------------------------------------------------------------------------ item 2: release, hold


def test_release_and_hold_with_a_reason(tmp_path, capsys):
    me = user_name()
    tree = tmp_path / "facility" / "p700000"
    write_runs(tree, {"flat": 1, "dark-high": 2, "dark-medium": 3, "dark-low": 4})
    strict = write_config(tmp_path, sanity={"bad-fraction": [0.0, 0.001]})
    assert nightly(strict, "--once") == 0
    assert current(tmp_path) is None and summary(tmp_path, "v0001")["status"] == "held"
    capsys.readouterr()
    v1 = masks(tmp_path) / "v0001"
    page = (v1 / "summary.html").read_bytes()

    def refused(*args, needles):
        assert nightly(strict, *args) == 2
        one_line_error(capsys, *needles)
        assert summary(tmp_path, "v0001")["status"] == "held" and current(tmp_path) is None
        assert (v1 / "summary.html").read_bytes() == page
        assert catalog(tmp_path, "SELECT status FROM sets") == [("held",)]

    refused("--release", "AGIPD/v0001", needles=("--reason: --release AGIPD/v0001 needs a reason",))
    refused("--release", "AGIPD/v0001", "--reason", "  ", needles=("needs a reason",))
    refused("--release", "AGIPD/v0009", "--reason", "x", needles=(f"{masks(tmp_path) / 'v0009'}: no such version",
                                                                   "versions on disk: v0001"))
    refused("--release", "LPD/v0001", "--reason", "x", needles=(str(strict), "no detector 'LPD'", "watches AGIPD"))
    refused("--hold", "AGIPD/v0001", "--reason", "x", needles=("is held already", "nothing was changed"))
    refused("--release", "AGIPD/v0001", "--once", "--reason", "x", needles=("--release: is a command of its own",))
    refused("--reason", "x", needles=("--reason: goes with --release or --hold",))
    with service_lock(tmp_path / "state"):
        refused("--release", "AGIPD/v0001", "--reason", "x", needles=("nightly.lock", "a nightly pass is running"))
    chunk = next((v1 / "mask.zarr" / "mask").glob("c.*"))  # damaged: one byte of a mask chunk flipped
    good = chunk.read_bytes()
    chunk.chmod(0o644)
    chunk.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    refused("--release", "AGIPD/v0001", "--reason", "x",
            needles=("does not match its checksum", "AGIPD/v0001 not released, current stays at none"))
    chunk.write_bytes(good)
    chunk.chmod(0o444)

    # released: current -> v0001, the reason recorded in the summary (republished read-only) and the catalog
    assert nightly(strict, "--release", "AGIPD/v0001", "--reason", "bad fraction checked by hand") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"AGIPD/v0001 released by {me}: bad fraction checked by hand; current -> v0001 (was none)" in out
    assert current(tmp_path) == "v0001"
    s1 = summary(tmp_path, "v0001")
    assert s1["status"] == "published" and s1["reasons"] == [] and "outside the bounds" in s1["held_for"][0]
    (decision,) = s1["decisions"]
    assert (decision["action"], decision["user"]) == ("released", me)
    assert decision["reason"] == "bad fraction checked by hand"
    assert (decision["current_before"], decision["current_after"]) == (None, 1)
    assert not (v1 / "summary.json").stat().st_mode & 0o222 and not v1.stat().st_mode & 0o222
    assert f"Released by {me}" in (v1 / "summary.html").read_text() and not list(v1.glob(".*"))
    assert catalog(tmp_path, "SELECT status FROM sets") == [("published",)]
    assert catalog(tmp_path, "SELECT action, user, reason, current_after FROM decisions") == [
        ("released", me, "bad fraction checked by hand", 1)]
    assert nightly(strict, "--release", "AGIPD/v0001", "--reason", "again") == 2
    one_line_error(capsys, "is published already (current -> v0001)")

    # a second version, then held: current goes back to v0001; v0001 held: current none
    write_runs(tree, {"dark-high": 5, "dark-medium": 6, "dark-low": 7}, acquisition=1)
    config = write_config(tmp_path)
    assert nightly(config, "--once") == 0 and current(tmp_path) == "v0002"
    capsys.readouterr()
    chunks = masks(tmp_path) / "v0002" / "mask.zarr" / "mask"  # a damaged version can be held: a chunk deleted
    chunks.chmod(0o755)
    next(chunks.glob("c.*")).unlink()
    chunks.chmod(0o555)
    assert nightly(config, "--hold", "AGIPD/v0002", "--reason", "hot column on module 0") == 0
    assert f"AGIPD/v0002 held by {me}: hot column on module 0; current -> v0001 (was v0002)" in capsys.readouterr().out
    assert current(tmp_path) == "v0001" and summary(tmp_path, "v0002")["status"] == "held"
    assert summary(tmp_path, "v0002")["reasons"][0].endswith("UTC: hot column on module 0")
    page = (masks(tmp_path) / "v0002" / "summary.html").read_text()
    assert "hot column on module 0" in page and "The mask cannot be shown" in page and "is missing" in page
    assert nightly(config, "--hold", "AGIPD/v0001", "--reason", "wrong flat") == 0
    assert "current -> none (was v0001)" in capsys.readouterr().out and current(tmp_path) is None
    assert nightly(config, "--status") == 0
    status = " ".join(capsys.readouterr().out.split())
    assert f"released by {me} at" in status and "UTC (current none -> v0001): bad fraction checked by hand" in status
    assert f"held by {me} at" in status and "(current v0002 -> v0001): hot column on module 0" in status
    assert "AGIPD: current -> none" in status

    # a lost catalog is rebuilt with the statuses and decisions the summaries carry
    for p in (tmp_path / "state").glob("catalog.sqlite*"):
        p.unlink()
    assert nightly(config, "--once") == 0
    assert "0 set(s) processed" in capsys.readouterr().out
    assert catalog(tmp_path, "SELECT version, status FROM sets ORDER BY version") == [(1, "held"), (2, "held")]
    assert catalog(tmp_path, "SELECT version, action FROM decisions ORDER BY id") == [
        (1, "released"), (1, "held"), (2, "held")]


# ------------------------------------------------------------------------------------------ item 3: rmm remove


def test_remove_takes_rmm_outputs_only(store, tmp_path, capsys):
    copy = tmp_path / "m.zarr"
    shutil.copytree(store, copy, symlinks=True)
    assert not copy.stat().st_mode & 0o222  # published read-only: rm -rf fails for a user who is not root
    report = tmp_path / "report.html"
    shutil.copy2(store.with_name("report.html"), report)
    assert main(["export", str(copy), "--to", "nexus", "--out", str(tmp_path / "m.nxs")]) == 0
    assert main(["show", str(copy), "--png", str(tmp_path / "figures")]) == 0
    other = tmp_path / "notes"
    other.mkdir()
    (other / "a.txt").write_text("mine")
    (tmp_path / "link.zarr").symlink_to(copy)
    capsys.readouterr()

    def refused(paths, *needles):
        before = sorted(p.name for p in tmp_path.iterdir())
        assert main(["remove", *map(str, paths)]) == 2
        one_line_error(capsys, *needles)
        assert sorted(p.name for p in tmp_path.iterdir()) == before

    refused([tmp_path / "link.zarr"], "link.zarr: is a symbolic link", "does not follow links")
    refused([copy, other], f"{other}: is not an output of rmm", "chmod -R u+w PATH && rm -rf PATH")  # nothing removed
    refused(["/"], "/: is the root directory")
    refused([tmp_path / "nothing"], "no such file or directory")
    assert main(["remove", str(copy), str(report), str(tmp_path / "m.nxs"), str(tmp_path / "figures")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"removed the figures: {tmp_path / 'figures'}" in out
    assert f"removed the mask store: {copy}" in out and f"removed the export: {tmp_path / 'm.nxs'}" in out
    assert "removed the performance report" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.zarr", "notes"]  # no hidden leftovers
    assert (other / "a.txt").read_text() == "mine"


def test_remove_a_nightly_version_only_when_not_current(tmp_path, capsys):
    tree = tmp_path / "facility" / "p700000"
    write_runs(tree, {"flat": 1, "dark-high": 2, "dark-medium": 3, "dark-low": 4})
    config = write_config(tmp_path)
    assert nightly(config, "--once") == 0 and current(tmp_path) == "v0001"
    v1 = masks(tmp_path) / "v0001"
    capsys.readouterr()
    assert main(["remove", str(v1)]) == 2
    one_line_error(capsys, "is the current version of AGIPD", "--hold AGIPD/v0001 --reason TEXT")
    assert main(["remove", str(v1 / "mask.zarr")]) == 2
    one_line_error(capsys, "is part of the nightly version", "remove the whole version")
    assert main(["remove", str(v1 / "figures")]) == 2
    one_line_error(capsys, "is part of the nightly version")
    assert (v1 / "mask.zarr" / "zarr.json").is_file()
    assert nightly(config, "--hold", "AGIPD/v0001", "--reason", "to remove it") == 0
    assert main(["remove", str(v1)]) == 0
    assert "removed the nightly version" in capsys.readouterr().out
    assert sorted(os.listdir(masks(tmp_path))) == ["history.zarr"]  # the pixel history: the next pass removes it
