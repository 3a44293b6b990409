"""One way to publish every file and directory rmm writes: complete or not at all, never through a link.

Stores, exports, ``rmm diff --json``, ``rmm show --png/--html``, ``--report``, nightly
versions and their ``current`` link, and the synthetic runs all go through here::

    with publish.output(target, overwrite=False, directory=True, what="the output store") as out:
        write_everything_into(out.tmp)
    # out.target is now the complete, read-only store

The protocol, step by step (the names are the ones :data:`STEPS` lists, for the tests):

1. ``prepared``: the parent is opened once (``O_DIRECTORY``; every later step works
   relative to that descriptor). The target may not be a symbolic link (dangling or
   not), nor a different kind (a file where a directory is published), nor exist at all
   without ``overwrite``. Leftovers of earlier jobs on this target (``.NAME.partial-*``,
   ``.NAME.old-*``, also the names earlier versions of rmm-dask used) whose owner is dead (same host,
   pid gone) are removed; a dead set-aside ``.NAME.old-*`` copy is renamed back into place
   first when a kill left no target.
2. ``created``: the temporary name ``.NAME.partial-<host>-<pid>-<random>`` is created
   exclusively beside the target (``mkdir`` mode 0700, or ``open(O_CREAT|O_EXCL|O_NOFOLLOW)``
   mode 0600); it is never a name that existed before.
3. ``written``: the caller writes into it.
4. ``sealed``: every file and directory in it is opened with ``O_NOFOLLOW`` and checked
   (regular files and directories only, no symbolic links, the temporary itself the
   inode created in step 2), its data fsync'ed, and made read-only: files ``r--r--r--``,
   directories ``r-xr-xr-x``, less what the umask withholds from group and others (the
   write bits never come from the umask). Directories are read-only too: removing a
   published tree (``--overwrite``) gives the owner back ``u+w`` on each directory
   first, without following links (:func:`discard`).
5. ``swapped``: without a target, ``renameat2(RENAME_NOREPLACE)`` moves it into place, so
   a target that appeared meanwhile is never replaced (refused in one line); with
   ``overwrite``, ``renameat2(RENAME_EXCHANGE)`` swaps the new and the published one in
   one atomic step: there is no moment without a target. The old copy is then under the
   temporary name.
   Where the kernel, the C library or the filesystem (NFS, ...) offers no ``renameat2``:
   a file is published with ``link`` (fails if the target exists) and its temporary
   unlinked; a directory with ``rename`` after checking there is no target; a replaced
   target is first renamed aside to ``.NAME.old-<host>-<pid>-<random>`` (step
   ``set-aside``), the new one renamed in, and on failure the old one renamed back. A kill
   between the two renames leaves no target for that moment, and the next job on the
   output (step 1) restores the set-aside copy.
6. ``removed-old``: the replaced copy is removed (step ``removing`` after each entry).
7. ``synced``: the parent directory is fsync'ed, so the new name survives a crash.

The file-system pieces (the parent directory opened once, temporary names and their
leftovers, sealing and removing trees without following links) are in :mod:`rmm_dask.fstree`.

A failure in any step (ENOSPC, EACCES, EROFS, a link found, ...) removes the temporary
and raises :class:`InputError` naming the target and the problem: nothing is left and
the published target, if any, is as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import stat
import sys
from pathlib import Path

from . import fstree, interrupts
from .errors import InputError
from .fstree import Parent, describe, leftovers, link_value, read_only_modes, seal_tree
from .fstree import owned_name as _owned_name  # the tests plant links at the names it gives

__all__ = ["output", "prepare", "hold", "tidy", "remove", "create_temporary", "commit", "discard", "publish_symlink", "leftovers",
           "STEPS", "withdraw", "reopened"]

#: the points of the protocol, in order; a test hook (``_HOOK``) is called at each
STEPS = ("prepared", "created", "written", "sealed", "set-aside", "swapped", "removing", "removed-old", "synced")
_HOOK = None

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
#: errors that only writing causes: always about the output, whatever file the message names
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def _step(name: str) -> None:
    if _HOOK is not None:
        _HOOK(name)


def _load_renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _load_renameat2()


def _rename2(dir_fd: int, old: str, new: str, flags: int) -> bool:
    """renameat2 within one directory: True if done, False where not supported; OSError otherwise."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(dir_fd, os.fsencode(old), dir_fd, os.fsencode(new), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the filesystem (or kernel) cannot
        return False
    raise OSError(err, os.strerror(err), new)


