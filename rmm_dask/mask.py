"""From runs to a mask, in memory: the features F1-F6 of one module and their verdicts.

This is the numerical recipe of the paper (Fig. 3) for one detector module and
any number of memory cells, on numpy arrays. The Dask pipeline calls the same
functions per chunk; here they are also usable directly on small data.

Per gain stage (dark run): F1 drops outlying frames, then F2 offset, F3 noise and
F5 gain-indicator level are per-pixel moments, each compared with the robust
model of its ASIC. F4 compares the gain stages of each pixel. F6 uses the flat
run, offset-corrected with the dark of the same stage, and its bits apply to
every gain stage (a pixel that over- or under-responds is bad whatever stage it
switches to). ASIC edge pixels get ASIC_EDGE only.

Beyond the paper:

- Integrating detectors: a pixel whose analog value does not change over the kept
  frames (standard deviation exactly 0 over at least 2 frames) is NOISE whatever
  lambda (EuXFEL's DATA_STD_IS_ZERO): stuck pixels, a constant module, an ASIC at the
  ADC maximum in every frame. Dark noise is never below the ADC step of an integrating
  detector, so zero variance is never normal; its Gaussian SNR alone can stay below
  lambda when few frames are kept.
- Photon-counting detectors (``Params.counting_test == "poisson"``): F2 (the mean count
  per frame) and F6 are decided by the exact Poisson test of :mod:`rmm_dask.counting`
  on each pixel's total count, in every ASIC whose normal pixels count as Poisson; the
  stored SNR is then the Gaussian-equivalent z of the test. F3 keeps the paper's
  Gaussian model with sigma >= 1/6.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import counting
from . import features as F
from .codes import MASK_DTYPE, BadPixel
from .detectors import Detector, uniform_windows

FEATURES = ("offset", "noise", "gain_separation", "gain_level", "flat")
#: how the offset (F2) and flat (F6) of photon-counting detectors are judged: "poisson"
#: (exact test of each pixel's total count where the counts are Poisson, else Gaussian)
#: or "floor" (the paper: Gaussian with sigma >= 1/6 count per frame)
COUNTING_TESTS = ("poisson", "floor")


@dataclass(frozen=True)
class Params:
    """Parameters of the mask maker; the defaults are the paper's."""

    lam: float = 8.0  #: outlier threshold in robust sigmas (paper Appendix B)
    method: str = "rmm"  #: statistics of the normal-pixel model: rmm, mad, nonrobust
    #: local model windows at this uniform pitch [y, x]; None: the detector's chips (evenly spaced or not)
    window: tuple[int, int] | None = None
    flat_tile: tuple[int, int] = (16, 16)  #: F6 background plane tile (~15 x 15 window)
    f1_lambda: float = 8.0  #: F1 frame rejection threshold in robust sigmas
    f1_min_sigma: float = 1.0  #: F1 floor of the frame-level sigma, in ADU
    f1_pixels: int = 4096  #: pixels sampled per frame for its F1 level
    min_frames: int = 10  #: fewer valid frames than this: NO_DATA
    features: tuple[str, ...] = FEATURES  #: which features to use
    counting_test: str = "poisson"  #: photon-counting detectors: see COUNTING_TESTS

    def __post_init__(self):
        from .robust import METHODS

        unknown = set(self.features) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown features {sorted(unknown)}; known: {', '.join(FEATURES)}")
        if self.counting_test not in COUNTING_TESTS:
            raise ValueError(f"unknown counting test {self.counting_test!r}; choose one of {', '.join(COUNTING_TESTS)}")
        if self.method not in METHODS:
            raise ValueError(f"unknown statistics {self.method!r}; choose one of {', '.join(METHODS)}")
        for name in ("lam", "f1_lambda", "f1_min_sigma"):
            if not 0 < getattr(self, name) < np.inf:
                raise ValueError(f"{name} must be a finite number above 0, not {getattr(self, name)}")
        for name in ("window", "flat_tile"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or min(value) < 1):
                raise ValueError(f"{name} must be two positive sizes [y, x], not {list(value)}")
        if self.min_frames < 2 or self.f1_pixels < 1:
            raise ValueError("min_frames must be at least 2 and f1_pixels at least 1")


