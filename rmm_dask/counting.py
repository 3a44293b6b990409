"""Exact Poisson tests for photon-counting pixels (beyond the paper), on plain arrays.

In the dark a normal counting pixel counts almost nothing (a few counts per thousand
frames), so the robust Gaussian model of the paper sees a window of tied zeros with
sigma 0; the paper floors sigma at 1/6 count per frame (section 2.1), which makes
lambda = 8 a fixed threshold of ~1.3 counts per frame and lets weakly firing pixels
through. Here each pixel's total count ``T`` over its ``n`` valid frames is instead
compared with the counts of the normal pixels of its window (one ASIC):

1. The window's rate ``r`` (counts per frame) is fitted robustly: start from the fraction
   of zero-count pixels (``r = -ln f0 / n``, when more than half count nothing) or the
   median rate; then, a few times, keep the pixels whose totals lie inside the central
   ``1 - 2 * TRIM`` of Poisson(``r * n_i``) (hot and dead pixels fall outside) and solve
   the truncated-Poisson likelihood for ``r`` (the mean of a Poisson truncated to
   ``[a, b]`` is ``m (F(b-1) - F(a-2)) / (F(b) - F(a-1))``, F its CDF). Ties and zeros
   are what the model expects; pixels with fewer valid frames just have a smaller
   expectation ``r * n_i``.
2. The regime: ``D = sum (T_i - r n_i)^2 / sum r n_i`` over the inliers is the window's
   dispersion against Poisson. Where ``D <= MAX_DISPERSION`` the counts are Poisson and the
   exact test below decides; where sensitivity variation between pixels dominates (a
   bright flat, a rate that differs from pixel to pixel), the caller keeps the Gaussian
   model of the paper, which measures the real spread.
3. The test: conditional on ``T + S`` (S: the inliers' counts, without the pixel itself),
   ``T`` is Binomial(``T + S``, ``n / (n + E)``) when the pixel counts at the window's
   rate (E: the inliers' exposure in frames, corrected for the truncation). This is the
   exact test of two Poisson rates: it includes the uncertainty of the window's rate (a
   window that counted nothing at all still allows a few counts), and its false-alarm
   probability per pixel is at most the tail probability asked for.
4. The verdict as an SNR: ``z = isf(p_high) > 0`` for an excess, ``-isf(p_low) < 0`` for a
   deficit (0 where neither tail is below one half), so that ``|z| > lambda`` flags a pixel
   at the one-sided normal tail of lambda sigmas (lambda = 8: 6.2e-16), as for the
   Gaussian features. A deficit is only detectable when even 0 counts are unlikely,
   ``exp(-r n) < ndtr(-lambda)`` (lambda = 8: more than 35 expected counts); below that
   ``z`` cannot reach ``-lambda``.

Nothing here knows about Dask, files or detectors beyond the windows it is given.
"""

from __future__ import annotations

import numpy as np

# scipy is imported inside the functions that use it: scipy.stats costs ~1 s at start-up
# (every `rmm mask`), and only photon-counting detectors need it.

__all__ = ["MAX_DISPERSION", "TRIM", "tail_probability", "window_rate", "poisson_z", "counting_snr"]

#: largest dispersion index (variance / mean of the normal pixels' totals) still treated as
#: Poisson; above it the Gaussian model of the paper decides. At D = 1.25 a normal pixel
#: tested at lambda = 8 is at most 8 / sqrt(1.25) = 7.2 of its real sigmas out (p 3e-13).
MAX_DISPERSION = 1.25
#: tail probability on each side of the Poisson cut that selects the inliers of the rate fit
TRIM = 1e-4


def tail_probability(lam: float) -> float:
    """One-sided tail of the normal distribution beyond ``lam`` sigmas (8: 6.2e-16)."""
    from scipy import special
    return float(special.ndtr(-lam))


def _cdf(k, m):
    """Poisson CDF, 0 for k < 0 (also for m = 0)."""
    from scipy import stats
    k = np.asarray(k, dtype=np.float64)
    return np.where(k < 0, 0.0, stats.poisson.cdf(np.maximum(k, 0), m))


