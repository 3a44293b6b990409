"""Robust Gaussian fitting: the estimator of the paper's Appendix A, and the baselines.

``robust_gaussian`` finds the mode of the data with the FLkOS iteration (repeat:
take the points whose distance to the current estimate ranks between the
'certain' and 'likely' fractions of N, and move the estimate to their mean), then
the scale with MSSE (grow the inlier set over the sorted squared residuals while
``i * r2[i] <= lambda**2 * sum(r2[:i])``), refines the mode as the mean of the
points within ``lambda * sigma``, and reports the mean and standard deviation of
the final inliers.

How it is made fast: the values are sorted once (numpy's SIMD sort). On sorted
data the k points nearest to any value form a contiguous run, found by binary
search, so each FLkOS step is O(log N) with prefix sums; the MSSE walk grows
that run one point at a time from both ends. The result is the same as sorting
the residuals at every step, at the cost of one sort.

The alternatives behind the same interface are ``"nonrobust"`` (mean/std, the
paper's Table 1 baseline) and ``"mad"`` (median and 1.4826 x median absolute
deviation, as LCLS psana's det_pixel_status). All functions ignore NaN and
infinities, are deterministic, and are vectorised over the other axes.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numba
import numpy as np

__all__ = ["robust_gaussian", "median_mad", "mean_std", "fit_gaussian", "METHODS", "truncation_factor"]

# The FLkOS defaults, as the reference library; also the robust plane's (robust_plane.py).
LIKELY = 0.5  #: FLkOS sample: points ranked up to this fraction of N by distance (and MSSE's start)
CERTAIN = 0.35  #: ... and from this fraction
MSSE_LAMBDA = 3.0  #: inlier threshold of the MSSE scale, in sigmas
N_ITER = 12  #: FLkOS steps at most


def truncation_factor(lam: float) -> float:
    """sigma of N(0, 1) truncated to |x| <= lam: the inlier std is this much too small."""
    phi = math.exp(-0.5 * lam * lam) / math.sqrt(2 * math.pi)
    mass = math.erf(lam / math.sqrt(2))
    return math.sqrt(1.0 - 2.0 * lam * phi / mass)


def _as_rows(x, axis):
    """Move ``axis`` last and flatten the others: (rows, n) plus the output shape."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("robust fit needs at least one axis of samples")
    x = np.moveaxis(x, axis, -1)
    out_shape = x.shape[:-1]
    if x.dtype.kind not in "fiub":
        raise TypeError(f"cannot fit a Gaussian to values of dtype {x.dtype}")
    if x.dtype.kind == "b" or x.dtype == np.float16:
        x = x.astype(np.float32)
    return x.reshape(-1, x.shape[-1]), out_shape


def _shaped(values, out_shape):
    values = values.reshape(out_shape)
    return values if out_shape else values[()]


def robust_gaussian(
    x,
    axis: int = -1,
    *,
    likely: float = LIKELY,
    certain: float = CERTAIN,
    msse_lambda: float = MSSE_LAMBDA,
    n_iter: int = N_ITER,
    min_sigma: float = 0.0,
    consistent: bool = True,
    background: bool = True,
):
    """Robust mean and standard deviation of the Gaussian structure in ``x`` along ``axis``.

    Parameters
    ----------
    x : array of real numbers; NaN and +-inf mark missing values.
    axis : the axis holding the samples; the fit is vectorised over all others.
    likely, certain : FLkOS sample: points ranked between ``certain * N`` and
        ``likely * N`` by distance to the current mode estimate (0.35, 0.5 as the
        reference library). ``likely`` also sets the MSSE starting size.
    msse_lambda : inlier threshold in sigmas for the scale estimate (3, as the
        reference library; flagging thresholds are applied by the caller).
    n_iter : FLkOS steps (12).
    min_sigma : floor for the returned sigma (1/6 for counting detectors).
    consistent : divide the inlier std by the std of a unit Gaussian truncated at
        ``msse_lambda`` (0.98658 for 3), so that sigma is unbiased for Gaussian data.
    background : subtract outliers that fall inside the inlier band, at the density
        seen in the shell between 2 and 4 x ``msse_lambda`` sigma from the mode (where
        a Gaussian has nothing left). Without it, outliers spread over a range a few
        tens of sigma wide inflate sigma by several percent (an extension of ours; off
        gives the reference library's estimate).

    Returns
    -------
    (mu, sigma) : float64 arrays of the shape of ``x`` without ``axis``; NaN
        where there are no valid values.
    """
    if not 0.0 <= certain < likely <= 1.0:
        raise ValueError(f"need 0 <= certain < likely <= 1, got certain={certain}, likely={likely}")
    rows, out_shape = _as_rows(x, axis)
    srt = np.sort(rows, axis=-1)  # NaN sort to the end, -inf first, +inf last
    corr = truncation_factor(msse_lambda) if consistent else 1.0
    mu = np.empty(srt.shape[0])
    sigma = np.empty(srt.shape[0])
    _fit_sorted_rows(srt, likely, certain, msse_lambda, n_iter, corr, background, min_sigma, mu, sigma)
    return _shaped(mu, out_shape), _shaped(sigma, out_shape)


