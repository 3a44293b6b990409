"""Honest exits: what `rmm` prints and leaves when it is interrupted, starved or given bad input.

Ctrl-C to the whole process group (as a terminal sends it), SIGTERM after the store was
published, outputs that cannot be written (read-only, full, a dangling link), impossible
detector descriptions and parameters, a corrupt nightly catalog, an error inside a worker
task, and a clean successful run. Each asserts the exit code, the one line on stderr, and
what is left on disk.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import zarr

from rmm_dask import cluster
from rmm_dask.cli import main
from rmm_dask.processes import HOST
from rmm_dask.store import STORE_FORMAT

from .cli_errors import one_line_error
from .conftest import mask_args, raw

NOISE = ("Traceback", "KeyboardInterrupt", "Compute Failed", "still alive", "CancelledError", "Task exception")


def _clean(err: str) -> None:
    for word in NOISE:
        assert word not in err, err


@pytest.fixture
def mounted(tmp_path):
    """mount(size, ro=False) -> a directory on a new tmpfs (root only; skip elsewhere); unmounted at the end."""
    mounts = []

    def mount(size: str, ro: bool = False) -> Path:
        where = tmp_path / f"fs{len(mounts)}"
        where.mkdir()
        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("mounting a small tmpfs needs root")
        options = f"size={size}" + (",ro" if ro else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], check=False)


# ------------------------------------------------------------------------------------- signals

@pytest.mark.parametrize("threads_below", ["8GB", "0"], ids=["threads", "processes"])
def test_ctrl_c_to_the_process_group_exits_130_and_leaves_nothing(runs, tmp_path, threads_below):  # noqa: F811
    """SIGINT to the whole group while the store is written: the workers (threads of rmm, as for
    this small job, or worker processes, as for large ones) get it too, and keep quiet."""
    out = tmp_path / "m.zarr"
    env = {**os.environ, "DASK_RMM_DASK__CLUSTER__LOCAL_THREADS_BELOW": threads_below}
    proc = subprocess.Popen([sys.executable, "-m", "rmm_dask", *mask_args(runs, out)], start_new_session=True, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".m.zarr.partial") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=90) == 130
    err = proc.stderr.read()
    assert err == "rmm mask: interrupted; nothing was published\n", err
    assert list(tmp_path.iterdir()) == []
    deadline = time.monotonic() + 10  # the workers are gone with it
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("processes of the job's group are still running")


@pytest.mark.parametrize("where", ["threads", "cluster"])
def test_sigterm_after_publication_says_it_was_published(runs, tmp_path, monkeypatch, capfd, where):
    """SIGTERM while the threads or the cluster close, the store already in place: exit 130, the line names it, it is complete."""
    import concurrent.futures

    out = tmp_path / "m.zarr"
    import dask

    owner, name = (cluster, "_close") if where == "cluster" else (concurrent.futures.ThreadPoolExecutor, "shutdown")
    close = getattr(owner, name)

    def close_after_sigterm(*args, **kwargs):
        if out.is_dir():  # published: the job is over, its threads or cluster are being closed
            os.kill(os.getpid(), signal.SIGTERM)
        close(*args, **kwargs)

    monkeypatch.setattr(owner, name, close_after_sigterm)
    with dask.config.set({"rmm-dask.cluster.dashboard": where == "cluster"}):  # a dashboard needs a LocalCluster
        assert main(mask_args(runs, out)) == 130
    err = capfd.readouterr().err
    assert err.strip() == f"rmm mask: interrupted; {out} was published", err
    root = zarr.open_group(out, mode="r")
    assert root.attrs["format"] == STORE_FORMAT and root["mask"].shape == (1, 3, 2, 512, 128)
    assert [p.name for p in tmp_path.iterdir()] == ["m.zarr"]


def test_one_interrupt_held_during_clean_up_and_a_grace_for_the_next(monkeypatch):
    """The first signal raises (at once, or when a held block ends); the next ones within GRACE do not."""
    from rmm_dask import interrupts

    def kill(sig):
        os.kill(os.getpid(), sig)
        time.sleep(0.01)  # the handler runs in this thread at the next bytecode

    with interrupts.handled():
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            kill(signal.SIGTERM)
        kill(signal.SIGINT)  # within the grace: the clean-up goes on
        monkeypatch.setattr(interrupts, "GRACE", 0.0)
        reached = False
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            with interrupts.held():
                kill(signal.SIGINT)
                reached = True  # held: the block runs to its end
        assert reached
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # pytest's handler again


def test_the_program_ignores_a_second_ctrl_c_while_python_shuts_down(monkeypatch, tmp_path, capsys):
    """Ctrl-C twice: the second may come once main() has returned, while Python shuts down; as the
    program (no argv) an interrupted rmm then ignores SIGINT and SIGTERM, so it still exits 130."""
    from rmm_dask import cli

    def export(args):
        raise KeyboardInterrupt("SIGINT")

    monkeypatch.setattr(cli, "_export", export)
    monkeypatch.setattr(sys, "argv", ["rmm", "export", str(tmp_path / "m.zarr"), "--to", "h5", "--out", str(tmp_path / "m.h5")])
    try:
        assert main() == 130
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)  # ignored
        time.sleep(0.01)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert capsys.readouterr().err == "rmm export: interrupted; nothing was published\n"
    assert main(["export", str(tmp_path / "m.zarr"), "--to", "h5", "--out", str(tmp_path / "m.h5")]) == 130  # called from Python:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are as they were


def test_an_interrupt_python_drops_in_a_callback_is_raised_again(capfd):
    """A signal whose handler runs inside a weakref callback (h5py and Dask run many, e.g. during the
    flat check): Python drops and prints what is raised there, and the job would run to its end.
    It is raised again, unprinted, once the callback is over."""
    import weakref

    from rmm_dask import interrupts

    class Thing:
        pass

    reached = False
    with interrupts.handled():
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            thing = Thing()
            ref = weakref.ref(thing, lambda _: signal.raise_signal(signal.SIGINT))
            del thing  # the callback runs here, and the handler inside it
            reached = True  # the job goes on for a moment ...
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # ... and is interrupted
                time.sleep(0.001)
    assert reached and ref() is None
    assert "Exception ignored" not in capfd.readouterr().err


def test_ctrl_c_while_the_modules_load_exits_130(monkeypatch, capsys):
    """A Ctrl-C right after Enter, while the parser imports the commands' modules: the one line."""
    from rmm_dask import cli

    build = cli.build_parser

    def slow_build():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs here
        return build()

    monkeypatch.setattr(cli, "build_parser", slow_build)
    assert main(["show", "m.zarr"]) == 130
    assert capsys.readouterr().err == "rmm: interrupted; nothing was published\n"


