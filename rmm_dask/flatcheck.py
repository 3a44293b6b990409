"""Is the flat run lit, and in the flat stage? Decided on a few frames, before any worker starts.

The rule, for every detector (one evidence per kind of detector it applies to):

* **signal**: per pixel, the flat's mean above the offset of the flat stage's dark, in
  that dark's noise sigmas (floored at the detector's minimum sigma: 1/6 count for
  counting detectors, whose dark noise is ~0), median over the pixels. A lit flat has
  at least :data:`MIN_SIGNAL`; a dark of the same stage has ~0. For counting detectors
  this is the counting rate: the flat must count at least ``MIN_SIGNAL / 6`` counts per
  frame more than the dark, whose rate is recorded beside it.
* **gain stage**, where the detector records one: with a gain value per pixel (AGIPD),
  the stage whose dark gain level is nearest the flat's, per pixel; with gain bits
  (JUNGFRAU: 0, 1, 3), the stage the bits name, per pixel and frame. A flat whose pixels
  sit mostly (more than half) in another stage than the flat stage is refused, naming
  the stage it looks like: another stage's dark shows plenty of "signal" above the
  flat stage's offset, but not the flat stage's gain.

The ratio of the flat's frame-to-frame noise to the dark noise is measured and recorded,
not decided on: a bright, stable flat where a photon is a few ADU lies only ~1.25 times
above the dark noise while being 16 sigmas above the offset, and a dark of another
day has ~1 as much as a dark of the same day.

:func:`flat_evidence` and :func:`flat_problem` are numpy only; :func:`check_flat` samples
the runs (:func:`rmm_dask.io.sample.sample_frames`: :data:`SAMPLE_FRAMES` frames of at
most two (module, cells) blocks) and raises :class:`InputError` for a doubted flat
unless ``accept`` is given. :func:`rmm_dask.job.run_mask` calls it before the cluster
starts; callers of :func:`rmm_dask.pipeline.build_mask` call it themselves and pass its
result as ``flat_check`` (without it, the pipeline's chunk tasks apply the same rule).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from . import features as F
from .detectors import Detector, run_detector
from .errors import InputError
from .mask import DarkStage, Params, dark_stage

MIN_SIGNAL = 5.0  #: median signal of a lit flat above its stage's dark offset, in dark sigmas
#: with only the flat stage's dark, a gain value this many of the dark's gain sigmas (per pixel)
#: from its level is in another stage (synthetic AGIPD: the next stage is ~240 away, a flat within 1)
GAIN_SIGMAS = 20.0
OTHER = "other"  #: the stage of pixels whose gain value is far from the only dark gain level known
SAMPLE_FRAMES = 16  #: frames read per sampled block of each run
#: JUNGFRAU gain bits -> index of the gain stage (G0, G1, G2)
GAIN_BITS_STAGE = {0: 0, 1: 1, 3: 2}


@dataclass
class FlatEvidence:
    """What a flat sample shows against the darks; all values are medians over the sampled pixels."""

    signal: float  #: flat mean above the flat stage's dark offset, in dark sigmas
    noise_ratio: float  #: flat frame-to-frame std over the dark noise (recorded, not decided on)
    flat_rate: float | None = None  #: counting detectors: the flat's counts per frame
    dark_rate: float | None = None  #: counting detectors: the flat stage's dark counts per frame
    #: fraction of the pixels (gain bits: pixel-frames) in each stage's gain level; None: no gain evidence
    stage_fractions: dict[str, float] | None = None
    stage: str | None = None  #: the stage most pixels are in, by the gain evidence
    frames: int = 0  #: flat frames sampled per cell
    pixels: int = 0  #: pixels the medians are over
    blocks: list = field(default_factory=list)  #: sampled (module, first cell) pairs

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _nearest_stage(flat_gain: np.ndarray, levels: dict[str, np.ndarray]) -> dict[str, float]:
    """Per pixel, the stage whose dark gain level is nearest the flat's: fraction of pixels per stage."""
    names = list(levels)
    distance = np.stack([np.abs(flat_gain - levels[g]) for g in names])
    valid = np.isfinite(distance).all(axis=0)
    nearest = np.argmin(np.where(np.isfinite(distance), distance, np.inf), axis=0)[valid]
    total = max(int(valid.sum()), 1)
    return {g: float(np.count_nonzero(nearest == i)) / total for i, g in enumerate(names)}