@numba.njit(cache=True, nogil=True)
def _finite_span(s):
    """First and one-past-last index of the finite values of a sorted row."""
    n = s.shape[0]
    lo, hi = 0, n
    # -inf at the front
    a, b = 0, n
    while a < b:
        m = (a + b) // 2
        if s[m] == -np.inf:
            a = m + 1
        else:
            b = m
    lo = a
    # NaN and +inf at the back: find the first index that is not a finite value
    a, b = lo, n
    while a < b:
        m = (a + b) // 2
        v = s[m]
        if v == v and v != np.inf:
            a = m + 1
        else:
            b = m
    hi = a
    return lo, hi


@numba.njit(cache=True, nogil=True)
def _nearest_window(v, n, theta, k):
    """Start of the run of the k values of sorted ``v[:n]`` nearest to ``theta``."""
    lo, hi = 0, n - k
    while lo < hi:
        m = (lo + hi) // 2
        if theta - v[m] > v[m + k] - theta:
            lo = m + 1
        else:
            hi = m
    return lo


BLOCK = 32  #: values per block of the prefix sums


@numba.njit(cache=True, nogil=True)
def _block_prefix(v, n, P1, P2):
    """Prefix sums of v and v**2 at block boundaries: P[j] = sum(v[:j * BLOCK]).

    Four partial sums per block in a fixed order break the chain of dependent
    additions (4x faster than a running sum) and stay bit-identical on every CPU,
    which reassociation by the compiler (fastmath) would not.
    """
    P1[0] = 0.0
    P2[0] = 0.0
    for j in range((n + BLOCK - 1) // BLOCK):
        a = j * BLOCK
        b = min(a + BLOCK, n)
        s0 = s1 = s2 = s3 = 0.0
        q0 = q1 = q2 = q3 = 0.0
        i = a
        while i + 4 <= b:
            s0 += v[i]
            s1 += v[i + 1]
            s2 += v[i + 2]
            s3 += v[i + 3]
            q0 += v[i] * v[i]
            q1 += v[i + 1] * v[i + 1]
            q2 += v[i + 2] * v[i + 2]
            q3 += v[i + 3] * v[i + 3]
            i += 4
        while i < b:
            s0 += v[i]
            q0 += v[i] * v[i]
            i += 1
        P1[j + 1] = P1[j] + ((s0 + s1) + (s2 + s3))
        P2[j + 1] = P2[j] + ((q0 + q1) + (q2 + q3))


@numba.njit(cache=True, nogil=True)
def _prefix(v, P1, P2, k):
    """(sum(v[:k]), sum(v[:k]**2)): the block prefix plus the rest of k's block."""
    j = k // BLOCK
    s1 = P1[j]
    s2 = P2[j]
    for i in range(j * BLOCK, k):
        s1 += v[i]
        s2 += v[i] * v[i]
    return s1, s2


@numba.njit(cache=True, nogil=True)
def _sums(v, P1, P2, lo, hi):
    """(sum, sum of squares) of v[lo:hi]."""
    a1, a2 = _prefix(v, P1, P2, lo)
    b1, b2 = _prefix(v, P1, P2, hi)
    return b1 - a1, b2 - a2


@numba.njit(cache=True, nogil=True)
def _window_ss(v, P1, P2, lo, hi, theta):
    """Sum of (v - theta)**2 over v[lo:hi]."""
    s1, s2 = _sums(v, P1, P2, lo, hi)
    return max(s2 - 2.0 * theta * s1 + (hi - lo) * theta * theta, 0.0)


@numba.njit(cache=True, nogil=True)
def _msse(v, P1, P2, n, theta, k0, lam2):
    """MSSE scale around ``theta``: grow the k0 nearest points while i * r2 <= lam2 * sum.

    The same answer as adding the next nearest point one at a time, in O(log N)
    steps: m points are taken at once when even the farthest of them, counted with
    the largest i and the smallest sum, passes; m doubles after a success and halves
    after a failure, and a failure with m = 1 is the exact stop.
    """
    lo = _nearest_window(v, n, theta, k0)
    hi = lo + k0
    cum = _window_ss(v, P1, P2, lo, hi, theta)
    i = k0
    m = 1
    while i < n:
        m = min(m, n - i)
        k = i + m
        lo2 = min(max(_nearest_window(v, n, theta, k), hi - k), lo)  # contains [lo, hi)
        hi2 = lo2 + k
        d = max(theta - v[lo2], v[hi2 - 1] - theta)  # the farthest of the k nearest
        if (k - 1) * d * d <= lam2 * cum:
            cum = _window_ss(v, P1, P2, lo2, hi2, theta)
            lo, hi, i = lo2, hi2, k
            m *= 2
        elif m == 1:
            break
        else:
            m //= 2
    return math.sqrt(cum / (i - 1)) if i > 1 else 0.0


@numba.njit(cache=True, nogil=True)
def _inlier_mean(v, P1, P2, n, theta, radius):
    a = np.searchsorted(v[:n], theta - radius, side="left")
    b = np.searchsorted(v[:n], theta + radius, side="right")
    if b <= a:
        return theta, a, b
    return _sums(v, P1, P2, a, b)[0] / (b - a), a, b


@numba.njit(cache=True, nogil=True)
def _fit_sorted_row(row, v, P1, P2, likely, certain, lam, n_iter, corr, background):
    """Fit one sorted row; ``v``, ``P1``, ``P2`` are work buffers. Returns (mu, sigma)."""
    lo, hi = _finite_span(row)
    n = hi - lo
    if n == 0:
        return np.nan, np.nan
    # values relative to the median, so that prefix sums keep their precision
    center = float(row[lo + n // 2])
    for i in range(n):
        v[i] = float(row[lo + i]) - center
    _block_prefix(v, n, P1, P2)
    if n < 5:  # too few for order statistics: plain mean and std
        s1, s2 = _sums(v, P1, P2, 0, n)
        mean = s1 / n
        var = (s2 - n * mean * mean) / (n - 1) if n > 1 else 0.0
        return mean + center, math.sqrt(max(var, 0.0))

    # 1. mode: FLkOS steps on the nested windows of nearest points
    k1 = int(n * certain)
    k2 = int(n * likely)
    theta = 0.0  # the median
    if k2 > k1:
        for _ in range(n_iter):
            lo2 = _nearest_window(v, n, theta, k2)
            lo1 = _nearest_window(v, n, theta, k1) if k1 > 0 else lo2
            lo1 = min(max(lo1, lo2), lo2 + k2 - k1)  # keep the inner window inside the outer
            s = _sums(v, P1, P2, lo2, lo2 + k2)[0] - _sums(v, P1, P2, lo1, lo1 + k1)[0]
            new = s / (k2 - k1)
            if new == theta:
                break
            theta = new

    # 2. scale by MSSE, 3. refine the mode on the inliers, twice, as the reference library
    k0 = max(k2, 2)
    lam2 = lam * lam
    sigma = _msse(v, P1, P2, n, theta, k0, lam2)
    theta, a, b = _inlier_mean(v, P1, P2, n, theta, lam * sigma)
    sigma = _msse(v, P1, P2, n, theta, k0, lam2)
    theta, a, b = _inlier_mean(v, P1, P2, n, theta, lam * sigma)
    # final inliers: mean and std of the points within lam * sigma
    k = b - a
    if k < 2:
        return theta + center, 0.0
    s1, s2 = _sums(v, P1, P2, a, b)
    nk = float(k)
    if background:
        # Outliers spread evenly over the inlier band are indistinguishable from inliers
        # one by one, but their density shows in the empty shell (2-4) x lam x sigma
        # around the mode: subtract their expected count, sum and sum of squares.
        r = lam * sigma
        w = v[:n]
        nl = (np.searchsorted(w, theta - 2.0 * r) - np.searchsorted(w, theta - 4.0 * r)) * 0.5
        nr = (np.searchsorted(w, theta + 4.0 * r, side="right") - np.searchsorted(w, theta + 2.0 * r, side="right")) * 0.5
        if nl + nr > 0.0 and nk - nl - nr >= 2.0:
            ml, mr = theta - 0.5 * r, theta + 0.5 * r  # mean of a uniform half band
            q = r * r / 12.0  # its variance
            s1 -= nl * ml + nr * mr
            s2 -= nl * (q + ml * ml) + nr * (q + mr * mr)
            nk -= nl + nr
    mean = s1 / nk
    ss = s2 - nk * mean * mean
    std = math.sqrt(max(ss, 0.0) / (nk - 1.0))
    return mean + center, std / corr


@numba.njit(cache=True, nogil=True)
def _fit_sorted_rows(srt, likely, certain, lam, n_iter, corr, background, min_sigma, mu, sigma):
    n = srt.shape[1]
    v = np.empty(n)
    P1 = np.empty(n // BLOCK + 2)
    P2 = np.empty(n // BLOCK + 2)
    for r in range(srt.shape[0]):
        m, s = _fit_sorted_row(srt[r], v, P1, P2, likely, certain, lam, n_iter, corr, background)
        mu[r] = m
        sigma[r] = max(s, min_sigma) if s == s else s


@contextlib.contextmanager
def _quiet_all_nan():
    """Silence numpy's 'All-NaN slice' / 'Mean of empty slice' warnings: NaN out is the answer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def median_mad(x, axis: int = -1, *, min_sigma: float = 0.0):
    """Median and 1.4826 x median absolute deviation (psana det_pixel_status style)."""
    rows, out_shape = _as_rows(x, axis)
    rows = np.where(np.isfinite(rows), rows, np.nan) if rows.dtype.kind == "f" else rows.astype(np.float64)
    with _quiet_all_nan():
        med = np.nanmedian(rows, axis=-1)
        mad = 1.482602218505602 * np.nanmedian(np.abs(rows - med[:, None]), axis=-1)
    sigma = np.where(np.isnan(mad), mad, np.maximum(mad, min_sigma))
    return _shaped(med.astype(np.float64), out_shape), _shaped(sigma.astype(np.float64), out_shape)


def mean_std(x, axis: int = -1, *, min_sigma: float = 0.0):
    """Plain mean and standard deviation (ddof=1): the non-robust baseline."""
    rows, out_shape = _as_rows(x, axis)
    rows = np.where(np.isfinite(rows), rows, np.nan) if rows.dtype.kind == "f" else rows.astype(np.float64)
    with _quiet_all_nan():
        mu = np.nanmean(rows, axis=-1, dtype=np.float64)
        sd = np.nanstd(rows, axis=-1, ddof=1, dtype=np.float64)
    sd = np.where(np.isnan(mu), np.nan, np.nan_to_num(sd, nan=0.0))
    sigma = np.where(np.isnan(sd), sd, np.maximum(sd, min_sigma))
    return _shaped(mu, out_shape), _shaped(sigma, out_shape)


#: The statistics a feature's normal-pixel model can be fitted with.
METHODS = {"rmm": robust_gaussian, "mad": median_mad, "nonrobust": mean_std}


def fit_gaussian(x, axis: int = -1, *, method: str = "rmm", min_sigma: float = 0.0):
    """(mu, sigma) of ``x`` along ``axis`` with the named statistics (see ``METHODS``)."""
    try:
        fit = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown statistics {method!r}; choose one of {', '.join(METHODS)}") from None
    return fit(x, axis, min_sigma=min_sigma)
