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

import math
import warnings

import numba
import numpy as np

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


def _split(frames, n_tail):
    """(lead..., tail...) -> array (L, tail...) and the lead shape."""
    frames = np.asarray(frames)
    lead = frames.shape[: frames.ndim - n_tail]
    return frames.reshape((-1,) + frames.shape[frames.ndim - n_tail :]), lead


def _keep_rows(keep, lead, n_frames):
    if keep is None:
        return np.ones((max(1, math.prod(lead)), n_frames), dtype=np.bool_)
    keep = np.asarray(keep, dtype=np.bool_)
    if keep.shape != lead + (n_frames,):
        raise ValueError(f"keep has shape {keep.shape}, expected {lead + (n_frames,)}")
    return keep.reshape(-1, n_frames)


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


# ---------------------------------------------------------------- F2, F3, F5 moments


def pixel_moments(frames, keep=None):
    """Per-pixel mean, standard deviation (ddof=1) and frame count over the kept frames.

    ``frames`` is ``(..., frame, y, x)``; ``keep`` an optional ``(..., frame)`` bool.
    Raw unsigned 16-bit data (up to 32767 kept frames) is accumulated exactly in 64-bit
    integers in one pass over the frames (no cancellation, whatever the offset); other
    data in two float64 passes, ignoring NaN per pixel.
    Returns float64 ``mean``, ``std`` of shape ``(..., y, x)`` and int ``count``
    (frames that contributed, per pixel). With fewer than 2 frames std is NaN.
    :class:`RunMoments` gives the same, bit for bit, from frames fed block by block.
    """
    frames = np.asarray(frames)
    if frames.ndim < 3:
        raise ValueError(f"frames must be (..., frame, y, x), got shape {frames.shape}")
    lead, n_frames = frames.shape[:-3], frames.shape[-3]
    keep = _keep_rows(keep, lead, n_frames).reshape(lead + (n_frames,))
    kept = int(keep.reshape(-1, n_frames).sum(axis=1).max(initial=0))
    moments = RunMoments(frames.dtype, lead, frames.shape[-2:], kept, keep_known=True)
    moments.add(frames, keep)
    if moments.passes == 2:
        moments.add_squares(frames, keep)
    return moments.result(keep)


class RunMoments:
    """:func:`pixel_moments` of a run whose frames come in blocks, in frame order: the same
    result bit for bit, in memory that does not grow with the run.

    Raw unsigned 16-bit data (exact integer sums): :meth:`add` every block (with its
    ``keep``, or all frames when which frames F1 keeps is not known yet, ``keep_known=False``),
    then, once it is, :meth:`remove` the frames it dropped; integer sums are exact, so the
    order does not matter. Other data (float64 sums, order matters): :meth:`add` every
    block with its ``keep``, then :meth:`add_squares` every block again (``passes == 2``).
    ``result(keep)`` gives ``(mean, std, count)`` as :func:`pixel_moments` does.
    """

    def __init__(self, dtype, lead: tuple, shape: tuple, n_frames: int, *, keep_known: bool = False):
        """``lead`` the leading (cell) shape, ``shape`` (y, x), ``n_frames`` the most frames to be summed."""
        dtype = np.dtype(dtype)
        if dtype.kind not in "iuf":
            raise TypeError(f"cannot compute moments of {dtype} data")
        self.lead, self.shape, self.dtype = tuple(lead), tuple(shape), dtype
        self.rows, self.pixels = max(1, math.prod(self.lead)), math.prod(self.shape)
        self.exact = dtype.kind == "u" and dtype.itemsize <= 2 and n_frames < 2**15  # n * sum(v^2) < 2**63
        self.keep_known = keep_known
        self.passes = 1 if self.exact else 2
        if self.exact:
            self.s = np.zeros((self.rows, self.pixels), dtype=np.int64)
            self.ss = np.zeros((self.rows, self.pixels), dtype=np.int64)
        else:
            self.total = np.zeros((self.rows, self.pixels))
            self.count = np.zeros((self.rows, self.pixels), dtype=np.int64)
            self.squares = np.zeros((self.rows, self.pixels))
            self._mean = None

    def _rows(self, frames, keep):
        frames = np.asarray(frames)
        n = frames.shape[-3]
        x = frames.reshape(self.rows, n, self.pixels)
        if not self.exact and frames.dtype.kind != "f":
            x = x.astype(np.float64)
        return x, _keep_rows(keep, self.lead, n)

    def add(self, frames, keep=None):
        """Add a block ``(..., frames, y, x)`` of the run (its frames' ``keep``, or None: all)."""
        x, k = self._rows(frames, keep if (self.keep_known or not self.exact) else None)
        if self.exact:
            _sums_int(x, k, self.s, self.ss, 1)
        else:
            _sums_float(x, k, self.total, self.count)

    def remove(self, frames, dropped):
        """Exact sums only: take out the ``dropped`` frames of a block added before."""
        x, k = self._rows(frames, dropped)
        _sums_int(x, k, self.s, self.ss, -1)

    def mean(self) -> np.ndarray:
        """Float sums: the per-pixel mean once every block was added (needed by :meth:`add_squares`)."""
        if self._mean is None:
            self._mean = _float_mean(self.total, self.count)
        return self._mean

    def add_squares(self, frames, keep=None):
        """Float sums, second pass: add a block's squared deviations from the mean."""
        x, k = self._rows(frames, keep)
        _squares_float(x, k, self.mean(), self.squares)

    def result(self, keep=None):
        """``(mean, std, count)`` per pixel, ``(..., y, x)``, as :func:`pixel_moments` returns them."""
        if self.exact:
            if keep is None:
                raise ValueError("exact sums need the frames' keep to finish")
            n = np.asarray(keep, dtype=np.bool_).reshape(self.rows, -1).sum(axis=1).astype(np.int64)
            mean, var = _finish_int(self.s, self.ss, n)
            count = np.broadcast_to(n[:, None], mean.shape)
        else:
            mean, var, count = self.mean(), _float_var(self.squares, self.count), self.count
        out = self.lead + self.shape
        with np.errstate(invalid="ignore"):
            std = np.sqrt(var)
        return mean.reshape(out), std.reshape(out), np.ascontiguousarray(count).reshape(out)


