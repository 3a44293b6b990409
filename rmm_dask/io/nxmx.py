"""The detector an NXmx master file describes: :func:`describe_nxmx`.

A NeXus/NXmx master file (EIGER and PILATUS as Dectris' FileWriter and NeXus converters write
them, JUNGFRAU as PSI's Jungfraujoch writes it) says most of what the mask maker needs: where
each module lies in the stored frame (its ``NXdetector_module`` groups' ``data_origin`` and
``data_size``, slow index first), what kind of sensor it is (the ``NXdetector``'s ``type`` and
``description``), which raw values are no measurement (``saturation_value``,
``underload_value``), the manufacturer's ``pixel_mask`` and the frames (``/entry/data``'s
``data_NNNNNN`` links, or one ``data`` dataset, a virtual one in Jungfraujoch's files).
:func:`describe_nxmx` builds the :class:`~rmm_dask.detectors.Detector` from those, with a note
per value saying where it came from, so that such a file needs no description of its own.

Groups are found by their ``NX_class`` attributes, not their names (Jungfraujoch names its
modules ``ARRAY_D0M0``, ..., Dectris its one module ``module``). Only metadata is read: no
frame, no external data file (an NXmx data file alone is refused: its master describes it).
"""

from __future__ import annotations

import os
import re

import h5py
import numpy as np

from ..detectors import Detector, get_detector
from ..errors import InputError, printable
from .common import open_hdf5

__all__ = ["describe_nxmx"]

#: what a user does when the file cannot tell: ends every refusal of :func:`describe_nxmx`
GIVE = "give --detector FILE.yaml (`rmm describe` writes one to edit)"

_DATA_LINK = re.compile(r"^data_\d{6}$")  #: the frames' links in an NXmx master's NXdata group
_DATA_FILE = re.compile(r"^(?P<stem>.+)_data_\d{6}\.h5$")  #: an NXmx data file's name
#: photon-counting detectors, by what their files say (type or description), and integrating ones
#: ("adaptive gain switching" is Jungfraujoch's type of JUNGFRAU; AGIPD switches gain the same way)
_COUNTING = re.compile(r"\bcounting\b|\b(eiger|pilatus|lambda|medipix|timepix|mythen)", re.IGNORECASE)
_INTEGRATING = re.compile(r"\bintegrating\b|gain[ -]switching|\b(jungfrau|agipd|epix|cspad|ccd)", re.IGNORECASE)
_FAMILY = re.compile(r"\b(eiger|pilatus|jungfrau)", re.IGNORECASE)
#: the chips of a family: its usual module shape -> the chip pitch (a chip and the pixels between chips).
#: EIGER: 256 x 256 chips with 2-pixel gaps in a 514 x 1030 module; PILATUS: 60 x 97 chips in a
#: 195 x 487 module; JUNGFRAU: 256 x 256 chips, 512 x 1024 raw, 514 x 1030 converted (Jungfraujoch
#: splits each large pixel at a chip border into two, so every chip spans 258 pixels)
_CHIPS = {
    "EIGER": {(514, 1030): (258, 258)},
    "PILATUS": {(195, 487): (98, 61)},
    "JUNGFRAU": {(514, 1030): (258, 258), (512, 1024): (256, 256)},
}
_VENDORS = {"dectris", "psi", "x-spectrum"}  #: words left out of a detector's name


def describe_nxmx(path: str | os.PathLike) -> tuple[Detector, list[str]]:
    """The Detector an NXmx master file describes, and notes saying where each value came from.

    Module count, shape and layout from the ``NXdetector_module`` groups (they must tile the
    stored frame on a regular grid; one module covering the frame is one module), chips from the
    module shape where the family (EIGER, PILATUS, JUNGFRAU) is known, counting from the
    detector's ``type`` or ``description``, ``saturation_value`` and ``underload_value`` where
    present (for Dectris files without one, ``detectorSpecific/countrate_correction_count_cutoff``),
    the frames' dataset and the ``pixel_mask``. A LAMBDA file (description "Lambda", no modules)
    gives the built-in LAMBDA2M. Raises :class:`InputError` naming the file and the key missing or
    the layout it cannot read, in one line; a file that is not NXmx, or an NXmx data file without
    its master, is refused the same way. Reads metadata only.
    """
    path = os.fspath(path)
    with open_hdf5(path) as f:
        return _Reader(f, path).describe()