# ------------------------------------------------------------------------------------- checks

def _check_target(parent: Parent, *, overwrite: bool, directory: bool, what: str) -> None:
    link = link_value(parent.fd, parent.name)
    if link is not None:
        dangling = "" if os.path.exists(os.path.join(parent.target.parent, link)) else ", dangling"
        raise InputError(parent.target, f"is a symbolic link (to {link}{dangling}): not writing {what} through it; remove it or choose another name")
    st = parent.lstat()
    if st is None:
        return
    if not overwrite:
        raise InputError(parent.target, "exists already (give --overwrite to replace it)")
    if stat.S_ISDIR(st.st_mode) != directory or not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a file" if stat.S_ISREG(st.st_mode) else "not a regular file"
        raise InputError(parent.target, f"is {kind}, not the {'directory' if directory else 'file'} {what} is: not replacing it")


def _tidy(parent: Parent) -> None:
    """Remove dead leftovers of earlier jobs on the target; restore a dead set-aside copy if the target is gone."""
    found = leftovers(parent.fd, parent.name)
    olds = [t.name for t in found if t.dead and t.kind == "old" and link_value(parent.fd, t.name) is None]
    if olds and parent.lstat() is None:  # a kill between the two renames of the fallback: put the old one back
        newest = max(olds, key=lambda n: parent.lstat(n).st_ctime_ns)
        _rename_noreplace(parent, newest, parent.name, directory=stat.S_ISDIR(parent.lstat(newest).st_mode))
        parent.fsync()
    for t in leftovers(parent.fd, parent.name):
        if t.dead:
            _remove_entry(parent.fd, t.name)


def _check_busy(parent: Parent, what: str) -> None:
    """Refuse a target another job is writing now (its temporary is there, its owner alive or on another host)."""
    for t in leftovers(parent.fd, parent.name):
        if not t.dead and not t.mine and link_value(parent.fd, t.name) is None:
            raise InputError(parent.target, f"another rmm job ({t.owner}) is writing {what} now ({t.name}); wait for it "
                             f"to end or choose another name (if no such job runs, remove {t.name})")


def tidy(target) -> None:
    """Remove the dead leftovers of earlier jobs on ``target`` (and restore a set-aside copy); best effort."""
    try:
        parent = Parent(target, "the output")
    except InputError:
        return
    try:
        _tidy(parent)
    except OSError:
        pass
    finally:
        parent.close()


def prepare(target, *, overwrite: bool = False, directory: bool = False, what: str = "the output") -> Path:
    """Check that ``target`` may be published (and tidy its dead leftovers); its absolute path.

    Call it before a long job, so that a refused output costs nothing; :func:`output` and
    :func:`create_temporary` call it again.
    """
    parent = Parent(target, what)
    try:
        _tidy(parent)
        _check_busy(parent, what)
        _check_target(parent, overwrite=overwrite, directory=directory, what=what)
        if not os.access(parent.target.parent, os.W_OK | os.X_OK):
            why = "read-only filesystem" if os.statvfs(parent.target.parent).f_flag & os.ST_RDONLY else "permission denied"
            raise InputError(parent.target.parent, f"not writable ({why}): cannot publish {what} there")
    except OSError as err:
        raise InputError(parent.target, f"cannot prepare {what}: {describe(err)}") from None
    finally:
        parent.close()
    _step("prepared")
    return parent.target


# ------------------------------------------------------------------------------------- the steps

class Temporary:
    """A temporary file or directory beside its target: ``tmp`` to write into, then :func:`commit`."""

    def __init__(self, target: Path, tmp: Path, directory: bool, ident: tuple[int, int], what: str):
        self.target, self.tmp, self.directory, self.ident, self.what = target, tmp, directory, ident, what

    def __fspath__(self):
        return os.fspath(self.tmp)

    def ensure_room(self, nbytes: int, margin: int = 2 << 20) -> None:
        """Raise OSError(ENOSPC) unless ``nbytes`` (+ ``margin``) fit on the filesystem of the target.

        For writers that must not meet a full disk themselves: HDF5 (1.14, through h5py)
        crashes the process with a segmentation fault when it closes a file whose writes
        failed with ENOSPC, so HDF5 outputs check the room for each block before writing it
        (uncompressed size, an upper bound; ``margin`` for HDF5's metadata and chunk cache).
        Another process filling the disk between the check and the write is not covered.
        """
        st = os.statvfs(self.tmp.parent)
        free = st.f_bavail * st.f_frsize
        if free < nbytes + margin:
            raise OSError(errno.ENOSPC, f"No space left on device: {(nbytes + margin) / 1e6:.1f} MB needed for the next block, {free / 1e6:.1f} MB free")