@dataclass
class DarkStage:
    """Per-pixel statistics of one dark run (one gain stage) of one module: (cell, ...) arrays."""

    keep: np.ndarray  #: (cell, frame) bool: frames that passed F1
    levels: np.ndarray  #: (cell, frame) F1 frame levels
    offset: np.ndarray  #: (cell, y, x) F2
    noise: np.ndarray  #: (cell, y, x) F3
    count: np.ndarray  #: (cell, y, x) frames used per pixel
    gain_mean: np.ndarray | None = None  #: (cell, y, x) F5
    gain_std: np.ndarray | None = None  #: (cell, y, x) for F4


@dataclass
class ModuleMask:
    """Result for one module: mask (gain, cell, y, x) and the features that explain it."""

    mask: np.ndarray  #: uint8 (gain, cell, y, x)
    #: name -> (gain, cell, y, x) float32; flat_snr (F6) is (cell, y, x)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    snr: dict[str, np.ndarray] = field(default_factory=dict)  #: feature name -> SNR against its ASIC model, same shapes
    #: F1: per gain stage a (cell, frame) bool array; the stages' runs may differ in length
    rejected_frames: list[np.ndarray] = field(default_factory=list)


def _set(mask, where, bit):
    """Set ``bit`` in ``mask`` where ``where`` (a bool array or an index) holds."""
    mask[where] |= MASK_DTYPE(bit)


def dark_stage(analog, gain, detector: Detector, params: Params = Params()) -> DarkStage:
    """F1, F2, F3, F5 statistics of one dark run of one module, ``(cell, frame, y, x)`` arrays."""
    levels = F.frame_levels(analog, n_pixels=params.f1_pixels, method=params.method)
    keep = F.frame_filter(levels, lam=params.f1_lambda, min_sigma=params.f1_min_sigma, method=params.method)
    offset, noise, count = F.pixel_moments(analog, keep)
    stage = DarkStage(keep=keep, levels=levels, offset=offset, noise=noise, count=count)
    if gain is not None:
        stage.gain_mean, stage.gain_std, _ = F.pixel_moments(gain, keep)
    return stage


FRAME_BLOCK = 64  #: frames per block when a run is streamed through a task (:func:`dark_stage_blocks`)


def dark_stage_blocks(read, n_frames: int, detector: Detector, params: Params = Params(), block: int = FRAME_BLOCK) -> DarkStage:
    """:func:`dark_stage` of a run read ``block`` frames at a time: the same result, bit for bit.

    ``read(start, stop)`` returns ``(analog, gain)`` of frames ``[start, stop)``, each
    ``(cell, frame, y, x)`` (``gain`` may be None). Raw uint16 data is read once: every
    frame's F1 sample and exact integer sums are taken in the same pass, then F1 decides on
    all levels and only the frames it drops are read again and subtracted. Other data is
    read once for F1 and twice more for the float moments (sums in frame order). Memory:
    one block, per-pixel sums and the F1 sample (:func:`rmm_dask.features.frame_sample`).
    """
    ranges = [(a, min(a + block, n_frames)) for a in range(0, n_frames, block)]
    sample, moments = None, None
    for a, b in ranges:
        analog, gain = read(a, b)
        part = F.frame_sample(analog, params.f1_pixels)
        if sample is None:  # the F1 sample of every frame, filled block by block
            sample = np.empty(part.shape[:-2] + (n_frames, part.shape[-1]), dtype=part.dtype)
        sample[..., a:b, :] = part
        if moments is None:
            lead, shape = analog.shape[:-3], analog.shape[-2:]
            moments = [F.RunMoments(v.dtype, lead, shape, n_frames) if v is not None else None for v in (analog, gain)]
        for m, values in zip(moments, (analog, gain)):
            if m is not None and m.exact:
                m.add(values)  # every frame: F1 is not decided yet
        del analog, gain, values  # before the next block is read: one block in memory
    levels = F.sample_levels(sample, method=params.method)
    del sample, part
    keep = F.frame_filter(levels, lam=params.f1_lambda, min_sigma=params.f1_min_sigma, method=params.method)
    kept = int(keep.reshape(-1, n_frames).sum(axis=1).max(initial=0))
    for i, m in enumerate(moments):
        if m is not None and not m.exact and F.RunMoments(m.dtype, m.lead, m.shape, kept).exact:
            moments[i] = F.RunMoments(m.dtype, m.lead, m.shape, kept, keep_known=True)  # long run, few kept: exact, as in memory
    exact = [m is not None and m.exact and not m.keep_known for m in moments]
    dropped = ~keep
    if any(exact) and dropped.any():
        for a, b in _runs_of(np.flatnonzero(dropped.reshape(-1, n_frames).any(axis=0)), block):
            values = read(a, b)
            for m, v, e in zip(moments, values, exact):
                if e:
                    m.remove(v, dropped[..., a:b])
            del values, v
    for step in ("add", "add_squares"):
        todo = [m is not None and not (m.exact and not m.keep_known) and (step == "add" or m.passes == 2) for m in moments]
        if not any(todo):
            continue
        for a, b in ranges:
            values = read(a, b)
            for m, v, t in zip(moments, values, todo):
                if t:
                    getattr(m, step)(v, keep[..., a:b])
            del values, v
    offset, noise, count = moments[0].result(keep)
    stage = DarkStage(keep=keep, levels=levels, offset=offset, noise=noise, count=count)
    if moments[1] is not None:
        stage.gain_mean, stage.gain_std, _ = moments[1].result(keep)
    return stage


