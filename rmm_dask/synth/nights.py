"""A synthetic facility tree of many nights, with pixels that misbehave on some nights only (issue #23).

Every night is a new acquisition of one AGIPD-like detector (:class:`~.model.SynthConfig`
with ``acquisition = night - 1``: the same pixels, offsets and noise levels, with the
frames, their temporal noise and outlying frames drawn afresh), written as EuXFEL RAW
runs into one tree that ``rmm nightly`` watches: a flat run, then a dark run per gain
stage, ten minutes apart, nights a day apart by the files' modification times::

    <facility>/p700000/raw/r0001/   night 1, flat        (RAW-R0001-AGIPD00-S00000.h5)
    <facility>/p700000/raw/r0002/   night 1, dark high
    <facility>/p700000/raw/r0003/   night 1, dark medium
    <facility>/p700000/raw/r0004/   night 1, dark low
    <facility>/p700000/raw/r0005/   night 2, flat  ...   (night n: runs 4n-3 .. 4n)
    <facility>/truth_nights.h5      what was planted, per pixel and night (below)

On top of the defects :func:`rmm_dask.synth.synthesize` plants (bad every night: the
pixel's defects are the detector's), each module has pixels that are bad on some nights:

* ``intermittent`` (300): bad on a random ``fraction`` (30%) of the nights, drawn per
  pixel: ``max(1, round(fraction x nights))`` nights each;
* ``onset`` (100): bad from night ``onset_night`` (4) on;
* ``healing`` (100): bad on nights 1 .. ``heal_after`` (6), good from the night after.

On a night it is bad such a pixel is hot (its dark offset raised by 375-1500 ADU in every
gain stage, cell and in the flat, 14 or more robust sigmas of the offsets of its ASIC) or
noisy (Gaussian noise added to its dark frames, its temporal noise 3-8 times its own;
the flat, whose feature is its median response, is left as it is): about half each, fixed
per pixel. These are the dark features the mask maker tests at lambda = 8, so a night's
mask finds them on their bad nights and not on the others.

The truth file ``truth_nights.h5`` (written through :mod:`rmm_dask.publish`):

* ``/bad``     bool  (night, module, y, x): planted bad that night (always-bad ones every night);
* ``/kind``    uint8 (module, y, x): :class:`NightKind` of each pixel;
* ``/how``     uint16 (module, y, x): the :class:`~.model.Defect` flag (HOT or NOISY) of the
  pixels that vary, 0 elsewhere;
* ``/defects`` uint16 (module, gain, cell, y, x): the defects every night has
  (:class:`~.model.Truth` ``defects``, gain in stage order);
* ``/edges``   bool  (y, x): ASIC edge pixels (masked without analysis: kind EDGE);
* ``/runs``    uint16 (night, 4): run numbers of each night's flat, dark-high, dark-medium, dark-low;
* ``/times``   float64 (night, 4): their files' modification times (seconds since the epoch);
* attrs: the :class:`NightsPlan` fields, ``kind_names`` / ``kind_values``, ``dims`` on each dataset.

:func:`write_nights` writes a whole tree and its truth; :func:`plan_nights`,
:func:`write_night` and :func:`write_truth_nights` do it a night at a time (a tree that
grows, as the benchmark's), :func:`read_truth_nights` reads the truth back and
:func:`write_nightly_config` writes a ``nightly.yaml`` that watches the tree;
:func:`flagged_pixels` and :func:`score_night` compare a night's mask with the truth.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import yaml

from .. import publish
from ..codes import BadPixel
from ..errors import InputError
from ..io.hdf5 import open_hdf5
from .integrating import synthesize_integrating
from .model import ADC_MAX, GAINS, NOISY_FACTOR, OFFSET_STEP, OFFSET_STEPS, Defect, SynthConfig
from .on_disk import write_synthetic

__all__ = [
    "NightKind", "NightsPlan", "NightsTruth", "plan_nights", "write_night", "write_nights",
    "write_truth_nights", "read_truth_nights", "write_nightly_config", "flagged_pixels", "score_night", "tree_of",
    "TRUTH_NAME", "PROPOSAL", "ROLES", "VARYING",
]

TRUTH_NAME = "truth_nights.h5"
PROPOSAL = 700000  #: the tree is ``<facility>/p700000/raw`` (the proposal the RAW writer records)
ROLES = ("flat", "dark-high", "dark-medium", "dark-low")  #: each night's runs, in the order they are taken
RUN_SPACING = 600.0  #: seconds between a night's runs
DAY = 86400.0
#: purpose of the random stream of the nights' pixels (beyond the synthetic model's own purposes)
_NIGHTS_STREAM = 1000


class NightKind(enum.IntEnum):
    """How a pixel behaves over the nights (``/kind`` of the truth)."""

    ALWAYS_GOOD = 0  #: nothing planted, not an ASIC edge
    ALWAYS_BAD = 1  #: a defect of :func:`~rmm_dask.synth.synthesize` in some gain or cell, every night
    INTERMITTENT = 2  #: bad on a random ``fraction`` of the nights
    ONSET = 3  #: bad from ``onset_night`` on
    HEALING = 4  #: bad up to ``heal_after``, good after
    EDGE = 5  #: ASIC edge: not planted, masked without analysis every night


#: the kinds that vary from night to night
VARYING = (NightKind.INTERMITTENT, NightKind.ONSET, NightKind.HEALING)


@dataclass(frozen=True)
class NightsPlan:
    """What to write: the detector's acquisitions and the pixels that vary (counts per module)."""

    nights: int = 10
    seed: int = 0
    modules: int = 1
    cells: int = 1
    frames: int = 64  #: dark and flat frames per cell of each run
    intermittent: int = 300
    fraction: float = 0.3  #: of the nights an intermittent pixel is bad
    onset: int = 100
    onset_night: int = 4  #: the first night an onset pixel is bad
    healing: int = 100
    heal_after: int = 6  #: the last night a healing pixel is bad
    start: float = datetime(2026, 11, 1, 22, 0, tzinfo=timezone.utc).timestamp()  #: night 1's flat, epoch seconds

    def __post_init__(self):
        for name in ("nights", "modules", "cells", "frames", "onset_night"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("intermittent", "onset", "healing", "heal_after", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, not {getattr(self, name)}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], not {self.fraction}")
        if self.nights > 2499:
            raise ValueError("at most 2499 nights: EuXFEL run numbers end at 9999")
        if self.frames < 16:
            raise ValueError("frames must be at least 16: the flat check reads 16 frames")

    def synth_config(self, night: int) -> SynthConfig:
        """The synthetic set of night ``night`` (1-based): a new acquisition of the same detector."""
        return SynthConfig(modules=self.modules, cells=self.cells, frames=self.frames, flat_frames=self.frames,
                           seed=self.seed, acquisition=night - 1)

    def run_numbers(self, night: int) -> dict[str, int]:
        """``{role: run number}`` of night ``night``: runs ``4 night - 3`` (the flat) to ``4 night``."""
        return {role: 4 * (night - 1) + 1 + i for i, role in enumerate(ROLES)}

    def run_times(self, night: int) -> dict[str, float]:
        """``{role: modification time}`` of night ``night``'s runs: a day apart, RUN_SPACING between runs."""
        return {role: self.start + (night - 1) * DAY + i * RUN_SPACING for i, role in enumerate(ROLES)}


@dataclass
class NightsTruth:
    """What :func:`plan_nights` planted; nights are numbered from 1, ``bad[night - 1]`` is night ``night``."""

    plan: NightsPlan
    bad: np.ndarray  #: bool (night, module, y, x): planted bad that night
    kind: np.ndarray  #: uint8 (module, y, x): NightKind
    how: np.ndarray  #: uint16 (module, y, x): Defect.HOT or Defect.NOISY for the varying pixels, else 0
    defects: np.ndarray  #: uint16 (module, gain, cell, y, x): the defects of every night
    edges: np.ndarray  #: bool (y, x)
    runs: np.ndarray  #: uint16 (night, 4): run numbers of ROLES
    times: np.ndarray  #: float64 (night, 4): modification times of ROLES' files
    #: float32 (module, y, x): the offset shift (ADU) of a hot pixel, or the factor of a noisy
    #: pixel's temporal noise, on its bad nights; 0 elsewhere
    strength: np.ndarray

    def of_kind(self, kind: NightKind) -> np.ndarray:
        """Bool (module, y, x): the pixels of ``kind``."""
        return self.kind == np.uint8(kind)

    def bad_on(self, night: int) -> np.ndarray:
        """Bool (module, y, x): the pixels planted bad on night ``night`` (1-based)."""
        if not 1 <= night <= self.plan.nights:
            raise ValueError(f"night must be in 1..{self.plan.nights}, not {night}")
        return self.bad[night - 1]

    def pixels(self, kind: NightKind) -> np.ndarray:
        """int64 (n, 3): the (module, y, x) of the pixels of ``kind``, in index order."""
        return np.argwhere(self.of_kind(kind)).astype(np.int64)

    def nights_bad(self) -> np.ndarray:
        """int (module, y, x): on how many nights each pixel was planted bad."""
        return self.bad.sum(axis=0)


def _base(plan: NightsPlan):
    """The detector's defects, edges and model, the same every night (frames kept to the minimum: the
    layout and parameters do not depend on them)."""
    small = dataclasses.replace(plan.synth_config(1), frames=1, flat_frames=1)
    return synthesize_integrating(small)


def plan_nights(nights: int = 10, *, seed: int = 0, **options) -> NightsTruth:
    """Draw which pixels vary and on which nights (see the module docstring); writes nothing.

    ``options`` are the other :class:`NightsPlan` fields (``modules``, ``cells``, ``frames``,
    ``intermittent``, ``fraction``, ``onset``, ``onset_night``, ``healing``, ``heal_after``,
    ``start``). The varying pixels are drawn among the always-good ones, each of its own
    kind, per module from a stream of ``seed`` apart from the synthetic model's.
    """
    plan = NightsPlan(nights=nights, seed=seed, **options)
    calib = _base(plan)
    defects, edges = calib.truth.defects, calib.truth.edges
    shape = (plan.modules, *edges.shape)
    kind = np.full(shape, np.uint8(NightKind.ALWAYS_GOOD))
    kind[(defects != 0).any(axis=(1, 2))] = NightKind.ALWAYS_BAD
    kind[:, edges] = NightKind.EDGE
    bad = np.zeros((nights, *shape), dtype=bool)
    bad[:, kind == NightKind.ALWAYS_BAD] = True
    how = np.zeros(shape, dtype=np.uint16)
    strength = np.zeros(shape, dtype=np.float32)
    counts = {NightKind.INTERMITTENT: plan.intermittent, NightKind.ONSET: plan.onset, NightKind.HEALING: plan.healing}
    per_pixel = max(1, round(plan.fraction * nights))
    nights_of = np.arange(1, nights + 1)
    for m in range(plan.modules):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(m, _NIGHTS_STREAM)))
        free = np.flatnonzero(kind[m] == NightKind.ALWAYS_GOOD)
        total = sum(counts.values())
        if total > free.size:
            raise ValueError(f"{total} varying pixels do not fit in the {free.size} always-good pixels of module {m}")
        chosen = rng.choice(free, size=total, replace=False)
        hot = rng.random(total) < 0.5
        shift = OFFSET_STEP * rng.uniform(*OFFSET_STEPS, total)
        factor = rng.uniform(*NOISY_FACTOR, total)
        start = 0
        for k, n in counts.items():
            pixels = np.sort(chosen[start:start + n])
            start += n
            ys, xs = np.unravel_index(pixels, edges.shape)
            kind[m, ys, xs] = k
            if k == NightKind.INTERMITTENT:
                which = np.argsort(rng.random((n, nights)), axis=1)[:, :per_pixel]  # per pixel, its bad nights
                on = np.zeros((n, nights), dtype=bool)
                np.put_along_axis(on, which, True, axis=1)
            elif k == NightKind.ONSET:
                on = np.broadcast_to(nights_of >= plan.onset_night, (n, nights))
            else:
                on = np.broadcast_to(nights_of <= plan.heal_after, (n, nights))
            bad[:, m, ys, xs] = on.T
        ys, xs = np.unravel_index(chosen, edges.shape)
        how[m, ys, xs] = np.where(hot, np.uint16(Defect.HOT), np.uint16(Defect.NOISY))
        strength[m, ys, xs] = np.where(hot, shift, factor)
    runs = np.array([list(plan.run_numbers(n).values()) for n in nights_of], dtype=np.uint16)
    times = np.array([list(plan.run_times(n).values()) for n in nights_of], dtype=np.float64)
    return NightsTruth(plan, bad, kind, how, defects.astype(np.uint16), edges.astype(bool), runs, times, strength)