def test_the_command_line_loads_nothing_heavy_before_its_ctrl_c_handler():
    """Until main() installs its handler, a Ctrl-C is Python's KeyboardInterrupt traceback: importing the
    command line (what the `rmm` script does first) loads neither numba nor numpy nor dask."""
    code = "import sys, rmm_dask.cli; print(sorted(m for m in ('numba', 'numpy', 'dask', 'h5py', 'xarray') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_an_interrupt_leaves_no_coroutine_warning(monkeypatch, tmp_path, capfd):
    """SIGTERM while zarr holds a coroutine it has not awaited yet: the one line, not Python's
    "RuntimeWarning: coroutine ... was never awaited" after it."""
    import warnings

    from rmm_dask import cli

    async def open_group():
        pass

    def export(args):
        coroutine = open_group()  # noqa: F841  (what zarr's sync() holds when the signal comes)
        raise KeyboardInterrupt("SIGTERM")

    monkeypatch.setattr(cli, "_export", export)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["export", str(tmp_path / "m.zarr"), "--to", "h5", "--out", str(tmp_path / "m.h5")]) == 130
    assert capfd.readouterr().err == "rmm export: interrupted; nothing was published\n"
    assert not [w for w in caught if "never awaited" in str(w.message)], [str(w.message) for w in caught]


def test_successful_mask_prints_no_traceback_and_no_killed_worker(runs, tmp_path, capfd, monkeypatch):
    """... and leaves nothing in the temporary directory (Dask's scratch space is the cluster's own)."""
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    assert main(mask_args(runs, tmp_path / "m.zarr", "--workers", "2")) == 0
    captured = capfd.readouterr()
    assert "mask store:" in captured.out
    _clean(captured.err)
    assert captured.err == "", captured.err
    assert list(tmp.iterdir()) == []