class _Reader:
    """What :func:`describe_nxmx` reads from one open file, one step per method."""

    def __init__(self, f: h5py.File, path: str):
        self.f, self.path, self.notes = f, path, []

    def refuse(self, problem: str):
        return InputError(self.path, f"{problem}; {GIVE}")

    def describe(self) -> tuple[Detector, list[str]]:
        entry, detector = self.groups()
        description, kind = _text(detector.get("description")), _text(detector.get("type"))
        modules = [g for g in _children(detector) if _nx_class(g) == "NXdetector_module"]
        if not modules and description and re.search(r"\blambda\b", description, re.IGNORECASE):
            self.notes.append(f"LAMBDA: the built-in LAMBDA2M, from {detector.name}/description {description!r} "
                              "(its files have no NXdetector_module)")
            return get_detector("LAMBDA2M"), self.notes
        if not modules:
            raise self.refuse(f"{detector.name} has no NXdetector_module group (with data_origin and data_size): "
                              "cannot tell where its modules are")
        shape, origins = self.modules(modules)
        dataset, frame = self.frames(entry, detector, origins, shape)
        layout = self.layout(modules, origins, shape, frame)
        counting = self.counting(detector, description, kind)
        if not counting and self.converted(dataset):
            counting = True
        name = _name(description, self.path)
        self.notes.insert(0, f"name {name!r} from {detector.name}/description {description!r}" if description
                          else f"name {name!r} from the file's name ({detector.name}/description is missing)")
        family = (_FAMILY.search(f"{kind or ''} {description or ''}") or [None])[0]
        asic_shape = self.chips(family.upper() if family else None, shape)
        limits = {key: self.limit(detector, key) for key in ("saturation_value", "underload_value")}
        mask = detector.get("pixel_mask", getlink=True)
        pixel_mask = None
        if not isinstance(mask, h5py.ExternalLink) and isinstance(detector.get("pixel_mask"), h5py.Dataset):
            pixel_mask = f"{detector.name}/pixel_mask"
            self.notes.append(f"pixel mask {pixel_mask}")
        try:
            det = Detector(name=name, asic_shape=asic_shape, counting=counting, dataset=dataset, pixel_mask=pixel_mask,
                           chips_from_mask=pixel_mask is not None, **layout, **limits)  # the file's own chips win
        except ValueError as e:
            raise self.refuse(f"the description built from it is not usable: {e}") from None
        return det, self.notes

    # ---- the groups
    def groups(self) -> tuple[h5py.Group, h5py.Group]:
        """The NXentry and its NXinstrument's NXdetector, or InputError (not NXmx; a data file; several detectors)."""
        entry = _one(self.f, "NXentry")
        instrument = _one(entry, "NXinstrument") if entry is not None else None
        found = [g for g in _children(instrument) if _nx_class(g) == "NXdetector"] if instrument is not None else []
        if not found:
            frames = self.f.get("entry/data/data") if isinstance(self.f.get("entry/data"), h5py.Group) else None
            match = _DATA_FILE.match(os.path.basename(self.path))
            if isinstance(frames, h5py.Dataset) and match:
                raise InputError(self.path, "is an NXmx data file (frames only, its detector is described in its "
                                            f"master file): describe {match['stem']}_master.h5 instead, or {GIVE}")
            raise InputError(self.path, "not a NeXus/NXmx file (no NXdetector in an NXinstrument of an NXentry, by "
                                        f"their NX_class attributes): {GIVE}")
        if len(found) > 1:
            raise self.refuse(f"it has {len(found)} NXdetector groups ({', '.join(g.name for g in found)}): "
                              "cannot tell which one took the frames")
        return entry, found[0]

    # ---- modules and layout
    def modules(self, modules: list[h5py.Group]) -> tuple[tuple[int, int], list[tuple[int, int]]]:
        """The modules' common (slow, fast) shape and each one's origin in the frame."""
        sizes, origins = [], []
        for g in modules:
            sizes.append(self.pair(g, "data_size", positive=True))
            origins.append(self.pair(g, "data_origin"))
            stride = g.get("data_stride")
            if stride is not None and self.pair(g, "data_stride") != (1, 1):
                raise self.refuse(f"{stride.name} is {list(self.pair(g, 'data_stride'))}: rmm reads modules stored "
                                  "with stride [1, 1] (no flipped or strided modules)")
        for g, size in zip(modules, sizes):
            if size != sizes[0]:
                raise self.refuse(f"its modules differ in size: {modules[0].name}/data_size {list(sizes[0])}, "
                                  f"{g.name}/data_size {list(size)} (rmm reads modules of one shape)")
        where = f"{modules[0].name}/data_size" + (f" (all {len(modules)} modules)" if len(modules) > 1 else "")
        self.notes.append(f"module shape {list(sizes[0])} from {where}")
        return sizes[0], origins

    def pair(self, group: h5py.Group, key: str, positive: bool = False) -> tuple[int, int]:
        """Two integers (slow, fast) of a module's field, or InputError naming the field."""
        d = group.get(key)
        if d is None:
            raise self.refuse(f"{group.name}/{key} is missing")
        value = np.asarray(d[()]) if isinstance(d, h5py.Dataset) else np.array(None)
        if value.shape != (2,) or value.dtype.kind not in "iu" or (positive and value.min() < 1) or value.min() < 0:
            shown = value.tolist() if value.size <= 4 else f"{value.dtype} of shape {value.shape}"
            raise self.refuse(f"{group.name}/{key} is {shown}: expected two {'positive' if positive else 'whole'} "
                              "numbers (slow, fast)")
        return int(value[0]), int(value[1])

    def frames(self, entry, detector, origins, shape) -> tuple[str, tuple[int, int]]:
        """The frames' dataset path and the (Y, X) of a stored frame: the frame dataset's own shape where the
        master holds it (no data file is opened), else detectorSpecific's pixel counts, else the modules' extent."""
        data = _one(entry, "NXdata")
        data = entry.get("data") if data is None else data
        if not isinstance(data, h5py.Group):
            raise self.refuse(f"{entry.name} has no NXdata group (the frames' data_NNNNNN links or data dataset)")
        links = sorted(n for n in data if _DATA_LINK.match(n))
        if links:
            dataset, first = data.name, f"{data.name}/{links[0]}"
        elif data.get("data", getlink=True) is not None:  # a link is not followed: a data file may be absent
            dataset = first = f"{data.name}/data"
        else:
            raise self.refuse(f"{data.name}/data_000001 (or {data.name}/data) is missing: no frames")
        self.notes.append(f"frames from {dataset}" + (f" ({len(links)} data_NNNNNN links)" if links else ""))
        link = self.f.get(first, getlink=True)  # an external link is not followed: its data file may be absent
        held = isinstance(link, h5py.HardLink) and isinstance(self.f.get(first), h5py.Dataset)
        specific = detector.get("detectorSpecific")
        counts = [specific.get(f"{a}_pixels_in_detector") if isinstance(specific, h5py.Group) else None for a in "yx"]
        if held and self.f[first].ndim == 3:
            frame, source = tuple(int(n) for n in self.f[first].shape[1:]), f"the shape of {first}"
        elif all(isinstance(c, h5py.Dataset) and c.shape in ((), (1,)) for c in counts):
            frame = tuple(int(np.asarray(c[()]).reshape(-1)[0]) for c in counts)
            source = f"{specific.name}/y_pixels_in_detector and x_pixels_in_detector"
        else:
            frame = tuple(max(o[a] for o in origins) + shape[a] for a in (0, 1))
            source = "the modules' extent (the file gives no frame size)"
        self.notes.append(f"frame {list(frame)} from {source}")
        return dataset, frame

    def layout(self, modules, origins, shape, frame) -> dict:
        """n_modules, module_shape and, for several modules, module_grid, module_gap and module_order; InputError
        for modules outside the frame or not on a regular grid of it, numbered neither along rows nor columns."""
        (ny, nx), (fy, fx) = shape, frame
        for g, (y, x) in zip(modules, origins):
            if y + ny > fy or x + nx > fx:
                raise self.refuse(f"{g.name} (data_origin {[y, x]}, data_size {[ny, nx]}) reaches beyond the "
                                  f"{fy} x {fx} frame")
        if len(modules) == 1:
            if origins[0] != (0, 0) or shape != frame:
                raise self.refuse(f"its one module {modules[0].name} (data_origin {list(origins[0])}, data_size "
                                  f"{[ny, nx]}) covers part of the {fy} x {fx} frame: rmm reads modules that tile it")
            self.notes.append(f"one module covering the frame, from {modules[0].name}")
            return {"n_modules": 1, "module_shape": shape}
        rows, cols = sorted({y for y, _ in origins}), sorted({x for _, x in origins})
        problem = _grid_problem(origins, rows, cols, shape, frame)
        if problem:
            raise self.refuse(f"its {len(modules)} NXdetector_module groups do not lie on a regular grid of the "
                              f"{fy} x {fx} frame ({problem}): rmm reads modules that tile the frame in rows and "
                              "columns with equal gaps")
        cells = [(rows.index(y), cols.index(x)) for y, x in origins]
        if all(i == r * len(cols) + c for i, (r, c) in enumerate(cells)):
            order = "row"
        elif all(i == c * len(rows) + r for i, (r, c) in enumerate(cells)):
            order = "column"
        else:
            raise self.refuse(f"its modules ({', '.join(g.name for g in modules)}) are numbered neither along the "
                              "rows of their grid nor down its columns")
        gap = (rows[1] - rows[0] - ny if len(rows) > 1 else 0, cols[1] - cols[0] - nx if len(cols) > 1 else 0)
        names = [g.name for g in modules]
        self.notes.append(f"{len(modules)} modules on a {len(rows)} x {len(cols)} grid with gaps {list(gap)}, numbered "
                          f"along {'rows' if order == 'row' else 'columns'}, from the data_origin of "
                          + (", ".join(names) if len(names) <= 3 else f"{names[0]}, ..., {names[-1]}"))
        return {"n_modules": len(modules), "module_shape": shape, "module_grid": (len(rows), len(cols)),
                "module_gap": gap, "module_order": order}

    # ---- kind of sensor, chips, limits
    def counting(self, detector, description, kind) -> bool:
        """True for a photon-counting detector, False for an integrating one, from its type and description."""
        said = {}
        for key, text in (("type", kind), ("description", description)):
            verdict = _verdict(text) if text else None
            if verdict is not None:
                said[key] = verdict
        if len(set(said.values())) > 1:
            raise self.refuse(f"{detector.name}/type {kind!r} and its description {description!r} disagree: "
                              "cannot tell whether it counts photons")
        if not said:
            what = (f"its type {kind!r} tells no kind of sensor" if kind else f"{detector.name}/type is missing")
            told = (f"its description {description!r} names no known detector" if description
                    else "it has no description")
            raise self.refuse(f"{what} and {told}: cannot tell whether it counts photons")
        key, verdict = next(iter(said.items()))
        text = kind if key == "type" else description
        kind_of = "true (photon counting)" if verdict else "false (integrating)"
        self.notes.append(f"counting: {kind_of}, from {detector.name}/{key} {text!r}")
        return verdict

    def converted(self, dataset: str) -> bool:
        """True when an integrating detector's frames are signed integers: photon counts converted from its raw
        ADC values (Jungfraujoch writes int32 photons; raw JUNGFRAU values are uint16), whose darks count
        almost nothing, as a counting detector's (an integrating detector's model would find every pixel's
        zero variance bad). Where the dtype cannot be seen (a data file absent), False."""
        try:
            obj = self.f[dataset]
            d = obj if isinstance(obj, h5py.Dataset) else obj[sorted(n for n in obj if _DATA_LINK.match(n))[0]]
            kind = d.dtype.kind
        except (OSError, KeyError, IndexError, ValueError):
            return False
        if kind != "i":
            return False
        self.notes.append(f"counting: true after all: its frames are {d.dtype} photon counts converted from the raw "
                          "values (signed integers), judged as counts (values down to underload_value are data)")
        return True

    def chips(self, family: str | None, shape: tuple[int, int]) -> tuple[int, int]:
        """The chip pitch of the family's modules; the whole module (and a note) where it is not known."""
        known = _CHIPS.get(family, {})
        pitch = known.get(shape) or next(iter(known.values()), None)
        if pitch is None or pitch[0] > shape[0] or pitch[1] > shape[1]:
            why = f"no {family} module" if family else "no known detector family (EIGER, PILATUS, JUNGFRAU)"
            self.notes.append(f"asic shape {list(shape)}: the whole module ({why}: chips unknown; the run's pixel mask "
                              "gives them where it marks them)")
            return shape
        usual = "" if shape in known else (f" (not a {' or '.join(str(list(s)) for s in known)} module: chips at "
                                           "that pitch from its corner)")
        self.notes.append(f"asic shape {list(pitch)} from the {family} family's chips{usual}")
        return pitch

    def limit(self, detector, key: str) -> float | int | None:
        """``saturation_value`` or ``underload_value`` of the detector (Dectris' count cutoff for a missing
        saturation_value), or None where the file has none."""
        d, where = detector.get(key), f"{detector.name}/{key}"
        if d is None and key == "saturation_value":
            where = f"{detector.name}/detectorSpecific/countrate_correction_count_cutoff"
            d = self.f.get(where)
        if d is None:
            return None
        value = np.asarray(d[()]) if isinstance(d, h5py.Dataset) else np.array(None)
        if value.size != 1 or value.dtype.kind not in "iuf" or not np.isfinite(value).all():
            raise self.refuse(f"{where} is {_short(value)}: expected one number")
        number = value.reshape(-1)[0].item()
        self.notes.append(f"{key.replace('_', ' ')} {number} from {where}")
        return number