def _runs_of(frames: np.ndarray, block: int):
    """Consecutive frame numbers as ``[start, stop)`` ranges of at most ``block`` frames."""
    start = prev = None
    for f in frames.tolist():
        if start is not None and f == prev + 1 and f - start < block:
            prev = f
            continue
        if start is not None:
            yield start, prev + 1
        start = prev = f
    if start is not None:
        yield start, prev + 1


def flat_feature(flat, offset, detector: Detector, params: Params = Params(), exclude=None) -> np.ndarray:
    """F6 mean SNR of one module's flat run, after subtracting ``offset``.

    ``flat`` is the run's analog ``(cell, frame, y, x)``, or an iterable of such blocks of
    consecutive frames in frame order (the same result, bit for bit). ``exclude``
    (``(cell, y, x)`` or ``(y, x)`` bool) are pixels kept out of the background fits besides
    the ASIC edges: the pixels the dark runs already found bad, so that a dead region
    cannot become the local background of its normal neighbours.
    """
    edges = detector.asic_edges()
    kwargs = dict(
        tile=params.flat_tile,
        windows=(detector.asic_windows(0), detector.asic_windows(1)),
        exclude=edges if exclude is None else edges | exclude,
        min_sigma=detector.min_sigma,
    )
    sums = None
    for block in [flat] if isinstance(flat, np.ndarray) else flat:
        sums = F.flat_snr_sums(block, offset, sums=sums, **kwargs)
        del block  # before the next block is read
    total, count = sums
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def _outliers(feature, detector: Detector, params: Params, min_sigma: float | None = None, known=None):
    """SNR of a (cell, y, x) feature against its ASIC model, and where |SNR| > lambda.

    The model windows are the detector's chips (:meth:`Detector.asic_windows`, evenly spaced
    or not), or a uniform pitch when ``params.window`` gives one.
    ``known`` (y, x) bool: pixels known bad (manufacturer's or user's mask), kept out of the model like the edges.
    """
    floor = detector.min_sigma if min_sigma is None else min_sigma
    exclude = detector.asic_edges() if known is None else detector.asic_edges() | known
    snr = F.local_snr(feature, _windows(detector, params), method=params.method, min_sigma=floor, exclude=exclude)
    with np.errstate(invalid="ignore"):
        return snr, np.abs(snr) > params.lam


def _windows(detector: Detector, params: Params):
    """The local model windows of one module, ``([(y0, y1), ...], [(x0, x1), ...])``."""
    if params.window is None:
        return detector.asic_windows(0), detector.asic_windows(1)
    return tuple(uniform_windows(n, w) for n, w in zip(detector.module_shape, params.window))