def window_rate(total, count, *, trim: float = TRIM, n_iter: int = 20):
    """Robust Poisson rate of one window's normal pixels.

    ``total`` (counts) and ``count`` (valid frames) are 1-D arrays of the window's pixels
    that may serve as normal (edges and known-bad pixels already left out; pixels with
    ``count == 0`` or a NaN total are ignored). Returns ``(rate, S, E, dispersion, inlier)``:
    counts per frame; the inliers' total counts and truncation-corrected exposure
    (frames), so that ``rate = S / E``; the dispersion index; and the bool inlier map.
    """
    from scipy import stats
    total = np.asarray(total, dtype=np.float64)
    count = np.asarray(count, dtype=np.float64)
    valid = (count > 0) & np.isfinite(total)
    t, n = total[valid], count[valid]
    inlier = np.zeros(total.shape, dtype=bool)
    if t.size == 0:
        return np.nan, 0.0, 0.0, np.nan, inlier
    zeros = np.mean(t == 0)
    if zeros >= 1.0:
        rate = 0.0
    elif zeros > 0.5:
        rate = -np.log(zeros) / np.mean(n)
    else:
        rate = float(np.median(t / n))
    frames, which = np.unique(n, return_inverse=True)  # the cuts depend on a pixel's frames only
    which = which.ravel()
    keep = np.ones(t.shape, dtype=bool)
    corr = np.ones(t.shape)
    for _ in range(n_iter):
        m = rate * frames
        if rate > 0:
            lo = stats.poisson.ppf(trim, m)
            hi = stats.poisson.isf(trim, m)
            # E[T | lo <= T <= hi] = m * corr for a Poisson of mean m
            corr = ((_cdf(hi - 1, m) - _cdf(lo - 2, m)) / np.maximum(_cdf(hi, m) - _cdf(lo - 1, m), 1e-300))[which]
            keep = (t >= lo[which]) & (t <= hi[which])
        else:
            keep = t == 0
            corr = np.ones(t.shape)
        exposure = float(np.sum(n[keep] * corr[keep]))
        new = float(np.sum(t[keep])) / exposure if exposure > 0 else 0.0
        done = abs(new - rate) <= 1e-7 * max(rate, 1e-12)
        rate = new
        if done:
            break
    m = rate * n[keep]
    s = float(np.sum(t[keep]))
    exposure = float(np.sum(n[keep] * corr[keep]))
    dispersion = float(np.sum((t[keep] - m) ** 2) / np.sum(m)) if np.sum(m) > 0 else 1.0
    inlier[np.flatnonzero(valid)[keep]] = True
    return rate, s, exposure, dispersion, inlier


def _log_tail(k, trials, p, upper: bool):
    """log P(X >= k) (``upper``) or log P(X <= k) of X ~ Binomial(trials, p), without underflow.

    Where scipy's tail underflows to 0, the geometric bound on the tail beyond ``k``
    (an upper bound of the probability, so a conservative z) is used instead.
    """
    from scipy import stats
    with np.errstate(divide="ignore", invalid="ignore"):
        if upper:
            tail = stats.binom.sf(k - 1, trials, p)
            ratio = (trials - k) / (k + 1) * p / (1 - p)  # pmf(k + 1) / pmf(k)
        else:
            tail = stats.binom.cdf(k, trials, p)
            ratio = k / (trials - k + 1) * (1 - p) / p  # pmf(k - 1) / pmf(k)
        out = np.log(tail)
        bound = stats.binom.logpmf(k, trials, p) - np.log1p(-np.clip(ratio, 0.0, 1.0 - 1e-12))
    return np.where(tail > 0, out, bound)


