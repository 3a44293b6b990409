"""The feature kernels of the Robust Mask Maker (paper section 3), on plain arrays.

Every kernel takes numpy arrays with the frame axis and the pixel axes last,
``(..., frame, y, x)``, and loops over the leading axes (cells, modules): a
Dask chunk of one module and a few cells is passed in as it is. Nothing here
knows about Dask, files or detectors beyond the window shapes it is given.

- F1 :func:`frame_levels`, :func:`frame_filter`: robust mean of each frame, outlying frames dropped.
- F2, F3, F5 :func:`pixel_moments`: per-pixel mean and std over frames in one pass
  (exact integer accumulation for raw uint16 data); :class:`RunMoments` the same from
  frames fed block by block (a run streamed through memory).
- F4 :func:`gain_separation`: gain stages whose indicator levels overlap.
- F6 :func:`flat_snr`: SNR of each pixel against a robust local plane, averaged over flat frames.
- :func:`local_snr`: a feature's SNR against its robust model per window (one ASIC, evenly spaced or not).
"""

from __future__ import annotations

import numpy as np

from .moments import RunMoments, _keep_rows, _split, pixel_moments
from .robust import fit_gaussian, truncation_factor
from .robust_plane import CERTAIN, LIKELY, MSSE_LAMBDA, N_ITER, TOL, tile_snr_sums

__all__ = [
    "frame_levels",
    "frame_filter",
    "pixel_moments",
    "RunMoments",
    "frame_sample",
    "sample_levels",
    "gain_separation",
    "local_snr",
    "flat_snr",
    "flat_snr_sums",
]


# ---------------------------------------------------------------- F1 frame filter


def frame_levels(frames, *, n_pixels: int = 4096, method: str = "rmm") -> np.ndarray:
    """F1 feature: each frame's level, the robust mean of its pixels' deviations from their
    mean over the frames, ``(..., frame, y, x) -> (..., frame)``: the shift of the whole frame
    (up to one constant per series, which the F1 decision does not see).

    Taken over a regular subsample of about ``n_pixels`` pixels (the same pixels in
    every frame, :func:`frame_sample`), which is all a frame-level statistic needs and keeps
    F1 cheap beside the per-pixel features. Each pixel's mean is subtracted first because a
    module's raw values are multimodal (each ASIC has its own offset): the mode of the raw
    values can jump from one ASIC's cluster to another's between frames, the mode of the
    deviations cannot. (A frame shifted as a whole moves every pixel's mean by the same
    amount, so the mean serves as well as a median here, at a tenth of the cost.) ``method``
    names the statistics (see :data:`rmm_dask.robust.METHODS`).
    """
    return sample_levels(frame_sample(frames, n_pixels), method=method)


