"""The pixel history of one nightly detector: ``<publish>/<name>/history.zarr``, kept night by night.

The nights are the published versions (:func:`nights_on_disk`): one per set of dark runs, in
the order the sets were discovered (the first version number given to those darks, as
``current`` orders them); a version that replaces one of the same darks (a late flat, changed
files) replaces that night, a held version is no night. The store holds the counters of
:mod:`rmm_dask.history` per pixel-plane ``(module, gain, cell, y, x)`` after the last night,
under ``undo/`` the same counters before it, and attributes: ``format``, the ``nights`` (version,
date of its darks, store, a digest of its mask store's metadata, so that a version made again
under the same name is noticed), per night the counts by module and bit, and ``arrays`` (the
manifest of :mod:`rmm_dask.integrity`: every chunk carries its crc32c and all are written, so a
damaged history is refused, never read as zeros).

:func:`update` brings the history to what is published, in O(one mask) per new night: it reads
the history's chunks and the new night's mask once and publishes a whole new history through
:mod:`rmm_dask.publish` (a kill leaves the old one in place; the next pass appends what is
missing). When only the newest night changed (its version replaced, or held), it starts from
``undo/``: no older night is read. Anything else (a history missing, damaged or of other
nights: a version released or held in between) is rebuilt from all published versions.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import zarr

from .. import __version__, integrity, publish
from .. import history as kernels
from ..codes import BadPixel
from ..errors import InputError, printable
from .versions import Versions, version_name

NAME = "history.zarr"
FORMAT = "rmm-dask pixel history 2"
#: formats of older rmm versions, rebuilt by the next pass (1: without ``recent_seen``)
OLDER = ("rmm-dask pixel history 1",)
ARRAYS = tuple(kernels.FIELDS)
BITS = [bit.name for bit in BadPixel]
WHAT = "the pixel history"


# ----------------------------------------------------------------------------------- the nights


def _darks(runs: dict) -> str:
    return json.dumps({role: path for role, path in runs.items() if role != "flat"}, sort_keys=True)


def _digest(store: Path) -> str:
    """A digest of a mask store's root metadata (attributes with its start and end time, inputs, manifest): another
    store under the same name gives another digest; reading it costs one small file."""
    try:
        return hashlib.sha256((store / "zarr.json").read_bytes()).hexdigest()[:16]
    except OSError as err:
        raise InputError(store, f"cannot read its zarr.json ({err.strerror}): not a night of the history") from None


def _darks_time(summary: dict) -> str | None:
    """When the darks were taken: the newest modification time of their files (UTC), else when the version started."""
    import datetime as dt

    darks = {p for role, p in (summary.get("runs") or {}).items() if role != "flat"}
    stamps = [r.get("mtime_ns") for path, records in (summary.get("inputs") or {}).items() if path in darks
              for r in records if isinstance(r, dict)]
    stamps = [s for s in stamps if isinstance(s, int)]
    if not stamps:
        return summary.get("started")
    return dt.datetime.fromtimestamp(max(stamps) / 1e9, dt.timezone.utc).isoformat(timespec="seconds")


def nights_on_disk(root: Path, say=None) -> list[dict]:
    """The nights of the detector directory ``root``: for each set of dark runs with a published version, in the
    order the sets were first given a version, its newest published version: ``{"version", "date", "store",
    "digest"}``. A version whose summary cannot be read is no night (``say`` is told why)."""
    groups: dict[str, dict] = {}
    versions = Versions(root)
    for number in versions.list():
        path = versions.path(number)
        try:
            summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
            darks, status = _darks(dict(summary["runs"])), summary["status"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            if say is not None:
                say(f"{path}: no readable summary.json ({err}); not a night of the history")
            continue
        group = groups.setdefault(darks, {"first": number, "night": None})
        if status == "published":
            group["night"] = (number, summary)
    out = []
    for group in sorted(groups.values(), key=lambda g: g["first"]):
        if group["night"] is None:
            continue
        number, summary = group["night"]
        store = versions.path(number) / "mask.zarr"
        try:
            digest = _digest(store)
        except InputError as err:
            if say is not None:
                say(str(err))
            continue
        out.append({"version": version_name(number), "date": _darks_time(summary), "store": str(store),
                    "digest": digest})
    return out


def _same(a: list[dict], b: list[dict]) -> bool:
    return [(n["version"], n["digest"]) for n in a] == [(n["version"], n["digest"]) for n in b]


def plan(recorded: list[dict], expected: list[dict]) -> tuple[str, int] | None:
    """What brings a history of the nights ``recorded`` to ``expected``: None (nothing), ("append", k) (add the
    nights from index k on), ("undo", k) (the newest recorded night is not the k-th one any more: start from the
    counters before it) or ("rebuild", 0)."""
    n = len(recorded)
    if _same(recorded, expected):
        return None
    if n <= len(expected) and _same(recorded, expected[:n]):
        return "append", n
    if n >= 1 and n - 1 <= len(expected) and _same(recorded[:-1], expected[: n - 1]):
        return "undo", n - 1
    return "rebuild", 0


# ----------------------------------------------------------------------------------- reading


class Damaged(InputError):
    """A damaged history: its one line says how it comes back; ``what`` is the damage alone, ``why`` the reason the
    pass's log gives for rebuilding it."""

    def __init__(self, path, what: str):
        self.what = what
        self.why = f"it was damaged: {what}"
        super().__init__(path, f"damaged history: {what}; the next nightly pass rebuilds it from the published "
                               f"versions (or: rmm history {Path(path).parent} --rebuild)")

    def __reduce__(self):
        return type(self), (self.path, self.what)


