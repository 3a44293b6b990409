"""The feature kernels F1-F6 on small arrays with known answers."""

import numpy as np
import pytest

from rmm_dask import features as F
from rmm_dask.detectors import AGIPD1M


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- F2/F3 moments


def test_moments_exact_from_uint16():
    x = (16000 + rng().normal(0, 3, (2, 3, 40, 8, 8))).astype(np.uint16)
    keep = rng(1).random((2, 3, 40)) > 0.2
    mean, std, count = F.pixel_moments(x, keep)
    assert mean.shape == std.shape == count.shape == (2, 3, 8, 8)
    ref = x.astype(np.float64)
    for i in range(2):
        for j in range(3):
            sel = ref[i, j, keep[i, j]]
            np.testing.assert_allclose(mean[i, j], sel.mean(0), rtol=0, atol=1e-9)
            np.testing.assert_allclose(std[i, j], sel.std(0, ddof=1), rtol=1e-12)
            assert np.all(count[i, j] == keep[i, j].sum())


def test_moments_float_ignore_nan():
    x = rng().normal(100, 5, (30, 4, 4)).astype(np.float32)
    x[::3, 0, 0] = np.nan
    x[:, 1, 1] = np.nan
    mean, std, count = F.pixel_moments(x)
    assert count[0, 0] == 20 and count[1, 1] == 0 and count[2, 2] == 30
    assert np.isnan(mean[1, 1]) and np.isnan(std[1, 1])
    np.testing.assert_allclose(mean[0, 0], np.nanmean(x[:, 0, 0].astype(np.float64)))
    np.testing.assert_allclose(std[0, 0], np.nanstd(x[:, 0, 0].astype(np.float64), ddof=1), rtol=1e-6)


def test_moments_zero_variance_and_shape_errors():
    x = np.full((10, 2, 2), 7, dtype=np.uint16)
    mean, std, _ = F.pixel_moments(x)
    assert np.all(mean == 7) and np.all(std == 0)
    with pytest.raises(ValueError, match=r"\(\.\.\., frame, y, x\)"):
        F.pixel_moments(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="keep has shape"):
        F.pixel_moments(x, np.ones(3, dtype=bool))


# ---------------------------------------------------------------- F1


def test_frame_filter_drops_outlying_frames():
    frames = (5000 + rng().normal(0, 12, (2, 200, 64, 64))).astype(np.uint16)
    bad = [(0, 5), (0, 17), (1, 100)]
    for c, f in bad:
        frames[c, f] += 150
    levels = F.frame_levels(frames)
    keep = F.frame_filter(levels)
    assert keep.shape == (2, 200)
    assert set(zip(*np.nonzero(~keep))) == set(bad)


def test_frame_filter_copes_with_zero_sigma_series():
    levels = np.full((3, 50), 4000.0)
    levels[0, 3] += 1e-6  # numerically different, physically the same
    levels[1, 7] += 0.5  # half an ADU: within the floor
    levels[2, 9] += 300  # a real excursion
    keep = F.frame_filter(levels)
    assert keep[0].all() and keep[1].all()
    assert not keep[2, 9] and keep[2].sum() == 49
    levels[0, 10] = np.nan
    assert not F.frame_filter(levels)[0, 10]


# ---------------------------------------------------------------- F4


def test_gain_separation():
    mean = np.array([[4800.0, 4800.0, 4800.0], [6700.0, 6700.0, 4800.0], [8300.0, 6800.0, 4800.0]])
    std = np.array([[8.0, 8.0, 8.0], [8.0, 8.0, 8.0], [8.0, 8.0, 8.0]])
    bad = F.gain_separation(mean, std, lam=8)
    # pixel 0 separable; pixel 1: medium and low overlap; pixel 2: stuck at the high level
    np.testing.assert_array_equal(bad, [[False, False, True], [False, True, True], [False, True, True]])
    noisy = F.gain_separation(np.array([[4800.0], [6700.0]]), np.array([[250.0], [10.0]]), lam=8)
    assert noisy.all()


# ---------------------------------------------------------------- the local model


