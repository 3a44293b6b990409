"""Fault injection: what rmm does when it is killed, attacked or starved, as an operator or an attacker would try.

Part "publish" (rmm_dask/publish.py): a kill at every step of the publish helper, a
symbolic link planted at the name of every output kind, a full filesystem. Each asserts
the exit code, the one line, and that nothing was lost, left or written elsewhere.
"""

import errno
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rmm_dask import publish
from rmm_dask.cli import main
from rmm_dask.errors import InputError
from rmm_dask.nightly.versions import Versions

from .cli_errors import one_line_error
from .conftest import mask_args

HOST = socket.gethostname()


# ---------------------------------------------------------------------------------------------- publish: kills

def _write(path: Path, directory: bool, text: str) -> None:
    if directory:
        (path / "sub").mkdir()
        (path / "a").write_text(text)
        (path / "sub" / "b").write_text(text)
    else:
        path.write_text(text)


def _content(path: Path, directory: bool):
    """'old' or 'new' if ``path`` holds that complete output, None if absent; fails on anything half-made."""
    if not os.path.lexists(path):
        return None
    if directory:
        texts = {(path / "a").read_text(), (path / "sub" / "b").read_text()}
        assert len(texts) == 1 and sorted(p.name for p in path.iterdir()) == ["a", "sub"], f"half-made {path}"
        return texts.pop()
    return path.read_text()


def _killed_at(step: str, target: Path, *, directory: bool, overwrite: bool, fallback: bool) -> int:
    """Publish 'new' at ``target`` in a forked child that dies (os._exit, no clean-up) at ``step``; its exit status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            if fallback:
                publish._RENAMEAT2 = None
            publish._HOOK = lambda s: os._exit(9) if s == step else None
            with publish.output(target, overwrite=overwrite, directory=directory) as out:
                _write(out.tmp, directory, "new")
        except BaseException:
            code = 1
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.parametrize("fallback", [False, True], ids=["renameat2", "two-renames"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
@pytest.mark.parametrize("directory", [False, True], ids=["file", "dir"])
def test_a_kill_at_every_step_leaves_the_old_or_the_new_output_and_the_next_run_tidies(tmp_path, directory, overwrite, fallback):
    for step in publish.STEPS:
        work = tmp_path / step
        work.mkdir()
        target = work / "out"
        if overwrite:
            with publish.output(target, directory=directory) as out:
                _write(out.tmp, directory, "old")
        code = _killed_at(step, target, directory=directory, overwrite=overwrite, fallback=fallback)
        assert code in (0, 9), (step, code)
        seen = _content(target, directory)
        if code == 0:  # this step does not occur on this path: published as usual
            assert seen == "new" and os.listdir(work) == ["out"], step
            continue
        if overwrite and not (fallback and step == "set-aside"):
            assert seen in ("old", "new"), f"no output after a kill at {step}"
        elif not overwrite:
            assert seen in (None, "new"), step
        # the next job on this output: the set-aside copy back if there is no target, dead leftovers gone
        publish.tidy(target)
        after = _content(target, directory)
        assert after == (seen or ("old" if overwrite else None)), step
        assert os.listdir(work) == (["out"] if after else []), (step, os.listdir(work))


@pytest.mark.parametrize("directory", [False, True], ids=["file", "dir"])
def test_a_signal_right_after_the_temporary_is_created_leaves_nothing(tmp_path, monkeypatch, directory):
    """SIGTERM to the group as the store's temporary is made (rmm mask just printed its dashboard link):
    the interrupt waits until the temporary is in the helper's hands, which removes it."""
    import signal
    import time

    from rmm_dask import interrupts

    def hook(step):
        if step == "created":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)  # the handler runs here

    monkeypatch.setattr(publish, "_HOOK", hook)
    with interrupts.handled():
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            with publish.output(tmp_path / "out", directory=directory):
                pytest.fail("the block ran after the interrupt")
    assert list(tmp_path.iterdir()) == []


def test_live_leftovers_are_left_and_old_style_names_are_removed(tmp_path):
    target = tmp_path / "m.zarr"
    live = tmp_path / f".m.zarr.partial-{HOST}-{os.getppid()}-0123abcd"  # our parent: alive
    other_host = tmp_path / ".m.zarr.partial-elsewhere-1-0123abcd"  # cannot be told: left
    dead_proc = subprocess.Popen(["true"])
    dead_proc.wait()
    dead = tmp_path / f".m.zarr.old-{HOST}-{dead_proc.pid}-0123abcd"
    old_style = [tmp_path / ".m.zarr.partial-1a2b3c4d", tmp_path / ".m.zarr.old-deadbeef", tmp_path / f".m.zarr.partial-{dead_proc.pid}"]
    for p in [live, other_host, dead, *old_style]:
        p.mkdir()
        (p / "chunk").write_bytes(b"x" * 100)
        os.chmod(p / "chunk", 0o444)
        os.chmod(p, 0o555)  # read-only trees, as published ones: removal must still work
    target.mkdir()
    # a live job's temporary (or one of another host, which cannot be told) holds the target: refused, left alone
    with pytest.raises(InputError, match=r"another rmm job \(pid \d+ on \S+\) is writing the output now"):
        publish.prepare(target, overwrite=True, directory=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name, other_host.name])


