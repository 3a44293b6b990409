"""The robust plane fit of F6 (rmm_dask.robust_plane): against planted planes and against
the estimator written out with plain sorting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rmm_dask import features as F
from rmm_dask.robust import CERTAIN, LIKELY, MSSE_LAMBDA, robust_gaussian, truncation_factor
from rmm_dask.robust_plane import robust_plane


def rng(seed):
    return np.random.default_rng(seed)


def tile(n=16, seed=0):
    yy, xx = np.mgrid[:n, :n]
    return xx.ravel().astype(float), yy.ravel().astype(float), rng(seed)


def lsq(x, y, z):
    """Least-squares plane; flat (a = b = 0) where the points do not fix one (on a line)."""
    if np.linalg.matrix_rank(np.stack([x - x.mean(), y - y.mean()])) < 2:
        return 0.0, 0.0, z.mean()
    a, b, c = np.linalg.lstsq(np.stack([x, y, np.ones_like(x)], axis=1), z, rcond=None)[0]
    return a, b, c


def by_rank(v):
    """Point indices ordered by (v, index)."""
    return np.lexsort((np.arange(v.size), v))


def reference_plane(x, y, z, n_iter):
    """The estimator of the module docstring, step by step with full sorts: n_iter FLkOS steps."""
    n = z.size
    k1, k2, lam2 = int(n * CERTAIN), int(n * LIKELY), MSSE_LAMBDA**2
    a, b, c = 0.0, 0.0, z[by_rank(z)[n // 2]]
    for _ in range(n_iter):
        sample = by_rank(np.abs(z - (a * x + b * y + c)))[k1:k2]
        a, b, c = lsq(x[sample], y[sample], z[sample])
    sigma = 0.0
    for _ in range(2):
        r2 = (z - (a * x + b * y + c)) ** 2
        s = r2[by_rank(r2)]
        cum, i = s[: max(k2, 3)].sum(), max(k2, 3)
        while i < n and i * s[i] <= lam2 * cum:
            cum, i = cum + s[i], i + 1
        sigma = math.sqrt(cum / (i - 1))
        inliers = r2 <= lam2 * sigma**2
        if inliers.sum() < 4:
            break
        a, b, c = lsq(x[inliers], y[inliers], z[inliers])
    r2 = (z - (a * x + b * y + c)) ** 2
    inliers = r2 <= lam2 * sigma**2
    return a, b, c, math.sqrt(r2[inliers].sum() / (inliers.sum() - 3)) / truncation_factor(MSSE_LAMBDA)


@pytest.mark.parametrize("seed", range(4))
def test_robust_plane_finds_a_planted_plane_among_outliers(seed):
    x, y, r = tile(seed=seed)
    z = 100 + 0.7 * x - 1.3 * y + r.normal(0, 2.0, x.size)
    out = r.choice(x.size, 64, replace=False)  # a quarter of the pixels, all bright
    z[out] += r.uniform(20, 400, out.size)
    a, b, c, sigma = robust_plane(x, y, z)
    # 192 inliers of sigma 2: standard errors 0.03 for the slopes, 0.15 at the centre
    assert abs(a - 0.7) < 0.15 and abs(b + 1.3) < 0.15 and abs(c + 7.5 * (a + b) - 95.5) < 0.6
    assert 1.6 < sigma < 2.4
    a0, b0, c0 = lsq(x, y, z)
    assert abs(c0 + 7.5 * (a0 + b0) - 95.5) > 10  # least squares alone is far off


def test_robust_plane_of_a_constant_is_its_mean_and_std():
    x, y, r = tile(seed=5)
    z = r.normal(7.0, 3.0, x.size)
    a, b, c, sigma = robust_plane(x, y, z)
    mu, sd = robust_gaussian(z - (a * x + b * y), background=False)
    assert abs(c - mu) < 0.05 and abs(sigma / sd - 1) < 0.05
    assert abs(c + 7.5 * (a + b) - 7.0) < 0.8 and abs(sigma - 3.0) < 0.5  # 4 standard errors


@pytest.mark.parametrize("case", ["normal", "integers", "ties", "outliers", "few"])
def test_robust_plane_is_the_estimator_written_with_sorts(case):
    """With the FLkOS steps fixed in number (tol < 0), the histogram ranks give the
    estimator's numbers, ties broken by index, whatever the spread of the values."""
    x, y, r = tile(seed=len(case))
    z = 50 + 0.2 * x + 0.1 * y + r.normal(0, 5, x.size)
    if case == "integers":
        z = np.round(z)
    elif case == "ties":
        z = np.round(z / 10.0) * 10.0  # a few values only: buckets of many equal points
    elif case == "outliers":
        z[::7] += 1e6  # beyond the histogram's last bucket
    elif case == "few":
        keep = np.sort(r.choice(x.size, 13, replace=False))  # F6's smallest tile
        x, y, z = x[keep], y[keep], z[keep]
    for n_iter in (0, 1, 5):
        got = robust_plane(x, y, z, n_iter=n_iter, tol=-1.0)
        np.testing.assert_allclose(got, reference_plane(x, y, z, n_iter), rtol=1e-9, atol=1e-9)


def test_robust_plane_stops_once_the_plane_stops_moving():
    x, y, r = tile(seed=9)
    z = 10 * x + r.normal(0, 1, x.size)
    stopped = robust_plane(x, y, z)
    to_the_end = robust_plane(x, y, z, tol=0.0)
    assert abs(stopped[0] - 10) < 0.05 and abs(to_the_end[0] - 10) < 0.05
    assert abs(stopped[3] - to_the_end[3]) < 0.05
    with pytest.raises(ValueError, match="at least 4 points"):
        robust_plane(x[:3], y[:3], z[:3])


def test_flat_snr_with_early_stops_flags_as_with_all_steps():
    from tests.test_features import flat_frames

    frames = flat_frames(24)
    offset = np.full(frames.shape[1:], 5000.0)
    stopped = F.flat_snr(frames, offset)
    to_the_end = F.flat_snr(frames, offset, tol=0.0)
    assert np.nanmax(np.abs(stopped - to_the_end)) < 0.05
    lam = 8
    a, b = F.local_snr(stopped, (64, 64)), F.local_snr(to_the_end, (64, 64))
    np.testing.assert_array_equal(np.abs(a) > lam, np.abs(b) > lam)
    assert a[10, 10] > lam and a[40, 30] < -lam  # the planted over- and under-responding pixels