def _counting_outliers(total, count, snr, detector: Detector, params: Params, exclude):
    """Photon counting: the Poisson z of each pixel's ``total`` count over ``count`` frames
    where its window's counts are Poisson, the Gaussian ``snr`` elsewhere; and |SNR| > lambda.

    ``exclude`` (y, x) bool: pixels kept out of the windows' rate fits (edges, known bad).
    See :mod:`rmm_dask.counting` for the test and the regime rule.
    """
    z, poisson, _ = counting.counting_snr(total, count, _windows(detector, params), exclude=exclude)
    snr = np.where(poisson, z, snr)
    with np.errstate(invalid="ignore"):
        return snr, np.abs(snr) > params.lam


def _poisson(detector: Detector, params: Params) -> bool:
    return detector.counting and params.counting_test == "poisson"


def zero_variance(noise, count) -> np.ndarray:
    """Where a pixel's value did not change over its (at least 2) kept frames: noise exactly 0."""
    return (np.asarray(noise) == 0) & (np.asarray(count) >= 2)


#: per-pixel dark features, the switch that enables them and the bit they set
_DARK = (("offset", "offset", BadPixel.OFFSET), ("noise", "noise", BadPixel.NOISE), ("gain_mean", "gain_level", BadPixel.GAIN_LEVEL))


def classify_dark(stages: list[DarkStage], detector: Detector, params: Params = Params(), known=None) -> ModuleMask:
    """Bits per (gain, cell, y, x) from the dark stages, in gain order (F2-F5); ``known`` as in :func:`_outliers`.

    OFFSET: |SNR of F2| > lambda (photon counting: the Poisson test where it applies).
    NOISE: |SNR of F3| > lambda, or, for integrating detectors, zero variance over the
    kept frames (:func:`zero_variance`). GAIN_LEVEL: |SNR of F5| > lambda. GAIN_SEPARATION: F4.
    """
    use = set(params.features)
    planes, nodata, features, snrs = [], [], {}, {}
    for s in stages:
        code = np.zeros(s.offset.shape, dtype=MASK_DTYPE)
        for name, switch, bit in _DARK:
            values = getattr(s, name)
            if values is None:
                continue
            snr, bad = _outliers(values, detector, params, detector.gain_min_sigma if name == "gain_mean" else None, known)
            if name == "offset" and _poisson(detector, params):
                edges = detector.asic_edges() if known is None else detector.asic_edges() | known
                snr, bad = _counting_outliers(np.rint(values * s.count), s.count, snr, detector, params, edges)
            if name == "noise" and not detector.counting:
                bad = bad | zero_variance(values, s.count)  # stuck: NOISE whatever lambda
            if switch in use:
                _set(code, bad, bit)
            features.setdefault(name, []).append(values)
            snrs.setdefault(name, []).append(snr)
        if s.gain_std is not None:
            features.setdefault("gain_std", []).append(s.gain_std)
        planes.append(code)
        nodata.append((s.count < params.min_frames) | ~np.isfinite(s.offset))
    mask = np.stack(planes)

    if len(features.get("gain_std", ())) == len(stages) > 1 and "gain_separation" in use:
        sep = F.gain_separation(np.stack(features["gain_mean"]), np.stack(features["gain_std"]), lam=params.lam)
        _set(mask, sep, BadPixel.GAIN_SEPARATION)

    mask[np.stack(nodata)] = MASK_DTYPE(BadPixel.NO_DATA)  # alone: the other verdicts are void
    mask[..., detector.asic_edges()] = MASK_DTYPE(BadPixel.ASIC_EDGE)
    return ModuleMask(
        mask=mask,
        features={k: np.stack(v).astype(np.float32) for k, v in features.items()},
        snr={k: np.stack(v).astype(np.float32) for k, v in snrs.items()},
        rejected_frames=[~s.keep for s in stages],
    )


