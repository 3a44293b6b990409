"""The fault campaign of issue 13, redone: the real `rmm` command tried as an operator and an attacker would.

Every case runs `python -m rmm_dask ...` as subprocesses on real files, in a fresh temporary
directory of its own (with its own TMPDIR, so that what a command leaves in temporary space
is seen), and checks what README.md promises:

* the exit code (0 done, 2 bad input or an output that cannot be written, 3 the cluster, 130
  interrupted);
* exactly one line on stderr for an error (naming the file or option), nothing on stderr for a
  success;
* no traceback and no Dask log noise ("Compute Failed", "still alive", ...) in stdout or stderr,
  and no crash by a signal (a segmentation fault);
* no leftovers: `.NAME.partial-*`, `.NAME.old-*`, `dask-scratch-space`, `karabo_data_map.json`,
  anything in the case's TMPDIR, or files beside the output that should not be there;
* no data lost or overwritten: a published output, a link's target, an input run: compared
  before and after (names, types, modes, sizes, mtimes, contents).

A case is "handled" when every check passes; otherwise it counts under traceback, leftovers
and/or data lost (a case can be in several), or under "other" (a wrong exit code, not one line,
a message that does not name the file). One row per case, then the summary table.

    python benchmarks/fault_campaign.py [-k SUBSTRING] [--keep]     (make campaign)

Needs root for the tmpfs cases (a full and a read-only filesystem) and for the cases run as
another user (uid 65534); without root they are reported as skipped. Takes 5-8 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pty
import re
import shutil
import signal
import socket
import sqlite3
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
from pathlib import Path

# the cases of issue 20 live in benchmarks/campaign_*.py and import this module by name: one copy of it
sys.modules.setdefault("fault_campaign", sys.modules[__name__])

ROOT = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()
NOBODY = 65534
#: the user's own numba cache setting: importing rmm_dask here (campaign modules do) sets NUMBA_CACHE_DIR in this
#: process, which the cases' rmm must not inherit (it would skip the checks of the cache the ops cases test)
USER_NUMBA_CACHE = os.environ.get("NUMBA_CACHE_DIR")
NOISE = ("Traceback", "Compute Failed", "still alive", "CancelledError", "Task exception", "KeyboardInterrupt",
         "Segmentation fault", "core dumped", "Fatal Python error")
#: a process that dies of these crashed (a signal such as SIGINT ending it is a wrong exit status)
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}
DASK_LOG = re.compile(r"distributed\.[\w.]+ - (WARNING|ERROR|CRITICAL)")
LEFTOVER = re.compile(r"\.partial-|\.old-|^dask-scratch-space$|^karabo_data_map\.json$")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def dead_pid() -> int:
    """A pid no process has now (the owner of a planted 'dead' leftover)."""
    for pid in range(32000, 1000, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise RuntimeError("no free pid")


def is_root() -> bool:
    return os.geteuid() == 0


# ------------------------------------------------------------------------------------- snapshots

def snapshot(path: Path) -> dict:
    """Everything about a tree that a job may not change: per entry type, mode, size, mtime, content hash, link value."""
    path = Path(path)
    out = {}
    if not os.path.lexists(path):
        return out

    def one(p: Path, rel: str):
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(p))
            return
        entry = [stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_mtime_ns]
        if stat.S_ISREG(st.st_mode):
            h = hashlib.sha1()
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            entry += [st.st_size, h.hexdigest()]
        out[rel] = tuple(entry)
        if stat.S_ISDIR(st.st_mode):
            for child in sorted(os.listdir(p)):
                one(p / child, f"{rel}/{child}")

    one(path, ".")
    return out


def differences(before: dict, after: dict) -> list[str]:
    gone = sorted(set(before) - set(after))
    new = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return [f"gone {k}" for k in gone] + [f"new {k}" for k in new] + [f"changed {k}" for k in changed]


def chmod_writable(path: Path) -> None:
    for p, dirs, _files in os.walk(path):
        os.chmod(p, stat.S_IMODE(os.lstat(p).st_mode) | 0o700)
        for d in dirs:
            q = os.path.join(p, d)
            if not os.path.islink(q):
                os.chmod(q, stat.S_IMODE(os.lstat(q).st_mode) | 0o700)


# ------------------------------------------------------------------------------------- running rmm

class Proc:
    def __init__(self, argv, code, out, err, seconds):
        self.argv, self.code, self.out, self.err, self.seconds = argv, code, out, err, seconds

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


class Live:
    """A running `rmm` in its own process group (as a terminal runs it), its stdout followed line by line."""

    def __init__(self, argv, env, cwd, preexec=None):
        self.argv = argv
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
        self.lines: list[str] = []
        self.err = ""
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        self._e = threading.Thread(target=self._read_err, daemon=True)
        self._e.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def _read_err(self):
        self.err = self.proc.stderr.read()

    def until(self, condition, timeout=120.0) -> bool:
        """Wait for ``condition()`` while the process runs; False if it ended first or the time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            if self.proc.poll() is not None:
                return bool(condition())
            time.sleep(0.02)
        return False

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def signal_group(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def finish(self, timeout=120.0) -> Proc:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            code = self.proc.wait()
        self._t.join(5)
        self._e.join(5)
        return Proc(self.argv, code, "".join(self.lines), self.err, time.monotonic() - self.t0)

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
            return True
        except ProcessLookupError:
            return False


class Case:
    """One case: a fresh directory, its own TMPDIR, and what went wrong."""

    def __init__(self, name: str, section: str, title: str, work: Path, shared: Shared):
        self.name, self.section, self.title, self.shared = name, section, title, shared
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
        self.tmp = self.dir / "TMP"
        self.tmp.mkdir()
        self.procs: list[Proc] = []
        self.problems: list[str] = []  #: other: exit codes, lines, messages
        self.leftovers: list[str] = []
        self.lost: list[str] = []
        self.crash: list[str] = []  #: tracebacks, Dask log noise, signals
        self.planted: set[str] = set()  #: names the case planted itself (not leftovers)
        self.mounts: list[Path] = []
        self.skipped: str | None = None
        self.allow_err: list[str] = []  #: stderr lines (substrings) a successful command may print
        self.exits: list[str] = []
        self.notes: list[str] = []  #: observations that are no failure

    # ---- running
    def env(self, **extra) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"
        env["TMPDIR"] = str(self.tmp)
        env.pop("COLUMNS", None)
        env.pop("NUMBA_CACHE_DIR", None)
        if USER_NUMBA_CACHE is not None:
            env["NUMBA_CACHE_DIR"] = USER_NUMBA_CACHE
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def argv(self, args) -> list[str]:
        return [sys.executable, "-m", "rmm_dask", *map(str, args)]

    def rmm(self, *args, expect: int | None = None, needles=(), env=None, timeout=300, wrap=()) -> Proc:
        argv = self.argv(args)
        t0 = time.monotonic()
        try:
            done = subprocess.run([*wrap, *argv], env=env or self.env(), cwd=self.dir, capture_output=True, text=True,
                                  timeout=timeout)
            proc = Proc(argv, done.returncode, done.stdout, done.stderr, time.monotonic() - t0)
        except subprocess.TimeoutExpired as err:
            proc = Proc(argv, "timeout", err.stdout or "", err.stderr or "", time.monotonic() - t0)
        return self.judge(proc, expect, needles)

    def spawn(self, *args, env=None) -> Live:
        return Live(self.argv(args), env or self.env(), self.dir)

    def judge(self, proc: Proc, expect: int | tuple | None, needles=()) -> Proc:
        """Record ``proc`` and check its exit code, its stderr (one line for an error, none for success) and noise."""
        self.procs.append(proc)
        short = " ".join(Path(a).name if "/" in a else a for a in proc.argv[3:])
        self.exits.append(str(proc.code))
        text = proc.out + proc.err
        for word in NOISE:
            if word in text:
                at = text.index(word)
                start = text.rfind("\n", 0, max(0, text.rfind("\n", 0, at))) + 1  # from the line before
                excerpt = " | ".join(line.strip() for line in text[start:].splitlines()[:14] if line.strip())
                self.crash.append(f"{word!r} in the output of `rmm {short}`: {excerpt}")
                break
        if DASK_LOG.search(text):
            self.crash.append(f"Dask log lines in the output of `rmm {short}`")
        if isinstance(proc.code, int) and -proc.code in CRASH_SIGNALS:
            self.crash.append(f"`rmm {short}` crashed: {signal.Signals(-proc.code).name}")
        if expect is None:
            return proc
        allowed = expect if isinstance(expect, tuple) else (expect,)
        if proc.code not in allowed:
            self.problems.append(f"`rmm {short}` exited {proc.code}, README promises {'/'.join(map(str, allowed))}"
                                 + (f": {proc.err_lines[-1][:200]}" if proc.err_lines else ""))
        lines = [line for line in proc.err_lines if not any(a in line for a in self.allow_err)]
        if proc.code == 0:
            if lines:
                self.problems.append(f"`rmm {short}` succeeded but printed on stderr: {lines[0][:200]!r}" + (f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""))
        elif proc.code in allowed:
            if len(lines) != 1:
                self.problems.append(f"`rmm {short}`: {len(lines)} lines on stderr, not one: {' | '.join(lines)[:300]!r}")
            else:
                for needle in needles:
                    if needle not in lines[0]:
                        self.problems.append(f"`rmm {short}`: the line does not say {needle!r}: {lines[0][:250]!r}")
        return proc

    # ---- checks
    def fail(self, text: str) -> None:
        self.problems.append(text)

    def expect(self, ok: bool, text: str) -> bool:
        if not ok:
            self.problems.append(text)
        return ok

    def same(self, before: dict, path: Path, what: str) -> None:
        diff = differences(before, snapshot(path))
        if diff:
            self.lost.append(f"{what} changed: {', '.join(diff[:4])}" + (f" (+{len(diff) - 4})" if len(diff) > 4 else ""))

    def only(self, directory: Path, names, what="") -> None:
        """Nothing beside the expected entries in ``directory`` (leftovers, files outside the target)."""
        have = sorted(os.listdir(directory)) if directory.is_dir() else []
        extra = [n for n in have if n not in set(names) and n not in self.planted]
        if extra:
            self.leftovers.append(f"left in {directory.name}/{what}: {', '.join(extra[:5])}")

    def plant(self, path: Path) -> Path:
        self.planted.add(path.name)
        return path

    def scan_leftovers(self) -> None:
        """Any .partial-/.old-/dask-scratch-space/karabo_data_map.json in the case, anything in its TMPDIR."""
        for p, dirs, files in os.walk(self.dir):
            if Path(p) == self.tmp:
                continue
            for n in dirs + files:
                if LEFTOVER.search(n) and n not in self.planted:
                    msg = f"{os.path.relpath(os.path.join(p, n), self.dir)}"
                    if not any(msg in x for x in self.leftovers):
                        self.leftovers.append(msg)
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(p, d)) and d != "TMP"]
        if self.tmp.exists() and os.listdir(self.tmp):
            self.leftovers.append(f"in TMPDIR: {', '.join(sorted(os.listdir(self.tmp))[:5])}")

    # ---- mounts (root only)
    def tmpfs(self, size: str, ro: bool = False, inodes: int | None = None) -> Path | None:
        where = self.dir / f"fs{len(self.mounts)}"
        where.mkdir()
        if not is_root():
            self.skipped = "mounting a tmpfs needs root"
            return None
        opts = f"size={size}" + (",ro" if ro else "") + (f",nr_inodes={inodes}" if inodes else "")  # the root takes one inode
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
        if done.returncode != 0:
            self.skipped = f"cannot mount a tmpfs: {done.stderr.strip()}"
            return None
        self.mounts.append(where)
        return where

    def close(self, keep: bool) -> None:
        for where in self.mounts:
            subprocess.run(["umount", "-l", str(where)], check=False)
        if not keep:
            chmod_writable(self.dir)
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- verdict
    def kinds(self) -> list[str]:
        return [k for k, v in (("traceback", self.crash), ("leftovers", self.leftovers), ("data lost", self.lost), ("other", self.problems)) if v]


