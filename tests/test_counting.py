"""The exact Poisson test of photon-counting pixels, against planted truth and known distributions."""

import numpy as np
import pytest
from scipy import stats

from rmm_dask import counting as C
from rmm_dask.codes import BadPixel
from rmm_dask.detectors import Detector
from rmm_dask.mask import Params, module_mask
from rmm_dask.synth import SMALL_COUNTING, counting_dark


def test_tail_probability_is_the_one_sided_normal_tail():
    for lam in (3.0, 8.0):
        assert C.tail_probability(lam) == pytest.approx(stats.norm.sf(lam), rel=1e-9)


@pytest.mark.parametrize("m", [0.01, 0.2, 1.0, 5.0, 40.0, 1000.0])
def test_window_rate_is_robust_to_hot_and_dead_pixels(m):
    rng = np.random.default_rng(int(m * 100))
    n_pix, frames = 4096, 50
    t = rng.poisson(m, n_pix).astype(float)
    hot = rng.random(n_pix) < 0.10  # 10% hot pixels at 5 to 50 times the rate (at least 10 counts more)
    t[hot] = rng.poisson(m * rng.uniform(5, 50, hot.sum()) + 10)
    dead = rng.random(n_pix) < 0.02
    t[dead] = 0
    rate, s, e, dispersion, inlier = C.window_rate(t, np.full(n_pix, frames))
    truth = m / frames
    sd = np.sqrt(truth / (n_pix * frames))  # the estimate's Poisson error
    # dead pixels (2%) count as normal where 0 counts are likely: allow their bias
    assert abs(rate - truth) <= 4 * sd + 0.02 * truth, (rate, truth)
    assert rate == pytest.approx(s / e)
    assert not inlier[hot & (t > 4 * m + 20)].any()  # the clearly hot are left out of the fit
    assert 0.85 < dispersion < 1.15


def test_window_rate_with_different_frame_counts():
    rng = np.random.default_rng(3)
    frames = rng.choice([10, 50, 200], 8192)
    t = rng.poisson(0.02 * frames).astype(float)
    rate, *_ = C.window_rate(t, frames)
    assert rate == pytest.approx(0.02, rel=0.05)


def test_window_rate_of_a_silent_window_is_zero_and_a_few_counts_are_not_flagged():
    t = np.zeros(4096)
    t[:3] = [1, 2, 3]  # in 4096 x 50 pixel-frames of silence
    rate, s, e, _, inlier = C.window_rate(t, np.full(4096, 50))
    z = C.poisson_z(t, np.full(4096, 50), s, e, inlier)
    assert np.all(z[3:] == 0)
    # 3 counts where the window counted nothing: unlikely (z ~ 6.7) but not at lambda = 8
    assert 0 < z[2] < 8 and np.all(np.isfinite(z))


def test_poisson_z_matches_the_tail_probability_for_large_windows():
    """With the window's rate known exactly (huge exposure), z = isf(P(T >= t))."""
    t = np.arange(0, 60, dtype=float)
    z = C.poisson_z(t, np.ones_like(t), s=1e9 * 10.0, exposure=1e9)  # rate 10
    high = stats.norm.isf(stats.poisson.sf(t - 1, 10.0))
    low = stats.norm.isf(stats.poisson.cdf(t, 10.0))
    expect = np.maximum(high, 0) - np.maximum(low, 0)
    finite = np.isfinite(expect)
    np.testing.assert_allclose(z[finite], expect[finite], atol=2e-3)


def test_deficits_are_testable_only_where_zero_counts_are_unlikely():
    # expected 20 counts: even 0 counts has P = 2e-9 > 6.2e-16: no deficit reaches -8
    z20 = C.poisson_z(np.array([0.0]), np.array([1.0]), s=20e8, exposure=1e8)
    assert -8 < z20[0] < -5
    # expected 100 counts: a dead pixel (0) or one at 30% (30 counts) is far out
    z100 = C.poisson_z(np.array([0.0, 30.0]), np.array([1.0, 1.0]), s=100e8, exposure=1e8)
    assert z100[0] < -8 and z100[1] < -8


def test_extreme_pixels_get_finite_large_z():
    z = C.poisson_z(np.array([5000.0]), np.array([50.0]), s=20.0, exposure=4096 * 50.0)
    assert np.isfinite(z[0]) and z[0] > 30


def test_no_clean_pixel_flagged_on_a_large_clean_poisson_set():
    rng = np.random.default_rng(7)
    windows = ([(0, 256)], [(0, 256)])
    for m in (0.2, 3.0, 50.0):
        t = rng.poisson(m, (16, 256, 256)).astype(float)  # 1M pixels
        z, poisson, _ = C.counting_snr(t, np.full(t.shape, 50.0), windows)
        assert poisson.all()
        assert np.abs(z).max() < 8.0
        assert np.count_nonzero(np.abs(z) > 5.0) <= 3  # p(5 sigma) x 1M pixels = 0.3 expected


