"""`rmm nightly` decides from the runs themselves (issue 20): a run copied in with old modification
times waits until it settled by its ctimes and the reader opens it, a run that changes after its
set was published is masked again, a publish directory among the watched runs is refused, and
paths with a newline forge no log line or --status row."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml
import zarr

from rmm_dask.cli import main
from rmm_dask.nightly import read_settings
from rmm_dask.nightly.catalog import Catalog
from rmm_dask.nightly.discover import CalibrationSet, runs_key, scan_tree
from rmm_dask.nightly.service import match_set
from rmm_dask.synth import SynthConfig, synthesize
from rmm_dask.synth.on_disk import RUN_TYPES
from rmm_dask.synth.write_euxfel import write_raw_run
from rmm_dask.tables import CONTINUATION

from .cli_errors import one_line_error

TWO_DAYS = 2 * 86400
ROLES = {"flat": 1, "dark-high": 2, "dark-medium": 3, "dark-low": 4}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The runs as the DAQ wrote them two days ago: flat r0001 and darks r0002-r0004, 3 sequence files each."""
    src = tmp_path_factory.mktemp("daq")
    calib = synthesize(SynthConfig(modules=1, cells=1, frames=12, flat_frames=12, seed=5))
    runs = {"flat": calib.flat, **{f"dark-{g}": calib.dark[g] for g in ("high", "medium", "low")}}
    for role, number in ROLES.items():
        write_raw_run(
            src / f"r{number:04d}",
            runs[role].analog,
            runs[role].gain,
            run_number=number,
            first_train_id=10000 + number * 100000,
            run_type=RUN_TYPES[role],
            trains_per_file=4,
        )
    old = time.time() - TWO_DAYS
    for f in src.rglob("*.h5"):
        os.utime(f, (old, old))
    return src


def arrive(source: Path, tree: Path, run: str, names=None) -> None:
    """Copy a run's files into the watched tree as ``rsync -a`` does: a hidden temporary each, its
    modification time set back to the source's, renamed into place (so only its ctime is new)."""
    (tree / run).mkdir(parents=True, exist_ok=True)
    for f in sorted((source / run).glob("*.h5")):
        if names is None or f.name in names:
            tmp = tree / run / f".{f.name}.Xa12b"
            shutil.copy2(f, tmp)
            os.rename(tmp, tree / run / f.name)


def write_config(tmp_path: Path, trees: str = "facility/p*/raw", **nightly) -> Path:
    config = {
        "nightly": {
            "state": "state",
            "publish": "masks",
            "settle": 1,
            "workers": 1,
            "sanity": {"bad-fraction": [0.0, 0.2], "max-change": 0.5},
            "detectors": [{"name": "AGIPD", "detector": "AGIPD1M", "trees": [trees]}],
            **nightly,
        }
    }
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def nightly(capsys, config: Path, *extra) -> tuple[int, str]:
    code = main(["nightly", "--config", str(config), *extra])
    return code, capsys.readouterr().out


def unfolded(out: str) -> str:
    """Output with its long lines joined again (they fold at spaces, continuations indented: rmm_dask.tables.folded)."""
    return out.replace("\n" + CONTINUATION, " ")


def settled(seconds: float = 1.05) -> None:
    """Let ``settle: 1`` pass since the last arrival (ctimes cannot be set back)."""
    time.sleep(seconds)


def versions(tmp_path: Path) -> list[str]:
    where = tmp_path / "masks" / "AGIPD"
    return sorted(p.name for p in where.iterdir() if p.name.startswith("v")) if where.is_dir() else []


def names(records) -> list[str]:
    return [Path(r["path"]).name for r in records]