def create_temporary(target, *, overwrite: bool = False, directory: bool = False, what: str = "the output") -> Temporary:
    """Step 1 and 2: check the target, then create its temporary name exclusively beside it."""
    target = prepare(target, overwrite=overwrite, directory=directory, what=what)
    parent = Parent(target, what)
    try:
        for _ in range(100):
            name = _owned_name(parent.name, "partial")
            try:
                if directory:
                    os.mkdir(name, 0o700, dir_fd=parent.fd)
                    st = os.stat(name, dir_fd=parent.fd, follow_symlinks=False)
                else:
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent.fd)
                    st = os.fstat(fd)
                    os.close(fd)
                break
            except FileExistsError:
                continue
        else:
            raise InputError(target, "cannot find a free temporary name beside it")
    except OSError as err:
        raise InputError(target, f"cannot write {what}: {describe(err)}") from None
    finally:
        parent.close()
    _step("created")
    return Temporary(target, target.parent / name, directory, (st.st_dev, st.st_ino), what)


def _rename_noreplace(parent: Parent, old: str, new: str, *, directory: bool) -> None:
    """Rename ``old`` to ``new`` in the parent, never over an existing ``new`` (FileExistsError)."""
    if _rename2(parent.fd, old, new, RENAME_NOREPLACE):
        return
    if parent.lstat(new) is not None:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), new)
    if directory:
        os.rename(old, new, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)  # a race with an empty directory remains
    else:
        os.link(old, new, src_dir_fd=parent.fd, dst_dir_fd=parent.fd, follow_symlinks=False)
        os.unlink(old, dir_fd=parent.fd)


