"""F2, F3, F5: per-pixel moments over a run's frames, exact for raw data, in one pass or block by block.

:func:`pixel_moments` takes the frames of a run in memory; :class:`RunMoments` gives the
same result, bit for bit, from frames fed block by block in frame order (a run streamed
through memory, :func:`rmm_dask.mask.dark_stage_blocks`). Raw unsigned 16-bit data are
accumulated exactly in 64-bit integers (associative: the blocking never changes a bit);
other data in float64 in frame order. Pure numpy/numba, like :mod:`rmm_dask.features`,
which re-exports both.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["pixel_moments", "RunMoments"]


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
            _float_pass(x, k, self.total, self.total, self.count, False)

    def remove(self, frames, dropped):
        """Exact sums only: take out the ``dropped`` frames of a block added before."""
        x, k = self._rows(frames, dropped)
        _sums_int(x, k, self.s, self.ss, -1)

    def mean(self) -> np.ndarray:
        """Float sums: the per-pixel mean once every block was added (needed by :meth:`add_squares`)."""
        if self._mean is None:
            self._mean = _per_frame(self.total, self.count, 0)
        return self._mean

    def add_squares(self, frames, keep=None):
        """Float sums, second pass: add a block's squared deviations from the mean."""
        x, k = self._rows(frames, keep)
        _float_pass(x, k, self.mean(), self.squares, self.count, True)

    def result(self, keep=None):
        """``(mean, std, count)`` per pixel, ``(..., y, x)``, as :func:`pixel_moments` returns them."""
        if self.exact:
            if keep is None:
                raise ValueError("exact sums need the frames' keep to finish")
            n = np.asarray(keep, dtype=np.bool_).reshape(self.rows, -1).sum(axis=1).astype(np.int64)
            mean, var = _finish_int(self.s, self.ss, n)
            count = np.broadcast_to(n[:, None], mean.shape)
        else:
            mean, var, count = self.mean(), _per_frame(self.squares, self.count, 1), self.count
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
def _float_pass(x, keep, mean, total, count, squares):
    """One pass over the finite values of the kept frames, frame after frame: per pixel their
    sum and count, or (``squares``) the sum of their squared deviations from ``mean``."""
    rows, n_frames, n_pix = x.shape
    for r in range(rows):
        for f in range(n_frames):
            if keep[r, f]:
                for p in range(n_pix):
                    v = x[r, f, p]
                    if np.isfinite(v):
                        if squares:
                            d = v - mean[r, p]
                            total[r, p] += d * d
                        else:
                            total[r, p] += v
                            count[r, p] += 1


@numba.njit(cache=True, nogil=True)
def _per_frame(sums, count, less):
    """``sums / (count - less)`` per pixel where ``count > less``, else NaN: the mean (``less`` 0)
    or the variance with ddof=1 (``less`` 1, the sums of squared deviations)."""
    rows, n_pix = sums.shape
    out = np.empty((rows, n_pix))
    for r in range(rows):
        for p in range(n_pix):
            out[r, p] = sums[r, p] / (count[r, p] - less) if count[r, p] > less else np.nan
    return out