def test_a_run_copied_in_is_masked_once_complete_and_again_when_it_changes(tmp_path, capsys, source):
    tree = tmp_path / "facility" / "p700000" / "raw"
    for run in ("r0001", "r0002", "r0003"):
        arrive(source, tree, run)
    arrive(source, tree, "r0004", {"RAW-R0004-AGIPD00-S00000.h5"})  # 1 of 3 sequence files, mtimes two days old
    r4 = tree / "r0004"

    # the partial run is not used: its file arrived just now, whatever its mtime says
    code, out = nightly(capsys, write_config(tmp_path, settle=600), "--once")
    assert code == 0 and "0 set(s) processed" in out
    assert "less than settle = 600 s; it and later runs wait" in out
    assert not (tmp_path / "masks").exists()

    # the rest arrives; once settled, the complete run is masked: its provenance lists all its files
    arrive(source, tree, "r0004")
    config = write_config(tmp_path)  # settle: 1, not to wait 10 minutes here
    settled()
    code, out = nightly(capsys, config, "--once")
    assert code == 0 and "1 set(s) processed, 0 failed" in out, out
    assert versions(tmp_path) == ["v0001"] and os.readlink(tmp_path / "masks" / "AGIPD" / "current") == "v0001"
    v1 = tmp_path / "masks" / "AGIPD" / "v0001"
    summary = json.loads((v1 / "summary.json").read_text())
    every = [f"RAW-R0004-AGIPD00-S{i:05d}.h5" for i in range(3)]
    assert names(summary["inputs"][str(r4)]) == every and summary["replaces"] is None
    assert names(zarr.open_group(v1 / "mask.zarr", mode="r").attrs["inputs"]["dark-low"]["files"]) == every

    # nothing changed: nothing is masked again
    code, out = nightly(capsys, config, "--once")
    assert code == 0 and "0 set(s) processed" in out and versions(tmp_path) == ["v0001"]

    # a sequence file replaced by another copy (same name, size and mtime): the set is masked again
    victim = r4 / every[1]
    os.rename(victim, r4 / ".old")
    arrive(source, tree, "r0004", {every[1]})
    os.remove(r4 / ".old")
    settled()
    code, out = nightly(capsys, config, "--once")
    assert code == 0 and "1 set(s) processed, 0 failed" in out, out
    line = (
        f"AGIPD: run r0004 changed since v0001 (published): 1 file replaced ({every[1]});"
        " masking the set again as a new version"
    )
    assert line in out
    assert versions(tmp_path) == ["v0001", "v0002"] and os.readlink(tmp_path / "masks" / "AGIPD" / "current") == "v0002"
    summary = json.loads((tmp_path / "masks" / "AGIPD" / "v0002" / "summary.json").read_text())
    assert summary["replaces"] == "v0001" and summary["changes"] == [line.split(": ", 1)[1].split("; masking")[0]]
    assert summary["diff"]["against"] == "v0001" and summary["diff"]["newly_bad"] == 0
    new = next(r for r in summary["inputs"][str(r4)] if r["path"].endswith(every[1]))
    assert new["inode"] == os.stat(victim).st_ino

    code, out = nightly(capsys, config, "--status")
    assert code == 0 and "current -> v0002" in out and "run r0004 changed since v0001 (published)" in unfolded(out)


def test_a_run_with_a_missing_sequence_file_waits_with_the_readers_reason(tmp_path, source):
    """Old ctimes too (the copy stopped long ago): the reader's check of the sequences stops the tree."""
    tree = tmp_path / "facility" / "p700000" / "raw"
    for run in ("r0001", "r0002", "r0003"):
        arrive(source, tree, run)
    arrive(source, tree, "r0004", {"RAW-R0004-AGIPD00-S00000.h5", "RAW-R0004-AGIPD00-S00002.h5"})
    watch = read_settings(write_config(tmp_path)).detectors[0]
    with Catalog(tmp_path / "catalog.sqlite") as memory:
        runs, notes = scan_tree(tree, watch, settle=1, not_before=None, now=time.time() + 60, memory=memory)
        assert [r.path.name for r in runs] == ["r0001", "r0002", "r0003"]
        assert len(notes) == 1 and notes[0].startswith(f"{tree / 'r0004'}: RAW-R0004-AGIPD00-S00001.h5 missing")
        assert "not complete or not readable yet; it and later runs wait" in notes[0]
        # the runs that opened are remembered with their files, and not opened again
        assert all(memory.opened("AGIPD", str(tree / r)) for r in ("r0001", "r0002", "r0003"))
        assert memory.opened("AGIPD", str(tree / "r0004")) is None


