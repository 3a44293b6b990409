"""Robust plane fit: the estimator of :mod:`rmm_dask.robust` for a plane ``z = a x + b y + c``.

Used by F6 (:func:`rmm_dask.features.flat_snr`) to model the flat field of a tile of pixels.
As the one-dimensional estimator (and RGFLib's ``fitBackground``): the FLkOS iteration
(take the points whose residual from the current plane ranks between the ``certain``
and ``likely`` fractions of N, and fit a least-squares plane to them), then the MSSE
scale of the residuals and a least-squares refit on the points within ``lambda *
sigma``, twice, and the consistent standard deviation of the final inliers. The
defaults (``LIKELY``, ``CERTAIN``, ``MSSE_LAMBDA``, ``N_ITER``) are robust.py's.

How it is made fast: no full sorts. Ranks are found with a histogram of 256 buckets of
the values (|residual|, bucket width a fraction of the scale of the step before): the
cumulative counts tell which bucket holds a rank, and only that bucket's few points
are sorted. The MSSE walk takes whole buckets at once when even their largest value,
counted with the largest i, passes, and walks point by point only in the bucket where
it stops. Ranks are those of (value, point index), so ties are broken by index, and
the results do not depend on the buckets (only the time does). The FLkOS steps stop
once the plane stops moving: when no point of the tile moves by more than ``tol`` times
the median |residual| (``TOL``, a third of sigma: the plane of the FLkOS sample wanders
by that much from step to step, and the refit on the inliers does not see it).
``tol=0`` runs all ``n_iter`` steps unless the plane is a fixed point (F6 before the
early stop), ``tol < 0`` all of them.

Everything is deterministic and depends on the points given only, in their order.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .robust import CERTAIN, LIKELY, MSSE_LAMBDA, N_ITER, truncation_factor

__all__ = ["TOL", "robust_plane", "tile_snr_sums"]

TOL = 0.5  #: FLkOS stops when the plane moves less than this x the median |residual| anywhere in the tile


def robust_plane(x, y, z, *, likely=LIKELY, certain=CERTAIN, msse_lambda=MSSE_LAMBDA, n_iter=N_ITER, tol=TOL):
    """Robust plane ``z = a x + b y + c`` through the points (1-d arrays of one length, finite).

    ``likely``, ``certain``, ``msse_lambda``, ``n_iter`` as :func:`rmm_dask.robust.robust_gaussian`;
    ``tol``: the FLkOS steps stop once no point of the bounding box of (x, y) moves by more
    than ``tol`` x the median |residual| (0: only at a fixed point; < 0: all ``n_iter`` steps).
    Returns ``(a, b, c, sigma)``, sigma the consistent standard deviation of the inlier
    residuals (see the module docstring; at least 4 points).
    """
    if not 0.0 <= certain < likely <= 1.0:
        raise ValueError(f"need 0 <= certain < likely <= 1, got certain={certain}, likely={likely}")
    z = np.asarray(z, dtype=np.float64)
    n = z.size
    if n < 4 or np.shape(x) != z.shape or np.shape(y) != z.shape:
        raise ValueError(f"a robust plane needs x, y, z of one length, at least 4 points; got {np.shape(x)}, {np.shape(y)}, {z.shape}")
    work = np.empty((3, n))
    work[0], work[1], work[2] = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), z
    x0, y0 = work[0].min(), work[1].min()
    work[0] -= x0
    work[1] -= y0
    corr = truncation_factor(msse_lambda)
    a, b, c, sigma = _robust_plane(work, n, work[0].max(), work[1].max(), likely, certain, msse_lambda, n_iter, tol, corr, buffers(n))
    return a, b, c - a * x0 - b * y0, sigma


NB = 256  #: buckets of the rank histograms
_SPAN = 32.0  #: buckets per scale of the values: the last bucket starts at 8 x the scale


@numba.njit(cache=True, nogil=True)
def buffers(n: int):
    """Work buffers for fits of up to n points."""
    return (
        np.empty(n),  # |residual|
        np.empty(n),  # residual**2
        np.empty(n, dtype=np.int64),  # bucket of each point
        np.empty(n, dtype=np.int64),  # points of one bucket
        np.empty(n, dtype=np.int64),  # selected points
        np.empty(NB, dtype=np.int64),  # bucket counts
        np.empty(NB),  # bucket sums of residual**2
        np.empty(NB),  # bucket maxima of residual**2
        np.empty(n, dtype=np.int64),  # points of another bucket
    )


@numba.njit(cache=True, nogil=True)
def _bucket(t):
    """floor(t) clipped to [0, NB - 1] (NaN: NB - 1)."""
    b = NB - 1
    if t < NB - 1:
        b = int(t) if t > 0 else 0
    return b


@numba.njit(cache=True, nogil=True)
def _find(cnt, k):
    """(bucket holding rank k, number of points in the buckets before it)."""
    before = 0
    for b in range(NB):
        if before + cnt[b] > k:
            return b, before
        before += cnt[b]
    return NB - 1, before - cnt[NB - 1]


@numba.njit(cache=True, nogil=True)
def _collect(bucket, n, b, items):
    """items[:m]: the points of bucket b in index order; returns m."""
    m = 0
    for i in range(n):
        if bucket[i] == b:
            items[m] = i
            m += 1
    return m


@numba.njit(cache=True, nogil=True)
def _sort_items(v, items, m):
    """Sort the points items[:m] (in index order) by (v, index)."""
    if m > 32:
        order = np.argsort(v[items[:m]], kind="mergesort")  # stable: ties stay in index order
        items[:m] = items[:m][order]
        return
    for j in range(1, m):
        it = items[j]
        x = v[it]
        q = j
        while q > 0 and v[items[q - 1]] > x:
            items[q] = items[q - 1]
            q -= 1
        items[q] = it


@numba.njit(cache=True, nogil=True)
def _inv_width(scale):
    return _SPAN / scale if scale > 1e-300 and scale < 1e300 else 0.0


@numba.njit(cache=True, nogil=True)
def _residuals(p, n, a, b, c, inv_w, work, sums):
    """|z - plane| and its square of the points p (rows x, y, z), their buckets of width
    1 / inv_w and the counts (and, with ``sums``, the sum and maximum of the squares)."""
    r, r2, bucket, _, _, cnt, bsum, bmax, _ = work
    cnt[:] = 0
    if sums:
        bsum[:] = 0.0
        bmax[:] = 0.0
    for i in range(n):
        d = p[2, i] - (a * p[0, i] + b * p[1, i] + c)
        d2 = d * d
        r[i] = abs(d)
        r2[i] = d2
        k = _bucket(abs(d) * inv_w)
        bucket[i] = k
        cnt[k] += 1
        if sums:
            bsum[k] += d2
            bmax[k] = max(bmax[k], d2)


@numba.njit(cache=True, nogil=True)
def _lsq(p, idx, m):
    """Least-squares plane z = a x + b y + c through the points idx[:m] of p."""
    mx = my = mz = 0.0
    for j in range(m):
        i = idx[j]
        mx += p[0, i]
        my += p[1, i]
        mz += p[2, i]
    mx /= m
    my /= m
    mz /= m
    sxx = syy = sxy = sxz = syz = 0.0
    for j in range(m):
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
def _start(p, n, work):
    """(median of z, scale): the scale, half the interquartile range of 16 of the points,
    only sizes the buckets."""
    r, _, bucket, items, _, cnt, _, _, _ = work
    m = min(n, 16)
    for j in range(m):
        items[j] = j
        r[j] = p[2, j * (n // m)]
    _sort_items(r, items, m)
    center, scale = r[items[m // 2]], 0.5 * (r[items[(3 * m) // 4]] - r[items[m // 4]])
    inv_w = 0.5 * _inv_width(scale)
    base = center - 0.5 * NB / inv_w if inv_w > 0 else center
    cnt[:] = 0
    for i in range(n):
        k = _bucket((p[2, i] - base) * inv_w)
        bucket[i] = k
        cnt[k] += 1
    b, before = _find(cnt, n // 2)
    m = _collect(bucket, n, b, items)
    _sort_items(p[2], items, m)
    return p[2, items[n // 2 - before]], scale


@numba.njit(cache=True, nogil=True)
def _flkos_step(p, n, a, b, c, k1, k2, scale, work):
    """Least-squares plane through the points of |residual| rank k1 ... k2 - 1; also
    returns the (k2 - 1)-th |residual| (about the median)."""
    r, _, bucket, lo, idx, cnt, _, _, hi = work
    _residuals(p, n, a, b, c, _inv_width(scale), work, False)
    b1, before1 = _find(cnt, k1)
    b2, before2 = _find(cnt, k2 - 1)
    m = m1 = m2 = 0
    for i in range(n):  # the buckets strictly between; the points of b1 and b2
        k = bucket[i]
        idx[m] = i
        m += (k > b1) & (k < b2)
        if k == b1:
            lo[m1] = i
            m1 += 1
        elif k == b2:
            hi[m2] = i
            m2 += 1
    _sort_items(r, lo, m1)
    if b1 == b2:
        for j in range(k1 - before1, k2 - before1):
            idx[m] = lo[j]
            m += 1
        median = r[lo[k2 - 1 - before1]]
    else:
        _sort_items(r, hi, m2)
        for j in range(k1 - before1, m1):
            idx[m] = lo[j]
            m += 1
        for j in range(k2 - before2):
            idx[m] = hi[j]
            m += 1
        median = r[hi[k2 - 1 - before2]]
    a, b, c = _lsq(p, idx, m)
    return a, b, c, median


@numba.njit(cache=True, nogil=True)
def _msse(p, n, a, b, c, k0, lam2, scale, work):
    """MSSE scale of the residuals from the plane: from the k0 smallest squares, add the
    next smallest while i * r2 <= lam2 * (their sum so far)."""
    r, r2, bucket, items, _, cnt, bsum, bmax, _ = work
    _residuals(p, n, a, b, c, _inv_width(scale), work, True)
    bk, before = _find(cnt, k0 - 1)
    cum = 0.0
    for q in range(bk):
        cum += bsum[q]
    mk = _collect(bucket, n, bk, items)
    _sort_items(r, items, mk)
    for j in range(k0 - before):
        cum += r2[items[j]]
    i = k0
    q, j, stop = bk, k0 - before, False
    while True:
        while j < mk:  # point by point through the bucket items[:mk] of q
            v = r2[items[j]]
            if i * v > lam2 * cum:
                stop = True
                break
            cum += v
            i += 1
            j += 1
        q += 1
        while not stop and q < NB and (cnt[q] == 0 or (i + cnt[q] - 1) * bmax[q] <= lam2 * cum):
            cum += bsum[q]  # the whole bucket passes
            i += cnt[q]
            q += 1
        if stop or q == NB:
            break
        mk = _collect(bucket, n, q, items)
        _sort_items(r, items, mk)
        j = 0
    return math.sqrt(cum / (i - 1)) if i > 1 else 0.0


@numba.njit(cache=True, nogil=True)
def _inliers(r2, n, t2, idx):
    m = 0
    for i in range(n):
        idx[m] = i
        m += r2[i] <= t2
    return m


@numba.njit(cache=True, nogil=True)
def _move(da, db, dc, xmax, ymax):
    """Largest |change of the plane| over the rectangle [0, xmax] x [0, ymax]."""
    return max(abs(dc), abs(dc + da * xmax), abs(dc + db * ymax), abs(dc + da * xmax + db * ymax))


@numba.njit(cache=True, nogil=True)
def _robust_plane(p, n, xmax, ymax, likely, certain, lam, n_iter, tol, corr, work):
    """FLkOS plane fit to the n points p (rows x, y, z), x and y in [0, xmax] x [0, ymax].

    ``work`` are the buffers of :func:`buffers`. Returns (a, b, c, sigma).
    """
    r2, idx = work[1], work[4]
    k1 = int(n * certain)
    k2 = int(n * likely)
    c, scale = _start(p, n, work)  # start at the median
    a = b = 0.0
    if k2 > k1:
        for _ in range(n_iter):
            a2, b2, c2, scale = _flkos_step(p, n, a, b, c, k1, k2, scale, work)
            moved = _move(a2 - a, b2 - b, c2 - c, xmax, ymax)
            a, b, c = a2, b2, c2
            if moved <= tol * scale:  # against the median |residual|
                break
    lam2 = lam * lam
    k0 = max(k2, 3)
    sigma = 0.0
    for _ in range(2):  # MSSE scale, then least squares on the inliers
        sigma = _msse(p, n, a, b, c, k0, lam2, scale, work)
        scale = 0.6745 * sigma
        m = _inliers(r2, n, lam2 * sigma * sigma, idx)
        if m < 4:
            break
        a, b, c = _lsq(p, idx, m)
    # final scale: std of the inlier residuals, made consistent for the truncation
    _residuals(p, n, a, b, c, 0.0, work, False)
    ss = 0.0
    m = 0
    for i in range(n):
        if r2[i] <= lam2 * sigma * sigma:
            ss += r2[i]
            m += 1
    sigma = math.sqrt(ss / (m - 3)) / corr if m > 3 else sigma
    return a, b, c, sigma


@numba.njit(cache=True, nogil=True)
def tile_snr_sums(x, off, use, keep, yb, xb, likely, certain, lam, n_iter, tol, corr, min_sigma, total, count):
    """F6's loop: add each pixel's SNR against the robust plane of its tile to total, count.

    x (rows, frame, y, x) values, off (rows, y, x) float32 offsets, use (rows, y, x) the
    pixels that enter the fits, keep (rows, frame) the frames to use, yb and xb the tile
    bounds (see :func:`rmm_dask.features.tile_bounds`). Tiles with fewer than 12 usable
    pixels are skipped. (Here, in the file of the fit, so that numba's cache, which does
    not see changes of functions in other files, recompiles it whenever the fit changes.)
    """
    rows, n_frames = x.shape[:2]
    npt = np.max(np.diff(yb)) * np.max(np.diff(xb))
    pts = np.empty((3, npt))  # x, y, z
    work = buffers(npt)
    for r in range(rows):
        for f in range(n_frames):
            if not keep[r, f]:
                continue
            for i in range(yb.size - 1):
                y0, y1 = yb[i], yb[i + 1]
                for j in range(xb.size - 1):
                    x0, x1 = xb[j], xb[j + 1]
                    n = 0
                    for yy in range(y0, y1):
                        for xx in range(x0, x1):
                            v = float(x[r, f, yy, xx]) - off[r, yy, xx]
                            if use[r, yy, xx] and np.isfinite(v):
                                pts[0, n] = xx - x0
                                pts[1, n] = yy - y0
                                pts[2, n] = v
                                n += 1
                    if n < 12:
                        continue
                    a, b, c, sigma = _robust_plane(pts, n, x1 - x0 - 1, y1 - y0 - 1, likely, certain, lam, n_iter, tol, corr, work)
                    sigma = max(sigma, min_sigma)
                    for yy in range(y0, y1):
                        for xx in range(x0, x1):
                            v = float(x[r, f, yy, xx]) - off[r, yy, xx]
                            if not np.isfinite(v):
                                continue
                            d = v - (a * (xx - x0) + b * (yy - y0) + c)
                            if sigma > 0:
                                total[r, yy, xx] += d / sigma
                            elif d != 0:
                                total[r, yy, xx] += np.inf if d > 0 else -np.inf
                            count[r, yy, xx] += 1
