"""The file-system steps of publishing, each relative to an open directory and never through a link.

:mod:`rmm_dask.publish` is the protocol (prepare, create, write, seal, swap); this module
holds what it is made of: the target's parent directory opened once (:class:`Parent`),
the names of temporaries and who owns them (:func:`owned_name`, :func:`leftovers`), the
read-only modes (:func:`read_only_modes`), checking and sealing a written tree
(:func:`seal_tree`) and removing one, read-only or not (:func:`remove_entry`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
from pathlib import Path
from typing import NamedTuple

from .errors import InputError
from .processes import HOST, alive

# ------------------------------------------------------------------------------------- names

#: the longest file name most filesystems take (Linux's NAME_MAX, in bytes)
NAME_MAX = 255
#: what a temporary's name adds to its target's: ".", ".partial-", a host name (at most 64 bytes),
#: "-", a pid (at most 10 digits), "-", 8 hex digits
_RESERVE = 1 + len(".partial-") + 64 + 1 + 10 + 1 + 8


def _stem(target_name: str) -> str:
    """The target's name as its temporaries carry it: whole, or (when a temporary's name would be
    longer than :data:`NAME_MAX`) its first bytes and ``~`` and 8 hex digits of a digest of the whole name."""
    raw = os.fsencode(target_name)
    if len(raw) + _RESERVE <= NAME_MAX:
        return target_name
    return os.fsdecode(raw[: NAME_MAX - _RESERVE - 9]) + "~" + hashlib.sha256(raw).hexdigest()[:8]


def owned_name(target_name: str, kind: str) -> str:
    """A fresh name beside ``target_name`` for a temporary of this process: ``.NAME.<kind>-<host>-<pid>-<random>``
    (within :data:`NAME_MAX` whatever the target's name: see :func:`_stem`)."""
    return f".{_stem(target_name)}.{kind}-{HOST}-{os.getpid()}-{secrets.token_hex(4)}"


def _leftover_pattern(target_name: str) -> re.Pattern:
    name = re.escape(_stem(target_name))
    return re.compile(
        rf"^\.{name}\.(?:(?P<kind>partial|old)-(?:(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{{8}}|(?P<token>[A-Za-z0-9_]+))"
        rf"|(?P<link>[0-9a-f]{{8}}))$"  # earlier rmm-dask: .current.<hex> links of the nightly service
    )


class Leftover(NamedTuple):
    """A temporary of a target: its name, 'partial' or 'old', whose it is and whether its owner is gone."""

    name: str
    kind: str
    dead: bool  #: made on this host by a process that is gone
    mine: bool  #: made by this process
    owner: str  #: "pid N on HOST", as far as the name tells


def leftovers(dir_fd: int, target_name: str) -> list[Leftover]:
    """The temporaries of ``target_name`` in the directory (:class:`Leftover`).

    Dead: made on this host by a process that is gone. Names of earlier rmm-dask versions carry
    no host: a bare number is taken as a pid on this host, anything else as dead (those
    versions are not expected to run beside this one on the same output).
    """
    pattern = _leftover_pattern(target_name)
    found = []
    for entry in os.scandir(dir_fd):
        m = pattern.match(entry.name)
        if not m:
            continue
        kind = m["kind"] or "partial"
        mine = False
        if m["pid"] is not None:
            host, pid = m["host"], int(m["pid"])
            dead = host == HOST and not alive(pid)
            mine = host == HOST and pid == os.getpid()
        elif m["token"] is not None and m["token"].isdigit():
            host, pid = HOST, int(m["token"])
            dead = not alive(pid)
        else:
            host, pid, dead = HOST, None, True
        found.append(Leftover(entry.name, kind, dead, mine, f"pid {pid} on {host}" if pid is not None else "an earlier rmm-dask"))
    return found


# ------------------------------------------------------------------------------------- the parent

def describe(err: OSError) -> str:
    """An OSError as the end of a one-line message: 'no space left on device (ENOSPC)'."""
    name = errno.errorcode.get(err.errno or 0)
    text = err.strerror or str(err)
    return f"{text[0].lower()}{text[1:]}" + (f" ({name})" if name else "")


def link_value(dir_fd: int, name: str) -> str | None:
    """The link's value if ``name`` is a symbolic link (also dangling), else None."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return os.readlink(name, dir_fd=dir_fd) if stat.S_ISLNK(st.st_mode) else None


class Parent:
    """The target's directory, opened once (``O_DIRECTORY``); every step works relative to it."""

    def __init__(self, target, what: str):
        self.target = Path(os.path.abspath(os.fspath(target)))
        self.name = self.target.name
        if self.name in ("", ".", ".."):
            raise InputError(self.target, f"not a name {what} can be written to")
        try:
            self.fd = os.open(self.target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise InputError(self.target.parent, f"no such directory for {what}") from None
        except NotADirectoryError:
            raise InputError(self.target.parent, f"not a directory: cannot write {what} there") from None
        except OSError as err:
            raise InputError(self.target.parent, f"cannot open the directory for {what}: {describe(err)}") from None

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def lstat(self, name: str | None = None):
        try:
            return os.stat(name or self.name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def fsync(self):
        os.fsync(self.fd)


# ------------------------------------------------------------------------------------- sealing

def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # where /proc cannot tell (not thread-safe, hence the last resort)
    os.umask(mask)
    return mask


def read_only_modes() -> tuple[int, int]:
    """Read-only modes of published files and directories: the umask may take read bits, never add write bits."""
    keep = ~_umask() & 0o777
    return (0o444 & keep) | 0o400, (0o555 & keep) | 0o500


def seal_tree(dir_fd: int, name: str, modes: tuple[int, int] | None, uid: int | None = None, ident=None) -> None:
    """fsync ``name`` and everything below it, refusing links and other kinds; with ``modes``
    (file, directory) also check the owner is ``uid`` and make each entry read-only.

    ``ident`` (st_dev, st_ino): the inode ``name`` must be (the temporary as created).
    """
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if ident is not None and (st.st_dev, st.st_ino) != ident:
            raise InputError(name, "the temporary was replaced while it was written: not publishing it")
        if modes is not None and st.st_uid != uid:
            raise InputError(name, f"is owned by uid {st.st_uid}, not by this process: not publishing it")
        if stat.S_ISDIR(st.st_mode):
            for entry in os.scandir(fd):
                if entry.is_symlink():
                    raise InputError(entry.name, "is a symbolic link inside the output: not publishing it")
                seal_tree(fd, entry.name, modes, uid)
        elif not stat.S_ISREG(st.st_mode):
            raise InputError(name, "is neither a file nor a directory: not publishing it")
        os.fsync(fd)
        if modes is not None:
            os.fchmod(fd, modes[1] if stat.S_ISDIR(st.st_mode) else modes[0])
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputError(name, "is a symbolic link inside the output: not publishing it") from None
        raise
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------- removal

def remove_entry(dir_fd: int, name: str, on_entry=None) -> None:
    """Remove ``name`` (a file, a link, or a tree, read-only or not) without following any link.

    ``on_entry()`` is called after each entry of a directory is removed (the tests' kill points).
    """
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
        return
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and st.st_mode & 0o700 != 0o700:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)  # a published tree: give the owner write back
        for entry in os.scandir(fd):
            remove_entry(fd, entry.name, on_entry)
            if on_entry is not None:
                on_entry()
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=dir_fd)