def _grid_problem(origins, rows, cols, shape, frame) -> str | None:
    """Why modules at ``origins`` do not tile ``frame`` on a regular grid, or None."""
    (ny, nx), (fy, fx) = shape, frame
    if len(rows) * len(cols) != len(origins) or len(set(origins)) != len(origins):
        return f"{len(origins)} modules in {len(rows)} rows and {len(cols)} columns"
    if rows[0] != 0 or cols[0] != 0:
        return f"the first row and column start at {rows[0]} and {cols[0]}, not 0"
    for axis, starts, size in (("rows", rows, ny), ("columns", cols, nx)):
        steps = {b - a for a, b in zip(starts, starts[1:])}
        if len(steps) > 1:
            return f"module {axis} start at {starts}: unequal gaps"
        if steps and min(steps) < size:
            return f"module {axis} start at {starts}: modules of {size} pixels overlap"
    covered = (rows[-1] + ny, cols[-1] + nx)
    if covered != (fy, fx):
        return f"the modules cover {covered[0]} x {covered[1]} pixels of it"
    return None


def _verdict(text: str) -> bool | None:
    """True when ``text`` names a photon-counting detector, False an integrating one, None neither (or both)."""
    counting, integrating = bool(_COUNTING.search(text)), bool(_INTEGRATING.search(text))
    return counting if counting != integrating else None


