"""The synthetic calibration set: reproducible, shaped as documented, defects planted as claimed."""

from dataclasses import replace

import numpy as np
import pytest

from rmm_dask import synth
from rmm_dask.codes import BadPixel
from rmm_dask.synth import GAINS, Defect, SynthConfig

SMALL = SynthConfig(modules=1, cells=2, frames=32, flat_frames=32, outlier_frame_fraction=0.05)
HIGH, MEDIUM, LOW = range(3)


@pytest.fixture(scope="module")
def cal():
    return synth.synthesize(SMALL)


@pytest.fixture(scope="module")
def cal32():
    return synth.synthesize(replace(SMALL, dtype="float32"))


def pixels_of(truth, kind):
    """Bool (module, y, x): where ``kind`` is planted in any gain or cell."""
    return truth.kind_mask(kind).any(axis=(1, 2))


def asic_median(values, det):
    """Median of (..., y, x) over each ASIC, expanded back to pixels."""
    ay, ax = det.asic_shape
    ny, nx = values.shape[-2:]
    blocks = values.reshape(*values.shape[:-2], ny // ay, ay, nx // ax, ax)
    med = np.median(blocks, axis=(-3, -1))
    return np.repeat(np.repeat(med, ay, axis=-2), ax, axis=-1)


def arrays(cal):
    runs = [*cal.dark.values(), cal.flat]
    return [a for run in runs for a in (run.analog, run.gain)] + [cal.truth.defects]


def test_same_seed_same_arrays_other_seed_differs(cal):
    again = synth.synthesize(SMALL)
    for a, b in zip(arrays(cal), arrays(again)):
        np.testing.assert_array_equal(a, b)
    for gain in GAINS:
        np.testing.assert_array_equal(cal.truth.outlier_frames[gain], again.truth.outlier_frames[gain])
    other = synth.synthesize(replace(SMALL, seed=1))
    assert not np.array_equal(cal.dark["high"].analog, other.dark["high"].analog)
    assert not np.array_equal(cal.truth.defects, other.truth.defects)


def test_shapes_dtypes_and_range(cal, cal32):
    ny, nx = SMALL.detector.module_shape
    assert set(cal.dark) == set(GAINS)
    for gain, run in cal.dark.items():
        assert run.gain_stage == gain
        assert run.analog.shape == run.gain.shape == (1, 2, 32, ny, nx)
        assert run.analog.dtype == run.gain.dtype == np.uint16
        assert run.analog.max() <= synth.ADC_MAX and run.gain.max() <= synth.ADC_MAX
    assert cal.flat.gain_stage == "high" and cal.flat.analog.shape == (1, 2, 32, ny, nx)
    assert cal.truth.defects.shape == (1, 3, 2, ny, nx) and cal.truth.defects.dtype == np.uint16
    assert cal.truth.outlier_frames["low"].shape == (1, 2, 32)
    np.testing.assert_array_equal(cal.truth.edges, SMALL.detector.asic_edges())
    assert cal.model["offset"].shape == (1, 3, 2, ny, nx) and cal.model["response"].shape == (1, ny, nx)
    values = cal32.dark["medium"].analog
    finite = values[np.isfinite(values)]
    assert values.dtype == np.float32 and np.array_equal(finite, np.rint(finite))
    assert 0 <= finite.min() and finite.max() <= synth.ADC_MAX


def test_every_kind_planted_with_configured_count_off_edges(cal):
    truth = cal.truth
    n = max(3, round(SMALL.defect_fraction * np.count_nonzero(~truth.edges)))
    for kind in synth.PIXEL_KINDS:
        assert np.count_nonzero(pixels_of(truth, kind)) == n, kind.name
    assert np.count_nonzero(pixels_of(truth, Defect.DEAD)) == np.prod(synth.DEAD_BLOCK)
    assert not truth.kind_mask(Defect.NO_DATA).any()  # uint16: never planted
    assert not ((truth.defects != 0) & truth.edges).any()


def test_kinds_do_not_overlap(cal32):
    flags = np.bitwise_or.reduce(cal32.truth.defects, axis=(1, 2))
    assert not np.any(flags & (flags - 1))  # at most one bit per pixel


def test_pixel_defects_cover_gains_and_cells(cal):
    truth = cal.truth
    for kind in (Defect.STUCK, Defect.GAIN_STUCK, Defect.OVER_RESPONDING, Defect.DEAD):
        mask = truth.kind_mask(kind)
        assert np.array_equal(mask, np.broadcast_to(mask[:, :1, :1], mask.shape)), kind.name
    for kind in synth.CELL_SPECIFIC_KINDS:
        cells_hit = truth.kind_mask(kind)[:, HIGH].sum(axis=1)  # (module, y, x): cells affected
        one_cell = np.count_nonzero(cells_hit == 1)
        assert one_cell == round(synth.CELL_SPECIFIC_FRACTION * np.count_nonzero(cells_hit)), kind.name


def test_hot_and_cold_offsets(cal):
    det = SMALL.detector
    mean = cal.dark["high"].analog.mean(axis=2)  # (module, cell, y, x)
    excess = mean - asic_median(mean, det)
    hot = cal.truth.kind_mask(Defect.HOT)[:, HIGH]
    cold = cal.truth.kind_mask(Defect.COLD)[:, HIGH]
    clean = cal.truth.clean()[:, HIGH]
    assert excess[hot].min() > 300 and excess[cold].max() < -300
    assert np.abs(excess[clean]).max() < 200
    # a cell-specific hot pixel is normal in its other cell
    only_in_one = hot.sum(axis=1) == 1
    assert np.abs(excess.transpose(1, 0, 2, 3)[~hot.transpose(1, 0, 2, 3) & only_in_one]).max() < 200


def test_noisy_stuck_and_telegraph_noise(cal):
    det = SMALL.detector
    for g, gain in enumerate(GAINS):
        keep = ~cal.truth.outlier_frames[gain][..., None, None]
        frames = cal.dark[gain].analog.astype(np.float64)
        n_keep = keep.sum(axis=2)
        mean = (frames * keep).sum(axis=2) / n_keep
        std = np.sqrt((((frames - mean[:, :, None]) * keep) ** 2).sum(axis=2) / (n_keep - 1))
        ratio = std / asic_median(std, det)
        assert ratio[cal.truth.kind_mask(Defect.NOISY)[:, g]].min() > 2, gain  # x3 at least, 32 frames
        assert np.all(std[cal.truth.kind_mask(Defect.STUCK)[:, g]] == 0), gain
        telegraph = ratio[cal.truth.kind_mask(Defect.TELEGRAPH)[:, g]]
        assert np.median(telegraph) > 4, gain
        assert np.mean(telegraph > 1.5) > 0.9, gain  # with 32 frames a few chains never switch
    stuck = cal.truth.kind_mask(Defect.STUCK)[:, HIGH]
    assert np.all(cal.flat.analog.std(axis=2)[stuck] == 0)


def test_gain_stuck_reads_high_level_and_gain_noisy_is_noisy(cal):
    det = SMALL.detector
    high = cal.dark["high"].gain.mean(axis=2)
    low = cal.dark["low"].gain.mean(axis=2)
    stuck = cal.truth.kind_mask(Defect.GAIN_STUCK)[:, LOW]
    clean = cal.truth.clean()[:, LOW]
    assert np.abs(low - high)[stuck].max() < 20
    assert (low - high)[clean].min() > 2000
    std = cal.dark["medium"].gain.std(axis=2)
    noisy = cal.truth.kind_mask(Defect.GAIN_NOISY)[:, MEDIUM]
    assert (std / asic_median(std, det))[noisy].min() > 15


def test_flat_response(cal):
    signal = cal.flat.analog.mean(axis=2) - cal.dark["high"].analog.mean(axis=2)
    ratio = signal / (synth.ADU_PER_PHOTON * cal.model["intensity"][:, None])
    over = cal.truth.kind_mask(Defect.OVER_RESPONDING)[:, HIGH]
    under = cal.truth.kind_mask(Defect.UNDER_RESPONDING)[:, HIGH]
    clean = cal.truth.clean()[:, HIGH]
    assert abs(np.median(ratio[clean]) - 1) < 0.02
    assert ratio[over].min() > 1.2 and ratio[under].max() < 0.8
    expected_spread = np.hypot(synth.RESPONSE_SIGMA, 1 / np.sqrt(synth.PHOTONS_MEAN * SMALL.flat_frames))
    assert np.std(ratio[clean]) == pytest.approx(expected_spread, rel=0.1)
    intensity = cal.model["intensity"]
    assert abs(intensity.mean() - synth.PHOTONS_MEAN) < 0.01
    assert 0.2 < intensity.max() / intensity.min() - 1 < 0.4


def test_dead_block_reads_zero_everywhere(cal):
    dead = cal.truth.kind_mask(Defect.DEAD)[0, 0, 0]
    for run in [*cal.dark.values(), cal.flat]:
        assert np.all(run.analog[..., dead] == 0) and np.all(run.gain[..., dead] == 0)
        assert np.all(run.analog[..., ~dead].mean(axis=-1) > 1000)


def test_outlier_frames_match_shifted_frames(cal):
    recorded = 0
    for gain in GAINS:
        analog = cal.dark[gain].analog.astype(np.float64)
        level = analog.mean(axis=(-2, -1))  # (module, cell, frame)
        shift = level - np.median(level, axis=-1, keepdims=True)
        outliers = cal.truth.outlier_frames[gain]
        np.testing.assert_array_equal(np.abs(shift) > 50, outliers)
        assert np.all(np.abs(shift[~outliers]) < 1)
        recorded += outliers.sum()
    assert recorded > 0


def test_float32_nan_exactly_in_no_data(cal, cal32):
    no_data = cal32.truth.kind_mask(Defect.NO_DATA)
    assert np.count_nonzero(no_data[0, 0, 0]) == np.prod(synth.NO_DATA_BLOCK)
    assert np.array_equal(no_data, np.broadcast_to(no_data[:, :1, :1], no_data.shape))
    block = no_data[0, 0, 0]
    for name in GAINS:
        for array in (cal32.dark[name].analog, cal32.dark[name].gain):
            assert np.isnan(array[..., block]).all() and not np.isnan(array[..., ~block]).any()
    assert np.isnan(cal32.flat.analog[..., block]).all() and not np.isnan(cal32.flat.analog[..., ~block]).any()
    # same seed: the uint16 set is the same data with the NO_DATA block left normal
    np.testing.assert_array_equal(cal32.dark["low"].analog[..., ~block], cal.dark["low"].analog[..., ~block])
    np.testing.assert_array_equal(cal32.truth.defects[..., ~block], cal.truth.defects[..., ~block])


def test_score_perfect_mask(cal32):
    mask = synth.ideal_mask(cal32.truth)
    assert mask.dtype == np.uint8
    scores = synth.score(mask, cal32.truth)
    assert set(scores["recall"]) == {kind.name for kind in Defect}
    assert all(found == planted > 0 for found, planted in scores["recall"].values())
    assert scores["false_positives"] == 0 and scores["false_positive_fraction"] == 0.0
    assert scores["clean"] == np.count_nonzero(cal32.truth.clean())


def test_score_counts_false_positives_and_misses(cal):
    truth = cal.truth
    mask = synth.ideal_mask(truth)
    clean = np.argwhere(truth.clean())[:5]
    mask[tuple(clean.T)] |= np.uint8(BadPixel.GAIN_LEVEL)
    mask[:, :, :, truth.edges] |= np.uint8(BadPixel.OFFSET)  # flags on edges are not false positives
    hot = np.argwhere(truth.kind_mask(Defect.HOT))[:2]
    mask[tuple(hot.T)] = np.uint8(BadPixel.NOISE)  # a bit HOT does not expect: missed
    scores = synth.score(mask, truth)
    assert scores["false_positives"] == 5
    assert scores["false_positive_fraction"] == pytest.approx(5 / scores["clean"])
    found, planted = scores["recall"]["HOT"]
    assert found == planted - 2
    assert "NO_DATA" not in scores["recall"]
    assert synth.score(np.zeros_like(mask), truth)["recall"]["COLD"][0] == 0
    with pytest.raises(ValueError):
        synth.score(mask[:, :1], truth)


def test_format_score_names_every_kind(cal32):
    scores = synth.score(synth.ideal_mask(cal32.truth), cal32.truth)
    text = synth.format_score(scores)
    for kind in Defect:
        assert kind.name in text
    assert "100.00%" in text and "false positives: 0" in text


def test_robust_per_asic_model_finds_offset_defects(cal):
    """Median/MAD per ASIC at 8 sigma on the offset feature: every HOT, COLD, DEAD found, no clean pixel."""
    keep = ~cal.truth.outlier_frames["medium"][..., None, None]
    frames = cal.dark["medium"].analog.astype(np.float64)
    offset = (frames * keep).sum(axis=2) / keep.sum(axis=2)
    det = SMALL.detector
    med = asic_median(offset, det)
    sigma = 1.4826 * asic_median(np.abs(offset - med), det)
    flagged = np.abs(offset - med) > 8 * sigma
    for kind in (Defect.HOT, Defect.COLD, Defect.DEAD):
        assert flagged[cal.truth.kind_mask(kind)[:, MEDIUM]].all(), kind.name
    assert not flagged[cal.truth.clean()[:, MEDIUM]].any()


@pytest.mark.parametrize(
    "change", [{"dtype": "int32"}, {"frames": 0}, {"outlier_frame_fraction": 1.0}, {"defect_fraction": 0.2}]
)
def test_bad_config_is_rejected(change):
    with pytest.raises(ValueError):
        synth.synthesize(replace(SMALL, **change))