@pytest.mark.parametrize("m", [3.0, 20.0])
def test_false_alarm_rate_at_lambda_3_is_the_nominal_tail(m):
    """At lambda = 3 the fraction of clean pixels beyond it equals the Poisson tail at the
    discrete threshold (<= 1.35e-3, the nominal tail; equal up to the counts' discreteness)."""
    rng = np.random.default_rng(11)
    t = rng.poisson(m, (8, 512, 512)).astype(float)  # 2M pixels, 8 windows of 262144
    z, _, _ = C.counting_snr(t, np.ones(t.shape), ([(0, 512)], [(0, 512)]))
    p = C.tail_probability(3.0)
    k_high = stats.poisson.isf(p, m)  # flagged: T > k_high
    k_low = stats.poisson.ppf(p, m)  # flagged: T < k_low
    for observed, exact in (
        (np.mean(z > 3), stats.poisson.sf(k_high, m)),
        (np.mean(z < -3), stats.poisson.cdf(k_low - 1, m)),
    ):
        sd = np.sqrt(exact / t.size)
        assert exact <= p
        assert abs(observed - exact) <= 5 * sd + 0.1 * exact, (observed, exact)
    assert np.mean(np.abs(z) > 3) > 0.5 * p  # close to the nominal two-sided 2.7e-3, not far below


def test_overdispersed_windows_keep_the_gaussian_model():
    rng = np.random.default_rng(5)
    rates = 1000 * rng.lognormal(0, 0.1, (1, 128, 128))  # sensitivity varies 10%: variance 11x Poisson
    t = rng.poisson(rates).astype(float)
    _, poisson, _ = C.counting_snr(t, np.ones(t.shape), ([(0, 128)], [(0, 128)]))
    assert not poisson.any()
    t = rng.poisson(np.full((1, 128, 128), 1000.0)).astype(float)
    _, poisson, _ = C.counting_snr(t, np.ones(t.shape), ([(0, 128)], [(0, 128)]))
    assert poisson.all()


@pytest.fixture(scope="module")
def weak_dark():
    """50 frames at 0.004 counts per frame, 1% noisy pixels at 0.2-2 counts per frame."""
    return counting_dark(cells=4, frames=50, background=0.004, noisy_rates=(0.2, 2.0), noisy_fraction=0.01, chip_spread=0.3, seed=1)


def _mask(dark, params):
    return module_mask([(dark.counts, None)], None, SMALL_COUNTING, params).mask[0]


def test_poisson_finds_weakly_firing_pixels_that_the_paper_floor_misses(weak_dark):
    poisson = _mask(weak_dark, Params())
    floor = _mask(weak_dark, Params(counting_test="floor"))
    rate, noisy = weak_dark.rate, weak_dark.noisy
    for lo, hi, want in ((0.5, 0.8, 0.99), (0.8, 1.2, 0.999), (1.2, 2.01, 0.999)):
        here = noisy & (rate >= lo) & (rate < hi)
        assert here.sum() > 50
        found = np.mean(poisson[here] & BadPixel.OFFSET != 0)
        assert found >= want, (lo, hi, found)
    # the paper's floor: a fixed threshold of ~1.3 counts per frame
    here = noisy & (rate >= 0.5) & (rate < 1.2)
    assert np.mean(floor[here] != 0) < 0.3
    # weakest bin: expected 10-15 counts against ~11 needed: found in part, by Poisson only
    here = noisy & (rate < 0.3)
    assert np.mean(poisson[here] != 0) > 0.2 and np.mean(floor[here] != 0) < 0.01
    # no false alarms in either
    assert np.count_nonzero(poisson[~noisy]) == 0
    assert np.count_nonzero(floor[~noisy]) == 0


def test_counting_zero_variance_is_normal():
    """Normal counting pixels count 0 in every dark frame: no NOISE for zero variance."""
    dark = counting_dark(frames=50, background=0.0, noisy_fraction=0.0)
    assert np.count_nonzero(_mask(dark, Params())) == 0


def test_weak_counting_flat_flags_dead_and_under_responding_pixels():
    rng = np.random.default_rng(2)
    det = SMALL_COUNTING
    dark = counting_dark(frames=50, noisy_fraction=0.0, seed=3)
    response = np.ones(det.module_shape)
    dead = rng.random(det.module_shape) < 0.002
    under = ~dead & (rng.random(det.module_shape) < 0.002)
    response[dead] = 0.0
    response[under] = 0.3
    flat = rng.poisson(2.0 * response, (1, 100, *det.module_shape)).astype(np.int32)  # 200 counts expected
    res = module_mask([(dark.counts, None)], flat, det, Params())
    low = (res.mask[0, 0] & BadPixel.FLAT_LOW) != 0
    assert low[dead].all() and low[under].all()
    assert not low[~(dead | under)].any()
    assert not ((res.mask[0, 0] & BadPixel.FLAT_HIGH) != 0).any()
    # the stored SNR is the Poisson z: the dead are ~-20 sigma (P(0 | 200) = e^-200)
    assert res.snr["flat_snr"][0][dead].max() < -15


def test_unknown_counting_test_is_refused():
    with pytest.raises(ValueError, match="counting test"):
        Params(counting_test="gauss")


def test_custom_windows_follow_params_window():
    det = Detector(name="C", n_modules=1, module_shape=(64, 64), asic_shape=(64, 64), counting=True, edge_width=0)
    rng = np.random.default_rng(0)
    rate = np.full((1, 64, 64), 0.01)
    rate[:, :, 32:] = 0.2  # two halves at different rates: one window would flag the bright half
    counts = rng.poisson(rate[:, None], (1, 100, 64, 64)).astype(np.int32)
    assert np.count_nonzero(module_mask([(counts, None)], None, det, Params(window=(64, 32))).mask) == 0
    assert np.count_nonzero(module_mask([(counts, None)], None, det, Params()).mask) > 1000


def test_counting_test_comes_from_the_configuration():
    import dask.config

    from rmm_dask.config import params_from_config

    assert params_from_config().counting_test == "poisson"
    with dask.config.set({"rmm-dask.counting-test": "floor"}):
        assert params_from_config().counting_test == "floor"