def test_a_file_set_seen_changing_between_passes_waits_settle_from_that_pass(tmp_path, source):
    """Even where ctimes said nothing (they are well past settle here), the catalog remembers each
    run's names, sizes and modification times: a run whose files differ from the previous pass waits."""
    tree = tmp_path / "facility" / "p700000" / "raw"
    for run in ("r0001", "r0002", "r0003", "r0004"):
        arrive(source, tree, run)
    watch = read_settings(write_config(tmp_path)).detectors[0]
    t0 = time.time() + 1000
    with Catalog(tmp_path / "catalog.sqlite") as memory:
        runs, notes = scan_tree(tree, watch, settle=100, not_before=None, now=t0, memory=memory)
        assert len(runs) == 4 and notes == []  # first seen: no change seen, ctimes are old enough
        os.remove(tree / "r0003" / "RAW-R0003-AGIPD00-S00002.h5")
        runs, notes = scan_tree(tree, watch, settle=100, not_before=None, now=t0 + 500, memory=memory)
        assert [r.path.name for r in runs] == ["r0001", "r0002"]
        assert notes == [
            f"{tree / 'r0003'}: its files differ from those the previous pass saw, less than settle = 100 s ago;"
            " it and later runs wait"
        ]
        runs, notes = scan_tree(tree, watch, settle=100, not_before=None, now=t0 + 601, memory=memory)
        assert len(runs) == 4 and notes == []


def test_a_catalog_of_an_earlier_version_is_brought_up_to_date_without_masking_again(tmp_path):
    """A published set recorded without its files' fingerprints takes the files as they are now."""
    path = tmp_path / "catalog.sqlite"
    runs = {"dark-high": "/facility/raw/r0002"}
    with Catalog(path) as cat:
        cat.db.execute("ALTER TABLE sets DROP COLUMN inputs")  # the schema of an earlier rmm-dask
        cat.adopt("AGIPD", runs_key(runs), runs, 1, "published", source="v0001/summary.json")
    inputs = {
        "/facility/raw/r0002": [
            {
                "path": "/facility/raw/r0002/RAW-R0002-AGIPD00-S00000.h5",
                "size": 1,
                "mtime": "",
                "mtime_ns": 1,
                "inode": 1,
                "ctime_ns": 1,
            }
        ]
    }
    cset = CalibrationSet("AGIPD", {"high": Path("/facility/raw/r0002")}, None, 0.0, inputs)
    watch = read_settings(write_config(tmp_path)).detectors[0]
    with Catalog(path) as cat:
        row, prior = match_set(cat, watch, cset)
        assert prior is None and (row["version"], row["status"], json.loads(row["inputs"])) == (1, "published", inputs)
        assert cat.get("AGIPD", cset.key)["id"] == row["id"] and [e["event"] for e in cat.events()][-1] == "inputs"


@pytest.mark.parametrize(
    "publish, relation",
    [
        ("facility/p700000/raw", "is"),
        ("facility/p700000/raw/r0002/masks", "is inside"),
        ("facility", "contains"),
        ("link/masks", "is inside, once links are resolved"),
    ],
)
def test_a_publish_directory_among_the_watched_runs_is_refused(tmp_path, capsys, source, publish, relation):
    tree = tmp_path / "facility" / "p700000" / "raw"
    arrive(source, tree, "r0002")
    (tmp_path / "link").symlink_to(tree)
    before = sorted(str(p) for p in (tmp_path / "facility").rglob("*"))
    config = write_config(tmp_path, publish=publish)
    assert main(["nightly", "--config", str(config), "--once"]) == 2
    one_line_error(
        capsys,
        f"rmm nightly: {config}: publish: {tmp_path / publish} {relation}",
        f"the watched tree {tmp_path}/facility/p*/raw of AGIPD",
        "outside every watched tree",
    )
    assert sorted(str(p) for p in (tmp_path / "facility").rglob("*")) == before
    assert not (tmp_path / "state").exists()


