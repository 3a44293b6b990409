"""The whole recipe on the synthetic detector, scored against the planted truth."""

import numpy as np
import pytest

from rmm_dask.codes import BadPixel
from rmm_dask.mask import Params, module_mask
from rmm_dask.synth import GAINS, Defect, SynthConfig, score, synthesize


def run(calib, params=Params()):
    results = []
    for m in range(calib.config.modules):
        dark = [(calib.dark[g].analog[m], calib.dark[g].gain[m]) for g in GAINS]
        results.append(module_mask(dark, calib.flat.analog[m], calib.config.detector, params))
    return results


@pytest.fixture(scope="module")
def calib():
    return synthesize(SynthConfig())  # the defaults: 1 module, 2 cells, 100 frames, seed 0


@pytest.fixture(scope="module")
def robust(calib):
    return run(calib)


@pytest.fixture(scope="module")
def nonrobust(calib):
    return run(calib, Params(method="nonrobust"))


def mask_of(results):
    return np.stack([r.mask for r in results])


def test_every_planted_kind_found_and_clean_pixels_left_alone(calib, robust):
    scores = score(mask_of(robust), calib.truth)
    for kind, (found, planted) in scores["recall"].items():
        assert planted > 0
        assert found / planted >= 0.99, f"{kind}: {found}/{planted}"
    assert set(scores["recall"]) >= {k.name for k in Defect if k != Defect.NO_DATA}
    assert scores["false_positive_fraction"] <= 1e-4, scores


def test_nonrobust_baseline_is_measurably_worse(calib, robust, nonrobust):
    good, bad = score(mask_of(robust), calib.truth), score(mask_of(nonrobust), calib.truth)
    missed = {k: f for k, (f, n) in bad["recall"].items() if f / n < 0.9}
    # mean/std models are dragged by the defects they should find: several kinds lose >10% recall
    assert len(missed) >= 3, bad["recall"]
    total = lambda s: sum(f for f, _ in s["recall"].values())  # noqa: E731
    assert total(bad) < 0.9 * total(good)


def test_outlying_frames_rejected(calib, robust):
    for g, gain in enumerate(GAINS):
        planted = calib.truth.outlier_frames[gain][0]
        rejected = robust[0].rejected_frames[g]
        assert np.array_equal(rejected, planted), gain


def test_bits_and_features_are_consistent(calib, robust):
    res = robust[0]
    edges = calib.truth.edges
    assert res.mask.shape == (3, 2, 512, 128) and res.mask.dtype == np.uint8
    assert np.all(res.mask[..., edges] == BadPixel.ASIC_EDGE)
    for name in ("offset", "noise", "gain_mean", "gain_std"):
        assert res.features[name].shape == res.mask.shape and res.features[name].dtype == np.float32
    assert res.features["flat_snr"].shape == res.snr["flat_snr"].shape == res.mask.shape[1:]
    offset_bad = (res.mask & BadPixel.OFFSET) > 0
    assert np.all(np.abs(res.snr["offset"][offset_bad]) > 8)
    inner = ~edges[None, None] & ~offset_bad & (res.mask & BadPixel.NO_DATA == 0)
    assert np.all(np.abs(res.snr["offset"][inner]) <= 8)


def test_cell_specific_defects_stay_in_their_cell(calib, robust):
    hot = calib.truth.kind_mask(Defect.HOT)[0, 0]  # (cell, y, x), high gain
    only_one = hot[0] ^ hot[1]
    assert only_one.any()
    flagged = (robust[0].mask[0] & BadPixel.OFFSET) > 0
    np.testing.assert_array_equal(flagged[0][only_one], hot[0][only_one])


def test_missing_values_become_no_data():
    calib = synthesize(SynthConfig(frames=40, flat_frames=40, dtype="float32", seed=3))
    mask = mask_of(run(calib))
    scores = score(mask, calib.truth)
    found, planted = scores["recall"]["NO_DATA"]
    assert planted > 0 and found == planted
    nodata = calib.truth.kind_mask(Defect.NO_DATA)
    assert np.all(mask[nodata] == BadPixel.NO_DATA)


def test_too_few_frames_after_f1_is_no_data(calib):
    dark = [(calib.dark[g].analog[0][:, :8], calib.dark[g].gain[0][:, :8]) for g in GAINS]
    res = module_mask(dark, None, calib.config.detector, Params(min_frames=10))
    edges = calib.truth.edges
    assert np.all(res.mask[..., ~edges] == BadPixel.NO_DATA)


def test_features_can_be_switched_off(calib):
    dark = [(calib.dark[g].analog[0][:1], calib.dark[g].gain[0][:1]) for g in GAINS]
    res = module_mask(dark, None, calib.config.detector, Params(features=("noise",)))
    assert not np.any(res.mask & (BadPixel.OFFSET | BadPixel.GAIN_LEVEL | BadPixel.GAIN_SEPARATION))
    assert np.any(res.mask & BadPixel.NOISE)
    with pytest.raises(ValueError, match="unknown features"):
        Params(features=("offset", "colour"))