#: root without the capabilities that let it write anywhere: a directory's mode binds it as any user
NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")


# ------------------------------------------------------------------------------------- shared inputs

SMALL_YAML = """\
name: SMALL64
modules: 1
module-shape: [64, 64]
asic-shape: [32, 32]
gain-stages: [high]
gain: none
cells: 1
counting: false
edge-width: 1
dataset: /data
"""

FACILITY_SNIPPET = """
import sys
from rmm_dask.synth.on_disk import write_synthetic
from rmm_dask.synth import SynthConfig, synthesize
calib = synthesize(SynthConfig(modules=1, cells=1, frames=32, seed=5))
write_synthetic(calib, sys.argv[1], run_numbers={"flat": 1, "dark-high": 2, "dark-medium": 3, "dark-low": 4}, truth=None)
"""


class Shared:
    """Inputs built once (read-only for the cases) and published outputs the cases copy."""

    def __init__(self, base: Path):
        self.base = base
        self.case = Case("setup", "setup", "shared inputs", base, self)

    def build(self) -> None:
        c = self.case
        b = self.base
        self.s = b / "s"  # AGIPD, 1 module, 2 cells, 24 frames: EuXFEL RAW runs r0001-r0004
        c.rmm("synth", "--out", self.s, "--modules", 1, "--cells", 2, "--frames", 24, "--seed", 2, expect=0)
        self.s3 = b / "s3"  # 3 cells: runs that do not match
        c.rmm("synth", "--out", self.s3, "--modules", 1, "--cells", 3, "--frames", 12, expect=0)
        self.s2m = b / "s2m"  # 2 modules
        c.rmm("synth", "--out", self.s2m, "--modules", 2, "--cells", 2, "--frames", 12, expect=0)
        self.gz = b / "gz"  # gzip-compressed, a chunk only a worker reads corrupted
        c.rmm("synth", "--out", self.gz, "--modules", 1, "--cells", 2, "--frames", 24, "--compression", "gzip", expect=0)
        self.gz_victim = self._corrupt_chunk(self.gz / "raw" / "r0002")
        self.store = b / "pub" / "m.zarr"
        self.report = b / "pub" / "report.html"
        self.store.parent.mkdir()
        self.setup_mask = c.rmm(*self.mask_args(self.store), "--report", self.report, expect=0)
        self.small = b / "small.yaml"
        self.small.write_text(SMALL_YAML)
        self._stacks(b / "stacks")
        self.facility = b / "facility" / "p700000"
        done = subprocess.run([sys.executable, "-c", FACILITY_SNIPPET, str(self.facility)], env=c.env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        self.inputs_before = {p: snapshot(p) for p in (self.s, self.s3, self.s2m, self.gz, b / "stacks", self.facility)}
        if c.kinds():
            raise RuntimeError(f"setup failed: {c.problems + c.crash}")

    def raw(self, n: int, where: Path | None = None) -> Path:
        return (where or self.s) / "raw" / f"r{n:04d}"

    def mask_args(self, out, *, runs: Path | None = None, flat: Path | None = None, low: Path | None = None,
                  high: Path | None = None, workers=1) -> list:
        """`rmm mask` of the runs r0001-r0004 of ``runs`` (default: the shared set), some replaced."""
        return ["mask", "--dark-high", high or self.raw(1, runs), "--dark-medium", self.raw(2, runs), "--dark-low", low or self.raw(3, runs),
                "--flat", flat or self.raw(4, runs), "--out", out, "--workers", workers]

    def _corrupt_chunk(self, run: Path) -> Path:
        import h5py

        victim = next(run.glob("*.h5"))
        names = []
        with h5py.File(victim, "r") as f:
            f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and o.compression == "gzip" and o.ndim == 4 else None)
            ds = f[names[0]]
            chunk = ds.id.get_chunk_info(ds.id.get_num_chunks() - 5)
        with open(victim, "r+b") as f:
            f.seek(chunk.byte_offset + chunk.size // 2)
            f.write(b"\xff" * 64)
        return victim

    def _stacks(self, d: Path) -> None:
        """HDF5 stacks (frames, 64, 64) of the SMALL64 detector: good, bad shapes and types, NaNs, parts."""
        import h5py
        import numpy as np

        rng = np.random.default_rng(7)
        d.mkdir()

        def frames(n, level=1000.0, dtype=np.uint16, shape=(64, 64)):
            return (level + 5 * rng.standard_normal((n, *shape))).round().astype(dtype)

        def write(path: Path, data):
            path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(path, "w") as f:
                f["data"] = data

        write(d / "dark.h5", frames(40))
        write(d / "flat.h5", frames(40, level=1400.0))
        write(d / "shape.h5", frames(20, shape=(63, 64)))
        write(d / "complex.h5", frames(20).astype(np.complex64))
        nan = frames(40, dtype=np.float32)
        nan[:, 10:12, 20:25] = np.nan  # 10 pixels never valid
        write(d / "nan.h5", nan)
        write(d / "one.h5", frames(1))
        write(d / "gap" / "scan_part00000.nxs", frames(15))
        write(d / "gap" / "scan_part00002.nxs", frames(15))
        write(d / "mixed" / "a_part00000.nxs", frames(15))
        write(d / "mixed" / "b_part00000.nxs", frames(15))
        write(d / "dtypes" / "scan_part00000.nxs", frames(15))
        write(d / "dtypes" / "scan_part00001.nxs", frames(15, dtype=np.int32))
        self.nan_pixels = [(y, x) for y in (10, 11) for x in range(20, 25)]


# ------------------------------------------------------------------------------------- the cases

CASES: list[tuple[str, str, str, object]] = []


def case(section: str, title: str):
    def register(fn):
        CASES.append((fn.__name__.removeprefix("case_"), section, title, fn))
        return fn
    return register


def copy_store(c: Case, name="m.zarr", where: Path | None = None) -> Path:
    out = (where or c.dir) / name
    shutil.copytree(c.shared.store, out, symlinks=True)
    return out


def victim_file(c: Case, name="victim.txt") -> tuple[Path, dict]:
    v = c.dir / "elsewhere" / name
    v.parent.mkdir(exist_ok=True)
    v.write_text("someone else's data\n")
    return v, snapshot(v.parent)


def victim_dir(c: Case) -> tuple[Path, dict]:
    v = c.dir / "elsewhere" / "victim"
    (v / "sub").mkdir(parents=True)
    (v / "a.txt").write_text("a\n")
    (v / "sub" / "b.txt").write_text("b\n")
    os.chmod(v, 0o755)
    return v, snapshot(v.parent)


def is_store(path: Path) -> bool:
    try:
        import zarr

        root = zarr.open_group(str(path), mode="r")
        return root["mask"].shape[0] >= 1 and "end_time" in root.attrs
    except Exception:
        return False


def is_h5(path: Path) -> bool:
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return len(f.keys()) > 0
    except Exception:
        return False


def ro_published(c: Case, path: Path) -> None:
    """Published outputs are read-only (README: files r--r--r--, directories r-xr-xr-x)."""
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        if os.lstat(p).st_mode & 0o222:
            c.fail(f"{os.path.relpath(p, c.dir)} is writable (mode {stat.S_IMODE(os.lstat(p).st_mode):o}), README says published outputs are read-only")
            return


# ---- 1. bad inputs ------------------------------------------------------------------------------

@case("inputs", "a run that does not exist")
def case_missing_run(c):
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr", high=c.dir / "r0099"), expect=2, needles=("r0099", "no such file"))
    c.only(c.dir, ["TMP"])


@case("inputs", "a truncated RAW file")
def case_truncated_hdf5(c):
    run = c.dir / "r0001"
    shutil.copytree(c.shared.raw(1), run)
    f = next(run.glob("*.h5"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr", high=run), expect=2, needles=(f.name,))
    c.only(c.dir, ["TMP", "r0001"])


@case("inputs", "a RAW file overwritten with garbage")
def case_corrupt_hdf5(c):
    run = c.dir / "r0001"
    shutil.copytree(c.shared.raw(1), run)
    f = next(run.glob("*.h5"))
    f.write_bytes(os.urandom(f.stat().st_size // 10))
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr", high=run), expect=2, needles=(f.name,))
    c.only(c.dir, ["TMP", "r0001"])


@case("inputs", "an empty run directory")
def case_empty_run_dir(c):
    (c.dir / "r0001").mkdir()
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr", high=c.dir / "r0001"), expect=2, needles=("r0001",))
    c.only(c.dir, ["TMP", "r0001"])


@case("inputs", "a glob pattern that matches nothing")
def case_glob_matches_nothing(c):
    c.rmm("mask", "--dark-high", str(c.dir / "raw" / "scan_*.h5"), "--out", c.dir / "m.zarr", "--workers", 1,
          expect=2, needles=("scan_*.h5",))
    c.only(c.dir, ["TMP"])


@case("inputs", "a corrupt compressed chunk only a worker reads")
def case_corrupt_chunk_in_worker(c):
    gz = c.shared.gz
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr", runs=gz), expect=2, needles=(c.shared.gz_victim.name, "cannot read"))
    c.only(c.dir, ["TMP"])


@case("inputs", "runs with different numbers of memory cells")
def case_mismatched_cells(c):
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr", low=c.shared.raw(3, c.shared.s3)), expect=2, needles=("r0003", "cells"))
    c.only(c.dir, ["TMP"])


@case("inputs", "runs with different modules")
def case_mismatched_modules(c):
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr", low=c.shared.raw(3, c.shared.s2m)), expect=2, needles=("module",))
    c.only(c.dir, ["TMP"])


@case("inputs", "a dark run given as flat")
def case_dark_as_flat(c):
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr", flat=c.shared.raw(2)), expect=2, needles=("r0002", "not a flat"))
    c.only(c.dir, ["TMP"])


def stack_mask(c, dark, *extra, expect=2, needles=()):
    return c.rmm("mask", "--detector", c.shared.small, "--dark-high", dark, *extra, "--out", c.dir / "m.zarr", "--workers", 1,
                 expect=expect, needles=needles)


def bad_stack(c, name: str, needles):
    stack_mask(c, c.shared.base / "stacks" / name, needles=needles)
    c.only(c.dir, ["TMP"])


#: (case, title, the stack (a file or directory of parts under stacks/), what the one line names)
BAD_STACKS = (
    ("stack_wrong_shape", "an HDF5 stack of the wrong frame shape", "shape.h5", ("shape.h5", "shape")),
    ("stack_wrong_dtype", "an HDF5 stack of complex numbers", "complex.h5", ("complex.h5", "complex")),
    ("too_few_frames", "a run of one frame (too few)", "one.h5", ("one.h5", "frame")),
    ("parts_with_gap", "a directory of part files with a gap (part 1 missing)", "gap", ("1",)),
    ("mixed_acquisitions", "files of two acquisitions in one directory", "mixed",
     ("a_part00000.nxs", "b_part00000.nxs")),
    ("parts_of_different_dtype", "parts of one series with different dtypes", "dtypes",
     ("scan_part00000.nxs", "scan_part00001.nxs")),
)
for _name, _title, _stack, _needles in BAD_STACKS:
    CASES.append((_name, "inputs", _title, lambda c, stack=_stack, needles=_needles: bad_stack(c, stack, needles)))


@case("inputs", "a float stack with NaN pixels: masked NO_DATA")
def case_stack_nans(c):
    p = stack_mask(c, c.shared.base / "stacks" / "nan.h5", expect=0)
    if p.code == 0:
        import zarr

        mask = zarr.open_group(str(c.dir / "m.zarr"), mode="r")["mask"][:]
        bad = [(y, x) for y, x in c.shared.nan_pixels if not mask[0, 0, 0, y, x] & 128]
        c.expect(not bad, f"NaN pixels not NO_DATA: {bad}")
        good = int((mask[0, 0, 0] & 128).astype(bool).sum())
        c.expect(good == len(c.shared.nan_pixels), f"{good} pixels NO_DATA, {len(c.shared.nan_pixels)} planted")
    c.only(c.dir, ["TMP", "m.zarr"])


def bad_detector(c, text: str, needles):
    yaml_path = c.dir / "det.yaml"
    yaml_path.write_text(text)
    c.rmm("mask", "--detector", yaml_path, "--dark-high", c.shared.base / "stacks" / "dark.h5", "--out", c.dir / "m.zarr",
          "--workers", 1, expect=2, needles=("det.yaml", *needles))
    c.only(c.dir, ["TMP", "det.yaml"])


#: (case, title, the detector YAML, what the one line names besides the file)
BAD_DETECTORS = (
    ("detector_negative_cells", "detector YAML with negative cells", SMALL_YAML.replace("cells: 1", "cells: -4"), ("cells",)),
    ("detector_no_gain_stages", "detector YAML without gain stages", SMALL_YAML.replace("gain-stages: [high]", "gain-stages: []"), ("gain stage",)),
    ("detector_zero_shape", "detector YAML with a module of 0 x 64 pixels", SMALL_YAML.replace("module-shape: [64, 64]", "module-shape: [0, 64]"), ()),
    ("detector_not_yaml", "detector YAML that is not YAML", "name: [unclosed\n  : :\n", ()),
)
for _name, _title, _text, _needles in BAD_DETECTORS:
    CASES.append((_name, "inputs", _title, lambda c, text=_text, needles=_needles: bad_detector(c, text, needles)))


def bad_option(c, *extra, needles):
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr"), *extra, expect=2, needles=needles)
    c.only(c.dir, ["TMP"])


#: (case, title, the options given, what the one line names)
BAD_OPTIONS = (
    ("lambda_inf", "--lambda inf", ("--lambda", "inf"), ("--lambda",)),
    ("lambda_nan", "--lambda nan", ("--lambda", "nan"), ("--lambda",)),
    ("lambda_zero", "--lambda 0", ("--lambda", "0"), ("--lambda",)),
    ("workers_zero", "--workers 0", ("--workers", "0"), ("--workers",)),
    ("workers_negative", "--workers -1", ("--workers", "-1"), ("--workers",)),
    ("cells_per_chunk_zero", "--cells-per-chunk 0", ("--cells-per-chunk", "0"), ("--cells-per-chunk",)),
    ("unknown_detector", "an unknown --detector name", ("--detector", "AGIPD9M"), ("AGIPD9M",)),
)
for _name, _title, _extra, _needles in BAD_OPTIONS:
    CASES.append((_name, "inputs", _title, lambda c, extra=_extra, needles=_needles: bad_option(c, *extra, needles=needles)))


@case("inputs", "lambda: .inf in a --config file")
def case_lambda_inf_in_config(c):
    (c.dir / "c.yaml").write_text("rmm-dask:\n  lambda: .inf\n")
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr"), "--config", c.dir / "c.yaml", expect=2, needles=("c.yaml",))
    c.only(c.dir, ["TMP", "c.yaml"])


@case("inputs", "a misspelt key in a --config file")
def case_config_unknown_key(c):
    (c.dir / "c.yaml").write_text("rmm-dask:\n  lamda: 7\n")
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr"), "--config", c.dir / "c.yaml", expect=2, needles=("c.yaml", "lamda"))
    c.only(c.dir, ["TMP", "c.yaml"])


@case("inputs", "--flat-stage low without a low-gain dark")
def case_flat_stage_without_dark(c):
    c.rmm("mask", "--dark-high", c.shared.raw(1), "--flat", c.shared.raw(4), "--flat-stage", "low", "--out", c.dir / "m.zarr",
          expect=2, needles=("--flat-stage",))
    c.only(c.dir, ["TMP"])


@case("inputs", "a --user-mask file that does not exist")
def case_user_mask_missing(c):
    bad_option(c, "--user-mask", str(c.dir / "beamstop.npy"), needles=("beamstop.npy",))


@case("inputs", "--cluster tcp:// address where no scheduler listens (insecure allowed)")
def case_cluster_unreachable(c):
    env = c.env(DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="3s", DASK_RMM_DASK__CLUSTER__ALLOW_INSECURE="True")
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr"), "--cluster", "tcp://127.0.0.1:9", expect=3, env=env, timeout=120)
    c.only(c.dir, ["TMP"])


@case("inputs", "export of a directory that is not a store")
def case_export_not_a_store(c):
    (c.dir / "junk").mkdir()
    (c.dir / "junk" / "zarr.json").write_text("{not json")
    c.rmm("export", c.dir / "junk", "--to", "h5", "--out", c.dir / "m.h5", expect=2, needles=("junk",))
    c.only(c.dir, ["TMP", "junk"])


@case("inputs", "show and diff of a store that does not exist")
def case_show_diff_missing_store(c):
    c.rmm("show", c.dir / "nope.zarr", expect=2, needles=("nope.zarr",))
    c.rmm("diff", c.shared.store, c.dir / "nope.zarr", expect=2, needles=("nope.zarr",))
    c.only(c.dir, ["TMP"])


# ---- 2. outputs ---------------------------------------------------------------------------------

EXPORT_NAMES = {"h5": "m.h5", "crystfel": "m.crystfel.h5", "nexus": "m.nxs", "euxfel": "m.euxfel.h5", "cheetah": "m.cheetah.h5"}


def existing_refused(c, make, args, names):
    """``make()`` plants an existing output; the command must refuse it and leave it exactly as it was."""
    target = make()
    before = snapshot(c.dir)
    c.rmm(*args, expect=2, needles=(target.name, "exists"))
    c.same(before, c.dir, "the existing output (or its directory)")


@case("outputs", "mask --out an existing store, without --overwrite")
def case_existing_store(c):
    existing_refused(c, lambda: copy_store(c), c.shared.mask_args(c.dir / "m.zarr"), ["m.zarr"])


@case("outputs", "mask --report an existing file, without --overwrite")
def case_existing_report(c):
    def make():
        (c.dir / "report.html").write_text("<html>yesterday's report</html>")
        return c.dir / "report.html"
    existing_refused(c, make, [*c.shared.mask_args(c.dir / "m.zarr"), "--report", c.dir / "report.html"], ["report.html"])


def _existing_export(fmt):
    def run(c):
        store = c.shared.store

        def make():
            t = c.dir / EXPORT_NAMES[fmt]
            t.write_text("an earlier export\n")
            return t
        existing_refused(c, make, ["export", store, "--to", fmt, "--out", c.dir / EXPORT_NAMES[fmt]], [EXPORT_NAMES[fmt]])
    run.__name__ = f"case_existing_export_{fmt}"
    return run


for _fmt in EXPORT_NAMES:
    case("outputs", f"export --to {_fmt} over an existing file, without --overwrite")(_existing_export(_fmt))


@case("outputs", "export --to crystfel where only its geometry file (.geom) exists")
def case_existing_crystfel_geom(c):
    def make():
        t = c.dir / "m.crystfel.geom"  # FILE with the suffix .geom
        t.write_text("; my edited geometry lines\n")
        return t
    existing_refused(c, make, ["export", c.shared.store, "--to", "crystfel", "--out", c.dir / "m.crystfel.h5"], [])


@case("outputs", "diff --json over an existing file, without --overwrite")
def case_existing_diff_json(c):
    def make():
        (c.dir / "d.json").write_text('{"earlier": true}\n')
        return c.dir / "d.json"
    existing_refused(c, make, ["diff", c.shared.store, c.shared.store, "--json", c.dir / "d.json"], [])


@case("outputs", "show --png over an existing directory, without --overwrite")
def case_existing_show_png(c):
    def make():
        (c.dir / "png").mkdir()
        (c.dir / "png" / "mine.png").write_bytes(b"\x89PNG mine")
        return c.dir / "png"
    existing_refused(c, make, ["show", c.shared.store, "--png", c.dir / "png"], [])


@case("outputs", "show --html over an existing file, without --overwrite")
def case_existing_show_html(c):
    def make():
        (c.dir / "r.html").write_text("<html>mine</html>")
        return c.dir / "r.html"
    existing_refused(c, make, ["show", c.shared.store, "--html", c.dir / "r.html"], [])


@case("outputs", "mask --out an existing regular file, with --overwrite")
def case_overwrite_file_with_store(c):
    (c.dir / "m.zarr").write_text("not a store: someone's notes\n")
    before = snapshot(c.dir / "m.zarr")
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr"), "--overwrite", expect=2, needles=("m.zarr", "file"))
    c.same(before, c.dir / "m.zarr", "the file at the store's name")
    c.only(c.dir, ["TMP", "m.zarr"])


@case("outputs", "synth and demo --out into a directory that is not empty")
def case_synth_demo_not_empty(c):
    (c.dir / "out").mkdir()
    (c.dir / "out" / "mine.txt").write_text("mine\n")
    before = snapshot(c.dir / "out")
    c.rmm("synth", "--out", c.dir / "out", expect=2, needles=("out", "not empty"))
    c.rmm("demo", "--out", c.dir / "out", expect=2, needles=("out", "not empty"))
    c.same(before, c.dir / "out", "the directory given to --out")


@case("outputs", "mask --overwrite an existing store and report")
def case_overwrite_store(c):
    old = copy_store(c)
    (c.dir / "report.html").write_text("<html>old</html>")
    stamp = json.loads((old / "zarr.json").read_text())["attributes"]["end_time"] if (old / "zarr.json").exists() else None
    c.rmm(*c.shared.mask_args(old), "--report", c.dir / "report.html", "--overwrite", expect=0)
    c.expect(is_store(old), "no complete store after --overwrite")
    if stamp is not None and (old / "zarr.json").exists():
        c.expect(json.loads((old / "zarr.json").read_text())["attributes"]["end_time"] != stamp, "the store was not replaced")
    c.expect("old" not in (c.dir / "report.html").read_text()[:100], "the report was not replaced")
    ro_published(c, old)
    c.only(c.dir, ["TMP", "m.zarr", "report.html"])


@case("outputs", "export --overwrite an existing file")
def case_overwrite_export(c):
    t = c.dir / "m.h5"
    t.write_text("an earlier export\n")
    c.rmm("export", c.shared.store, "--to", "h5", "--out", t, "--overwrite", expect=0)
    c.expect(is_h5(t), "no HDF5 export after --overwrite")
    ro_published(c, t)
    c.only(c.dir, ["TMP", "m.h5"])


@case("outputs", "diff --json --overwrite and show --html --overwrite")
def case_overwrite_diff_and_html(c):
    (c.dir / "d.json").write_text("{}")
    (c.dir / "r.html").write_text("old")
    c.rmm("diff", c.shared.store, c.shared.store, "--json", c.dir / "d.json", "--overwrite", expect=0)
    c.rmm("show", c.shared.store, "--html", c.dir / "r.html", "--overwrite", expect=0)
    c.expect("newly_bad" in (c.dir / "d.json").read_text(), "diff.json not replaced")
    c.expect((c.dir / "r.html").stat().st_size > 1000, "report not replaced")
    c.only(c.dir, ["TMP", "d.json", "r.html"])


@case("outputs", "show --png --overwrite an existing directory")
def case_overwrite_png(c):
    (c.dir / "png").mkdir()
    (c.dir / "png" / "old.png").write_bytes(b"old")
    c.rmm("show", c.shared.store, "--png", c.dir / "png", "--overwrite", expect=0)
    names = sorted(os.listdir(c.dir / "png"))
    c.expect("old.png" not in names and "detector.png" in names, f"png dir holds {names}")
    ro_published(c, c.dir / "png")
    c.only(c.dir, ["TMP", "png"])


def planted_link(c, args, link_name: str, *, dangling=False, directory=False, expect=2, needles=("symbolic link",)):
    if dangling:
        victim, before = c.dir / "elsewhere" / "gone", {}
        (c.dir / "elsewhere").mkdir()
        before = snapshot(c.dir / "elsewhere")
    else:
        victim, before = victim_dir(c) if directory else victim_file(c)
    link = c.dir / link_name
    link.symlink_to(victim)
    c.rmm(*args, expect=expect, needles=needles)
    c.same(before, c.dir / "elsewhere", "the link's target (or where a dangling link points)")
    if not (link.is_symlink() and os.readlink(link) == str(victim)):
        c.lost.append(f"the link {link_name} was replaced or changed")
    c.only(c.dir, ["TMP", link_name, "elsewhere"])


@case("outputs", "a symlink to another directory at the store's name")
def case_link_at_store(c):
    planted_link(c, c.shared.mask_args(c.dir / "m.zarr"), "m.zarr", directory=True)


@case("outputs", "a dangling symlink at the store's name")
def case_dangling_link_at_store(c):
    planted_link(c, c.shared.mask_args(c.dir / "m.zarr"), "m.zarr", dangling=True)


@case("outputs", "a symlink at the --report name")
def case_link_at_report(c):
    planted_link(c, [*c.shared.mask_args(c.dir / "m.zarr"), "--report", c.dir / "r.html"], "r.html")


@case("outputs", "a symlink at an export's name (h5)")
def case_link_at_export(c):
    planted_link(c, ["export", c.shared.store, "--to", "h5", "--out", c.dir / "m.h5"], "m.h5")


@case("outputs", "a symlink at an export's name with --overwrite (nexus)")
def case_link_at_export_overwrite(c):
    planted_link(c, ["export", c.shared.store, "--to", "nexus", "--out", c.dir / "m.nxs", "--overwrite"], "m.nxs")


@case("outputs", "a dangling symlink at an export's name (cheetah)")
def case_dangling_link_at_export(c):
    planted_link(c, ["export", c.shared.store, "--to", "cheetah", "--out", c.dir / "m.h5"], "m.h5", dangling=True)


@case("outputs", "a symlink at the CrystFEL geometry file (.geom)")
def case_link_at_crystfel_geom(c):
    planted_link(c, ["export", c.shared.store, "--to", "crystfel", "--out", c.dir / "m.h5"], "m.geom")


@case("outputs", "a symlink at the diff --json name")
def case_link_at_diff_json(c):
    planted_link(c, ["diff", c.shared.store, c.shared.store, "--json", c.dir / "d.json"], "d.json")


@case("outputs", "a symlink to another directory at show --png DIR")
def case_link_at_show_png(c):
    planted_link(c, ["show", c.shared.store, "--png", c.dir / "png"], "png", directory=True)


@case("outputs", "a dangling symlink at show --html with --overwrite")
def case_dangling_link_at_show_html(c):
    planted_link(c, ["show", c.shared.store, "--html", c.dir / "r.html", "--overwrite"], "r.html", dangling=True)


def dead_leftover_link(c, target: str, kind: str, args: list, *, directory: bool):
    """A dead job's ``.TARGET.<kind>-*`` left as a link to another directory or file: the command
    succeeds, never writes through it, and removes it."""
    victim, before = victim_dir(c) if directory else victim_file(c)
    link = c.dir / f".{target}.{kind}-{HOST}-{dead_pid()}-deadbeef"
    link.symlink_to(victim)
    c.rmm(*args, expect=0)
    c.same(before, c.dir / "elsewhere", f"the {'directory' if directory else 'file'} a planted .{kind} link pointed to")


@case("outputs", "a dead .NAME.partial-* symlink to another directory (export)")
def case_partial_link_leftover(c):
    dead_leftover_link(c, "m.h5", "partial", ["export", c.shared.store, "--to", "h5", "--out", c.dir / "m.h5"], directory=True)
    c.expect(is_h5(c.dir / "m.h5"), "no export published")
    c.only(c.dir, ["TMP", "m.h5", "elsewhere"], "(the dead leftover should be removed)")


@case("outputs", "a dead .NAME.partial-* symlink to another directory (show --png)")
def case_partial_link_leftover_png(c):
    dead_leftover_link(c, "png", "partial", ["show", c.shared.store, "--png", c.dir / "png"], directory=True)
    c.only(c.dir, ["TMP", "png", "elsewhere"], "(the dead leftover should be removed)")


@case("outputs", "a dead .NAME.old-* symlink to another file, no target (export)")
def case_old_link_leftover(c):
    dead_leftover_link(c, "m.h5", "old", ["export", c.shared.store, "--to", "h5", "--out", c.dir / "m.h5"], directory=False)
    t = c.dir / "m.h5"
    if t.is_symlink():
        c.lost.append("the planted .old link was put in place as the output")
    c.expect(is_h5(t) and not t.is_symlink(), "no export published")
    c.only(c.dir, ["TMP", "m.h5", "elsewhere"], "(the dead leftover should be removed)")


@case("outputs", "a set-aside .NAME.old-* copy of a killed --overwrite, then a rerun")
def case_old_copy_restored(c):
    """What a kill between the two renames of the fallback leaves: the old export aside, no target."""
    c.rmm("export", c.shared.store, "--to", "euxfel", "--out", c.dir / "m.h5", expect=0)
    aside = c.dir / f".m.h5.old-{HOST}-{dead_pid()}-c0ffee00"
    os.rename(c.dir / "m.h5", aside)
    before = snapshot(aside)
    c.rmm("export", c.shared.store, "--to", "euxfel", "--out", c.dir / "m.h5", expect=2, needles=("exists",))
    after = snapshot(c.dir / "m.h5")
    if before.get(".") != after.get("."):
        c.lost.append("the set-aside copy was not restored as the output")
    c.only(c.dir, ["TMP", "m.h5"])


@case("outputs", "a .NAME.partial-* of a live process (pid 1) is left alone and holds the output")
def case_live_partial_left(c):
    live = c.plant(c.dir / f".m.h5.partial-{HOST}-1-0a0b0c0d")
    live.write_text("another job's half-written export")
    before = snapshot(live)
    # another job writes it: refused at once (issue 20), naming that job, and its temporary left alone
    c.rmm("export", c.shared.store, "--to", "h5", "--out", c.dir / "m.h5", expect=2, needles=("another rmm job (pid 1 on",))
    c.same(before, live, "a live job's temporary")
    c.only(c.dir, ["TMP"])


@case("outputs", "mask --out on a read-only filesystem")
def case_readonly_fs_store(c):
    where = c.tmpfs("1m", ro=True)
    if where:
        c.rmm(*c.shared.mask_args(where / "m.zarr"), expect=2, needles=(str(where), "read-only"))
        c.expect(os.listdir(where) == [], f"written on a read-only fs: {os.listdir(where)}")


@case("outputs", "diff --json on a read-only filesystem")
def case_readonly_fs_diff(c):
    where = c.tmpfs("1m", ro=True)
    if where:
        c.rmm("diff", c.shared.store, c.shared.store, "--json", where / "d.json", expect=2, needles=(str(where),))


def unwritable(c, *args):
    if not is_root() or not shutil.which("setpriv"):
        c.skipped = "dropping root's capabilities needs root and setpriv"
        return
    out = c.dir / "out"
    out.mkdir()
    os.chmod(out, 0o555)  # r-x: nobody may write, root without CAP_DAC_OVERRIDE neither
    c.rmm(*args, expect=2, needles=(str(out), "not writable"), wrap=NO_DAC)
    c.expect(os.listdir(out) == [], f"written: {os.listdir(out)}")


@case("outputs", "export into a directory of mode 555 (not writable)")
def case_unwritable_dir_export(c):
    unwritable(c, "export", c.shared.store, "--to", "h5", "--out", c.dir / "out" / "m.h5")


@case("outputs", "show --png into a directory of mode 555 (not writable)")
def case_unwritable_dir_png(c):
    unwritable(c, "show", c.shared.store, "--png", c.dir / "out" / "png")


@case("outputs", "mask --out into a directory of mode 555 (not writable)")
def case_unwritable_dir_store(c):
    unwritable(c, *c.shared.mask_args(c.dir / "out" / "m.zarr"))


@case("outputs", "mask --out on a full (1 MB) filesystem: refused before the cluster")
def case_full_fs_store(c):
    where = c.tmpfs("1m")
    if where:
        p = c.rmm(*c.shared.mask_args(where / "m.zarr"), expect=2, needles=("no space left",))
        c.expect("dashboard" not in p.out, "a cluster was started before the room was checked")
        c.expect(os.listdir(where) == [], f"left on the full fs: {os.listdir(where)}")


@case("outputs", "mask with room for the estimate but not the store: ENOSPC mid-write")
def case_full_fs_mid_write(c):
    estimate = _estimate(c)
    where = c.tmpfs(f"{int(0.6 * estimate) // 1024}k")
    if where:
        c.rmm(*c.shared.mask_args(where / "m.zarr"), expect=2, needles=("m.zarr", "no space left"))
        c.expect(os.listdir(where) == [], f"left on the full fs: {os.listdir(where)}")


def _estimate(c) -> int:
    """The store's uncompressed size as rmm estimates it (metadata only: no data read)."""
    code = ("from rmm_dask.io import open_run; from rmm_dask.pipeline import build_mask; from rmm_dask.job import store_nbytes; import sys;"
            "d={g: open_run(p) for g, p in zip(('high','medium','low'), sys.argv[1:4])}; print(store_nbytes(build_mask(d, open_run(sys.argv[4]))))")
    done = subprocess.run([sys.executable, "-c", code, *(str(c.shared.raw(n)) for n in (1, 2, 3, 4))], env=c.env(), capture_output=True, text=True)
    return int(done.stdout.strip())


def on_full_fs(c, size: str, command: str, options: tuple, name: str):
    """``rmm command STORE options... OUTPUT`` with OUTPUT on a ``size`` tmpfs: one line, nothing left there."""
    where = c.tmpfs(size)
    if where:
        c.rmm(command, c.shared.store, *options, where / name, expect=2, needles=(name, "no space left"))
        c.expect(os.listdir(where) == [], f"left on the full fs: {os.listdir(where)}")


#: (case, title, tmpfs size, command, its options before the output, the output's name)
FULL_FS = (
    ("full_fs_export_h5", "export --to h5 to a full filesystem", "1m", "export", ("--to", "h5", "--out"), "m.h5"),
    ("full_fs_export_euxfel", "export --to euxfel to a full filesystem", "1m", "export", ("--to", "euxfel", "--out"),
     "m.h5"),
    ("full_fs_png", "show --png to a full filesystem", "64k", "show", ("--png",), "png"),
    ("full_fs_html", "show --html to a full filesystem", "64k", "show", ("--html",), "r.html"),
)
for _name, _title, *_how in FULL_FS:
    CASES.append((_name, "outputs", _title, lambda c, how=tuple(_how): on_full_fs(c, *how)))


@case("outputs", "outputs in a directory that does not exist (mask, export, diff --json)")
def case_missing_output_dir(c):
    c.rmm(*c.shared.mask_args(c.dir / "no" / "m.zarr"), expect=2, needles=("no such directory",))
    c.rmm("export", c.shared.store, "--to", "h5", "--out", c.dir / "no" / "m.h5", expect=2, needles=("no such directory",))
    c.rmm("diff", c.shared.store, c.shared.store, "--json", c.dir / "no" / "d.json", expect=2, needles=("no such directory",))
    c.only(c.dir, ["TMP"])


# ---- 3. interruptions ---------------------------------------------------------------------------

def interrupted(c, when, sig=signal.SIGINT, *, to_group=True, extra=(), published=False, timeout=120):
    """Start `rmm mask`, send ``sig`` once ``when(live)`` holds; check exit 130, the one line, and what is left."""
    out = c.dir / "m.zarr"
    live = c.spawn(*c.shared.mask_args(out), *extra)
    if not live.until(lambda: when(live), timeout):
        p = live.finish()
        c.judge(p, None)
        c.fail(f"the moment to interrupt never came (exit {p.code})")
        return p
    if to_group:
        live.signal_group(sig)
    else:
        live.proc.send_signal(sig)
    p = live.finish()
    deadline = time.monotonic() + 15
    while live.group_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if live.group_alive():
        c.leftovers.append("processes of the job's group still running 15 s after it exited")
        live.signal_group(signal.SIGKILL)
    if published:
        c.judge(p, (130, 0), needles=("was published",))
        c.expect(is_store(out), "the published store is not complete")
        c.only(c.dir, ["TMP", "m.zarr"])
    else:
        c.judge(p, 130, needles=("interrupted; nothing was published",))
        c.only(c.dir, ["TMP"])
    return p


def partial_store(c):
    return lambda live=None: any(n.startswith(".m.zarr.partial") for n in os.listdir(c.dir))


@case("interrupts", "Ctrl-C to the group 0.3 s after start (Python still importing)")
def case_sigint_at_start(c):
    t0 = time.monotonic()
    interrupted(c, lambda live: time.monotonic() - t0 > 0.3)


@case("interrupts", "Ctrl-C to the group while the runs are opened")
def case_sigint_opening(c):
    interrupted(c, lambda live: live.said("high run "))


@case("interrupts", "Ctrl-C to the group during the flat check (a few frames read on the client)")
def case_sigint_flat_check(c):
    interrupted(c, lambda live: live.said("flat run "))


@case("interrupts", "Ctrl-C to the group as the cluster comes up (its scratch space appears)")
def case_sigint_cluster_start(c):
    (c.dir / "c.yaml").write_text("rmm-dask:\n  cluster:\n    local-threads-below: 0\n")  # worker processes: a cluster
    c.plant(c.dir / "c.yaml")
    interrupted(c, lambda live: bool(os.listdir(c.tmp)), extra=("--config", c.dir / "c.yaml"))


@case("interrupts", "Ctrl-C to the group while computing (dashboard printed)")
def case_sigint_computing(c):
    interrupted(c, lambda live: live.said("dashboard:"))


@case("interrupts", "Ctrl-C to the group while the store is written")
def case_sigint_writing(c):
    interrupted(c, partial_store(c))


@case("interrupts", "Ctrl-C to the group once the store is published (cluster closing)")
def case_sigint_published(c):
    interrupted(c, lambda live: (c.dir / "m.zarr").exists(), published=True)


@case("interrupts", "SIGTERM to the group while computing")
def case_sigterm_group(c):
    interrupted(c, lambda live: live.said("dashboard:"), signal.SIGTERM)


@case("interrupts", "SIGTERM to rmm alone (not its workers) while writing")
def case_sigterm_main_only(c):
    interrupted(c, partial_store(c), signal.SIGTERM, to_group=False)


@case("interrupts", "Ctrl-C to the group while writing, with --report")
def case_sigint_with_report(c):
    interrupted(c, partial_store(c), extra=("--report", c.dir / "r.html"))


@case("interrupts", "Ctrl-C twice (the second 0.3 s later) while writing")
def case_sigint_twice(c):
    def twice(live):
        if partial_store(c)():
            live.signal_group(signal.SIGINT)
            time.sleep(0.3)
            return True
        return False
    interrupted(c, twice)


@case("interrupts", "kill -9 mid-write, then a rerun: leftovers removed, store published")
def case_kill9_then_rerun(c):
    out = c.dir / "m.zarr"
    live = c.spawn(*c.shared.mask_args(out))
    if not live.until(partial_store(c)):
        c.fail("never reached the write")
    live.signal_group(signal.SIGKILL)
    live.finish()
    c.rmm(*c.shared.mask_args(out), expect=0)
    c.expect(is_store(out), "no store after the rerun")
    c.only(c.dir, ["TMP", "m.zarr"])


@case("interrupts", "kill -9 mid-write of --overwrite: old store intact; rerun replaces it")
def case_kill9_overwrite(c):
    out = copy_store(c)
    before = snapshot(out)
    live = c.spawn(*c.shared.mask_args(out), "--overwrite")
    if not live.until(partial_store(c)):
        c.fail("never reached the write")
    live.signal_group(signal.SIGKILL)
    live.finish()
    c.same(before, out, "the published store, after a kill -9 of its --overwrite")
    c.rmm(*c.shared.mask_args(out), "--overwrite", expect=0)
    c.expect(is_store(out), "no store after the rerun")
    c.only(c.dir, ["TMP", "m.zarr"])


@case("interrupts", "kill -9 of show --png mid-write, then a rerun")
def case_kill9_show_png(c):
    live = c.spawn("show", c.shared.store, "--png", c.dir / "png")
    if not live.until(lambda: any(n.startswith(".png.partial") for n in os.listdir(c.dir))):
        c.fail("never reached the write")
    time.sleep(0.3)
    live.signal_group(signal.SIGKILL)
    live.finish()
    c.rmm("show", c.shared.store, "--png", c.dir / "png", expect=0)
    c.expect((c.dir / "png" / "detector.png").exists(), "no figures after the rerun")
    c.only(c.dir, ["TMP", "png"])


@case("interrupts", "Ctrl-C to the group of `rmm demo` (no --keep): its directory removed")
def case_sigint_demo(c):
    live = c.spawn("demo", "--modules", 1, "--cells", 1, "--frames", 40, "--workers", 1)
    if not live.until(lambda: live.said("dashboard:"), 180):
        c.fail("the demo never reached its cluster")
    live.signal_group(signal.SIGINT)
    p = live.finish()
    c.judge(p, 130, needles=("interrupted",))
    c.only(c.dir, ["TMP"])


# ---- 4. nightly ---------------------------------------------------------------------------------

def nightly_config(c, **extra) -> Path:
    import yaml

    cfg = {"nightly": {"state": "state", "publish": "masks", "settle": 0, "workers": 1, "max-attempts": 3,
                       "sanity": {"bad-fraction": [0.0, 0.2], "max-change": 0.01},
                       "detectors": [{"name": "AGIPD", "detector": "AGIPD1M", "trees": [str(c.shared.facility.parent / "p*" / "raw")]}],
                       **extra}}
    path = c.dir / "nightly.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def published(c) -> Path:
    return c.dir / "masks" / "AGIPD"


def current(c):
    link = published(c) / "current"
    return os.readlink(link) if link.is_symlink() else None


def versions(c):
    d = published(c)
    return sorted(n for n in os.listdir(d) if n.startswith("v")) if d.is_dir() else []


def writing_version(c) -> bool:
    """A pass is writing the mask store of a version."""
    return published(c).is_dir() and bool(list(published(c).glob(".v*.partial-*/.mask.zarr.partial-*/mask")))


_P1: dict = {}


def after_pass_one(c) -> Path:
    """The state and versions after a first pass (made once, by case nightly_first_pass, then copied)."""
    cfg = nightly_config(c)
    if "state" not in _P1:
        raise RuntimeError("needs case nightly_first_pass first")
    shutil.copytree(_P1["state"], c.dir / "state", symlinks=True)
    shutil.copytree(_P1["masks"], c.dir / "masks", symlinks=True)
    return cfg


def catalog_sets(c):
    db = sqlite3.connect(c.dir / "state" / "catalog.sqlite")
    try:
        return [tuple(r) for r in db.execute("SELECT version, status, attempts FROM sets ORDER BY id")]
    finally:
        db.close()


@case("nightly", "first pass: v0001 published, current -> v0001")
def case_nightly_first_pass(c):
    cfg = nightly_config(c)
    c.rmm("nightly", "--config", cfg, "--once", expect=0)
    c.expect(current(c) == "v0001" and versions(c) == ["v0001"], f"current {current(c)}, versions {versions(c)}")
    v1 = published(c) / "v0001"
    if v1.is_dir():
        ro_published(c, v1)
        names = sorted(os.listdir(v1))
        c.expect({"mask.zarr", "summary.json", "summary.html"} <= set(names), f"v0001 holds {names}")
    c.only(published(c), ["v0001", "current", "history.zarr"])
    c.only(c.dir, ["TMP", "state", "masks", "nightly.yaml"])
    work = c.shared.base / "p1"
    work.mkdir(exist_ok=True)
    shutil.copytree(c.dir / "state", work / "state", symlinks=True, dirs_exist_ok=True)
    shutil.copytree(c.dir / "masks", work / "masks", symlinks=True, dirs_exist_ok=True)
    _P1.update(state=work / "state", masks=work / "masks")


def remove_catalog(c):
    """The catalog gone, with its journal files (catalog.sqlite-wal, -shm, ...)."""
    for n in os.listdir(c.dir / "state"):
        if n.startswith("catalog.sqlite"):
            os.remove(c.dir / "state" / n)


@case("nightly", "a lost catalog: rebuilt, nothing masked again, current stays")
def case_nightly_lost_catalog(c):
    cfg = after_pass_one(c)
    before = snapshot(published(c))
    remove_catalog(c)
    c.rmm("nightly", "--config", cfg, "--once", expect=0)
    c.same(before, published(c), "the published versions and current")
    sets = catalog_sets(c)
    c.expect(sets[:1] and sets[0][:2] == (1, "published"), f"catalog after the rebuild: {sets}")
    c.rmm("nightly", "--config", cfg, "--status", expect=0)


@case("nightly", "a corrupt catalog: --status says so in one line; a pass moves it aside and rebuilds")
def case_nightly_corrupt_catalog(c):
    cfg = after_pass_one(c)
    before = snapshot(published(c))
    remove_catalog(c)
    (c.dir / "state" / "catalog.sqlite").write_bytes(b"this is not a database" * 200)
    c.rmm("nightly", "--config", cfg, "--status", expect=2, needles=("catalog.sqlite",))
    c.rmm("nightly", "--config", cfg, "--once", expect=0)
    c.same(before, published(c), "the published versions and current")
    aside = [n for n in os.listdir(c.dir / "state") if ".corrupt-" in n]
    c.expect(bool(aside), "the corrupt catalog was not kept aside")
    c.planted.update(aside)


def signalled_pass(c, cfg, sig, late: str):
    """A nightly pass sent ``sig`` to its process group once it writes its version; how it ended."""
    live = c.spawn("nightly", "--config", cfg, "--once")
    if not live.until(lambda: writing_version(c)):
        c.fail(late)
    live.signal_group(sig)
    return live.finish()


@case("nightly", "kill -9 mid-pass, then the next pass: same version, no leftovers")
def case_nightly_kill9(c):
    cfg = nightly_config(c)
    signalled_pass(c, cfg, signal.SIGKILL, "the pass never reached the write")
    c.rmm("nightly", "--config", cfg, "--once", expect=0)
    c.expect(current(c) == "v0001" and versions(c) == ["v0001"], f"current {current(c)}, versions {versions(c)}")
    c.expect([s[:2] for s in catalog_sets(c)] == [(1, "published")], f"catalog {catalog_sets(c)}")
    c.only(published(c), ["v0001", "current", "history.zarr"])


@case("nightly", "a planted .vNNNN.partial-* link to another directory, retried after a kill")
def case_nightly_planted_partial_link(c):
    cfg = nightly_config(c)
    victim, before = victim_dir(c)
    signalled_pass(c, cfg, signal.SIGKILL, "the pass never reached the write")
    (published(c) / f".v0001.partial-{HOST}-{dead_pid()}-deadbeef").symlink_to(victim)
    c.rmm("nightly", "--config", cfg, "--once", expect=0)
    c.same(before, c.dir / "elsewhere", "the directory a planted .v0001.partial link pointed to")
    c.expect(current(c) == "v0001", f"current {current(c)}")
    c.only(published(c), ["v0001", "current", "history.zarr"])


@case("nightly", "a second pass while the first holds the lock")
def case_nightly_lock(c):
    cfg = nightly_config(c)
    live = c.spawn("nightly", "--config", cfg, "--once")
    if not live.until(lambda: (c.dir / "masks" / "AGIPD").is_dir() and bool(list(published(c).glob(".v*.partial-*")))):
        c.fail("the first pass never started its version")
    p = c.rmm("nightly", "--config", cfg, "--once", expect=0)
    c.expect("another nightly pass is running" in p.out and str(live.proc.pid) in p.out, f"second pass said: {p.out[-300:]!r}")
    c.judge(live.finish(), 0)
    c.expect(versions(c) == ["v0001"] and current(c) == "v0001", f"versions {versions(c)}, current {current(c)}")
    c.only(published(c), ["v0001", "current", "history.zarr"])


@case("nightly", "Ctrl-C to the group of a pass while it masks")
def case_nightly_sigint(c):
    cfg = nightly_config(c)
    p = signalled_pass(c, cfg, signal.SIGINT, "the pass never started masking")
    c.judge(p, 130, needles=("interrupted",))
    c.expect(current(c) is None and versions(c) == [], f"versions {versions(c)}, current {current(c)}")
    c.expect([s[1] for s in catalog_sets(c)] == ["interrupted"], f"catalog {catalog_sets(c)}")
    if published(c).is_dir():
        c.only(published(c), [])


@case("nightly", "a symlink to another directory planted at the first version's name (v0001): the set fails, nothing written through it")
def case_nightly_link_at_version(c):
    cfg = nightly_config(c)
    victim, before = victim_dir(c)
    published(c).mkdir(parents=True)
    (published(c) / "v0001").symlink_to(victim)
    c.plant(published(c) / "v0001")
    p = c.rmm("nightly", "--config", cfg, "--once")
    # README: exit 1 when a set failed in the pass, its reason in the log (stdout); or a version beside it
    c.expect(p.code == 0 or (p.code == 1 and "v0001: is a symbolic link" in p.out), f"exit {p.code}: {p.out[-300:]!r}")
    c.same(before, c.dir / "elsewhere", "the directory a planted v0001 link pointed to")
    target = os.path.realpath(published(c) / "current") if current(c) else None
    if target is not None and target.startswith(str(c.dir / "elsewhere")):
        c.lost.append(f"current points at the planted directory ({current(c)})")


@case("nightly", "--dry-run changes nothing")
def case_nightly_dry_run(c):
    cfg = after_pass_one(c)
    before = snapshot(c.dir)
    c.rmm("nightly", "--config", cfg, "--dry-run", expect=0)
    # SQLite's -wal/-shm files come and go when the catalog is opened: the directory's mtime is no change
    diff = [d for d in differences(before, snapshot(c.dir)) if "/TMP" not in d and "-shm" not in d and "-wal" not in d and d != "changed ./state"]
    if diff:
        c.lost.append(f"--dry-run changed: {', '.join(diff[:4])}")


@case("nightly", "a configuration with an unknown key")
def case_nightly_bad_config(c):
    cfg = nightly_config(c, stat="s")
    c.rmm("nightly", "--config", cfg, "--once", expect=2, needles=("nightly.yaml", "stat"))
    c.only(c.dir, ["TMP", "nightly.yaml"])


# ---- 5. inputs never written, temporary space -------------------------------------------------

@case("inputs-read-only", "a successful mask writes nothing into its EuXFEL run directories")
def case_runs_not_written_success(c):
    runs = c.dir / "s"
    shutil.copytree(c.shared.s / "raw", runs / "raw")
    before = snapshot(runs)
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr", runs=runs), expect=0)
    c.same(before, runs, "the input run directories")
    c.only(c.dir, ["TMP", "s", "m.zarr"])


@case("inputs-read-only", "a rejected run (other cells) writes nothing into the run directories")
def case_runs_not_written_rejected(c):
    runs = c.dir / "s3"
    shutil.copytree(c.shared.s3 / "raw", runs / "raw")
    before = snapshot(runs)
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr", low=c.shared.raw(3, runs)), expect=2, needles=("cells",))
    c.same(before, runs, "the rejected run's directory")
    c.only(c.dir, ["TMP", "s3"])


@case("inputs-read-only", "`rmm demo` without --keep leaves nothing in TMPDIR")
def case_demo_cleans_up(c):
    p = c.rmm("demo", "--modules", 1, "--cells", 1, "--frames", 40, "--workers", 1, expect=0, timeout=300)
    c.expect(str(c.tmp) in p.out, "the demo did not say where it writes")


# ---- 6. what operators read, the numba cache ---------------------------------------------------

@case("ops", "numba cache directory pre-created by another user (uid 65534)")
def case_numba_cache_other_owner(c):
    if not is_root():
        c.skipped = "chown needs root"
        return
    cache = c.dir / "cache" / "rmm-dask" / "numba"
    cache.mkdir(parents=True)
    (cache / "planted.nbi").write_bytes(b"pickle that runs code")
    os.chown(cache, NOBODY, NOBODY)
    os.chmod(cache, 0o777)
    before = snapshot(c.dir / "cache")
    c.allow_err = ["numba cache directory"]
    p = c.rmm("export", c.shared.store, "--to", "h5", "--out", c.dir / "m.h5", expect=0, env=c.env(XDG_CACHE_HOME=c.dir / "cache"))
    warn = [line for line in p.err_lines if "numba cache directory" in line]
    c.expect(len(warn) == 1 and "65534" in warn[0] and "not used" in warn[0], f"warning: {warn}")
    c.same(before, c.dir / "cache", "the other user's cache directory")
    c.only(c.dir, ["TMP", "cache", "m.h5"])


@case("ops", "numba cache directory is a symlink to another user's directory")
def case_numba_cache_symlink(c):
    (c.dir / "theirs").mkdir()
    if is_root():
        os.chown(c.dir / "theirs", NOBODY, NOBODY)
    (c.dir / "cache" / "rmm-dask").mkdir(parents=True)
    (c.dir / "cache" / "rmm-dask" / "numba").symlink_to(c.dir / "theirs")
    before = snapshot(c.dir / "theirs")
    c.allow_err = ["numba cache directory"]
    p = c.rmm("export", c.shared.store, "--to", "h5", "--out", c.dir / "m.h5", expect=0, env=c.env(XDG_CACHE_HOME=c.dir / "cache"))
    c.expect(any("symbolic link" in line for line in p.err_lines), f"no warning: {p.err_lines}")
    c.same(before, c.dir / "theirs", "the directory the cache link points to")
    c.only(c.dir, ["TMP", "cache", "theirs", "m.h5"])


def in_terminal(c, args, columns=80) -> tuple[int, list[str]]:
    """Run `rmm` on a pseudo-terminal of ``columns`` columns; its exit code and visible lines."""
    import fcntl
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = c.env(TERM="xterm-256color")
    env.pop("PYTHONUNBUFFERED", None)
    argv = c.argv(args)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=c.dir, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    code = proc.wait()
    os.close(master)
    text = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r", "")
    c.judge(Proc(argv, code, text, "", time.monotonic() - t0), None)
    return code, text.splitlines()


def fits_80(c, args):
    code, lines = in_terminal(c, args)
    c.expect(code == 0, f"exit {code}")
    wide = [line for line in lines if len(line.rstrip()) > 80]
    cut = [line for line in lines if "…" in line]
    c.expect(not wide, f"{len(wide)} lines wider than 80 columns: {wide[:1]}")
    c.expect(not cut, f"cut with '…': {cut[:2]}")
    c.expect(len(lines) > 5, f"printed only {lines}")


@case("ops", "`rmm show --cells` on an 80-column terminal")
def case_show_80_columns(c):
    fits_80(c, ["show", c.shared.store, "--cells"])


@case("ops", "`rmm diff --cells` on an 80-column terminal")
def case_diff_80_columns(c):
    fits_80(c, ["diff", c.shared.store, c.shared.store, "--cells"])


@case("ops", "`rmm nightly --status` on an 80-column terminal")
def case_status_80_columns(c):
    cfg = after_pass_one(c)
    fits_80(c, ["nightly", "--config", cfg, "--status"])


@case("ops", "`--report` page works offline (nothing fetched from the network)")
def case_report_offline(c):
    html = c.shared.report.read_text()
    scripts = re.findall(r"""<script[^>]*\bsrc=["']((?:https?:)?//[^"']+)""", html)
    styles = re.findall(r"""<link[^>]*rel=["']stylesheet["'][^>]*href=["']((?:https?:)?//[^"']+)""", html)
    c.expect(not scripts + styles, f"needs {(scripts + styles)[:3]} from the network")
    other = re.findall(r"""<(?:link|img)[^>]*\b(?:src|href)=["']((?:https?:)?//[^"']+)""", html)
    if other:
        c.notes.append(f"links (not needed to work offline): {other[:3]}")
    c.expect("Bokeh" in html and len(html) > 100_000, "not a self-contained bokeh page")


@case("ops", "`rmm mask --help` has a description and help for every option")
def case_mask_help(c):
    p = c.rmm("mask", "--help", expect=0)
    text = p.out
    c.expect("Robust Mask Maker" in text, "no description")
    block = text.split("options:", 1)[-1]
    entries = re.split(r"\n(?=  -)", block)
    bare = [e.split()[0] for e in entries[1:] if len(e.strip().split("\n")) == 1 and "  " not in e.strip()]
    c.expect(not bare, f"options without help: {bare}")


@case("ops", "README lists every option of every command")
def case_readme_options(c):
    readme = (ROOT / "README.md").read_text()
    missing = []
    code = ("import sys, contextlib, io; from rmm_dask.cli import main\n"
            "for cmd in ('mask', 'submit', 'synth', 'export', 'diff', 'nightly', 'show', 'demo'):\n"
            "    print('=== ' + cmd)\n"
            "    with contextlib.suppress(SystemExit): main([cmd, '--help'])\n")
    done = subprocess.run([sys.executable, "-c", code], env=c.env(), capture_output=True, text=True)
    c.judge(Proc(["python", "-c", "rmm COMMAND --help"], done.returncode, done.stdout, done.stderr, 0), 0)
    for block in done.stdout.split("=== ")[1:]:
        command, text = block.split("\n", 1)
        for opt in sorted(set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", text))):
            if opt != "--help" and opt not in readme:
                missing.append(f"{command} {opt}")
    c.expect(not missing, f"not in README: {missing}")


@case("ops", "a clean successful mask on 2 workers: no stderr, no noise, read-only store")
def case_clean_success(c):
    c.rmm(*c.shared.mask_args(c.dir / "m.zarr", workers=2), expect=0)
    c.expect(is_store(c.dir / "m.zarr"), "no complete store")
    ro_published(c, c.dir / "m.zarr")
    c.only(c.dir, ["TMP", "m.zarr"])


@case("inputs-read-only", "the campaign's shared inputs are unchanged at the end")
def case_shared_inputs_unchanged(c):
    for path, before in c.shared.inputs_before.items():
        c.same(before, path, f"shared input {path.name}")


# ------------------------------------------------------------------------------------- driver

def run_case(name, section, title, fn, work, shared, keep) -> Case:
    c = Case(name, section, title, work, shared)
    t0 = time.monotonic()
    try:
        fn(c)
    except Exception:
        c.problems.append("campaign error: " + traceback.format_exc().strip().splitlines()[-1])
        c.problems.append(traceback.format_exc())
    finally:
        try:
            for where in c.mounts:  # leftovers on the mounted filesystems count too
                for n in os.listdir(where):
                    if LEFTOVER.search(n):
                        c.leftovers.append(f"{where.name}/{n}")
            c.scan_leftovers()
        finally:
            c.close(keep)
    c.seconds = time.monotonic() - t0
    return c


# ---- the cases of issue 20 (no silent wrong mask), one module per area, each registering its own

AREAS = ("inputs", "stores", "config", "nightly", "outputs", "describe", "layouts", "figures", "reports", "nightly_ops", "downstream", "history", "remember")
for _area in AREAS:
    __import__(f"campaign_{_area}").register(case)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="only", help="run only the cases whose name contains this (or one of these, comma-separated)")
    parser.add_argument("--keep", action="store_true", help="keep the campaign's directory")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="run each selected case N times (intermittent faults)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    t0 = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="rmm-campaign-"))
    os.chmod(base, 0o755)
    print(f"fault campaign in {base} (rmm from {ROOT})", flush=True)
    shared = Shared(base)
    results = []
    try:
        shared.build()
        print(f"shared inputs ready ({time.monotonic() - t0:.0f} s)\n", flush=True)
        wanted = args.only.split(",") if args.only else None
        selected = [cs for cs in CASES if not wanted or any(w in cs[0] for w in wanted)]
        selected = [cs for cs in selected for _ in range(args.repeat)]
        if args.only and any("nightly" in n or "status" in n for n, *_ in selected) and "nightly_first_pass" not in args.only:
            selected = [cs for cs in CASES if cs[0] == "nightly_first_pass"] + [cs for cs in selected if cs[0] != "nightly_first_pass"]
        print(f"{'#':>3} {'case':44} {'verdict':24} {'exit':>9} {'s':>5}")
        for i, (name, section, title, fn) in enumerate(selected, 1):
            c = run_case(name, section, title, fn, base, shared, args.keep)
            results.append(c)
            verdict = "skipped" if c.skipped else ("handled" if not c.kinds() else "+".join(c.kinds()))
            print(f"{i:>3} {name[:44]:44} {verdict:24} {','.join(c.exits)[:9]:>9} {c.seconds:5.1f}", flush=True)
    finally:
        if not args.keep:
            chmod_writable(base)
            shutil.rmtree(base, ignore_errors=True)
    tried = [c for c in results if not c.skipped]
    rows = [
        ("cases tried", len(tried)),
        ("handled as README promises", sum(not c.kinds() for c in tried)),
        ("with tracebacks or Dask log noise", sum(bool(c.crash) for c in tried)),
        ("with leftovers", sum(bool(c.leftovers) for c in tried)),
        ("where data was lost or overwritten", sum(bool(c.lost) for c in tried)),
        ("other (exit code, not one line, message)", sum(bool(c.problems) for c in tried)),
    ]
    print("\nsummary")
    for label, n in rows:
        print(f"  {label:42} {n:>4}")
    skipped = [c for c in results if c.skipped]
    if skipped:
        print(f"  {'skipped':42} {len(skipped):>4}  ({'; '.join(sorted({c.skipped for c in skipped}))})")
    noted = [c for c in tried if c.notes and not c.kinds()]
    if noted:
        print("\nnotes (handled cases)")
        for c in noted:
            for line in c.notes:
                print(f"- {c.name}: {line}")
    failing = [c for c in tried if c.kinds()]
    if failing:
        print("\nfailing cases")
        for c in failing:
            print(f"- {c.name} ({c.section}: {c.title}): {'+'.join(c.kinds())}")
            for what in (c.crash, c.leftovers, c.lost, c.problems):
                for line in what:
                    print(textwrap.indent(textwrap.shorten(line, 1200) if "\n" not in line else line, "    "))
    print(f"\nruntime {time.monotonic() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps([dict(name=c.name, section=c.section, title=c.title, kinds=c.kinds(), skipped=c.skipped,
                                                     crash=c.crash, leftovers=c.leftovers, lost=c.lost, problems=c.problems,
                                                     exits=c.exits, seconds=round(c.seconds, 1)) for c in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
