"""Which files make a run: expand what the user gave, read the file names, group one acquisition.

A run is given as a directory, a glob pattern (expanded here, in name order) or several
paths. The HDF5 files of one acquisition are told apart by tokens in their names, never
by detector-specific code:

* ``_m<k>`` (``k`` >= 1; followed by ``_`` or the end of the name before its suffix): the
  file holds module ``k - 1`` only (X-Spectrum LAMBDA writes ``<acq>_m1_...``, ``<acq>_m2_...``);
* ``_part<N>``: part ``N`` of a series split along frames (``<acq>_part00000.nxs``, ...);
  such a series starts at part 0;
* ``<acq>_master.<ext>``: a NeXus/NXmx master file; its ``<acq>_data_<N>.<ext>`` data files
  (which it links) are not parts of their own when the master is there; without the
  master they are parts ``N`` of a series starting at 1;
* otherwise a number at the end of the name is a running number when the acquisition has
  several files (``scan_0001.h5``, ``scan_0002.h5``): parts in number order, no start rule.

What is left of a name once the tokens are cut out (module and part numbers replaced by
``*``) names its acquisition: all files of a run must share it. Nothing here opens a file.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

from ..errors import InputError

__all__ = ["HDF5_SUFFIXES", "RunFile", "Acquisition", "expand", "classify", "directory_files", "acquisition"]

#: what a file of an HDF5 run may be called (in a directory; files named explicitly may be called anything)
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".nx", ".cxi")
_GLOB = re.compile(r"[*?\[]")
_MODULE = re.compile(r"_m(\d+)(?=_|$)")
_PART = re.compile(r"_part(\d+)(?=_|$)")
_NXMX_DATA = re.compile(r"_data_(\d+)$")
_MASTER = re.compile(r"_master$")
_RUNNING = re.compile(r"(\d+)$")
_FIRST_PART = {"part": 0, "data": 1}  #: where a series starts: LAMBDA's _part00000, NXmx's _data_000001


@dataclass(frozen=True)
class RunFile:
    """One file as its name describes it."""

    path: str
    acquisition: str  #: the name with module and part numbers as ``*`` (``scan_m*_part*.nxs``)
    module: int | None  #: module index (``_m1`` is 0), None for files of every module
    part: int | None  #: number in a series along frames, None for a file of its own
    kind: str  #: "master" (NXmx), "data" (an NXmx data file), "part" (``_part<N>``), "running" (a trailing number), "file"


@dataclass(frozen=True)
class Acquisition:
    """The files of one acquisition: ``parts[i]`` are module ``modules[i]``'s files in frame order
    (``modules == [None]`` when every file holds every module)."""

    name: str
    modules: list
    parts: list  #: list (per module) of lists of paths

    @property
    def files(self) -> list[str]:
        return [p for parts in self.parts for p in parts]


def expand(spec) -> tuple[str, list[str]]:
    """``(label, paths)``: the absolute paths (files or directories) a run spec stands for.

    ``spec`` is a path, a glob pattern or a list of them; patterns expand in name order.
    ``label`` names the run in messages (the path, the pattern, or the common directory).
    Raises InputError for a missing path or a pattern that matches nothing.
    """
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not items:
        raise InputError("run", "no path given")
    paths = []
    for item in items:
        item = os.path.abspath(os.fspath(item))
        if os.path.exists(item):
            paths.append(item)
        elif _GLOB.search(item):
            found = sorted(glob.glob(item))
            if not found:
                raise InputError(item, "no file matches the pattern")
            paths += [os.path.abspath(p) for p in found]
        else:
            raise InputError(item, "no such file or directory")
    if len(items) == 1:
        label = os.path.abspath(os.fspath(items[0]))
    else:
        label = os.path.commonpath(paths) if len(paths) > 1 else paths[0]
    return label, paths


def directory_files(directory: str) -> list[str]:
    """The HDF5 files of a directory in name order (hidden files and other suffixes left out)."""
    names = sorted(os.listdir(directory))
    if not names:
        raise InputError(directory, "empty directory")
    found = [os.path.join(directory, n) for n in names if not n.startswith(".") and n.lower().endswith(HDF5_SUFFIXES)]
    found = [p for p in found if os.path.isfile(p)]
    if not found:
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise InputError(directory, f"no HDF5 files ({', '.join(HDF5_SUFFIXES)}) in the directory (it holds {shown})")
    return found


def classify(path: str) -> RunFile:
    """What a file's name says: its acquisition, module and part (see the module docstring)."""
    name = os.path.basename(path)
    stem, suffix = _split_suffix(name)
    module = kind = None
    found = _MODULE.search(stem)
    if found:
        module = int(found[1]) - 1
        stem = stem[: found.start()] + "_m*" + stem[found.end() :]
    part = None
    for pattern, what, token in ((_PART, "part", "_part*"), (_NXMX_DATA, "data", "_data_*"), (_MASTER, "master", "_master")):
        found = pattern.search(stem)
        if found:
            kind = what
            part = int(found[1]) if what != "master" else None
            stem = stem[: found.start()] + token + stem[found.end() :]
            break
    else:
        found = _RUNNING.search(stem)
        if found:
            kind, part = "running", int(found[1])
            stem = stem[: found.start()] + "*"
        else:
            kind = "file"
    return RunFile(path, stem + suffix, None if module is None else module, part, kind)