def commit(tmp: Temporary, *, overwrite: bool = False, read_only: bool = True) -> Path:
    """Steps 4 to 7: seal ``tmp`` and move it into place (see the module docstring); the target.

    On any failure the temporary is removed and InputError raised; the published target, if
    there was one, is left as it was.
    """
    target, what = tmp.target, tmp.what
    parent = Parent(target, what)
    old = None
    try:
        seal_tree(parent.fd, tmp.tmp.name, read_only_modes() if read_only else None, os.geteuid(), tmp.ident)
        _step("sealed")
        if not overwrite or parent.lstat() is None:  # whatever appeared meanwhile (a link too) is never replaced
            _rename_noreplace(parent, tmp.tmp.name, parent.name, directory=tmp.directory)
        elif _check_target(parent, overwrite=overwrite, directory=tmp.directory, what=what) or _rename2(parent.fd, tmp.tmp.name, parent.name, RENAME_EXCHANGE):
            old = tmp.tmp.name  # the replaced copy, now under the temporary name
        else:
            old = _owned_name(parent.name, "old")
            os.rename(parent.name, old, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
            _step("set-aside")
            try:
                os.rename(tmp.tmp.name, parent.name, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
            except BaseException:
                os.rename(old, parent.name, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
                raise
        _step("swapped")
        if old is not None:
            _remove_entry(parent.fd, old)
            _step("removed-old")
        parent.fsync()
        _step("synced")
    except FileExistsError:
        discard(tmp)
        raise InputError(target, "exists already: it appeared while it was written (give --overwrite to replace it)") from None
    except InputError as err:
        discard(tmp)
        if err.path != os.fspath(target):
            raise InputError(target, f"not published: {err.path} {err.problem}") from None
        raise
    except OSError as err:
        discard(tmp)
        raise InputError(target, f"cannot publish {what}: {describe(err)}; nothing was published") from None
    except BaseException:
        discard(tmp)
        raise
    finally:
        parent.close()
    return target


# ------------------------------------------------------------------------------------- removal

def _remove_entry(dir_fd: int, name: str) -> None:
    fstree.remove_entry(dir_fd, name, on_entry=lambda: _step("removing"))


def discard(tmp) -> bool:
    """Remove a temporary (a :class:`Temporary` or its path) and whatever is in it, never following a link.

    Best effort (a Dask worker may still be writing into a temporary store): True if it is gone.
    """
    path = Path(os.fspath(tmp.tmp if isinstance(tmp, Temporary) else tmp))
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return not os.path.lexists(path)
    try:
        _remove_entry(fd, path.name)
    except OSError:
        pass
    finally:
        os.close(fd)
    return not os.path.lexists(path)


def remove(target, *, what: str = "the output") -> None:
    """Remove a published target (a read-only tree too), never following a link: InputError on failure."""
    target = Path(os.path.abspath(os.fspath(target)))
    parent = Parent(target, what)
    try:
        _remove_entry(parent.fd, parent.name)
    except OSError as err:
        raise InputError(target, f"cannot remove {what}: {describe(err)}") from None
    finally:
        parent.close()


# ------------------------------------------------------------------------------------- the front door

_H5_ERRNO = re.compile(r"errno = (\d+)")
_DISCARDED: set[str] = set()


def _quiet_unraisable(unraisable) -> None:
    """Drop what HDF5 objects say when they are freed after their file failed (they name a discarded temporary)."""
    text = f"{unraisable.exc_value}"
    if not any(name in text for name in _DISCARDED):
        _PREVIOUS_HOOK(unraisable)


_PREVIOUS_HOOK = sys.unraisablehook


def _as_input_error(err: Exception, tmp: Temporary) -> InputError | None:
    """The error as the output's one line, if it is about the output (None: leave it as it is).

    OSErrors that only writing causes (no space, quota, read-only filesystem, file too
    large), or naming the temporary or the target, and HDF5's errors about the temporary
    (h5py raises them as RuntimeError with the C errno in the text).
    """
    text = str(err)
    names = [os.fspath(n) for n in (getattr(err, "filename", None), getattr(err, "filename2", None)) if n]
    about_output = os.fspath(tmp.tmp) in text or any(n.startswith((os.fspath(tmp.tmp), os.fspath(tmp.target))) for n in names)
    code = getattr(err, "errno", None)
    if code is None and about_output and (m := _H5_ERRNO.search(text)):
        code = int(m.group(1))
    if not (code in _WRITE_ERRNOS or about_output or (isinstance(err, OSError) and "No space left" in text)):
        return None
    if code:
        problem = describe(OSError(code, os.strerror(code)))
    else:
        problem = text.split("\n")[0]
    _DISCARDED.add(tmp.tmp.name)
    if sys.unraisablehook is not _quiet_unraisable:
        sys.unraisablehook = _quiet_unraisable
    return InputError(tmp.target, f"cannot write {tmp.what}: {problem}; nothing was published")


@contextlib.contextmanager
def output(target, *, overwrite: bool = False, directory: bool = False, what: str = "the output", read_only: bool = True):
    """Publish ``target`` through a temporary (``.tmp`` of the yielded :class:`Temporary`).

    The caller writes the file, or everything in the directory, at ``out.tmp``; when the
    block ends without an exception the output is sealed and moved into place (see the
    module docstring); otherwise the temporary is removed and the target left as it was,
    an OSError about the output (no space, no permission, a read-only filesystem) becoming
    one InputError line. ``read_only=False`` keeps the files writable (synthetic runs,
    which tests corrupt on purpose); everything else is published read-only.
    """
    tmp = None
    try:
        # a Ctrl-C or SIGTERM (rmm's handler, rmm_dask.interrupts) right after the temporary is
        # created is raised only once ``tmp`` holds it, here inside the try: it is removed below
        with interrupts.held():
            tmp = _HELD.pop(_key(target, directory), None) or create_temporary(target, overwrite=overwrite, directory=directory, what=what)
        yield tmp
        _step("written")
    except (OSError, RuntimeError) as err:
        if tmp is None:
            raise
        discard(tmp)
        converted = _as_input_error(err, tmp)
        if converted is None:
            raise
        raise converted from None
    except BaseException:
        if tmp is not None:
            discard(tmp)
        raise
    commit(tmp, overwrite=overwrite, read_only=read_only)


#: temporaries created by :func:`hold`, by (absolute target, directory), until an :func:`output` takes them
_HELD: dict[tuple[str, bool], Temporary] = {}


def _key(target, directory: bool) -> tuple[str, bool]:
    return os.path.abspath(os.fspath(target)), directory


@contextlib.contextmanager
def hold(target, *, overwrite: bool = False, directory: bool = False, what: str = "the output"):
    """Hold ``target`` for this process during the block: its temporary is created now, so that
    another job on the same target is refused at once (:func:`prepare` sees a live temporary),
    not after it computed everything; the first :func:`output` of ``target`` in the block writes
    into it. Left unused, it is removed at the end of the block."""
    key = _key(target, directory)
    with interrupts.held():
        _HELD[key] = create_temporary(target, overwrite=overwrite, directory=directory, what=what)
    try:
        yield _HELD[key].target
    finally:
        unused = _HELD.pop(key, None)
        if unused is not None:
            discard(unused)


def publish_symlink(value: str, target, *, what: str = "the link") -> Path:
    """Point the symbolic link ``target`` at ``value`` in one atomic step (a new link renamed over it).

    The target must be a link or absent (a file or directory there is refused); the link
    is made under a temporary name of its own, and dead ones of earlier jobs are removed.
    """
    target = Path(os.path.abspath(os.fspath(target)))
    parent = Parent(target, what)
    name = None
    try:
        _tidy(parent)
        st = parent.lstat()
        if st is not None and not stat.S_ISLNK(st.st_mode):
            raise InputError(target, f"is not a symbolic link: not replacing it with {what}")
        while name is None:
            candidate = _owned_name(parent.name, "partial")
            try:
                os.symlink(value, candidate, dir_fd=parent.fd)
                name = candidate
            except FileExistsError:
                continue
        _step("created")
        os.replace(name, parent.name, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
        name = None
        _step("swapped")
        parent.fsync()
        _step("synced")
    except OSError as err:
        raise InputError(target, f"cannot publish {what}: {describe(err)}") from None
    finally:
        if name is not None:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=parent.fd)
        parent.close()
    return target


# ------------------------------------------------------------------------------------- withdrawing and amending

def withdraw(target, *, what: str = "the output") -> Path:
    """Remove a published output (``rmm remove``) so that no reader ever sees half of it.

    The target is first renamed, in one step, to a hidden temporary of this process beside it
    (``.NAME.partial-<host>-<pid>-<random>``): from then on its name is free and nothing reads
    the tree; then the tree is given back ``u+w`` directory by directory and removed, never
    following a link. A kill in between leaves a dead temporary that the next job on that name
    (:func:`prepare`) or the next ``rmm remove`` of it removes. InputError on failure, naming
    the target; the target is then as it was (or gone, if only the removal of the renamed copy failed).
    """
    target = Path(os.path.abspath(os.fspath(target)))
    parent = Parent(target, what)
    try:
        _tidy(parent)
        if parent.lstat() is None:
            raise InputError(target, f"no such {what}")
        name = None
        for _ in range(100):
            candidate = _owned_name(parent.name, "partial")
            if parent.lstat(candidate) is None:
                name = candidate
                break
        if name is None:
            raise InputError(target, "cannot find a free temporary name beside it")
        with interrupts.held():  # a Ctrl-C now is raised once the tree has its new name
            _rename_noreplace(parent, parent.name, name, directory=stat.S_ISDIR(parent.lstat().st_mode))
            parent.fsync()
        _step("swapped")
        _remove_entry(parent.fd, name)
        _step("removed-old")
        parent.fsync()
        _step("synced")
    except OSError as err:
        raise InputError(target, f"cannot remove {what}: {describe(err)}") from None
    finally:
        parent.close()
    return target


@contextlib.contextmanager
def reopened(directory, *, what: str = "the directory"):
    """Give a published (read-only) directory ``u+w`` for the block and its mode back after it, so
    that a file in it can be replaced through :func:`output` (``overwrite=True``: one atomic swap,
    never written in place). The directory is opened without following a link and must be
    owned by this user; InputError otherwise. The directory's other entries stay as they are."""
    path = Path(os.path.abspath(os.fspath(directory)))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise InputError(path, f"cannot open {what}: {describe(err)}") from None
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        try:
            os.fchmod(fd, mode | stat.S_IWUSR)
        except OSError as err:
            raise InputError(path, f"cannot change {what}: {describe(err)}") from None
        try:
            yield path
        finally:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