class Outdated(Damaged):
    """A history an older rmm wrote (:data:`OLDER`): nothing wrong with it, but it lacks what this rmm reads, so it
    is refused as a damaged one is and the next pass rebuilds it from the published versions."""

    def __init__(self, path, what: str):
        InputError.__init__(self, path, f"a history of an older rmm (format {what!r}, this rmm reads {FORMAT!r}): the "
                                        f"next nightly pass rebuilds it from the published versions (or: rmm history"
                                        f" {Path(path).parent} --rebuild)")
        self.what = what
        self.why = f"it was of an older rmm (format {what!r})"


def damaged(path, problem: str) -> Damaged:
    return Damaged(path, problem.removeprefix("damaged store: ").removesuffix("; not reading it"))


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise InputError(path, "is a symbolic link, not the history the nightly service publishes: not read or"
                               " written through it; remove it (rm) and the next pass writes the history")


def open_history(path) -> zarr.Group:
    """The history store at ``path``, verified (metadata as written, every chunk there, each checked as it is read);
    InputError when it is missing (``no such history``) or damaged."""
    path = Path(path)
    _refuse_link(path)
    if not path.exists():
        raise InputError(path, "no such history")
    try:
        meta = integrity.root_metadata(path)
    except InputError as err:
        raise damaged(path, err.problem) from None
    attrs = meta.get("attributes") or {}
    if attrs.get("format") in OLDER:
        raise Outdated(path, attrs["format"])
    if attrs.get("format") != FORMAT:
        raise damaged(path, f"format {printable(attrs.get('format'))!r}, not {FORMAT!r}")
    arrays, nights, counts = attrs.get("arrays"), attrs.get("nights"), attrs.get("counts")
    names = [*ARRAYS, *(f"undo/{a}" for a in ARRAYS)]
    if not isinstance(arrays, dict) or any(name not in arrays for name in names):
        raise damaged(path, "its 'arrays' attribute (the arrays it was written with) is missing or incomplete")
    if not isinstance(nights, list) or not isinstance(counts, list) or len(nights) != len(counts) or not nights or \
            not all(isinstance(n, dict) and {"version", "digest"} <= set(n) for n in nights):
        raise damaged(path, "its 'nights' or 'counts' attribute is missing or unreadable")
    consolidated = (meta.get("consolidated_metadata") or {}).get("metadata") or {}
    try:
        for name in names:
            entry = arrays[name]
            integrity._check_metadata(path, name, entry, integrity._read_json(path / name / "zarr.json"), "zarr.json")
            if consolidated:
                integrity._check_metadata(path, name, entry, consolidated.get(name), "consolidated metadata")
            integrity._check_chunks(path, name, entry)
    except InputError as err:
        raise damaged(path, err.problem) from None
    return zarr.open_group(integrity.VerifiedStore(path, arrays), mode="r")