def test_published_outputs_are_read_only_whatever_the_umask(tmp_path):
    previous = os.umask(0)
    try:
        with publish.output(tmp_path / "d", directory=True) as out:
            _write(out.tmp, True, "x")
        with publish.output(tmp_path / "f") as out:
            _write(out.tmp, False, "x")
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in [tmp_path / "d", tmp_path / "d" / "sub", tmp_path / "d" / "a", tmp_path / "f"]}
    assert modes == {"d": 0o555, "sub": 0o555, "a": 0o444, "f": 0o444}
    with publish.output(tmp_path / "d", directory=True, overwrite=True) as out:  # a read-only tree is replaced and removed
        _write(out.tmp, True, "y")
    assert _content(tmp_path / "d", True) == "y" and sorted(os.listdir(tmp_path)) == ["d", "f"]


def test_a_target_that_appears_while_writing_is_never_replaced(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(InputError, match="appeared while it was written"):
        with publish.output(target, directory=True) as out:
            _write(out.tmp, True, "new")
            target.mkdir()
            (target / "theirs").write_text("theirs")
    assert os.listdir(target) == ["theirs"] and os.listdir(tmp_path) == ["out"]


def test_a_link_planted_at_the_temporary_name_is_never_followed(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.mkdir()
    before = _snapshot(victim)
    work = tmp_path / "work"
    work.mkdir()
    planted = f".out.partial-{HOST}-{os.getpid()}-feedbeef"
    (work / planted).symlink_to(victim)
    names = iter([planted])
    real = publish._owned_name
    monkeypatch.setattr(publish, "_owned_name", lambda name, kind: next(names, None) or real(name, kind))
    with publish.output(work / "out", directory=True) as out:
        _write(out.tmp, True, "new")
    assert _content(work / "out", True) == "new" and _snapshot(victim) == before
    assert os.readlink(work / planted) == str(victim)  # ours is alive: its name is left alone


# ---------------------------------------------------------------------------------------------- publish: planted links

def _snapshot(path: Path):
    """What a planted link must not change: names, contents, modes and mtimes below ``path`` (None if absent)."""
    if not os.path.lexists(path):
        return None
    out = {}
    for p in [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]:
        st = p.lstat()
        out[str(p.relative_to(path))] = (st.st_mode, st.st_mtime_ns, p.read_bytes() if p.is_file() else None)
    return out


@pytest.fixture(params=["existing", "dangling"])
def planted(request, tmp_path):
    """(link name in an empty directory, its target, a snapshot function): a link to a victim file or directory, or to nothing."""
    victims = tmp_path / "victims"
    victims.mkdir()
    (victims / "dir").mkdir()
    (victims / "dir" / "keep.txt").write_text("keep")
    (victims / "file").write_text("keep")
    out = tmp_path / "out"
    out.mkdir()

    def plant(name: str, kind: str = "file") -> tuple[Path, Path]:
        victim = victims / kind if request.param == "existing" else victims / f"missing-{kind}"
        link = out / name
        link.symlink_to(victim)
        return link, victim

    return plant, request.param


def _assert_untouched(capsys, link: Path, victim: Path, before, code: int, *needles):
    assert code == 2
    one_line_error(capsys, str(link), "symbolic link", *needles)
    assert os.readlink(link) == str(victim)
    assert _snapshot(victim) == before  # also None: nothing created through a dangling link
    assert os.listdir(link.parent) == [link.name]  # no output, no temporary left


def _each(store_path, plant, argv_of, name, kind, capsys):
    link, victim = plant(name, kind)
    before = _snapshot(victim)
    code = main(argv_of(link))
    _assert_untouched(capsys, link, victim, before, code)


@pytest.mark.parametrize("fmt", ["h5", "crystfel", "nexus", "euxfel", "cheetah"])
def test_planted_link_at_an_export(store, planted, fmt, capsys):
    plant, _ = planted
    _each(store, plant, lambda link: ["export", str(store), "--to", fmt, "--out", str(link)], "m.h5", "file", capsys)


def test_planted_link_at_the_crystfel_geometry(store, planted, capsys):
    plant, _ = planted
    link, victim = plant("m.geom", "file")
    before = _snapshot(victim)
    code = main(["export", str(store), "--to", "crystfel", "--out", str(link.with_suffix(".h5"))])
    _assert_untouched(capsys, link, victim, before, code)
    assert not link.with_suffix(".h5").exists()  # both names checked before either is written


@pytest.mark.parametrize("option, kind", [("--png", "dir"), ("--html", "file")])
def test_planted_link_at_show_outputs(store, planted, option, kind, capsys):
    plant, _ = planted
    _each(store, plant, lambda link: ["show", str(store), option, str(link), "--overwrite"], "o", kind, capsys)


def test_planted_link_at_diff_json(store, planted, capsys):
    plant, _ = planted
    _each(store, plant, lambda link: ["diff", str(store), str(store), "--json", str(link), "--overwrite"], "d.json", "file", capsys)


@pytest.mark.parametrize("which", ["--out", "--report"])
def test_planted_link_at_the_store_and_the_report(runs, planted, which, capsys):
    plant, _ = planted
    kind = "dir" if which == "--out" else "file"

    def argv(link):
        if which == "--out":
            return mask_args(runs, link, "--overwrite")
        return mask_args(runs, link.with_name("m.zarr"), "--report", str(link))

    _each(None, plant, argv, "x", kind, capsys)


def test_nightly_version_partial_and_current_links(planted):
    """A version name, a leftover temporary name and ``current`` planted as links: nothing happens through them."""
    plant, how = planted
    link, victim = plant("v0001", "dir")
    root = link.parent
    before = _snapshot(victim)
    versions = Versions(root)
    with pytest.raises(InputError, match="symbolic link"):
        versions.new_partial(1)
    assert _snapshot(victim) == before and os.readlink(link) == str(victim)
    link.unlink()

    # a ".v0002.partial-*" link as an earlier pass might have left (new and old names): removed as a link, never followed
    for name in (f".v0002.partial-{HOST}-999999999-0123abcd", ".v0002.partial-0123abcd"):
        (root / name).symlink_to(victim)
    tmp = versions.new_partial(2)
    (tmp / "mask.zarr").mkdir()
    (tmp / "summary.json").write_text("{}")
    versions.publish(tmp, 2)
    assert _snapshot(victim) == before
    assert sorted(os.listdir(root)) == ["v0002"]
    assert (root / "v0002").stat().st_mode & 0o777 == 0o555 and (root / "v0002" / "summary.json").stat().st_mode & 0o777 == 0o444

    # current planted as a link to the victim: switching replaces the link itself
    (root / "current").symlink_to(victim)
    versions.switch(2)
    assert os.readlink(root / "current") == "v0002" and _snapshot(victim) == before
    assert sorted(os.listdir(root)) == ["current", "v0002"]
    versions.remove_partials(3)  # nothing to remove: no error, nothing touched
    assert _snapshot(victim) == before


def test_existing_outputs_are_refused_the_same_way_everywhere(store, tmp_path, capsys):
    for argv_tail, name in ((["--json"], "d.json"), (["--png"], "png"), (["--html"], "r.html")):
        target = tmp_path / name
        target.mkdir() if name == "png" else target.write_text("mine")
        before = _snapshot(target)
        command = ["diff", str(store), str(store)] if name == "d.json" else ["show", str(store)]
        assert main([*command, *argv_tail, str(target)]) == 2
        one_line_error(capsys, str(target), "exists already (give --overwrite to replace it)")
        assert _snapshot(target) == before
        assert main([*command, *argv_tail, str(target), "--overwrite"]) == 0
        assert _snapshot(target) != before
        assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # the replaced copy removed


# ---------------------------------------------------------------------------------------------- publish: a full filesystem

@pytest.fixture
def small_fs(tmp_path):
    """A directory on a 1 MB tmpfs (root), or None where none can be mounted."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount") or os.environ.get("RMM_TEST_NO_TMPFS"):  # the variable: to try the other way
        yield None
        return
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def full(small_fs, tmp_path, monkeypatch):
    """(directory, how): a 1 MB tmpfs, or else a directory whose fsync reports ENOSPC (as NFS reports a full disk)."""
    if small_fs is not None:
        return small_fs, "tmpfs"
    where = tmp_path / "patched"
    where.mkdir()
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(where)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(publish.os, "fsync", fsync)
    return where, "patched fsync"


def test_full_filesystem_store(runs, full, capsys):
    where, how = full
    mine = where / "mine.zarr"  # a published output already there, to be kept whole
    mine.mkdir()
    (mine / "zarr.json").write_text("{}")
    before = _snapshot(mine)
    code = main(mask_args(runs, mine, "--overwrite"))
    assert code == 2, how
    one_line_error(capsys, str(mine), "no space left on device", "nothing was published")
    assert _snapshot(mine) == before
    assert os.listdir(where) == ["mine.zarr"]


@pytest.mark.parametrize("fmt", ["h5", "euxfel"])
def test_full_filesystem_export(store, full, fmt, capsys):
    """In a subprocess where the disk is really full: HDF5 itself must never meet ENOSPC (it crashed with SIGSEGV)."""
    where, how = full
    out = where / "m.h5"
    argv = ["export", str(store), "--to", fmt, "--out", str(out)]
    before = _snapshot(store)
    if how == "tmpfs":
        proc = subprocess.run([sys.executable, "-m", "rmm_dask", *argv], capture_output=True, text=True, timeout=120)
        code, err = proc.returncode, proc.stderr.strip()
        assert err.count("\n") == 0 and "Traceback" not in err, err
    else:
        code = main(argv)
        err = one_line_error(capsys)
    assert code == 2, (how, err)
    assert str(out) in err and "no space left on device" in err and "nothing was published" in err, err
    assert os.listdir(where) == []
    assert _snapshot(store) == before
