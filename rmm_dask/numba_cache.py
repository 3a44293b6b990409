"""Where numba caches rmm-dask's compiled kernels: a directory only this user can write.

numba loads its cache index with pickle, so whoever can write the cache directory can run
code as the user that imports rmm-dask. The directory is therefore, in this order:

1. ``$NUMBA_CACHE_DIR`` when it is set: an explicit setting is trusted as given (the
   operator chose it; worker processes inherit the one chosen here);
2. ``$XDG_CACHE_HOME/rmm-dask/numba``, else ``~/.cache/rmm-dask/numba``, created with
   mode 0700 and used only if it is a real directory (not a symbolic link) owned by this
   user and not writable by group or others, below directories owned by this user or root
   that nobody else can write (or sticky, as /tmp);
3. else a fresh ``mkdtemp`` directory, removed when the process exits. A directory of
   step 2 that exists but fails the check is refused with a one-line warning on stderr.

In step 2 the kernels go to a subdirectory named by a digest of the sources of the modules
that hold kernels (:func:`kernels_digest`): numba checks only the source file of the
function it loads, not that of the kernels it calls from other files, so a cache kept
across an upgrade or an edit of a callee's file could run the old callee. A new digest
compiles once; the subdirectories of earlier versions are left for ``rm -r`` (a few MB each).

Call :func:`choose` before numba compiles anything (``rmm_dask/__init__.py`` does).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import stat
import sys
import tempfile


def candidate() -> str | None:
    """The per-user cache directory to try (step 2), or None without a usable home."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        base = xdg
    else:
        home = os.path.expanduser("~")
        if not os.path.isabs(home) or not os.path.isdir(home):
            return None
        base = os.path.join(home, ".cache")
    return os.path.join(base, "rmm-dask", "numba")


def problem(path: str, uid: int | None = None) -> str | None:
    """Why ``path`` may not hold a cache that is loaded with pickle, or None if it may."""
    uid = os.getuid() if uid is None else uid
    try:
        st = os.lstat(path)
    except OSError as err:
        return f"cannot be examined ({err.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != uid:
        return f"is owned by uid {st.st_uid}, not by this user (uid {uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by {'group' if st.st_mode & stat.S_IWGRP else 'others'} (mode {stat.S_IMODE(st.st_mode):04o})"
    # the directories above: someone else who may rename entries there could swap the cache
    above = os.path.realpath(os.path.dirname(path) or ".")
    while True:
        st = os.stat(above)
        if st.st_uid not in (uid, 0):
            return f"lies in {above}, owned by uid {st.st_uid}"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            return f"lies in {above}, writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
        if above == os.path.dirname(above):
            return None
        above = os.path.dirname(above)


def kernels_digest() -> str:
    """16 hex digits of the sources of the package's modules that hold numba kernels."""
    root = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), "rb") as f:
                    data = f.read()
                if b"njit" in data:
                    h.update(os.path.relpath(os.path.join(folder, name), root).encode() + b"\0" + data)
    return h.hexdigest()[:16]


def _make(path: str) -> None:
    """Create ``path`` and its missing parents with mode 0700 (an existing one is left as it is)."""
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:  # created meanwhile: examined below like any existing one
            pass


def _warn(message: str) -> None:
    print(f"rmm-dask: {message}", file=sys.stderr, flush=True)


def choose() -> str:
    """Set ``NUMBA_CACHE_DIR`` (environment and, if numba is imported, its config); return it."""
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if not chosen:
        path = candidate()
        if path is not None:
            try:
                _make(path)
            except OSError:
                path = None  # a home we may not write: no warning, nothing was refused
        why = problem(path) if path is not None else "unusable"
        if why is None:
            sub = os.path.join(path, kernels_digest())
            try:
                os.mkdir(sub, 0o700)
            except FileExistsError:
                pass  # made by an earlier run of this version: checked like its parent below
            except OSError as err:
                why = f"cannot hold a subdirectory ({err.strerror})"
            path, why = sub, why or problem(sub)
        if why is None:
            chosen = path
        else:
            chosen = tempfile.mkdtemp(prefix="rmm-dask-numba-")
            atexit.register(shutil.rmtree, chosen, ignore_errors=True)
            if path is not None:
                _warn(f"numba cache directory {path} {why}: not used; compiled kernels are cached in {chosen} for this process only")
        os.environ["NUMBA_CACHE_DIR"] = chosen
    if "numba" in sys.modules:  # imported before rmm-dask: it read the environment already
        sys.modules["numba"].config.CACHE_DIR = chosen
    return chosen


#: seconds numba takes to compile one of our kernels on the 2-core test machine (cold cache:
#: 16 kernels in ~40 s under load, benchmarks/bench_e2e.py); for the estimate users are told
SECONDS_PER_KERNEL = 2.5


def cold_kernels() -> list[str]:
    """The cached numba kernels of the ``rmm_dask`` modules imported so far that will compile when
    first called: those of modules none of whose kernels has a compiled version of the module's
    current source in the cache (the first run after an install or an upgrade). A kernel the
    jobs so far never needed (e.g. the one for float data) in a module otherwise cached does
    not count: it compiles, briefly, only when a job needs it.

    This reads numba's cache index (``<function>.nbi`` in :func:`choose`'s directory, whose
    stamp must match the source file) through numba's cache objects, not a public interface:
    should they change, no kernel is reported cold.
    """
    if "numba" not in sys.modules:
        return []
    try:
        from numba.core.caching import FunctionCache
        from numba.core.dispatcher import Dispatcher
    except ImportError:
        return []
    per_module = {}  # module -> {kernel: whether its cache holds a compiled version}
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("rmm_dask."):
            continue
        for attr, obj in list(vars(module).items()):
            if isinstance(obj, Dispatcher) and getattr(obj.py_func, "__module__", None) == name and isinstance(getattr(obj, "_cache", None), FunctionCache):
                try:
                    per_module.setdefault(name, {})[attr] = bool(obj._cache._cache_file._load_index())
                except Exception:  # an unreadable index is numba's to handle; not a reason to fail here
                    per_module.setdefault(name, {})[attr] = True
    return [f"{name}.{attr}" for name, kernels in per_module.items() if not any(kernels.values()) for attr in kernels]


def compile_notice() -> str | None:
    """The one line to print before the kernels compile, or None when their cache is warm."""
    cold = cold_kernels()
    if not cold:
        return None
    return f"compiling the kernels once (~{max(5, round(len(cold) * SECONDS_PER_KERNEL, -1)):.0f} s); later runs reuse them"