def check_checksums(group: zarr.Group) -> None:
    """Read every chunk file of the history (compressed, not decoded) against its crc32c; Damaged naming the first that
    does not match. The pass does this before it trusts a history it does not rewrite: the bytes read are the
    history's size on disk (mostly zeros, compressed), one crc32c each."""
    import google_crc32c

    store = group.store
    path, arrays = Path(store.root), store.arrays
    for name, entry in arrays.items():
        for chunk in integrity.chunk_names(entry):
            try:
                data = (path / name / chunk).read_bytes()
            except OSError as err:
                raise damaged(path, f"chunk {name}/{chunk} cannot be read ({err.strerror})") from None
            if len(data) < 4 or google_crc32c.value(data[:-4]).to_bytes(4, "little") != data[-4:]:
                raise damaged(path, f"chunk {name}/{chunk} does not match its checksum (overwritten or corrupted on"
                                    " disk)")


def read_block(group, base: str, region: tuple, path) -> dict[str, np.ndarray]:
    """The counters of one chunk ``region`` of the history (``base``: "" or "undo/"); InputError for a damaged chunk."""
    try:
        return {name: group[base + name][((slice(None),) + region) if name == "bad_bits" else region]
                for name in ARRAYS}
    except InputError as err:
        raise damaged(path, err.problem) from None


def read_array(group, name: str, region: tuple, path) -> np.ndarray:
    """One array's ``region`` of the history (checked as it is read); Damaged for a damaged chunk."""
    try:
        return group[name][region]
    except InputError as err:
        raise damaged(path, err.problem) from None