def _split_suffix(name: str) -> tuple[str, str]:
    lower = name.lower()
    for s in HDF5_SUFFIXES:
        if lower.endswith(s):
            return name[: -len(s)], name[-len(s) :]
    stem, suffix = os.path.splitext(name)
    return stem, suffix


def acquisition(paths: list[str], n_modules: int, where: str) -> Acquisition:
    """Group files into one acquisition and check it is whole, or raise InputError.

    Refused: files of two acquisitions, NXmx masters of two, a module number beyond the
    detector's ``n_modules``, a module file missing or doubled, a file given twice, a part
    missing from a series. ``where`` names the run in messages.
    """
    seen = {}
    for p in paths:
        real = os.path.realpath(p)
        if real in seen:
            raise InputError(p, f"given twice (also as {seen[real]})" if seen[real] != p else "given twice")
        seen[real] = p
    files = [classify(p) for p in paths]
    masters = {f.acquisition.replace("_master", "_data_*"): f for f in files if f.kind == "master"}
    files = [f for f in files if not (f.kind == "data" and f.acquisition in masters)]  # the master links them
    names = {}
    for f in files:
        names.setdefault(f.acquisition, f)
    if len(names) > 1:
        (a, fa), (b, fb) = list(names.items())[:2]
        raise InputError(where, f"holds files of more than one acquisition: {a} ({os.path.basename(fa.path)}) and {b} ({os.path.basename(fb.path)})")
    name = next(iter(names))
    if len(files) == 1 and files[0].module is None:
        return Acquisition(name, [None], [[files[0].path]])
    by_module = {}
    for f in files:
        by_module.setdefault(f.module, []).append(f)
    modules = [None] if None in by_module else sorted(by_module)
    parts = [_series(by_module[m], where) for m in modules]
    if modules != [None]:
        if any(m >= n_modules or m < 0 for m in modules):
            bad = next(f for f in files if f.module >= n_modules or f.module < 0)
            raise InputError(bad.path, f"is named as module m{bad.module + 1}; the detector has modules m1..m{n_modules}")
        missing = [m + 1 for m in range(n_modules) if m not in by_module]
        if missing:
            have = ", ".join(f"m{m + 1}" for m in modules)
            raise InputError(where, f"module file(s) {', '.join(f'm{m}' for m in missing)} missing (found {have}; the detector has {n_modules} modules)")
    numbers = [[f.part for f in series] for series in parts]
    for m, series, nums in zip(modules[1:], parts[1:], numbers[1:]):
        if nums != numbers[0]:
            lacking = sorted(set(numbers[0]) - set(nums))
            if lacking:
                raise InputError(where, f"module file m{m + 1} of part {lacking[0]} missing ({_name_like(parts[0], numbers[0].index(lacking[0]), m)})")
            extra = sorted(set(nums) - set(numbers[0]))[0]
            raise InputError(where, f"module file m{modules[0] + 1} of part {extra} missing ({_name_like(series, nums.index(extra), modules[0])})")
    return Acquisition(name, modules, [[f.path for f in series] for series in parts])


def _series(files: list[RunFile], where: str) -> list[RunFile]:
    """One module's files in part order; InputError for a doubled part or a gap."""
    if len(files) == 1:
        return files
    if any(f.part is None for f in files):
        f = next(f for f in files if f.part is None)
        other = next(g for g in files if g is not f)
        what = f"module m{f.module + 1}" if f.module is not None else "the run"
        raise InputError(f.path, f"doubles {os.path.basename(other.path)}: both are {what}, and neither name has a part number")
    files = sorted(files, key=lambda f: f.part)
    for a, b in zip(files, files[1:]):
        if a.part == b.part:
            raise InputError(b.path, f"doubles {os.path.basename(a.path)} (both part {a.part}{'' if a.module is None else f' of module m{a.module + 1}'})")
    first, start = files[0].part, _FIRST_PART.get(files[0].kind)
    if start is not None and first > start:
        missing = f"{start}" if first == start + 1 else f"{start}..{first - 1}"
        raise InputError(where, f"part {missing} missing: the series {files[0].acquisition} starts at part {first}")
    for a, b in zip(files, files[1:]):
        if b.part != a.part + 1:
            gap = f"{a.part + 1}" if b.part == a.part + 2 else f"{a.part + 1}..{b.part - 1}"
            raise InputError(where, f"part {gap} missing from the series {a.acquisition} (between {os.path.basename(a.path)} and {os.path.basename(b.path)})")
    return files


def _name_like(series: list[RunFile], index: int, module: int) -> str:
    """The name a module's file of the same part would have, from another module's file."""
    name = os.path.basename(series[index].path)
    return _MODULE.sub(f"_m{module + 1}", name, count=1)