def _bit_stages(flat_gain: np.ndarray, detector: Detector) -> dict[str, float]:
    """Fraction of pixel-frames in each stage by their gain bits (other bit values belong to none)."""
    bits = np.asarray(flat_gain)
    bits = bits[np.isfinite(bits)] if bits.dtype.kind == "f" else bits.ravel()
    total = max(bits.size, 1)
    out = {}
    for value, index in GAIN_BITS_STAGE.items():
        if index < len(detector.gain_stages):
            out[detector.gain_stages[index]] = float(np.count_nonzero(bits == value)) / total
    return out


def _rate(counts: np.ndarray) -> float:
    """Counts per frame of the normal pixels: the mean of the per-pixel means, the highest 1% (hot pixels) left out.

    A median would say 0 for a dark where a normal pixel counts once in a hundred frames."""
    values = np.sort(counts[np.isfinite(counts)], axis=None)
    return float(values[: max(1, int(0.99 * values.size))].mean()) if values.size else float("nan")


def flat_evidence(flat, flat_gain, stages: dict[str, DarkStage], detector: Detector, flat_stage: str) -> FlatEvidence:
    """Evidence of a flat sample ``(cell, frame, y, x)`` (``flat_gain`` alike, or None) against dark statistics.

    ``stages`` maps the dark runs' gain stages to their :class:`DarkStage` of the same
    cells and pixels (from :func:`rmm_dask.mask.dark_stage`).
    """
    dark = stages[flat_stage]
    mean, std, _ = F.pixel_moments(flat)
    floor = detector.min_sigma
    sigma = np.maximum(dark.noise, floor) if floor > 0 else dark.noise
    with np.errstate(invalid="ignore", divide="ignore"):
        per_pixel = (mean - dark.offset) / sigma
        ratio = std / sigma
    per_pixel = per_pixel[np.isfinite(per_pixel)]
    ratio = ratio[np.isfinite(ratio)]
    ev = FlatEvidence(
        signal=float(np.median(per_pixel)) if per_pixel.size else float("nan"),
        noise_ratio=float(np.median(ratio)) if ratio.size else float("nan"),
        frames=int(np.shape(flat)[-3]),
        pixels=int(per_pixel.size),
    )
    if detector.counting:
        ev.flat_rate, ev.dark_rate = _rate(mean), _rate(dark.offset)
    if flat_gain is not None and detector.gain == "bits":
        ev.stage_fractions = _bit_stages(flat_gain, detector)
    elif flat_gain is not None and detector.gain == "separate":
        levels = {g: s.gain_mean for g, s in stages.items() if s.gain_mean is not None}
        gain_mean, _, _ = F.pixel_moments(flat_gain)
        if len(levels) > 1:
            ev.stage_fractions = _nearest_stage(gain_mean, levels)
        elif dark.gain_mean is not None:  # one level known: near it, or far (in the dark's gain sigmas)
            with np.errstate(invalid="ignore"):
                far = np.abs(gain_mean - dark.gain_mean) > GAIN_SIGMAS * np.maximum(dark.gain_std, 1.0)
            valid = np.isfinite(gain_mean) & np.isfinite(dark.gain_mean)
            n = max(int(valid.sum()), 1)
            ev.stage_fractions = {flat_stage: float(np.count_nonzero(valid & ~far)) / n, OTHER: float(np.count_nonzero(valid & far)) / n}
    if ev.stage_fractions:
        ev.stage = max(ev.stage_fractions, key=ev.stage_fractions.get)
    return ev