def test_a_state_directory_in_the_watched_tree_is_refused(tmp_path, capsys):
    config = write_config(tmp_path, state="facility/p700000/raw/state")
    assert main(["nightly", "--config", str(config), "--dry-run"]) == 2
    one_line_error(capsys, f"state: {tmp_path}/facility/p700000/raw/state is inside the watched tree")


def test_a_newline_in_a_proposal_directory_forges_no_log_line_or_status_row(tmp_path, capsys, source):
    forged = "[2026-01-01T00:00:00+00:00] AGIPD current is v0042, 0 failed"
    tree = tmp_path / "facility" / f"p700000\n{forged}" / "raw"
    for run in ("r0001", "r0002", "r0003", "r0004"):
        arrive(source, tree, run)
    settled()
    code, out = nightly(capsys, write_config(tmp_path), "--once")
    assert code == 0 and "1 set(s) processed, 0 failed" in out, out
    lines = out.splitlines()
    assert lines and all(line.startswith("[20") and not line.startswith(forged) for line in lines), out
    assert sum("p700000\\n[2026-01-01" in line for line in lines) >= 2  # the paths, escaped
    code, out = nightly(capsys, write_config(tmp_path), "--status")
    assert code == 0 and not any(line.startswith(("[2026-01-01", forged[:20])) for line in out.splitlines()), out
    # the set's row, folded to the console's width with indented continuations: the path in it, escaped
    unfolded = out.replace("\n" + CONTINUATION, "").replace(" ", "")
    assert "1:dark-high" in unfolded
    assert f"in {tmp_path}/facility/p700000\\n{forged}/raw".replace(" ", "") in unfolded


def test_the_re_mask_of_an_older_set_leaves_a_later_sets_mask_current(tmp_path):
    """Sets are ordered by their first version: a re-mask of set A (v3) does not hide set B's v2; B's re-mask does."""
    from rmm_dask.nightly.service import _newer_than

    a, b = {"dark-high": "/raw/r0002"}, {"dark-high": "/raw/r0005"}

    def found(runs, files):  # files: the sizes of the run's files (another size: the run changed)
        records = [{"path": f"{runs['dark-high']}/RAW-{i}.h5", "size": size, "mtime_ns": 0, "inode": i, "ctime_ns": 0}
                   for i, size in enumerate(files)]
        return CalibrationSet("AGIPD", {"high": Path(runs["dark-high"])}, None, 0.0, {runs["dark-high"]: records})

    with Catalog(tmp_path / "catalog.sqlite") as cat:
        for cset in (found(a, [1]), found(b, [1]), found(a, [2]), found(b, [2])):
            cat.claim("AGIPD", cset.key, cset.runs, parameters={}, software="rmm-dask", inputs=cset.inputs)
        assert [r["version"] for r in cat.sets()] == [1, 2, 3, 4]
        assert _newer_than(cat, "AGIPD", 2, found(a, [2])) and not _newer_than(cat, "AGIPD", 2, found(b, [2]))
        assert not _newer_than(cat, "AGIPD", 1, found(b, [1])) and not _newer_than(cat, "AGIPD", None, found(a, [2]))


def test_a_chmod_of_raw_files_does_not_make_a_set_new(tmp_path):
    """Raw data made read-only once migrated changes no pixel: same digest; a copy renamed over a file does change it."""
    from rmm_dask.nightly.discover import inputs_digest, run_files

    run = tmp_path / "r0002"
    run.mkdir()
    (run / "RAW-R0002-AGIPD00-S00000.h5").write_bytes(b"x" * 100)
    before = inputs_digest({str(run): run_files(run)})
    os.chmod(run / "RAW-R0002-AGIPD00-S00000.h5", 0o444)
    assert inputs_digest({str(run): run_files(run)}) == before
    (run / "copy").write_bytes(b"x" * 100)
    os.replace(run / "copy", run / "RAW-R0002-AGIPD00-S00000.h5")
    assert inputs_digest({str(run): run_files(run)}) != before