def pixel_nights(group, path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(bad, seen), uint8 ``(module, y, x)``: on how many of the last ``n`` nights each distinct pixel was bad (any
    of its planes, gain and cell, bad) and seen (any plane with data), from the ``recent`` bitsets, read chunk by
    chunk: what the frequency map of ``rmm history --png`` draws."""
    shape, chunks = tuple(group["recent"].shape), tuple(group["recent"].chunks)
    acc = {name: np.zeros((shape[0], *shape[3:]), dtype=np.uint64) for name in ("recent", "recent_seen")}
    for region in chunk_regions(shape, chunks):
        where = (region[0], region[3], region[4])
        for name, out in acc.items():
            out[where] |= kernels.pixel_recent(read_array(group, name, region, path), (1, 2))
    return kernels.bad_in_last(acc["recent"], n), kernels.bad_in_last(acc["recent_seen"], n)


def chunk_regions(shape: tuple, chunks: tuple):
    """The regions (tuples of slices) of a chunk grid, module first."""
    ranges = [range(0, s, c) for s, c in zip(shape, chunks)]
    for starts in itertools.product(*ranges):
        yield tuple(slice(a, min(a + c, s)) for a, c, s in zip(starts, chunks, shape))


# ----------------------------------------------------------------------------------- writing


class Mask:
    """One night's mask store, opened verified; its chunks read by region."""

    def __init__(self, night: dict):
        from ..store import open_store

        self.night = night
        self.path = Path(night["store"])
        root = open_store(self.path)
        self.mask = root["mask"]
        self.gain_stages = list(root.attrs.get("gain_stages") or [])
        self.modules = [int(m) for m in root["module"][...]] if "module" in root else list(range(self.mask.shape[0]))

    def block(self, region: tuple) -> np.ndarray:
        return self.mask[region]


def _write(tmp: Path, shape: tuple, chunks: tuple, blocks, attrs: dict) -> None:
    """Create the history's arrays in ``tmp``; fill them chunk by chunk from ``blocks`` (``(region, main, undo)``)."""
    options = integrity.array_options()
    root = zarr.open_group(tmp, mode="w-", zarr_format=3)
    arrays = {}
    for base in ("", "undo/"):
        for name, (dtype, fill) in kernels.FIELDS.items():
            full, chunk = (shape, chunks) if name != "bad_bits" else ((kernels.NBITS, *shape), (kernels.NBITS, *chunks))
            dims = ["module", "gain", "cell", "y", "x"]
            dims = dims if name != "bad_bits" else ["bit", *dims]
            arrays[base + name] = root.create_array(base + name, shape=full, chunks=chunk, dtype=dtype,
                                                    fill_value=fill, dimension_names=dims, **options)
    for region, main, undo in blocks:
        for base, values in (("", main), ("undo/", undo)):
            for name in ARRAYS:
                where = ((slice(None),) + region) if name == "bad_bits" else region
                arrays[base + name][where] = values[name]
    with warnings.catch_warnings():
        root.attrs.update(json.loads(json.dumps({**attrs, "arrays": integrity.manifest(root)}, default=str)))
        warnings.simplefilter("ignore")  # v3 has no consolidated metadata in its spec yet (as the mask store)
        zarr.consolidate_metadata(tmp)


def _night_counts(modules: int) -> dict:
    return {"seen": [0] * modules, "flagged": [0] * modules, "newly_bad": [0] * modules, "healed": [0] * modules,
            "bits": {name: [0] * modules for name in BITS}}


def build(path: Path, nights: list[dict], how: tuple[str, int], *, old=None) -> dict:
    """Publish at ``path`` the history of ``nights``: from ``old`` (the history open) after its ``how[1]`` first
    nights (``append``: its counters; ``undo``: its counters before its newest night), or from nothing
    (``rebuild``); the new nights' masks are read once each, chunk by chunk. What was done: ``{"added", "seconds"}``."""
    t0 = time.perf_counter()
    kind, start = how
    if kind == "rebuild" or old is None:
        kind, start, counts, base = "rebuild", 0, [], None
    else:
        counts = list(old.attrs["counts"])[:start]
        base = "" if kind == "append" else "undo/"
    masks = [Mask(n) for n in nights[start:]]
    if not masks:  # only an undo: the counters before the newest night are the whole history
        raise ValueError("build() needs a night to add")
    shape, chunks = tuple(masks[0].mask.shape), tuple(masks[0].mask.chunks)
    if base is not None and tuple(old[base + "seen"].shape) != shape:
        kind, base, start, counts, masks = "rebuild", None, 0, [], [Mask(n) for n in nights]  # another layout
    for m in masks:
        if tuple(m.mask.shape) != shape or m.mask.dtype != np.uint8:
            raise InputError(m.path, f"its mask is {m.mask.dtype} {tuple(m.mask.shape)}, the history's first night"
                                     f" {masks[0].night['version']} uint8 {shape}: one history cannot hold both")
    if len(nights) > kernels.MAX_NIGHTS:
        raise InputError(path, f"{len(nights)} nights: a history holds at most {kernels.MAX_NIGHTS}")
    new_counts = [_night_counts(shape[0]) for _ in masks]

    def blocks():
        for region in chunk_regions(shape, chunks):
            block = tuple(s.stop - s.start for s in region)
            h = read_block(old, base, region, path) if base is not None else kernels.empty(block)
            undo = h
            for i, m in enumerate(masks):
                if i == len(masks) - 1:
                    undo = {k: v.copy() for k, v in h.items()}
                got = kernels.add_night(h, m.block(region), start + i)
                night, modules = new_counts[i], range(region[0].start, region[0].stop)
                for key in ("seen", "flagged", "newly_bad", "healed"):
                    for module, n in zip(modules, got[key]):
                        night[key][module] += int(n)
                for b, name in enumerate(BITS):
                    for module, n in zip(modules, got["bits"][b]):
                        night["bits"][name][module] += int(n)
            yield region, h, undo

    attrs = {"format": FORMAT, "software": f"rmm-dask {__version__}", "nights": nights,
             "counts": counts + new_counts, "bits": BITS, "shape": list(shape),
             "gain_stages": masks[-1].gain_stages, "modules": masks[-1].modules,
             "dims": ["module", "gain", "cell", "y", "x"]}
    with publish.output(path, overwrite=True, directory=True, what=WHAT) as out:
        _write(Path(out.tmp), shape, chunks, blocks(), attrs)
        open_history(Path(out.tmp))  # what is published, readers accept
    return {"kind": kind, "added": len(masks), "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------- the service's hook


def update(root: Path, say, *, rebuild: bool = False) -> dict | None:
    """Bring ``<root>/history.zarr`` to the published versions of the detector directory ``root``; one line to
    ``say`` for what was done (nothing when it is up to date). InputError when it cannot be written (a symbolic
    link at its name, no space left: the old history stays; the next pass tries again) or a night's mask cannot be
    read. ``rebuild``: from all published versions, whatever the history holds. What was done, or None."""
    path = root / NAME
    name = printable(root.name)
    _refuse_link(path)
    publish.tidy(path)  # what a killed pass left beside it (its owner dead), also when nothing is to be written
    expected = nights_on_disk(root, say)
    if not expected:
        if path.exists():
            publish.withdraw(path, what=WHAT)
            say(f"{name} history: no published version any more: {path} removed")
        return None
    old, why = None, "asked for (--rebuild)" if rebuild else None
    if why is None and not path.exists():
        why = "it was missing"
    elif why is None:
        try:
            old = open_history(path)
        except Damaged as err:
            old, why = None, err.why
    how = ("rebuild", 0) if old is None else plan(old.attrs["nights"], expected)
    try:
        if how is None:  # up to date: every chunk still checked (a history written now reads its base checked)
            check_checksums(old)
            return None
    except Damaged as err:
        old, why, how = None, err.why, ("rebuild", 0)
    if how == ("undo", len(expected)):  # the newest night is gone (held) and none new: nothing to add to
        how = ("rebuild", 0)
    if how[0] == "rebuild" and why is None:
        why = "its nights are not the published versions' (a version released, held or removed)"
    try:
        done = build(path, expected, how, old=old)
    except Damaged as err:
        if old is None or err.path != str(path):
            raise
        why = err.why
        done = build(path, expected, ("rebuild", 0))
    n, took = len(expected), f"{done['seconds']:.1f} s"
    if done["kind"] == "append":
        added = ", ".join(night["version"] for night in expected[-done["added"]:])
        say(f"{name} history: {added} appended ({n} night(s), {took})")
    elif done["kind"] == "undo":
        replaced = old.attrs["nights"][-1]["version"]
        say(f"{name} history: night {how[1] + 1} is now {expected[how[1]]['version']}, not {replaced}: redone from the"
            f" counters before it ({n} night(s), {took})")
    else:
        say(f"{name} history: rebuilt from {n} published version(s), as {why} ({took})")
    return done


# ----------------------------------------------------------------------------------- the report of `rmm history`


def window(nights: list, last: int | None) -> tuple[int, list[str]]:
    """N, the nights counted for ``--last`` ``last`` (None: all, up to 64) of a history of ``nights``, and the note
    to say when more were asked than there are; InputError outside 1..64."""
    n = min(len(nights), kernels.RECENT) if last is None else last
    if not 1 <= n <= kernels.RECENT:
        raise InputError("--last", f"{n}: give 1 to {kernels.RECENT} nights (the history keeps the verdicts of the"
                                   f" last {kernels.RECENT} nights per pixel)")
    if n > len(nights):
        return len(nights), [f"--last {n}: the history has {len(nights)} night(s); counted over those"]
    return n, []


def behind(root: Path, nights: list) -> list[str]:
    """The note to say when a history of ``nights`` is not (yet) that of the published versions of ``root``."""
    expected = nights_on_disk(root)
    if _same(nights, expected):
        return []
    return [f"the history has {len(nights)} night(s), the published versions make {len(expected)}: the next nightly"
            " pass brings it up to date"]


def _bins(n: int) -> list[tuple[int, int]]:
    """Rows of the k-of-n table: every k up to 16 nights, else 0, then about 8 bins of equal width."""
    if n <= 16:
        return [(k, k) for k in range(n + 1)]
    width = math.ceil(n / 8)
    return [(0, 0)] + [(a, min(a + width - 1, n)) for a in range(1, n + 1, width)]


def report(root: Path, last: int | None = None, top: int = 10) -> dict:
    """The numbers ``rmm history`` prints (and writes as JSON) for the detector directory ``root``: pixels bad in k of
    the last N nights, per night flagged, newly bad and healed, and the ``top`` pixel-planes that changed state most
    often. InputError without a history, or for a damaged one."""
    root = Path(root)
    path = root / NAME
    if not root.is_dir():
        raise InputError(root, "no such directory (give PUBLISH/NAME: the directory of one nightly detector's"
                               " versions)")
    if not path.exists() and not path.is_symlink():
        expected = nights_on_disk(root)
        if not expected:
            raise InputError(path, f"no pixel history and no published version in {root}: nothing to show")
        raise InputError(path, f"no pixel history yet ({len(expected)} published version(s)): the next nightly pass"
                               f" builds it, or: rmm history {root} --rebuild")
    group = open_history(path)
    nights, counts = group.attrs["nights"], group.attrs["counts"]
    n, notes = window(nights, last)
    notes += behind(root, nights)
    recent = group["recent"]
    shape, chunks = tuple(recent.shape), tuple(recent.chunks)
    per_k = np.zeros(n + 1, dtype=np.int64)
    best: list[tuple] = []
    pixels = None
    module = None

    def finish(acc):
        per_k[:] += np.bincount(kernels.bad_in_last(acc, n).ravel(), minlength=n + 1)[: n + 1]

    for region in chunk_regions(shape, (1, *chunks[1:])):
        if region[0].start != module:
            if pixels is not None:
                finish(pixels)
            module, pixels = region[0].start, np.zeros(shape[3:], dtype=np.uint64)
        block = read_block(group, "", region, path)
        pixels |= kernels.pixel_recent(block["recent"], (0, 1, 2))
        changes = block["changes"]
        if changes.max(initial=0) == 0:
            continue
        flat = changes.ravel()
        kth = max(int(np.partition(flat, -min(top, flat.size))[-min(top, flat.size)]), 1)
        above = np.flatnonzero(flat > kth)
        take = np.concatenate([above, np.flatnonzero(flat == kth)[: max(top - above.size, 0)]])  # ties: first in order
        for i in take:
            _, g, c, y, x = np.unravel_index(i, changes.shape)
            at = (int(module), int(region[1].start + g), int(region[2].start + c), int(y), int(x))
            best.append((-int(flat[i]), at, int(block["bad"][0, g, c, y, x]), int(block["seen"][0, g, c, y, x])))
        best = sorted(best)[:top]
    if pixels is not None:
        finish(pixels)
    gains = list(group.attrs.get("gain_stages") or [])
    first = len(nights) - n
    per_night = [{"night": i + 1, "version": nights[i]["version"], "date": nights[i].get("date"),
                  **{key: int(sum(counts[i][key])) for key in ("flagged", "newly_bad", "healed", "seen")},
                  "per_module": counts[i]} for i in range(first, len(nights))]
    return {
        "history": str(path),
        "nights": len(nights),
        "last": n,
        "modules": list(group.attrs.get("modules") or range(shape[0])),
        "pixels": int(per_k.sum()),
        "bad_in_k_of_last": [{"k": k, "pixels": int(v)} for k, v in enumerate(per_k)],
        "bins": [{"k": [a, b], "pixels": int(per_k[a:b + 1].sum())} for a, b in _bins(n)],
        "per_night": per_night,
        "most_changed": [{"module": at[0], "gain": gains[at[1]] if at[1] < len(gains) else at[1], "cell": at[2],
                          "y": at[3], "x": at[4], "changes": -neg, "bad": bad, "seen": seen}
                         for neg, at, bad, seen in best],
        "notes": notes,
    }