def flat_problem(ev: FlatEvidence, flat_stage: str, detector: Detector) -> str | None:
    """Why the evidence does not show a lit flat in ``flat_stage`` (one line), or None."""
    if ev.stage_fractions is not None:
        own = ev.stage_fractions.get(flat_stage, 0.0)
        if ev.stage != flat_stage and own < 0.5:
            share = f"{100 * ev.stage_fractions[ev.stage]:.0f}% of its pixels"
            if ev.stage == OTHER:
                seen, guess = f"{share} have gain values more than {GAIN_SIGMAS:g} gain sigmas from the {flat_stage} dark's", "another stage's"
            elif detector.gain == "bits":
                seen, guess = f"the gain bits of {share} say {ev.stage}", f"a {ev.stage}-gain"
            else:
                seen, guess = f"{share} are at the gain level of the {ev.stage} dark", f"a {ev.stage}-gain"
            return (
                f"not a flat in {flat_stage} gain: {seen}, {100 * own:.0f}% in {flat_stage} (signal {ev.signal:.1f} "
                f"dark sigmas above the {flat_stage} offset); a flat in {flat_stage} gain has most pixels in "
                f"{flat_stage}: is it {guess} dark run?"
            )
    if not ev.signal >= MIN_SIGNAL:
        if detector.counting:
            return (
                f"the flat run is not lit: it counts {ev.flat_rate:.3g} counts/frame per pixel, the dark {ev.dark_rate:.3g} "
                f"(median excess {ev.signal:.2f} dark sigmas, floored at {detector.min_sigma:.3g} count); a lit flat counts "
                f"at least {MIN_SIGNAL * detector.min_sigma:.2g} more ({MIN_SIGNAL:g} such sigmas): is it a dark run?"
            )
        return (
            f"the flat run is not lit: median signal {ev.signal:.2f} dark-noise sigmas above the {flat_stage} dark's "
            f"offset (a lit flat shows at least {MIN_SIGNAL:g}): is it a dark run?"
        )
    return None


def check_flat(darks: dict, flat, *, detector: Detector | str | None = None, flat_stage: str | None = None,
               params: Params = Params(), accept: bool = False, frames: int = SAMPLE_FRAMES) -> dict:
    """Sample the flat and dark runs and decide whether the flat is lit and in its stage.

    ``darks`` and ``flat`` are the lazy datasets of :func:`rmm_dask.io.open_run` (their
    metadata checked, e.g. by :func:`rmm_dask.pipeline.build_mask`). Reads ``frames``
    frames of up to two (module, cells) blocks of each run, here, with no cluster.
    Returns the evidence as a dict for the store's ``flat_check`` attribute (with
    ``problem`` and ``accepted_by_option`` when the check doubts the run and ``accept``
    is given); raises :class:`InputError` naming the flat run when it doubts the run
    and ``accept`` is false.
    """
    from .io.sample import sample_blocks, sample_frames

    detector = run_detector(darks, flat, detector)
    flat_stage = flat_stage or next(g for g in detector.gain_stages if g in darks)
    pieces = []
    for m, b in sample_blocks(flat):
        stages = {}
        for g, ds in darks.items():
            gain = sample_frames(ds.gain.data, m, b, frames)[0] if "gain" in ds else None
            stages[g] = dark_stage(sample_frames(ds.analog.data, m, b, frames)[0], gain, detector, params)
        flat_gain = sample_frames(flat.gain.data, m, b, frames)[0] if "gain" in flat else None
        pieces.append((sample_frames(flat.analog.data, m, b, frames)[0], flat_gain, stages))
    flat_a = np.concatenate([p[0] for p in pieces], axis=0)  # along cells: the medians are over every sampled pixel
    flat_g = None if pieces[0][1] is None else np.concatenate([p[1] for p in pieces], axis=0)
    stages = {g: _join([p[2][g] for p in pieces]) for g in pieces[0][2]}
    ev = flat_evidence(flat_a, flat_g, stages, detector, flat_stage)
    ev.blocks = [[int(flat.module.values[m]), int(flat.cell.values[_first_cell(flat, b)])] for m, b in sample_blocks(flat)]
    result = {"flat_stage": flat_stage, **ev.as_dict(), "min_signal": MIN_SIGNAL}
    problem = flat_problem(ev, flat_stage, detector)
    if problem is not None:
        if not accept:
            raise InputError(flat.attrs.get("path", "<flat run>"), problem + " (--accept-flat uses it anyway)")
        result.update(problem=problem, accepted_by_option=True)
    else:
        result["accepted_by_option"] = False
    return result


def _first_cell(ds, block: int) -> int:
    data = ds.analog.data
    chunks = data.chunks[1] if hasattr(data, "chunks") and data.chunks else (ds.sizes["cell"],)
    return int(sum(chunks[:block]))


def _join(stages: list[DarkStage]) -> DarkStage:
    """DarkStages of several blocks as one, along cells (only the fields the evidence uses)."""
    def cat(name):
        values = [getattr(s, name) for s in stages]
        return None if values[0] is None else np.concatenate(values, axis=0)

    return DarkStage(keep=cat("keep"), levels=cat("levels"), offset=cat("offset"), noise=cat("noise"),
                     count=cat("count"), gain_mean=cat("gain_mean"), gain_std=cat("gain_std"))