def frame_sample(frames, n_pixels: int = 4096) -> np.ndarray:
    """The pixels F1 looks at, ``(..., frame, y, x) -> (..., frame, k)`` in the frames' own dtype:
    every ``step``-th pixel, the same in every frame; a copy, which does not hold on to the
    frames. Samples of consecutive blocks of frames, joined along the frame axis, are the
    sample of all of them (:func:`sample_levels`)."""
    frames = np.asarray(frames)
    flat = frames.reshape(frames.shape[:-2] + (-1,))
    step = max(1, flat.shape[-1] // max(1, n_pixels))
    return flat[..., ::step].copy()


LEVEL_FRAMES = 64  #: frames whose F1 levels are fitted at once (bounds the float64 temporaries)


def sample_levels(sample, *, method: str = "rmm") -> np.ndarray:
    """F1 frame levels from a :func:`frame_sample` of all frames, ``(..., frame, k) -> (..., frame)``.

    Each sampled pixel's mean over the frames (NaN left out for float data) is summed frame
    after frame, as numpy's mean along the frame axis does; then the levels are fitted
    :data:`LEVEL_FRAMES` frames at a time, so that the float64 temporaries stay small
    whatever the run length (a frame's level depends on its own deviations only).
    """
    sample = np.asarray(sample)
    n_frames = sample.shape[-2]
    is_float = sample.dtype.kind == "f"
    total = np.zeros(sample.shape[:-2] + sample.shape[-1:])
    count = np.zeros(total.shape, dtype=np.intp) if is_float else n_frames
    for f in range(n_frames):  # in frame order, as a reduction along a non-contiguous axis adds them
        row = sample[..., f, :].astype(np.float64)
        if is_float:
            finite = ~np.isnan(row)
            count += finite
            row[~finite] = 0.0
        total += row
    with np.errstate(invalid="ignore", divide="ignore"):  # all-NaN pixels: their deviations stay NaN (missing)
        mean = total / count if not is_float else np.where(count > 0, total / np.maximum(count, 1), np.nan)
    levels = np.empty(sample.shape[:-1])
    for f0 in range(0, n_frames, LEVEL_FRAMES):
        values = sample[..., f0 : f0 + LEVEL_FRAMES, :].astype(np.float64)
        values -= mean[..., None, :]
        mu, _ = fit_gaussian(values, -1, method=method)
        levels[..., f0 : f0 + LEVEL_FRAMES] = mu
    return levels


def frame_filter(levels, *, lam: float = 8.0, min_sigma: float = 1.0, method: str = "rmm") -> np.ndarray:
    """F1 decision: True for frames to keep, ``(..., frame) -> (..., frame)`` bool.

    A frame is dropped when its level is more than ``lam`` robust sigmas from the
    robust mean of the series. The series of frame levels is often nearly
    constant (averages over thousands of pixels), so its robust sigma can be ~0:
    ``min_sigma`` (in data units) floors it, so that only real excursions of the
    whole frame are rejected. Frames without a level (all NaN) are dropped.
    """
    levels = np.asarray(levels, dtype=np.float64)
    mu, sigma = fit_gaussian(levels, -1, method=method, min_sigma=min_sigma)
    with np.errstate(invalid="ignore"):
        return np.abs(levels - mu[..., None]) <= lam * sigma[..., None]


# ---------------------------------------------------------------- F4 gain stages


def gain_separation(mean, std, *, lam: float = 8.0) -> np.ndarray:
    """F4: True where a pixel's gain stages are not separable, ``(gain, ...) -> (gain, ...)``.

    ``mean`` and ``std`` are the temporal mean and std of the gain indicator in
    each stage's dark run, stages ordered by increasing indicator level (AGIPD:
    high, medium, low; JUNGFRAU's gain bits 0, 1, 3). Stages H and H+1 overlap when
    ``mean[H] + lam * std[H] >= mean[H+1] - lam * std[H+1]`` (equal: a pixel whose
    discrete gain bits stay the same in both stages does not switch); both are flagged.
    """
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    bad = np.zeros(mean.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        overlap = mean[:-1] + lam * std[:-1] >= mean[1:] - lam * std[1:]
    bad[:-1] |= overlap
    bad[1:] |= overlap
    return bad


# ---------------------------------------------------------------- the local robust model


def local_snr(feature, windows, *, method: str = "rmm", min_sigma: float = 0.0, exclude=None):
    """SNR of each pixel's feature against the model of its window: ``(x - R_mu) / R_sigma``.

    ``feature`` is ``(..., y, x)``; the model (R_mu, R_sigma) is fitted with the
    named statistics (``"rmm"``, ``"mad"``, ``"nonrobust"``) over the pixels of each
    window (one ASIC: offsets and noise differ from ASIC to ASIC by far more
    than a pixel's sigma). ``windows`` are the chip windows ``([(y0, y1), ...], [(x0, x1),
    ...])`` covering the module (chips need not be evenly spaced: LAMBDA), or a uniform pitch
    ``(wy, wx)`` laid from the module's corner, a last window that does not fit cut at the
    border. ``exclude`` is a ``(y, x)`` bool map of pixels left out
    of the fits (ASIC edges). NaN features give NaN SNR. A window whose inliers
    are all equal (sigma 0) gives SNR 0 to those and +-inf to any other value.
    """
    feature = np.asarray(feature, dtype=np.float64)
    ny, nx = feature.shape[-2:]
    fit_on = feature if exclude is None else np.where(exclude, np.nan, feature)
    pitch = _uniform_pitch(windows, (ny, nx))
    if pitch is not None:
        mu, sigma = _uniform_model(fit_on, pitch, method, min_sigma)
    else:
        mu, sigma = _window_model(fit_on, windows, method, min_sigma)
    dev = feature - mu
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(sigma > 0, dev / sigma, np.where(dev == 0, 0.0, np.sign(dev) * np.inf))
    return np.where(np.isnan(feature) | np.isnan(sigma), np.nan, snr)


def _uniform_pitch(windows, shape) -> tuple[int, int] | None:
    """(wy, wx) when ``windows`` are a pitch or windows at a uniform pitch (a last one cut), else None."""
    if len(windows) == 2 and all(isinstance(w, (int, np.integer)) for w in windows):
        return int(windows[0]), int(windows[1])
    pitch = []
    for axis, bounds in enumerate(windows):
        bounds = [(int(a), int(b)) for a, b in bounds]
        if not bounds or bounds[0][0] != 0 or bounds[-1][1] != shape[axis]:
            raise ValueError(f"windows along axis {axis} {bounds} do not cover the module's {shape[axis]} pixels")
        if any(b <= a or a != prev for (a, b), prev in zip(bounds, [0] + [b for _, b in bounds[:-1]])):
            raise ValueError(f"windows along axis {axis} {bounds} are not consecutive")
        w = bounds[0][1]
        if bounds != [(a, min(a + w, shape[axis])) for a in range(0, shape[axis], w)]:
            return None
        pitch.append(w)
    return pitch[0], pitch[1]


def _uniform_model(fit_on, pitch, method, min_sigma):
    """(R_mu, R_sigma) per pixel from windows of a uniform ``pitch``, all fitted in one vectorised call."""
    ny, nx = fit_on.shape[-2:]
    wy, wx = pitch
    lead = fit_on.shape[:-2]
    by, bx = -(-ny // wy), -(-nx // wx)  # windows per axis; a last one that does not fit is cut
    if (by * wy, bx * wx) != (ny, nx):
        fit_on = np.pad(fit_on, [(0, 0)] * len(lead) + [(0, by * wy - ny), (0, bx * wx - nx)], constant_values=np.nan)
    blocks = fit_on.reshape(lead + (by, wy, bx, wx))
    blocks = np.moveaxis(blocks, -3, -2).reshape(lead + (by, bx, wy * wx))
    mu, sigma = fit_gaussian(blocks, -1, method=method, min_sigma=min_sigma)
    mu = np.repeat(np.repeat(mu, wy, axis=-2), wx, axis=-1)[..., :ny, :nx]
    sigma = np.repeat(np.repeat(sigma, wy, axis=-2), wx, axis=-1)[..., :ny, :nx]
    return mu, sigma


def _window_model(fit_on, windows, method, min_sigma):
    """(R_mu, R_sigma) per pixel, one fit per window of chips that are not evenly spaced."""
    lead = fit_on.shape[:-2]
    mu, sigma = np.empty(fit_on.shape), np.empty(fit_on.shape)
    for y0, y1 in windows[0]:
        for x0, x1 in windows[1]:
            block = fit_on[..., y0:y1, x0:x1].reshape(lead + (-1,))
            m, s = fit_gaussian(block, -1, method=method, min_sigma=min_sigma)
            mu[..., y0:y1, x0:x1] = np.asarray(m)[..., None, None]
            sigma[..., y0:y1, x0:x1] = np.asarray(s)[..., None, None]
    return mu, sigma


# ---------------------------------------------------------------- F6 flat field


def flat_snr_sums(
    frames,
    offset=None,
    *,
    tile=(16, 16),
    windows=None,
    exclude=None,
    keep=None,
    min_sigma: float = 0.0,
    likely: float = LIKELY,
    certain: float = CERTAIN,
    msse_lambda: float = MSSE_LAMBDA,
    n_iter: int = N_ITER,
    tol: float = TOL,
    sums=None,
):
    """F6 sums: per pixel, the sum of its SNRs against a robust local plane and their count.

    ``frames`` is ``(..., frame, y, x)`` (raw or float), ``offset`` the dark offset
    ``(..., y, x)`` subtracted first (None: none). Each frame is cut into tiles
    of ``tile`` pixels (16 x 16 tiles the 64 x 64 AGIPD ASICs, the paper's ~15 x 15
    window) inside each ASIC window, so that no tile straddles an ASIC border where
    offsets and gains jump: ``windows`` are the ASIC windows ``([(y0, y1), ...], [(x0,
    x1), ...])`` (default: the whole module), and a window's remainder shorter than
    half a tile joins its last tile (see :func:`tile_bounds`); in
    each tile a plane is fitted robustly (:mod:`rmm_dask.robust_plane`: FLkOS on the
    residuals, stopped once the plane moves less than ``tol`` x the median |residual|,
    MSSE scale, refit on the inliers), and ``(v - plane) / sigma`` is the pixel's SNR in that
    frame. ``exclude`` pixels, ``(y, x)`` or ``(..., y, x)`` bool (ASIC edges, pixels
    known bad from the dark), are left out of the fits; NaN
    values are missing. Returns ``(total, count)``: the sum of the pixel's per-frame
    SNRs (float64) and how many frames contributed (int64), each ``(..., y, x)``.
    ``sums``, a ``(total, count)`` of earlier frames, is added to in place (and returned):
    feeding a run's frames block by block, in order, gives bit-identical sums to one call.
    """
    x, lead = _split(frames, 3)
    n_frames, ny, nx = x.shape[1:]
    wy, wx = windows or ([(0, ny)], [(0, nx)])
    if wy[-1][1] != ny or wx[-1][1] != nx:
        raise ValueError(f"ASIC windows end at {(wy[-1][1], wx[-1][1])}, not at the module's size {(ny, nx)}")
    yb, xb = tile_bounds(wy, tile[0]), tile_bounds(wx, tile[1])
    if offset is None:
        off = np.zeros((x.shape[0], ny, nx), dtype=np.float32)
    else:
        off = np.ascontiguousarray(np.broadcast_to(offset, lead + (ny, nx)), dtype=np.float32)
        off = off.reshape(x.shape[0], ny, nx)
    exclude = np.zeros((ny, nx), dtype=np.bool_) if exclude is None else np.asarray(exclude, dtype=np.bool_)
    use = ~np.broadcast_to(exclude, lead + (ny, nx)).reshape(x.shape[0], ny, nx)
    keep = _keep_rows(keep, lead, n_frames)
    corr = truncation_factor(msse_lambda)
    rows = x.shape[0]
    if sums is None:
        sums = (np.zeros((rows, ny, nx)), np.zeros((rows, ny, nx), dtype=np.int64))
    total, count = (np.asarray(a).reshape(rows, ny, nx) for a in sums)
    tile_snr_sums(x, off, use, keep, yb, xb, likely, certain, msse_lambda, n_iter, tol, corr, min_sigma, total, count)
    return total.reshape(lead + (ny, nx)), count.reshape(lead + (ny, nx))


def flat_snr(frames, offset=None, **kwargs):
    """F6: each pixel's SNR against a robust local plane, averaged over the flat frames.

    Takes the arguments of :func:`flat_snr_sums` (but ``sums``) and returns the mean SNR
    per pixel, float32 ``(..., y, x)`` (NaN where no frame contributed).
    """
    total, count = flat_snr_sums(frames, offset, **kwargs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def tile_bounds(windows: list[tuple[int, int]], tile: int) -> np.ndarray:
    """Tile starts along one axis, inside each [start, stop) window, then the last stop.

    Tiles are ``tile`` long; a window's remainder shorter than half a tile is added
    to its last tile rather than fitted alone.
    """
    starts = []
    for a, b in windows:
        here = list(range(a, b, tile))
        if len(here) > 1 and b - here[-1] < tile / 2:
            here.pop()
        starts += here
    return np.array(starts + [windows[-1][1]], dtype=np.int64)