def tree_of(facility_dir: str | os.PathLike) -> Path:
    """The run tree under ``facility_dir``: ``<facility>/p700000/raw``."""
    return Path(facility_dir) / f"p{PROPOSAL}" / "raw"


def write_night(facility_dir: str | os.PathLike, truth: NightsTruth, night: int) -> dict[str, Path]:
    """Write night ``night``'s flat and dark runs into the tree, with that night's varying pixels bad.

    The frames are night ``night``'s acquisition (:meth:`NightsPlan.synth_config`), the pixels
    bad that night made hot or noisy as :func:`plan_nights` drew them; the runs' files and
    directories get the night's modification times (:meth:`NightsPlan.run_times`), which must be
    in the past (a run from the future would make its set wait for a flat). Returns ``{role: run}``.
    """
    plan = truth.plan
    times = plan.run_times(night)
    if max(times.values()) > datetime.now(timezone.utc).timestamp():
        when = _clock(max(times.values()))
        raise ValueError(f"night {night} would be taken in the future ({when}): choose an earlier start")
    calib = synthesize_integrating(plan.synth_config(night))
    for m in range(plan.modules):
        today = truth.bad_on(night)[m] & (truth.kind[m] != NightKind.ALWAYS_BAD)
        ys, xs = np.nonzero(today & (truth.how[m] == np.uint16(Defect.HOT)))
        _make_hot(calib, m, ys, xs, truth.strength[m, ys, xs])
        ys, xs = np.nonzero(today & (truth.how[m] == np.uint16(Defect.NOISY)))
        rng = np.random.default_rng(np.random.SeedSequence(plan.seed, spawn_key=(m, _NIGHTS_STREAM, night)))
        _make_noisy(calib, m, ys, xs, truth.strength[m, ys, xs], rng)
    numbers = plan.run_numbers(night)
    paths = write_synthetic(calib, tree_of(facility_dir).parent, run_numbers=numbers, truth=None)
    for role, when in times.items():
        for entry in (*paths[role].iterdir(), paths[role]):
            os.utime(entry, (when, when), follow_symlinks=False)
    return {role: paths[role] for role in ROLES}