PIXEL_BLOCK = 2048  #: pixels whose accumulators (32 KiB) stay in L1 while all frames stream by


@numba.njit(cache=True, nogil=True)
def _sums_int(x, keep, s_out, ss_out, sign):
    """Exact per-pixel sums of unsigned 16-bit values and of their squares, times ``sign``, added
    to ``s_out``, ``ss_out``: one pass, the frames streamed per pixel block."""
    rows, n_frames, n_pix = x.shape
    s = np.empty(PIXEL_BLOCK, dtype=np.int64)
    ss = np.empty(PIXEL_BLOCK, dtype=np.int64)
    for r in range(rows):
        frames = np.nonzero(keep[r])[0]
        n = frames.shape[0]
        if n == 0:
            continue
        for p0 in range(0, n_pix, PIXEL_BLOCK):
            m = min(PIXEL_BLOCK, n_pix - p0)
            s[:m] = 0
            ss[:m] = 0
            k = 0
            while k + 2 <= n:  # two frames per sweep: half the accumulator traffic
                a = x[r, frames[k], p0 : p0 + m]
                b = x[r, frames[k + 1], p0 : p0 + m]
                for p in range(m):
                    va = np.int64(a[p])
                    vb = np.int64(b[p])
                    s[p] += va + vb
                    ss[p] += va * va + vb * vb
                k += 2
            if k < n:
                a = x[r, frames[k], p0 : p0 + m]
                for p in range(m):
                    va = np.int64(a[p])
                    s[p] += va
                    ss[p] += va * va
            for p in range(m):
                s_out[r, p0 + p] += sign * s[p]
                ss_out[r, p0 + p] += sign * ss[p]


@numba.njit(cache=True, nogil=True)
def _finish_int(s, ss, n_rows):
    rows, n_pix = s.shape
    mean = np.empty((rows, n_pix))
    var = np.empty((rows, n_pix))
    for r in range(rows):
        n = n_rows[r]
        for p in range(n_pix):
            if n == 0:
                mean[r, p] = np.nan
                var[r, p] = np.nan
                continue
            mean[r, p] = s[r, p] / n
            # n * sum(x^2) - sum(x)^2 is exact in integers
            t1 = s[r, p]
            var[r, p] = (n * ss[r, p] - t1 * t1) / (n * (n - 1.0)) if n > 1 else np.nan
    return mean, var


@numba.njit(cache=True, nogil=True)
def _sums_float(x, keep, total, count):
    """Per-pixel sums of the finite values of the kept frames, frame after frame."""
    rows, n_frames, n_pix = x.shape
    for r in range(rows):
        for f in range(n_frames):
            if keep[r, f]:
                for p in range(n_pix):
                    v = x[r, f, p]
                    if np.isfinite(v):
                        total[r, p] += v
                        count[r, p] += 1


@numba.njit(cache=True, nogil=True)
def _float_mean(total, count):
    rows, n_pix = total.shape
    mean = np.empty((rows, n_pix))
    for r in range(rows):
        for p in range(n_pix):
            mean[r, p] = total[r, p] / count[r, p] if count[r, p] > 0 else np.nan
    return mean


@numba.njit(cache=True, nogil=True)
def _squares_float(x, keep, mean, squares):
    rows, n_frames, n_pix = x.shape
    for r in range(rows):
        for f in range(n_frames):
            if keep[r, f]:
                for p in range(n_pix):
                    v = x[r, f, p]
                    if np.isfinite(v):
                        d = v - mean[r, p]
                        squares[r, p] += d * d


@numba.njit(cache=True, nogil=True)
def _float_var(squares, count):
    rows, n_pix = squares.shape
    var = np.empty((rows, n_pix))
    for r in range(rows):
        for p in range(n_pix):
            var[r, p] = squares[r, p] / (count[r, p] - 1) if count[r, p] > 1 else np.nan
    return var


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
