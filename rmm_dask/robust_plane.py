"""Robust plane fit: the estimator of :mod:`rmm_dask.robust` for a plane ``z = a x + b y + c``.

Used by F6 (:func:`rmm_dask.features.flat_snr`) to model the flat field of a tile of pixels.
As the one-dimensional estimator (and RGFLib's ``fitBackground``): the FLkOS iteration
(take the points whose residual from the current plane ranks between the ``certain``
and ``likely`` fractions of N, and fit a least-squares plane to them), then the MSSE
scale of the residuals and a least-squares refit on the points within ``lambda *
sigma``, twice, and the consistent standard deviation of the final inliers. The
defaults (``LIKELY``, ``CERTAIN``, ``MSSE_LAMBDA``, ``N_ITER``) are robust.py's.

How it is made fast: a point's rank is the rank of its key, the residual rounded to
float32 in the high 32 bits and the point's index in the low ones (ties go by index),
so ranks are found by selection on 64-bit integers, in place, with no indirection. The
FLkOS steps stop once the plane stops moving: when no point of the tile moves by more
than ``tol`` times the median |residual| (``TOL``, about a third of sigma: the plane of
the FLkOS sample wanders by that much from step to step, and the refit on the inliers
does not see it). ``tol=0`` runs all ``n_iter`` steps unless the plane is a fixed point.

Everything is deterministic and depends on the points given only, in their order.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .robust import CERTAIN, LIKELY, MSSE_LAMBDA, N_ITER, truncation_factor

__all__ = ["robust_plane", "TOL"]

TOL = 0.5  #: FLkOS stops when the plane moves less than this x the median |residual| anywhere in the tile


def robust_plane(x, y, z, *, likely=LIKELY, certain=CERTAIN, msse_lambda=MSSE_LAMBDA, n_iter=N_ITER, tol=TOL):
    """Robust plane ``z = a x + b y + c`` through the points (1-d arrays of one length, finite).

    Returns ``(a, b, c, sigma)``, sigma the consistent standard deviation of the inlier
    residuals (see the module docstring; at least 4 points).
    """
    z = np.asarray(z, dtype=np.float64)
    n = z.size
    if n < 4:
        raise ValueError(f"a robust plane needs at least 4 points, got {n}")
    work = np.empty((3, n))
    work[0], work[1], work[2] = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), z
    x0, y0 = work[0].min(), work[1].min()
    work[0] -= x0
    work[1] -= y0
    corr = truncation_factor(msse_lambda)
    a, b, c, sigma = _robust_plane(work, n, work[0].max(), work[1].max(), likely, certain, msse_lambda, n_iter, tol, corr, buffers(n))
    return a, b, c - a * x0 - b * y0, sigma


@numba.njit(cache=True, nogil=True)
def buffers(n: int):
    """Work buffers for fits of up to n points: residuals, float32 residuals, keys, indices."""
    return np.empty(n), np.empty(n, dtype=np.float32), np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.int64)


_LOW = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)


@numba.njit(cache=True, nogil=True)
def _make_keys(r, n, f32, keys):
    """keys[i]: float32(r[i]) (r >= 0, so its bits order as integers) above the index i."""
    for i in range(n):
        f32[i] = r[i]
    bits = f32.view(np.uint32)
    for i in range(n):
        keys[i] = (np.uint64(bits[i]) << _SHIFT) | np.uint64(i)


@numba.njit(cache=True, nogil=True)
def _select(keys, lo, hi, k):
    """Reorder keys[lo:hi] so that keys[k] is the k-th smallest, smaller ones before it."""
    while hi - lo > 1:
        m = (lo + hi - 1) // 2  # median of three as pivot: deterministic, no quadratic runs on sorted data
        p0, p1, p2 = keys[lo], keys[m], keys[hi - 1]
        pivot = max(min(p0, p1), min(max(p0, p1), p2))
        i, j = lo, hi - 1
        while i <= j:
            while keys[i] < pivot:
                i += 1
            while keys[j] > pivot:
                j -= 1
            if i <= j:
                keys[i], keys[j] = keys[j], keys[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j + 1
        elif k >= i:
            lo = i
        else:
            return


@numba.njit(cache=True, nogil=True)
def _residuals(p, n, a, b, c, r, square):
    """r[i] = |z - plane| (or its square) of the points p (rows x, y, z)."""
    for i in range(n):
        d = p[2, i] - (a * p[0, i] + b * p[1, i] + c)
        r[i] = d * d if square else abs(d)


@numba.njit(cache=True, nogil=True)
def _lsq(p, idx, lo, hi):
    """Least-squares plane z = a x + b y + c through the points idx[lo:hi] of p."""
    n = hi - lo
    mx = my = mz = 0.0
    for j in range(lo, hi):
        i = idx[j]
        mx += p[0, i]
        my += p[1, i]
        mz += p[2, i]
    mx /= n
    my /= n
    mz /= n
    sxx = syy = sxy = sxz = syz = 0.0
    for j in range(lo, hi):
        i = idx[j]
        dx = p[0, i] - mx
        dy = p[1, i] - my
        dz = p[2, i] - mz
        sxx += dx * dx
        syy += dy * dy
        sxy += dx * dy
        sxz += dx * dz
        syz += dy * dz
    det = sxx * syy - sxy * sxy
    if det > 1e-9 * (sxx * syy + 1e-30):
        a = (syy * sxz - sxy * syz) / det
        b = (sxx * syz - sxy * sxz) / det
    else:
        a = 0.0
        b = 0.0
    return a, b, mz - a * mx - b * my


@numba.njit(cache=True, nogil=True)
def _indices(keys, lo, hi, idx):
    for j in range(lo, hi):
        idx[j] = np.int64(keys[j] & _LOW)


@numba.njit(cache=True, nogil=True)
def _msse(r2, n, k0, lam2, f32, keys):
    """MSSE scale of the squared residuals r2[:n]: from the k0 smallest, add the next
    smallest while i * r2 <= lam2 * (their sum so far). Only the rest is sorted."""
    _make_keys(r2, n, f32, keys)
    _select(keys, 0, n, k0 - 1)
    cum = 0.0
    for j in range(k0):
        cum += r2[np.int64(keys[j] & _LOW)]
    keys[k0:n].sort()
    i = k0
    for j in range(k0, n):
        v = r2[np.int64(keys[j] & _LOW)]
        if i * v > lam2 * cum:
            break
        cum += v
        i += 1
    return math.sqrt(cum / (i - 1)) if i > 1 else 0.0


@numba.njit(cache=True, nogil=True)
def _move(da, db, dc, xmax, ymax):
    """Largest |change of the plane| over the rectangle [0, xmax] x [0, ymax]."""
    return max(abs(dc), abs(dc + da * xmax), abs(dc + db * ymax), abs(dc + da * xmax + db * ymax))


@numba.njit(cache=True, nogil=True)
def _robust_plane(p, n, xmax, ymax, likely, certain, lam, n_iter, tol, corr, work):
    """FLkOS plane fit to the n points p (rows x, y, z), x and y in [0, xmax] x [0, ymax].

    ``work`` are the buffers of :func:`buffers`. Returns (a, b, c, sigma).
    """
    r, f32, keys, idx = work
    k1 = int(n * certain)
    k2 = int(n * likely)
    zmin = p[2, :n].min()
    for i in range(n):
        r[i] = p[2, i] - zmin
    _make_keys(r, n, f32, keys)
    _select(keys, 0, n, n // 2)
    a, b, c = 0.0, 0.0, p[2, np.int64(keys[n // 2] & _LOW)]  # start at the median
    if k2 > k1:
        for _ in range(n_iter):
            _residuals(p, n, a, b, c, r, False)
            _make_keys(r, n, f32, keys)
            _select(keys, 0, n, k2 - 1)
            _select(keys, 0, k2 - 1, k1)
            _indices(keys, k1, k2, idx)
            a2, b2, c2 = _lsq(p, idx, k1, k2)
            moved = _move(a2 - a, b2 - b, c2 - c, xmax, ymax)
            a, b, c = a2, b2, c2
            if moved <= tol * r[np.int64(keys[k2 - 1] & _LOW)]:  # against the median |residual|
                break
    lam2 = lam * lam
    k0 = max(k2, 3)
    sigma = 0.0
    for _ in range(2):  # MSSE scale, then least squares on the inliers
        _residuals(p, n, a, b, c, r, True)
        sigma = _msse(r, n, k0, lam2, f32, keys)
        m = 0
        for i in range(n):
            if r[i] <= lam2 * sigma * sigma:
                idx[m] = i
                m += 1
        if m < 4:
            break
        a, b, c = _lsq(p, idx, 0, m)
    # final scale: std of the inlier residuals, made consistent for the truncation
    _residuals(p, n, a, b, c, r, True)
    ss = 0.0
    m = 0
    for i in range(n):
        if r[i] <= lam2 * sigma * sigma:
            ss += r[i]
            m += 1
    sigma = math.sqrt(ss / (m - 3)) / corr if m > 3 else sigma
    return a, b, c, sigma
