"""A mask job publishes only what its inputs said from start to end, and holds its output while it runs.

Issue 20: an input file replaced or rewritten while the job computes is refused before the
store is published (the provenance records size, mtime, inode and ctime of every file); a
second job on the same ``--out`` is refused at once, not after computing everything; an
output name as long as the filesystem allows gets temporaries within NAME_MAX.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rmm_dask import cluster, publish
from rmm_dask.cli import main
from rmm_dask.fstree import NAME_MAX
from rmm_dask.store import open_tree

from .cli_errors import one_line_error
from .conftest import mask_args

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def own_runs(runs, tmp_path):
    """A copy of the session's runs that a test may change."""
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    return copy


def during_compute(monkeypatch, action):
    """Run ``action()`` once the job's graph is built and its cluster is up, as it starts computing."""
    real = cluster.compute

    def compute(*collections, **kwargs):
        action()
        return real(*collections, **kwargs)

    monkeypatch.setattr(cluster, "compute", compute)


def dark_file(runs: Path) -> Path:
    return next((runs / "raw" / "r0002").glob("*AGIPD00*.h5"))


def test_provenance_records_each_input_files_fingerprint(store):
    files = open_tree(store).attrs["inputs"]["dark-medium"]["files"]
    assert files and all({"path", "size", "mtime", "mtime_ns", "inode", "ctime_ns"} <= set(f) for f in files)
    for f in files:
        st = os.stat(f["path"])
        assert (f["size"], f["mtime_ns"], f["inode"]) == (st.st_size, st.st_mtime_ns, st.st_ino)


def test_an_input_file_replaced_while_the_job_computes_publishes_nothing(own_runs, tmp_path, monkeypatch, capsys):
    victim = dark_file(own_runs)

    def replace():  # another copy of the file renamed over it: same name, size and even mtime
        other = victim.with_name("new.h5")
        shutil.copy2(victim, other)
        os.replace(other, victim)

    during_compute(monkeypatch, replace)
    out = tmp_path / "m.zarr"
    assert main(mask_args(own_runs, out)) == 2
    one_line_error(capsys, str(victim), "was replaced by another file", "dark-medium", "nothing was published")
    assert sorted(os.listdir(tmp_path)) == ["runs"]  # no store, no temporary


def test_an_input_file_rewritten_in_place_with_its_mtime_set_back_publishes_nothing(own_runs, tmp_path, monkeypatch, capsys):
    victim = dark_file(own_runs)

    def rewrite():
        st = victim.stat()
        with open(victim, "r+b") as f:  # a byte of the file changed, then its times put back (touch -d, rsync -a)
            f.seek(st.st_size // 2)
            byte = f.read(1)
            f.seek(st.st_size // 2)
            f.write(bytes([byte[0] ^ 0xFF]))
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))

    during_compute(monkeypatch, rewrite)
    out = tmp_path / "m.zarr"
    assert main(mask_args(own_runs, out)) == 2
    one_line_error(capsys, str(victim), "status-change time", "nothing was published")
    assert not out.exists()


def test_a_second_job_on_the_same_output_is_refused_before_it_computes(own_runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "m.zarr"
    second = {}

    def run_second():  # while this job computes, the same command from another process
        t0 = time.monotonic()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        second["done"] = subprocess.run([sys.executable, "-m", "rmm_dask", *mask_args(own_runs, out)], env=env,
                                        capture_output=True, text=True, timeout=120)
        second["seconds"] = time.monotonic() - t0

    during_compute(monkeypatch, run_second)
    assert main(mask_args(own_runs, out)) == 0
    done = second["done"]
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "another rmm job (pid" in lines[0] and str(out) in lines[0], done.stderr
    assert "computing" not in done.stdout  # refused before its cluster started
    assert open_tree(out).attrs["end_time"]  # the first job's store, published whole
    assert sorted(os.listdir(tmp_path)) == ["m.zarr", "runs"]


def test_the_held_output_is_released_when_the_job_fails(own_runs, tmp_path, capsys):
    out = tmp_path / "m.zarr"
    # a flat that is no flat (a dark as flat) is refused after the output was held: nothing is left
    args = mask_args(own_runs, out)
    args[args.index("--flat") + 1] = args[args.index("--dark-high") + 1]
    assert main(args) == 2
    one_line_error(capsys)
    assert sorted(os.listdir(tmp_path)) == ["runs"]
    assert main(mask_args(own_runs, out)) == 0  # and the next job may write it


def test_an_output_name_as_long_as_the_filesystem_allows_is_published(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / ("m" * (NAME_MAX - len(".zarr")) + ".zarr")  # 255 bytes: the longest name there is
    names = []
    monkeypatch.setattr(publish, "_HOOK", lambda step: names.extend(os.listdir(tmp_path)) if step == "created" else None)
    assert main(mask_args(runs, out)) == 0
    assert out.is_dir() and open_tree(out).attrs["end_time"]
    temporaries = {n for n in names if n.startswith(".")}
    assert temporaries and all(len(os.fsencode(n)) <= NAME_MAX for n in temporaries), temporaries
    # and a non-ASCII name as long: cut on a byte boundary, its temporaries still recognised as its own
    long_h5 = tmp_path / ("é" * 125 + ".h5")  # 250 + 3 bytes
    assert main(["export", str(out), "--to", "h5", "--out", str(long_h5)]) == 0
    assert long_h5.is_file() and sorted(os.listdir(tmp_path)) == sorted([out.name, long_h5.name])
