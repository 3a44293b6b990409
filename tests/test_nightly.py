"""`rmm nightly` on a synthetic facility tree: three nights, a crash, held and failed sets, the lock."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
import zarr

from rmm_dask.cli import main
from rmm_dask.nightly.service import service_lock
from rmm_dask.synth import SynthConfig, plant_hot, synthesize
from rmm_dask.synth.on_disk import write_synthetic

NEW_HOT = 5  #: pixels that turn hot before night 2


def night_runs(facility: Path, night: int, *, flat: bool = False) -> list[int]:
    """Write night ``night``'s dark runs (a new acquisition of the same detector) into the tree.

    Night 1 starts with a flat run (r0001); each night adds three dark runs; from night 2
    on, NEW_HOT pixels are hot. Returns the run numbers written.
    """
    calib = synthesize(SynthConfig(modules=1, cells=1, frames=64, seed=5, acquisition=night - 1))
    if night >= 2:
        plant_hot(calib, NEW_HOT, seed=1)
    first = 3 * (night - 1) + 2
    numbers = {"dark-high": first, "dark-medium": first + 1, "dark-low": first + 2}
    if flat:
        numbers = {"flat": 1, **numbers}
    write_synthetic(calib, facility, run_numbers=numbers, truth=None)
    return sorted(numbers.values())


def planted_pixels() -> list[tuple]:
    calib = synthesize(SynthConfig(modules=1, cells=1, frames=2, seed=5))
    return [tuple(p) for p in plant_hot(calib, NEW_HOT, seed=1).tolist()]


def write_config(tmp_path: Path, **sanity) -> Path:
    config = {
        "nightly": {
            "state": "state",
            "publish": "masks",
            "settle": 0,
            "workers": 1,
            "max-attempts": 2,
            "sanity": {"bad-fraction": [0.0, 0.2], "max-change": 0.01, **sanity},
            "detectors": [{"name": "AGIPD", "detector": "AGIPD1M", "trees": ["facility/p*/raw"]}],
        },
        "rmm-dask": {"lambda": 8.0},
    }
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def nightly(config: Path, *extra) -> int:
    return main(["nightly", "--config", str(config), *extra])


def catalog(tmp_path: Path) -> tuple[list[dict], list[tuple]]:
    db = sqlite3.connect(tmp_path / "state" / "catalog.sqlite")
    db.row_factory = sqlite3.Row
    sets = [dict(r) for r in db.execute("SELECT * FROM sets ORDER BY id")]
    events = [(r["set_id"], r["event"]) for r in db.execute("SELECT * FROM events ORDER BY id")]
    (mode,) = db.execute("PRAGMA journal_mode").fetchone()
    db.close()
    assert mode == "wal"
    return sets, events


def current(tmp_path: Path) -> str | None:
    link = tmp_path / "masks" / "AGIPD" / "current"
    return os.readlink(link) if link.is_symlink() else None


def versions(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "masks" / "AGIPD").iterdir() if p.name not in ("current", "history.zarr") and not p.name.startswith("."))


def crash_midway(config: Path, tmp_path: Path) -> None:
    """Run a pass in its own process group and SIGKILL all of it once the mask store is being written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rmm_dask", "nightly", "--config", str(config), "--once"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "masks" / "AGIPD").glob(".v*.partial-*/.mask.zarr.partial-*/mask")):
            assert proc.poll() is None, "the pass ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_three_nights(tmp_path, capsys):
    facility = tmp_path / "facility" / "p700000"
    config = write_config(tmp_path)

    # night 1: a flat and the first darks -> v0001 becomes current
    assert night_runs(facility, 1, flat=True) == [1, 2, 3, 4]
    assert nightly(config, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would mask: AGIPD: dark-high r0002, dark-medium r0003, dark-low r0004, flat r0001" in out
    assert not (tmp_path / "state").exists() and not (tmp_path / "masks").exists()
    assert nightly(config, "--once") == 0
    assert current(tmp_path) == "v0001" and versions(tmp_path) == ["v0001"]
    v1 = tmp_path / "masks" / "AGIPD" / "v0001"
    assert sorted(p.name for p in v1.iterdir()) == ["figures", "mask.zarr", "summary.html", "summary.json"]
    summary = json.loads((v1 / "summary.json").read_text())
    assert summary["status"] == "published" and summary["diff"] is None and summary["reasons"] == []
    assert 0.01 < summary["counts"]["bad_fraction"] < 0.05
    assert not (v1 / "summary.json").stat().st_mode & 0o222  # immutable: files read-only

    # night 2: new darks with NEW_HOT hot pixels -> the diff lists exactly them
    night_runs(facility, 2)
    assert nightly(config, "--once") == 0
    assert current(tmp_path) == "v0002"
    diff = json.loads((tmp_path / "masks" / "AGIPD" / "v0002" / "diff.json").read_text())
    assert diff["against"] == "v0001"
    assert [(p["module"], p["y"], p["x"]) for p in diff["newly_bad_pixels"]] == planted_pixels()
    assert all(p["planes"] == 3 and "OFFSET" in p["bits"] for p in diff["newly_bad_pixels"])
    assert diff["newly_bad"] == 3 * NEW_HOT and diff["recovered"] == 0 and diff["recovered_pixels"] == []
    assert diff["bits"]["OFFSET"]["set"] >= 3 * NEW_HOT  # (also on pixels bad before: a telegraph pixel's bits vary)
    html = (tmp_path / "masks" / "AGIPD" / "v0002" / "summary.html").read_text()
    assert "published" in html and html.count("data:image/png;base64,") == 3
    for m, y, x in planted_pixels():  # the page lists the planted pixels, bad in all 3 gain planes
        assert f"<tr><td>{m}</td><td>{y}</td><td>{x}</td><td>3</td>" in html, (m, y, x)

    # night 3: the pass is killed while computing; the next pass resumes under the same version
    night_runs(facility, 3)
    crash_midway(config, tmp_path)
    assert current(tmp_path) == "v0002" and versions(tmp_path) == ["v0001", "v0002"]
    assert len(list((tmp_path / "masks" / "AGIPD").glob(".v0003.partial-*"))) == 1  # what the crash left
    sets, _ = catalog(tmp_path)
    assert [(s["version"], s["status"], s["attempts"]) for s in sets] == [(1, "published", 1), (2, "published", 1), (3, "running", 1)]
    assert nightly(config, "--once") == 0
    assert "did not finish; it will be resumed" in capsys.readouterr().out
    assert current(tmp_path) == "v0003" and versions(tmp_path) == ["v0001", "v0002", "v0003"]
    assert not list((tmp_path / "masks" / "AGIPD").glob(".*"))  # no partial version, no stray link
    diff = json.loads((tmp_path / "masks" / "AGIPD" / "v0003" / "diff.json").read_text())
    assert diff["against"] == "v0002" and diff["newly_bad"] == 0 and diff["recovered"] == 0

    # a fourth pass finds nothing new: nothing is processed twice
    assert nightly(config, "--once") == 0
    assert "0 set(s) processed" in capsys.readouterr().out
    sets, events = catalog(tmp_path)
    runs = [sorted(Path(p).name for p in json.loads(s["runs"]).values()) for s in sets]
    assert runs == [["r0001", "r0002", "r0003", "r0004"], ["r0001", "r0005", "r0006", "r0007"], ["r0001", "r0008", "r0009", "r0010"]]
    assert [(s["version"], s["status"], s["attempts"], s["newly_bad"], s["recovered"]) for s in sets] == [
        (1, "published", 1, None, None),
        (2, "published", 1, 3 * NEW_HOT, 0),
        (3, "published", 2, 0, 0),
    ]
    for s in sets:
        assert s["software"].startswith("rmm-dask ") and json.loads(s["parameters"])["lam"] == 8.0
        assert s["seconds"] > 0 and s["store"].endswith(f"v{s['version']:04d}/mask.zarr")
    assert events == [
        (1, "claimed"), (1, "current"), (1, "published"),
        (2, "claimed"), (2, "current"), (2, "published"),
        (3, "claimed"), (3, "interrupted"), (3, "claimed"), (3, "current"), (3, "published"),
    ]
    assert main(["nightly", "--config", str(config), "--status"]) == 0
    out = capsys.readouterr().out
    assert "current -> v0003" in out and "interrupted" not in out
    assert zarr.open_group(tmp_path / "masks" / "AGIPD" / "current" / "mask.zarr", mode="r")["mask"].shape == (1, 3, 1, 512, 128)


def test_held_and_failed_sets_never_move_current(tmp_path, capsys):
    facility = tmp_path / "facility" / "p700000"
    night_runs(facility, 1, flat=True)
    strict = write_config(tmp_path, **{"bad-fraction": [0.0, 0.001]})
    assert nightly(strict, "--once") == 0
    assert current(tmp_path) is None and versions(tmp_path) == ["v0001"]
    summary = json.loads((tmp_path / "masks" / "AGIPD" / "v0001" / "summary.json").read_text())
    assert summary["status"] == "held" and "outside the bounds [0.00%, 0.10%]" in summary["reasons"][0]
    assert "held" in capsys.readouterr().out

    # night 2's low-gain run: first unreadable (skipped, no set), then an aborted run with 5 frames:
    # the set fails, current does not move, it is retried once more and then left alone
    config = write_config(tmp_path)
    night_runs(facility, 2)
    r7 = facility / "raw" / "r0007"
    raw = next(r7.glob("*.h5"))
    with open(raw, "r+b") as f:
        f.truncate(1000)
    assert nightly(config, "--once") == 0
    out = capsys.readouterr().out
    assert f"{raw}: cannot read the run's metadata" in out and "0 set(s) processed" in out
    shutil.rmtree(r7)
    short = synthesize(SynthConfig(modules=1, cells=1, frames=5, seed=5, acquisition=1))
    write_synthetic(short, facility, run_numbers={"dark-low": 7}, truth=None)
    for attempt in (1, 2):
        assert nightly(config, "--once") == 1
        assert "failed: AGIPD: dark-high r0005" in capsys.readouterr().out
    assert nightly(config, "--once") == 0
    assert "failed after 2 attempts, not retried" in capsys.readouterr().out
    assert current(tmp_path) is None and versions(tmp_path) == ["v0001"]
    assert not list((tmp_path / "masks" / "AGIPD").glob(".*"))
    sets, _ = catalog(tmp_path)
    assert [(s["version"], s["status"], s["attempts"]) for s in sets] == [(1, "held", 1), (2, "failed", 2)]
    assert sets[1]["message"] == f"{r7}: low run has 5 frames per cell, at least 10 needed"


def test_lock_keeps_a_second_pass_out(tmp_path, capsys):
    night_runs(tmp_path / "facility" / "p700000", 1, flat=True)
    config = write_config(tmp_path)
    with service_lock(tmp_path / "state"):
        assert nightly(config, "--once") == 0
        out = capsys.readouterr().out
        assert "another nightly pass is running" in out and f"pid {os.getpid()}" in out
        assert nightly(config, "--dry-run") == 0
        assert "would mask" in capsys.readouterr().out
    assert not (tmp_path / "state" / "catalog.sqlite").exists() and not (tmp_path / "masks").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["nightly"].pop("publish"), "'nightly: publish:' is required"),
        (lambda c: c["nightly"].update(stat="s"), "unknown keys under 'nightly:' ['stat']"),
        (lambda c: c["rmm-dask"].update({"lambda": -1}), "invalid parameters under 'rmm-dask:'"),
        (lambda c: c["nightly"]["detectors"][0].update(detector="NOPE"), "unknown detector 'NOPE'"),
        (lambda c: c["nightly"]["sanity"].update({"bad-fraction": [0.5, 0.1]}), "bad-fraction must be [low, high]"),
    ],
)
def test_bad_configuration_is_one_line(tmp_path, capsys, change, message):
    config = yaml.safe_load(write_config(tmp_path).read_text())
    change(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert nightly(path, "--once") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and message in err, err


def test_crash_after_publication_is_finished_without_redoing_it(tmp_path, capsys):
    """Killed after the version was renamed into place but before current and the catalog
    were updated: the next pass only points and records, even past max-attempts."""
    night_runs(tmp_path / "facility" / "p700000", 1, flat=True)
    config = write_config(tmp_path)
    assert nightly(config, "--once") == 0
    link = tmp_path / "masks" / "AGIPD" / "current"
    link.unlink()  # the state of a crash between versions.publish and versions.switch
    db = sqlite3.connect(tmp_path / "state" / "catalog.sqlite")
    with db:
        db.execute("UPDATE sets SET status = 'running', attempts = 2")  # = max-attempts
        db.execute("DELETE FROM pointers")
    db.close()
    stamp = (tmp_path / "masks" / "AGIPD" / "v0001" / "summary.json").stat().st_mtime_ns
    assert nightly(config, "--once") == 0
    assert "complete from an earlier attempt" in capsys.readouterr().out
    assert current(tmp_path) == "v0001" and versions(tmp_path) == ["v0001"]
    assert (tmp_path / "masks" / "AGIPD" / "v0001" / "summary.json").stat().st_mtime_ns == stamp  # not redone
    sets, events = catalog(tmp_path)
    assert [(s["version"], s["status"], s["attempts"]) for s in sets] == [(1, "published", 3)]
    assert events[-3:] == [(1, "claimed"), (1, "current"), (1, "published")]
    assert main(["nightly", "--config", str(config), "--status"]) == 0
    assert "current -> v0001" in capsys.readouterr().out


def catalog_view(tmp_path: Path) -> tuple[list[tuple], int | None]:
    """The catalog's sets (version, status, runs' names, newly bad) and its pointer, for comparison."""
    db = sqlite3.connect(tmp_path / "state" / "catalog.sqlite")
    sets = [
        (v, status, sorted(Path(p).name for p in json.loads(runs).values()), newly_bad)
        for v, status, runs, newly_bad in db.execute("SELECT version, status, runs, newly_bad FROM sets ORDER BY version")
    ]
    pointer = db.execute("SELECT version FROM pointers WHERE detector = 'AGIPD'").fetchone()
    db.close()
    return sets, None if pointer is None else pointer[0]


@pytest.mark.slow
def test_a_lost_or_corrupt_catalog_is_rebuilt_from_the_published_versions(tmp_path, capsys):
    """Without its catalog the service masks nothing again and current stays where it was;
    a corrupt catalog is kept aside. diff.json names the published stores."""
    facility = tmp_path / "facility" / "p700000"
    config = write_config(tmp_path)
    night_runs(facility, 1, flat=True)
    assert nightly(config, "--once") == 0
    night_runs(facility, 2)
    assert nightly(config, "--once") == 0
    capsys.readouterr()
    published = tmp_path / "masks" / "AGIPD"
    diff_text = (published / "v0002" / "diff.json").read_text()
    diff = json.loads(diff_text)
    assert diff["old"] == str(published / "v0001" / "mask.zarr") and diff["new"] == str(published / "v0002" / "mask.zarr")
    assert ".partial" not in diff_text
    before = catalog_view(tmp_path)
    assert before == ([(1, "published", ["r0001", "r0002", "r0003", "r0004"], None), (2, "published", ["r0001", "r0005", "r0006", "r0007"], 3 * NEW_HOT)], 2)
    stamps = {p: p.stat().st_mtime_ns for p in published.glob("v*/summary.json")}

    def assert_nothing_masked_again():
        out = capsys.readouterr().out
        assert "catalog: 2 published version(s) recorded again from their summary.json" in out
        assert "0 set(s) processed" in out and "mask:" not in out
        assert versions(tmp_path) == ["v0001", "v0002"] and current(tmp_path) == "v0002"
        assert {p: p.stat().st_mtime_ns for p in published.glob("v*/summary.json")} == stamps
        assert catalog_view(tmp_path) == before
        sets, events = catalog(tmp_path)
        assert events == [(1, "rebuilt"), (2, "rebuilt"), (None, "current")]
        assert sets[1]["store"] == str(published / "v0002" / "mask.zarr") and sets[1]["seconds"] > 0
        assert json.loads(sets[1]["parameters"])["lam"] == 8.0 and sets[1]["software"].startswith("rmm-dask ")
        return out

    # lost: deleted with its WAL files
    for p in (tmp_path / "state").glob("catalog.sqlite*"):
        p.unlink()
    assert nightly(config, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "a pass would record 2 published version(s) again" in out and "0 set(s) would be processed" in out
    assert not (tmp_path / "state" / "catalog.sqlite").exists()
    assert nightly(config, "--once") == 0
    assert_nothing_masked_again()

    # corrupt: garbage over the whole file
    garbage = os.urandom(3000)
    (tmp_path / "state" / "catalog.sqlite").write_bytes(garbage)
    assert main(["nightly", "--config", str(config), "--status"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "catalog.sqlite: is not a readable catalog (file is not a database)" in err, err
    assert nightly(config, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "a pass would move it aside" in out and "0 set(s) would be processed" in out
    assert (tmp_path / "state" / "catalog.sqlite").read_bytes() == garbage  # the dry run changed nothing
    assert nightly(config, "--once") == 0
    out = assert_nothing_masked_again()
    (aside,) = (tmp_path / "state").glob("catalog.sqlite.corrupt-*")
    assert aside.read_bytes() == garbage
    assert sum(f"is corrupt (file is not a database): moved to {aside.name}" in line for line in out.splitlines()) == 1

    # the next set gets the next number and becomes current
    night_runs(facility, 3)
    assert nightly(config, "--once") == 0
    assert versions(tmp_path) == ["v0001", "v0002", "v0003"] and current(tmp_path) == "v0003"
    assert json.loads((published / "v0003" / "diff.json").read_text())["against"] == "v0002"


def test_a_damaged_page_is_found_and_the_catalog_moved_aside(tmp_path):
    """Garbage inside a valid database (not only over its header) is found by SQLite's check."""
    from rmm_dask.nightly.catalog import Catalog
    from rmm_dask.nightly.recover import open_catalog

    path = tmp_path / "catalog.sqlite"
    with Catalog(path) as cat:
        for i in range(100):
            cat.claim("AGIPD", f"k{i}", {"dark-high": f"/facility/raw/r{i:04d}" * 20}, parameters={}, software="rmm-dask")
    data = bytearray(path.read_bytes())
    assert len(data) > 5 * 4096
    data[3 * 4096: 3 * 4096 + 2000] = b"\xab" * 2000
    path.write_bytes(bytes(data))
    said = []
    with open_catalog(path, said.append) as cat:
        assert cat.sets() == []  # a new, empty catalog
    (aside,) = tmp_path.glob("catalog.sqlite.corrupt-*")
    assert aside.read_bytes() == bytes(data)
    assert len(said) == 1 and "\n" not in said[0] and f"moved to {aside.name}" in said[0]


def test_a_run_not_ready_stops_the_tree(tmp_path):
    """A set never forms across a run that cannot be read yet: later runs wait for it."""
    from rmm_dask.nightly import read_settings
    from rmm_dask.nightly.discover import find_sets

    facility = tmp_path / "facility" / "p700000"
    night_runs(facility, 1, flat=True)
    night_runs(facility, 2)
    raw = next((facility / "raw" / "r0003").glob("*.h5"))
    with open(raw, "r+b") as f:
        f.truncate(1000)
    config = write_config(tmp_path)
    watch = read_settings(config).detectors[0]
    sets, notes = find_sets(watch, settle=0)
    assert sets == [] and "r0003" in notes[0] and "later runs wait" in notes[0] and "'skip'" in notes[0]
    (tmp_path / "runs.yaml").write_text("3: skip\n")  # the operator gives up on r0003
    data = yaml.safe_load(config.read_text())
    data["nightly"]["detectors"][0]["run-list"] = "runs.yaml"
    config.write_text(yaml.safe_dump(data))
    sets, notes = find_sets(read_settings(config).detectors[0], settle=0)
    assert notes == [] and [sorted(Path(p).name for p in s.runs.values()) for s in sets] == [["r0001", "r0004", "r0005", "r0006"]]


def test_gain_stages_are_taken_in_the_detectors_order(tmp_path):
    from rmm_dask.nightly import read_settings

    config = yaml.safe_load(write_config(tmp_path).read_text())
    config["nightly"]["detectors"][0]["gains"] = ["low", "high"]
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(config))
    assert read_settings(path).detectors[0].gains == ("high", "low")
    config["nightly"]["detectors"][0]["gains"] = ["high", "high"]
    path.write_text(yaml.safe_dump(config))
    assert nightly(path, "--once") == 2