def test_scratch_space_of_killed_jobs_is_removed_by_the_next(tmp_path, monkeypatch):
    """A job killed with SIGKILL leaves its LocalCluster's scratch directory; the next job removes it
    (this host, its pid gone), and leaves those of live jobs, of other hosts, and links alone."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has now
    dead = tmp_path / f"{cluster.SCRATCH_PREFIX}{HOST}-{gone.pid}-x1y2z3"
    (dead / "dask-scratch-space" / "worker-abc").mkdir(parents=True)
    live = tmp_path / f"{cluster.SCRATCH_PREFIX}{HOST}-{os.getppid()}-a1b2c3"
    live.mkdir()
    other_host = tmp_path / f"{cluster.SCRATCH_PREFIX}elsewhere-{gone.pid}-q1w2e3"
    other_host.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    link = tmp_path / f"{cluster.SCRATCH_PREFIX}{HOST}-{gone.pid}-l1n2k3"
    link.symlink_to(victim)
    with cluster._scratch_space() as scratch:
        assert Path(scratch).parent == tmp_path and Path(scratch).name.startswith(f"{cluster.SCRATCH_PREFIX}{HOST}-{os.getpid()}-")
        assert not dead.exists() and live.is_dir() and other_host.is_dir() and link.is_symlink() and (victim / "keep").exists()
    assert not Path(scratch).exists()


def test_a_scheduler_that_cannot_be_reached_exits_3(runs, tmp_path, capsys):
    import socket

    import dask

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    with dask.config.set({"distributed.comm.timeouts.connect": "2s", "rmm-dask.cluster.allow-insecure": True}):
        assert main(mask_args(runs, tmp_path / "m.zarr", "--cluster", address)) == 3
    one_line_error(capsys, f"cannot reach the scheduler {address}", "nothing was published")
    assert list(tmp_path.iterdir()) == []


def test_error_in_a_worker_task_is_one_line(tmp_path, capfd):
    """A compressed chunk corrupted where only a worker reads it (not in the flat check's frames)."""
    assert main(["synth", "--out", str(tmp_path / "s"), "--modules", "1", "--cells", "2", "--frames", "24", "--compression", "gzip"]) == 0
    victim = next((tmp_path / "s" / "raw" / "r0002").glob("*.h5"))
    with h5py.File(victim, "r") as f:
        name = next(n for n in _datasets(f) if f[n].compression == "gzip" and f[n].ndim == 4)
        chunk = f[name].id.get_chunk_info(f[name].id.get_num_chunks() - 5)
    with open(victim, "r+b") as f:
        f.seek(chunk.byte_offset + chunk.size // 2)
        f.write(b"\xff" * 64)
    capfd.readouterr()
    out = tmp_path / "m.zarr"
    argv = ["mask", *(a for n, g in enumerate(("high", "medium", "low"), 1) for a in (f"--dark-{g}", str(tmp_path / "s" / "raw" / f"r{n:04d}"))),
            "--flat", str(tmp_path / "s" / "raw" / "r0004"), "--out", str(out), "--workers", "1"]
    assert main(argv) == 2
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and victim.name in err and "cannot read" in err, err
    _clean(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def _datasets(f):
    names = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return names


# ------------------------------------------------------------------------------------- outputs

def test_output_directory_not_writable(runs, tmp_path, mounted, capsys):
    where = mounted("1m", ro=True)
    assert main(mask_args(runs, where / "m.zarr")) == 2
    one_line_error(capsys, str(where), "not writable (read-only filesystem)")
    assert os.listdir(where) == []


def test_no_room_for_the_store_is_refused_before_the_cluster_starts(runs, tmp_path, mounted, capsys):
    where = mounted("1m")
    t0 = time.monotonic()
    assert main(mask_args(runs, where / "m.zarr")) == 2
    err = one_line_error(capsys, str(where / "m.zarr"), "no space left on device", "MB free", "nothing was published")
    assert "dashboard" not in capsys.readouterr().out  # no cluster was started
    assert time.monotonic() - t0 < 30, err
    assert os.listdir(where) == []


def test_disk_full_while_writing_is_one_line(runs, tmp_path, mounted, capsys):
    """Room for the estimate's lower bound, not for the compressed store: ENOSPC in a worker task."""
    from rmm_dask.io import open_run
    from rmm_dask.job import LEAST_COMPRESSED, store_nbytes
    from rmm_dask.pipeline import build_mask

    darks = {g: open_run(raw(runs, n)) for n, g in enumerate(("high", "medium", "low"), 1)}
    estimate = store_nbytes(build_mask(darks, open_run(raw(runs, 4))))
    where = mounted(f"{int((LEAST_COMPRESSED + 0.1) * estimate) // 1024}k")
    assert main(mask_args(runs, where / "m.zarr")) == 2
    one_line_error(capsys, str(where / "m.zarr"), "no space left on device", "nothing was published")
    assert os.listdir(where) == []


def test_dangling_symlink_as_output_is_refused(runs, tmp_path, capsys):
    link = tmp_path / "m.zarr"
    link.symlink_to(tmp_path / "elsewhere" / "m.zarr")
    assert main(mask_args(runs, link)) == 2
    one_line_error(capsys, str(link), "is a symbolic link")
    assert [p.name for p in tmp_path.iterdir()] == ["m.zarr"] and link.is_symlink()


# ------------------------------------------------------------------------------------- inputs and options

@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--lambda", "inf"], ["--lambda", "must be a finite number above 0, not inf"]),
        (["--lambda", "nan"], ["--lambda", "not nan"]),
        (["--lambda", "0"], ["--lambda", "not 0"]),
        (["--workers", "0"], ["--workers", "must be at least 1, not 0"]),
        (["--workers", "-2"], ["--workers", "must be at least 1, not -2"]),
    ],
)
def test_impossible_options(runs, tmp_path, capsys, extra, needles):
    assert main(mask_args(runs, tmp_path / "m.zarr", *extra)) == 2
    one_line_error(capsys, *needles)
    assert list(tmp_path.iterdir()) == []


def test_lambda_inf_in_a_config_file(runs, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rmm-dask:\n  lambda: .inf\n")
    assert main(mask_args(runs, tmp_path / "m.zarr", "--config", str(cfg))) == 2
    one_line_error(capsys, "c.yaml", "lambda must be a finite number above 0")
    assert [p.name for p in tmp_path.iterdir()] == ["c.yaml"]


@pytest.mark.parametrize("change, needle", [("cells: 352", "cells must be at least 1, not -3"), ("gain-stages:", "at least one gain stage")])
def test_detector_description_with_impossible_values(runs, tmp_path, capsys, change, needle):
    from rmm_dask import detectors

    lines = (Path(detectors.__file__).with_name("agipd1m.yaml")).read_text().splitlines()
    key = change.split(":")[0] + ":"
    text = "\n".join(("cells: -3" if key == "cells:" else "gain-stages: []") if line.startswith(key) else line for line in lines)
    assert text != "\n".join(lines)
    yaml_file = tmp_path / "det.yaml"
    yaml_file.write_text(text)
    assert main(mask_args(runs, tmp_path / "m.zarr", "--detector", str(yaml_file))) == 2
    one_line_error(capsys, "--detector", "det.yaml", needle)
    assert [p.name for p in tmp_path.iterdir()] == ["det.yaml"]


def test_detector_description_that_is_not_yaml(runs, tmp_path, capsys):
    """PyYAML's message spans four lines: the problem and where it is, on one."""
    yaml_file = tmp_path / "det.yaml"
    yaml_file.write_text("name: [unclosed\n  : :\n")
    assert main(mask_args(runs, tmp_path / "m.zarr", "--detector", str(yaml_file))) == 2
    one_line_error(capsys, "--detector", "det.yaml", "not YAML", "(line 2, column 3)")
    assert [p.name for p in tmp_path.iterdir()] == ["det.yaml"]


def test_corrupt_nightly_catalog_is_one_line(tmp_path, capsys):
    """--status reads a corrupt catalog only to say so: one line, exit 2, the file untouched; a dry run
    says what a pass would do with it (a pass rebuilds it: tests/test_nightly.py)."""
    from .test_nightly import write_config

    config = write_config(tmp_path)
    catalog = tmp_path / "state" / "catalog.sqlite"
    catalog.parent.mkdir()
    catalog.write_bytes(b"not a database: overwritten by accident\n" * 200)
    before = catalog.read_bytes()
    assert main(["nightly", "--config", str(config), "--status"]) == 2
    one_line_error(capsys, str(catalog), "is not a readable catalog (file is not a database)")
    assert catalog.read_bytes() == before and not (tmp_path / "masks").exists()
    assert main(["nightly", "--config", str(config), "--dry-run"]) == 0
    assert "would move it aside and rebuild it" in capsys.readouterr().out
    assert catalog.read_bytes() == before and sorted(p.name for p in catalog.parent.iterdir()) == ["catalog.sqlite"]