def _name(description: str | None, path: str) -> str:
    """A short, readable name: the description without vendor and parenthesised words, else the file's stem."""
    words = [w for w in re.sub(r"\([^)]*\)", " ", description or "").split() if w.lower() not in _VENDORS]
    name = printable(" ".join(words))[:60].strip()
    return name or os.path.basename(path).removesuffix(".h5").removesuffix(".nxs").removesuffix("_master")


def _children(group: h5py.Group | None) -> list:
    """The groups and datasets inside ``group`` in natural name order (module_2 before module_10), external
    links left unopened (they lead to data files)."""
    if group is None:
        return []
    names = [n for n in group if not isinstance(group.get(n, getlink=True), h5py.ExternalLink)]
    names.sort(key=lambda n: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)])
    return [obj for obj in (group.get(n) for n in names) if obj is not None]


def _one(group: h5py.Group, nx_class: str) -> h5py.Group | None:
    """The first group of that NX_class in ``group`` (the one its ``default`` attribute names, if it is one)."""
    default = _text(group.attrs.get("default"))
    if default and not isinstance(group.get(default, getlink=True), (h5py.ExternalLink, type(None))):
        chosen = group.get(default)
        if isinstance(chosen, h5py.Group) and _nx_class(chosen) == nx_class:
            return chosen
    return next((g for g in _children(group) if isinstance(g, h5py.Group) and _nx_class(g) == nx_class), None)


def _nx_class(obj) -> str | None:
    return _text(obj.attrs.get("NX_class"))


def _text(value) -> str | None:
    """A string field or attribute as text (bytes, numpy strings, length-1 arrays as written), None if absent."""
    if isinstance(value, h5py.Dataset):
        if value.dtype.kind not in "SOU":
            return None
        value = value[()]
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split()) if isinstance(value, (str, np.str_)) else None


def _short(value: np.ndarray) -> str:
    return str(value.tolist()) if value.size <= 4 else f"{value.dtype} of shape {value.shape}"