def _make_hot(calib, m, ys, xs, shift) -> None:
    """Raise the offset of pixels (ys, xs) of module ``m`` by ``shift`` ADU in every run (as plant_hot)."""
    for run in (*calib.dark.values(), calib.flat):
        values = run.analog[m][..., ys, xs].astype(np.float32)  # (cell, frame, n)
        run.analog[m][..., ys, xs] = np.clip(np.rint(values + shift), 0, ADC_MAX).astype(run.analog.dtype)


def _make_noisy(calib, m, ys, xs, factor, rng) -> None:
    """Add Gaussian noise (from ``rng``: the night's own) to the dark frames of pixels (ys, xs) of
    module ``m``, so that their temporal noise is ``factor`` times their own."""
    for g, run in enumerate(calib.dark.values()):
        sigma = calib.model["noise"][m, g][:, ys, xs] * np.sqrt(factor**2 - 1)  # (cell, n)
        values = run.analog[m][..., ys, xs].astype(np.float32)  # (cell, frame, n)
        values += rng.standard_normal(values.shape, dtype=np.float32) * sigma[:, None, :]
        run.analog[m][..., ys, xs] = np.clip(np.rint(values), 0, ADC_MAX).astype(run.analog.dtype)


def write_nights(facility_dir: str | os.PathLike, nights: int = 10, *, seed: int = 0, **options) -> NightsTruth:
    """Write a facility tree of ``nights`` nights under ``facility_dir`` and its truth
    ``facility_dir/truth_nights.h5`` (see the module docstring); returns the truth.

    ``options``: the other :class:`NightsPlan` fields. The tree must not hold those runs yet
    (InputError naming the first that exists, as for every synthetic run).
    """
    truth = plan_nights(nights, seed=seed, **options)
    for night in range(1, nights + 1):
        write_night(facility_dir, truth, night)
    write_truth_nights(truth, Path(facility_dir) / TRUTH_NAME)
    return truth