def asic_module(seed=0):
    """Offsets of one module: ASICs 300 ADU apart, pixels 25 ADU apart."""
    r = rng(seed)
    ny, nx = AGIPD1M.module_shape
    ay, ax = AGIPD1M.asic_shape
    asic = r.normal(5000, 300, (ny // ay, nx // ax))
    return np.repeat(np.repeat(asic, ay, 0), ax, 1) + r.normal(0, 25, (ny, nx))


def test_local_model_per_asic_finds_what_a_module_model_misses():
    off = asic_module()
    hot = (100, 70)
    off[hot] += 12 * 25  # 12 pixel sigmas: obvious within its ASIC, hidden in the module spread
    edges = AGIPD1M.asic_edges()
    snr = F.local_snr(off, AGIPD1M.asic_shape, exclude=edges)
    assert snr[hot] > 8
    assert np.sum(np.abs(snr) > 8) == 1
    whole = F.local_snr(off, AGIPD1M.module_shape, exclude=edges)
    assert abs(whole[hot]) < 8


def test_local_snr_handles_nan_and_zero_sigma():
    f = np.zeros((2, 64, 128))
    f[0, 3, 3] = 1.0
    f[1, :, :64] = np.nan
    snr = F.local_snr(f, (64, 64))
    assert snr[0, 3, 3] == np.inf and snr[0, 4, 4] == 0
    assert np.isnan(snr[1, :, :64]).all() and np.all(snr[1, :, 64:] == 0)
    # windows that do not tile the module: the last one is cut at the border and fitted alone
    g = rng(3).normal(0, 1, (64, 128))
    ragged = F.local_snr(g, (60, 64))
    np.testing.assert_array_equal(ragged[:60], F.local_snr(g[:60], (60, 64)))
    np.testing.assert_array_equal(ragged[60:], F.local_snr(g[60:], (4, 64)))


def test_tile_bounds_stay_inside_asic_windows():
    # PILATUS: chips at a pitch of 98 rows in a 195-row module; AGIPD: 64 x 64 ASICs
    assert F.tile_bounds([(0, 98), (98, 195)], 16).tolist() == [0, 16, 32, 48, 64, 80, 98, 114, 130, 146, 162, 178, 195]
    assert F.tile_bounds([(0, 64), (64, 128)], 16).tolist() == list(range(0, 129, 16))
    assert F.tile_bounds([(0, 185)], 16).tolist() == [*range(0, 177, 16), 185]  # 9 rows: a tile of their own
    assert F.tile_bounds([(0, 180)], 16).tolist() == [*range(0, 161, 16), 180]  # 4 rows join the last tile


# ---------------------------------------------------------------- F6


def flat_frames(n_frames=40, seed=0):
    r = rng(seed)
    ny, nx = 128, 64
    yy, xx = np.mgrid[:ny, :nx]
    intensity = 8 * (1 + 0.3 * yy / ny - 0.2 * xx / nx)  # not flat: a gradient over the module
    response = 1 + r.normal(0, 0.02, (ny, nx))
    response[10, 10] = 2.0  # over-responding
    response[40, 30] = 0.3  # under-responding
    photons = r.poisson(intensity * response, (n_frames, ny, nx))
    frames = 5000 + 65 * photons + r.normal(0, 12, (n_frames, ny, nx))
    return frames.astype(np.uint16)


def test_flat_snr_separates_over_and_under_responding_pixels():
    frames = flat_frames()
    snr = F.flat_snr(frames, np.full(frames.shape[1:], 5000.0))
    assert snr.shape == (128, 64) and snr.dtype == np.float32
    normal = np.ones(snr.shape, bool)
    normal[10, 10] = normal[40, 30] = False
    assert snr[10, 10] > 1.5 and snr[40, 30] < -1.5
    assert np.abs(snr[normal]).max() < 1.0
    model = F.local_snr(snr, (64, 64))
    assert model[10, 10] > 8 and model[40, 30] < -8 and np.abs(model[normal]).max() < 8


def test_flat_snr_does_not_depend_on_how_cells_are_batched():
    frames = np.stack([flat_frames(12, seed) for seed in range(3)])
    together = F.flat_snr(frames)
    apart = np.stack([F.flat_snr(frames[i]) for i in range(3)])
    np.testing.assert_array_equal(together, apart)


def test_flat_snr_sums_fed_block_by_block_equal_one_call():
    frames = np.stack([flat_frames(12, seed) for seed in range(2)])
    whole = F.flat_snr_sums(frames)
    sums = None
    for a in range(0, 12, 5):
        sums = F.flat_snr_sums(frames[:, a : a + 5], sums=sums)
    np.testing.assert_array_equal(sums[0], whole[0])
    np.testing.assert_array_equal(sums[1], whole[1])
    assert (whole[1] == 12).all()
    np.testing.assert_array_equal(F.flat_snr(frames), (whole[0] / whole[1]).astype(np.float32))


def test_flat_snr_excluded_and_missing_pixels():
    frames = flat_frames(10).astype(np.float32)
    frames[:, 20:30, 20:30] = np.nan
    edges = np.zeros(frames.shape[1:], bool)
    edges[0] = True
    snr = F.flat_snr(frames, exclude=edges)
    assert np.isnan(snr[20:30, 20:30]).all()
    assert np.isfinite(snr[0]).all()  # left out of the fits, still given an SNR
    with pytest.raises(ValueError, match="not at the module's size"):
        F.flat_snr(frames, windows=([(0, 64)], [(0, 64)]))


def test_flat_snr_on_modules_that_tiles_do_not_divide():
    """CSPAD panels have 185 rows, PILATUS chips a pitch of 98 x 61: tiles follow the windows."""
    frames = flat_frames()[:, :122, :61]
    snr = F.flat_snr(frames, np.full(frames.shape[1:], 5000.0), windows=([(0, 61), (61, 122)], [(0, 61)]))
    normal = np.ones(snr.shape, bool)
    normal[10, 10] = normal[40, 30] = False
    assert np.isfinite(snr).all() and snr[10, 10] > 1.5 and snr[40, 30] < -1.5 and np.abs(snr[normal]).max() < 1.0
    # a tile never straddles a window border: the second window alone gives the same numbers
    alone = F.flat_snr(frames[:, 61:], np.full((61, 61), 5000.0))
    np.testing.assert_array_equal(snr[61:], alone)
