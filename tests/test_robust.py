"""The robust estimator against known distributions and against the reference library."""

import numpy as np
import pytest
from scipy import stats

from rmm_dask.robust import fit_gaussian, mean_std, median_mad, robust_gaussian, truncation_factor

N = 65536
MU, SIGMA = 10.0, 2.0


def contaminated(fraction, seed, lo=-100.0, hi=100.0):
    """N values: Gaussian inliers N(MU, SIGMA) and a fraction of uniform outliers over MU + SIGMA * [lo, hi]."""
    rng = np.random.default_rng(seed)
    n_out = int(fraction * N)
    x = np.concatenate([rng.normal(MU, SIGMA, N - n_out), rng.uniform(MU + lo * SIGMA, MU + hi * SIGMA, n_out)])
    rng.shuffle(x)
    return x.astype(np.float32)


def median_errors(fit, fraction, lo=-100.0, hi=100.0, seeds=range(5)):
    """Median over seeds of |mu error| / SIGMA and |sigma / SIGMA - 1|."""
    errs = []
    for seed in seeds:
        mu, sigma = fit(contaminated(fraction, seed, lo, hi))
        errs.append((abs(mu - MU) / SIGMA, abs(sigma / SIGMA - 1)))
    return np.median(np.array(errs), axis=0)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.45])
@pytest.mark.parametrize("span", [(-100, 100), (-20, 20), (0, 50)], ids=["wide", "narrow", "one-sided"])
def test_recovers_mu_and_sigma_within_2_percent(fraction, span):
    mu_err, sigma_err = median_errors(robust_gaussian, fraction, *span)
    assert mu_err < 0.02, f"mu off by {mu_err:.3%} of sigma"
    assert sigma_err < 0.02, f"sigma off by {sigma_err:.3%}"


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.45])
def test_mean_std_fails_where_robust_succeeds(fraction):
    _, sigma_err = median_errors(mean_std, fraction)
    assert sigma_err > 1.0  # sigma off by more than 100%
    mu_err, _ = median_errors(mean_std, fraction, 0, 50)
    assert mu_err > 1.0  # one-sided outliers drag the mean by more than a sigma


def test_mad_is_biased_by_heavy_contamination():
    """median/MAD is robust but inflates sigma by tens of percent at 30-45% outliers."""
    _, sigma_err = median_errors(median_mad, 0.45)
    assert sigma_err > 0.3
    assert median_errors(median_mad, 0.0)[1] < 0.02


def test_agrees_with_robust_gaussian_fitting_library():
    rgf = pytest.importorskip("RobustGaussianFittingLibrary")
    for fraction in (0.0, 0.1, 0.3, 0.45):
        for seed in range(3):
            x = contaminated(fraction, seed)
            ref_mu, ref_sigma = rgf.fitValue(x, modelValueInit=float(np.median(x)), fit2Skewed=False)
            # the reference algorithm itself: no truncation correction, no background subtraction
            mu, sigma = robust_gaussian(x, consistent=False, background=False)
            assert abs(mu - ref_mu) < 1e-3 * ref_sigma
            assert sigma == pytest.approx(ref_sigma, rel=1e-3)
            # the defaults: the same mode; sigma at least as accurate as the reference's
            # (after correcting that for its 3-sigma truncation, ~1.4% low)
            mu, sigma = robust_gaussian(x)
            assert abs(mu - ref_mu) < 0.01 * ref_sigma
            ref_err = abs(ref_sigma / truncation_factor(3.0) - SIGMA)
            assert abs(sigma - SIGMA) <= ref_err + 0.005 * SIGMA
            # and its skewed-density variant, the library's default, lands close too
            skew_mu, skew_sigma = rgf.fitValue(x, modelValueInit=float(np.median(x)))
            assert abs(mu - skew_mu) < 0.02 * ref_sigma


def test_truncation_factor():
    """The std of N(0, 1) truncated to |x| <= lambda, as scipy's truncated normal has it."""
    for lam in (1.0, 3.0, 8.0):
        assert truncation_factor(lam) == pytest.approx(stats.truncnorm(-lam, lam).std(), rel=1e-9)
    assert truncation_factor(30.0) == pytest.approx(1.0)


def test_vectorised_over_other_axes_equals_row_by_row():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (3, 500, 4)).astype(np.float32)
    x[:, :100, :] += 50  # 20% outliers
    mu, sigma = robust_gaussian(x, axis=1)
    assert mu.shape == sigma.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            m, s = robust_gaussian(x[i, :, j])
            assert mu[i, j] == m and sigma[i, j] == s
    assert np.all(np.abs(mu) < 0.2)


def test_nan_and_inf_are_missing_values():
    rng = np.random.default_rng(4)
    x = rng.normal(MU, SIGMA, 10000)
    y = x.copy()
    y[::7] = np.nan
    y[1::50] = np.inf
    y[2::50] = -np.inf
    keep = np.isfinite(y)
    assert robust_gaussian(y) == robust_gaussian(x[keep])
    mu, sigma = robust_gaussian(np.full((2, 10), np.nan))
    assert np.all(np.isnan(mu)) and np.all(np.isnan(sigma))


def test_deterministic_and_order_independent():
    x = contaminated(0.3, 7)
    first = robust_gaussian(x)
    assert robust_gaussian(x) == first
    assert robust_gaussian(np.random.default_rng(0).permutation(x)) == first


def test_integer_input_and_min_sigma():
    # photon counts in the dark: almost all zeros, sigma would be 0
    rng = np.random.default_rng(5)
    counts = (rng.random((4, 20000)) < 0.01).astype(np.uint16)
    mu, sigma = robust_gaussian(counts, min_sigma=1 / 6)
    assert np.all(mu == 0) and np.all(sigma == pytest.approx(1 / 6))
    assert np.all(robust_gaussian(counts)[1] == 0)
    big = (5000 + rng.normal(0, 12, 65536)).astype(np.uint16)
    mu, sigma = robust_gaussian(big)
    assert mu == pytest.approx(big.mean(), abs=0.3) and sigma == pytest.approx(big.std(), rel=0.02)


def test_small_samples():
    assert robust_gaussian(np.array([3.0])) == (3.0, 0.0)
    mu, sigma = robust_gaussian(np.array([1.0, 2.0, 3.0]))
    assert mu == 2.0 and sigma == 1.0
    mu, sigma = robust_gaussian(np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 40.0, 1.02, 0.98]))
    assert abs(mu - 1.0) < 0.05 and sigma < 0.2


def test_fit_gaussian_dispatch():
    x = contaminated(0.1, 1)
    assert fit_gaussian(x, method="rmm") == robust_gaussian(x)
    assert fit_gaussian(x, method="mad") == median_mad(x)
    assert fit_gaussian(x, method="nonrobust") == mean_std(x)
    with pytest.raises(ValueError, match="unknown statistics 'median'"):
        fit_gaussian(x, method="median")
    with pytest.raises(ValueError, match="certain < likely"):
        robust_gaussian(x, certain=0.6)