def write_truth_nights(truth: NightsTruth, path: str | os.PathLike) -> Path:
    """Write the truth (see the module docstring) to ``path`` through :func:`rmm_dask.publish.output`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with publish.output(path, what="the truth file", read_only=False) as tmp:
        with h5py.File(tmp.tmp, "w") as f:
            for field in dataclasses.fields(truth.plan):
                f.attrs[field.name] = getattr(truth.plan, field.name)
            f.attrs["kind_names"] = [k.name for k in NightKind]
            f.attrs["kind_values"] = np.array([int(k) for k in NightKind], dtype=np.uint8)
            f.attrs["roles"] = list(ROLES)
            f.attrs["gains"] = list(GAINS)
            for name, dims in _DIMS.items():
                d = f.create_dataset(name, data=getattr(truth, name), compression="gzip")
                d.attrs["dims"] = list(dims)
    return path


_DIMS = {
    "bad": ("night", "module", "y", "x"),
    "kind": ("module", "y", "x"),
    "how": ("module", "y", "x"),
    "strength": ("module", "y", "x"),
    "defects": ("module", "gain", "cell", "y", "x"),
    "edges": ("y", "x"),
    "runs": ("night", "role"),
    "times": ("night", "role"),
}


def read_truth_nights(path: str | os.PathLike) -> NightsTruth:
    """Read a ``truth_nights.h5`` written by :func:`write_truth_nights` (InputError if missing or not one)."""
    path = os.path.abspath(os.fspath(path))
    names = [field.name for field in dataclasses.fields(NightsPlan)]
    with open_hdf5(path) as f:
        missing = [f"attribute {n}" for n in names if n not in f.attrs] + [f"/{n}" for n in _DIMS if n not in f]
        if missing:
            raise InputError(path, f"not a truth file of nights: missing {', '.join(missing)}")
        try:
            fields = {name: f.attrs[name] for name in names}
            arrays = {name: f[name][()] for name in _DIMS}
        except OSError as e:
            raise InputError(path, f"cannot read the truth: {e}") from None
    plan = NightsPlan(**{name: type(getattr(NightsPlan, name))(value) for name, value in fields.items()})
    expected = {"bad": (plan.nights, plan.modules), "kind": (plan.modules,), "runs": (plan.nights, len(ROLES))}
    for name, lead in expected.items():
        if arrays[name].shape[: len(lead)] != lead:
            raise InputError(path, f"/{name} has shape {arrays[name].shape}, expected {lead} first")
    return NightsTruth(plan, **arrays)


def write_nightly_config(path: str | os.PathLike, facility_dir: str | os.PathLike, *, state: str | os.PathLike,
                         publish_dir: str | os.PathLike, name: str = "AGIPD", extra: dict | None = None) -> Path:
    """Write a ``nightly.yaml`` that watches the tree of ``facility_dir`` (absolute paths), through
    :func:`rmm_dask.publish.output`: detector AGIPD1M, the roles by run type, ``flat-window: 2h``
    (each night takes its own flat), ``settle: 0`` (the runs are complete when written), one
    worker, the sanity bounds of ``configs/nightly.yaml``, lambda 8. ``extra`` is merged into
    the ``nightly:`` section (e.g. a ``history:`` key)."""
    config = {
        "nightly": {
            "state": os.path.abspath(state),
            "publish": os.path.abspath(publish_dir),
            "settle": 0,
            "workers": 1,
            "max-attempts": 2,
            "flat-window": "2h",
            "sanity": {"bad-fraction": [0.0, 0.10], "max-change": 0.02},
            "detectors": [{"name": name, "detector": "AGIPD1M",
                           "trees": [os.path.join(os.path.abspath(facility_dir), "p*", "raw")]}],
            **(extra or {}),
        },
        "rmm-dask": {"lambda": 8.0},
    }
    path = Path(path)
    with publish.output(path, what="the nightly config", read_only=False) as tmp:
        Path(tmp.tmp).write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def flagged_pixels(mask) -> np.ndarray:
    """Bool (module, y, x): the pixels a mask (uint8 (module, gain, cell, y, x)) flags in any gain or cell
    by analysis (any bit but ASIC_EDGE, which edges get without analysis)."""
    mask = np.asarray(mask)
    return ((mask & np.uint8(0xFF ^ int(BadPixel.ASIC_EDGE))) != 0).any(axis=(1, 2))


def score_night(flagged, truth: NightsTruth, night: int) -> dict:
    """Compare the pixels a mask flags (bool (module, y, x), :func:`flagged_pixels`) with night ``night``'s truth.

    Returns ``{"kinds": {kind name: {"bad", "found", "good", "flagged"}}, "recall", "false_positive_fraction"}``:
    per kind the pixels planted bad that night and how many of them are flagged, the pixels of the kind good
    that night and how many of them are flagged anyway; ``recall`` over every pixel bad that night,
    ``false_positive_fraction`` the flagged share of the always-good pixels.
    """
    flagged = np.asarray(flagged, dtype=bool)
    if flagged.shape != truth.kind.shape:
        raise ValueError(f"flagged pixels of shape {flagged.shape}, the truth's are {truth.kind.shape}")
    bad = truth.bad_on(night)
    kinds = {}
    for kind in NightKind:
        of = truth.of_kind(kind)
        kinds[kind.name] = {
            "bad": int(np.count_nonzero(of & bad)), "found": int(np.count_nonzero(of & bad & flagged)),
            "good": int(np.count_nonzero(of & ~bad)), "flagged": int(np.count_nonzero(of & ~bad & flagged)),
        }
    good = kinds["ALWAYS_GOOD"]
    return {
        "kinds": kinds,
        "recall": np.count_nonzero(bad & flagged) / max(1, np.count_nonzero(bad)),
        "false_positive_fraction": good["flagged"] / max(1, good["good"]),
    }


def _clock(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