def poisson_z(total, count, s, exposure, inlier=None):
    """Signed Gaussian-equivalent z of each pixel's total against a window's rate ``s / exposure``.

    ``total`` (integers) and ``count`` (frames) per pixel; ``s``, ``exposure`` from
    :func:`window_rate`; ``inlier`` marks pixels counted in ``s`` (taken out of it for their
    own test). The exact conditional test of two Poisson rates (see the module's notes).
    NaN where a pixel has no valid frame or the window no rate.
    """
    from scipy import special
    t = np.asarray(total, dtype=np.float64)
    n = np.asarray(count, dtype=np.float64)
    own = np.zeros(t.shape, dtype=bool) if inlier is None else np.asarray(inlier, dtype=bool)
    valid = (n > 0) & np.isfinite(t) & (exposure > 0)
    t = np.where(valid, np.rint(t), 0.0)
    n = np.where(valid, n, 1.0)
    rest_s = np.maximum(s - np.where(own, t, 0.0), 0.0)
    rest_e = exposure - np.where(own, n * min(1.0, exposure / max(np.sum(n[own]), 1e-300)), 0.0)
    rest_e = np.maximum(rest_e, 1e-300)
    trials = t + rest_s
    p = n / (n + rest_e)
    # pixels of a window share few (count, trials, p) triples (mostly 0, 1, 2 counts in the
    # dark): the tails are computed once per distinct triple
    keys, inverse = np.unique(np.stack([t.ravel(), np.rint(trials).ravel(), p.ravel()]), axis=1, return_inverse=True)
    k, tr, pp = keys
    zk = np.zeros(k.shape)
    some = tr > 0  # no counts at all, anywhere: nothing to tell (z = 0)
    z_high = -special.ndtri_exp(_log_tail(k[some], tr[some], pp[some], upper=True))
    z_low = -special.ndtri_exp(_log_tail(k[some], tr[some], pp[some], upper=False))
    zk[some] = np.maximum(z_high, 0.0) - np.maximum(z_low, 0.0)
    z = zk[inverse.ravel()].reshape(t.shape)
    return np.where(valid, z, np.nan)


def counting_snr(total, count, windows, *, exclude=None, max_dispersion: float = MAX_DISPERSION, trim: float = TRIM):
    """Poisson z of each pixel against its window's normal pixels, and where the test applies.

    ``total`` and ``count`` are ``(..., y, x)`` (counts and valid frames per pixel);
    ``windows`` the windows' ``([(y0, y1), ...], [(x0, x1), ...])`` (one ASIC each);
    ``exclude`` a ``(y, x)`` or ``(..., y, x)`` bool map of pixels kept out of the rate fits
    (ASIC edges, pixels known bad); they are still tested. Returns ``(z, poisson, rate)``:
    float64 z as :func:`poisson_z`, a bool map of the pixels whose window is Poisson
    (dispersion <= ``max_dispersion``; elsewhere the caller uses its Gaussian model), and
    the window rate per pixel (counts per frame).
    """
    total = np.asarray(total, dtype=np.float64)
    count = np.broadcast_to(np.asarray(count, dtype=np.float64), total.shape)
    lead = total.shape[:-2]
    ny, nx = total.shape[-2:]
    use = np.ones(total.shape, dtype=bool)
    if exclude is not None:
        use &= ~np.broadcast_to(np.asarray(exclude, dtype=bool), total.shape)
    z = np.full(total.shape, np.nan)
    poisson = np.zeros(total.shape, dtype=bool)
    rate = np.full(total.shape, np.nan)
    wy, wx = windows
    if wy[-1][1] != ny or wx[-1][1] != nx:
        raise ValueError(f"windows end at {(wy[-1][1], wx[-1][1])}, not at the module's size {(ny, nx)}")
    for idx in np.ndindex(*lead):
        for y0, y1 in wy:
            for x0, x1 in wx:
                win = idx + (slice(y0, y1), slice(x0, x1))
                t, n, u = total[win].ravel(), count[win].ravel(), use[win].ravel()
                r, s, e, disp, inl = window_rate(t[u], n[u], trim=trim)
                own = np.zeros(t.shape, dtype=bool)
                own[np.flatnonzero(u)[inl]] = True
                shape = (y1 - y0, x1 - x0)
                z[win] = poisson_z(t, n, s, e, own).reshape(shape)
                poisson[win] = bool(np.isfinite(disp) and disp <= max_dispersion)
                rate[win] = r
    return z, poisson, rate