def classify_flat(result: ModuleMask, flat_snr, detector: Detector, params: Params = Params(), known=None, counts=None, exclude=None) -> None:
    """Add F6 to ``result``: FLAT_HIGH / FLAT_LOW on every gain stage of the cell.

    The F6 feature and its SNR are stored per (cell, y, x): they have no gain axis.
    ``counts`` (photon counting, Poisson test): ``(total, frames)`` per (cell, y, x) of the
    flat run; in windows whose flat counts are Poisson (a weak flat) the SNR is the Poisson
    z of the total, so that dead and under-responding pixels show as deficits. ``exclude``
    (cell, y, x) or (y, x): pixels kept out of those rate fits besides edges and ``known``.
    """
    snr, _ = _outliers(flat_snr, detector, params, known=known)
    if counts is not None and _poisson(detector, params):
        out = detector.asic_edges() if known is None else detector.asic_edges() | known
        out = out if exclude is None else out | exclude
        snr, _ = _counting_outliers(counts[0], counts[1], snr, detector, params, out)
    if "flat" in params.features:
        with np.errstate(invalid="ignore"):
            flags = np.where(snr > params.lam, BadPixel.FLAT_HIGH, 0) | np.where(snr < -params.lam, BadPixel.FLAT_LOW, 0)
        unanalysed = (result.mask == BadPixel.NO_DATA) | (result.mask == BadPixel.ASIC_EDGE)
        result.mask |= np.where(unanalysed, 0, flags[None]).astype(MASK_DTYPE)
    result.features["flat_snr"] = np.asarray(flat_snr, dtype=np.float32)
    result.snr["flat_snr"] = snr.astype(np.float32)


def mask_from_stages(stages: list[DarkStage], flat, detector: Detector, params: Params = Params(), flat_stage_index: int = 0, known=None):
    """Verdicts from the dark stages (in gain order) and the flat run or None.

    ``flat`` is the flat run's analog ``(cell, frame, y, x)``, or an object with ``n_frames``
    that gives, each time it is iterated, its blocks of consecutive frames in order
    (iterated once or, for the photon-counting test, twice), as :func:`flat_feature` takes them.
    ``known`` (y, x) bool: pixels already known bad (the manufacturer's or the user's mask),
    kept out of every model fit; their own verdicts are still made.
    """
    result = classify_dark(stages, detector, params, known)
    if flat is not None:
        blocks = [flat] if isinstance(flat, np.ndarray) else flat
        dark_bad = result.mask[flat_stage_index] != 0
        if known is not None:
            dark_bad = dark_bad | known
        snr = flat_feature(blocks, stages[flat_stage_index].offset, detector, params, exclude=dark_bad)
        counts = None
        if _poisson(detector, params):
            moments = None
            for block in blocks:
                if moments is None:
                    moments = F.RunMoments(block.dtype, block.shape[:-3], block.shape[-2:], _n_frames(flat), keep_known=True)
                moments.add(block)
            mean, frames = _mean_and_frames(moments, _n_frames(flat), block.shape[:-3])
            counts = (np.rint(mean * frames), frames)
        classify_flat(result, snr, detector, params, known, counts=counts, exclude=dark_bad)
    return result


def _n_frames(flat) -> int:
    return flat.shape[-3] if isinstance(flat, np.ndarray) else flat.n_frames


def _mean_and_frames(moments, n_frames: int, lead: tuple):
    """Per-pixel mean and frame count of all frames, from sums of a single pass (no squares needed)."""
    if moments.exact:
        mean, _, frames = moments.result(np.ones(lead + (n_frames,), dtype=bool))
        return mean, frames
    return moments.mean().reshape(lead + moments.shape), moments.count.reshape(lead + moments.shape)


def module_mask(dark: list[tuple], flat, detector: Detector, params: Params = Params(), flat_stage_index: int = 0):
    """The whole recipe for one module.

    ``dark`` is a list of ``(analog, gain)`` per gain stage in order, each
    ``(cell, frame, y, x)`` (``gain`` may be None); ``flat`` the flat run's analog
    ``(cell, frame, y, x)`` or None, taken in stage ``flat_stage_index``.
    """
    stages = [dark_stage(a, g, detector, params) for a, g in dark]
    return mask_from_stages(stages, flat, detector, params, flat_stage_index)
