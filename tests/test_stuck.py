"""Zero variance over the kept frames is NOISE for integrating detectors, whatever lambda."""

import numpy as np
import pytest

from rmm_dask.codes import BadPixel
from rmm_dask.detectors import get_detector
from rmm_dask.mask import Params, classify_dark, dark_stage, module_mask, zero_variance
from rmm_dask.synth import ADC_MAX, GAINS, Defect, SynthConfig, score, synthesize


@pytest.fixture(scope="module")
def few_frames():
    """48 frames per cell, 30% of them shifted by a common mode (F1 drops them): the noise of
    ~34 kept frames is uncertain by ~12%, so a stuck pixel is only ~8 of its sigmas out."""
    return synthesize(SynthConfig(frames=48, outlier_frame_fraction=0.3, cells=2, seed=1))


def _masks(calib, params=Params()):
    dark = [(calib.dark[g].analog[0], calib.dark[g].gain[0]) for g in GAINS]
    return module_mask(dark, None, calib.config.detector, params)


def test_stuck_pixels_found_with_few_frames_and_many_outlying_frames(few_frames):
    res = _masks(few_frames)
    truth = few_frames.truth
    stuck = truth.kind_mask(Defect.STUCK)[0]
    assert stuck.sum() > 100
    assert np.all(res.mask[stuck] & BadPixel.NOISE)
    assert np.mean(few_frames.truth.outlier_frames["high"]) > 0.2  # the set is as hard as meant
    # no clean pixel flagged (the flat kinds are not analysed here: no flat run)
    clean = truth.clean()[0]
    assert np.count_nonzero(res.mask[clean]) == 0


def test_stuck_found_at_any_lambda(few_frames):
    res = _masks(few_frames, Params(lam=50.0, features=("noise",)))
    stuck = few_frames.truth.kind_mask(Defect.STUCK)[0]
    assert np.all(res.mask[stuck] & BadPixel.NOISE)
    assert score(res.mask[None], few_frames.truth)["false_positives"] == 0


def test_constant_module_is_all_noise():
    det = get_detector("AGIPD1M")
    analog = np.full((1, 20, *det.module_shape), 5000, dtype=np.uint16)
    res = module_mask([(analog, None)], None, det)
    inside = ~det.asic_edges()
    assert np.all(res.mask[0, 0][inside] == BadPixel.NOISE)


@pytest.mark.parametrize("saturated", [ADC_MAX, 65535])
def test_saturated_asic_is_all_noise_and_the_others_untouched(saturated):
    calib = synthesize(SynthConfig(frames=30, cells=1, outlier_frame_fraction=0.0, seed=2))
    det = calib.config.detector
    analog = calib.dark["high"].analog[0].copy()
    analog[..., 64:128, 0:64] = saturated  # one ASIC at the ADC maximum in every frame
    res = module_mask([(analog, calib.dark["high"].gain[0])], None, det)
    asic = np.zeros(det.module_shape, dtype=bool)
    asic[64:128, 0:64] = True
    inside = asic & ~det.asic_edges()
    assert np.all(res.mask[0, 0][inside] & BadPixel.NOISE)
    clean = calib.truth.clean()[0, 0, 0] & ~asic
    assert np.count_nonzero(res.mask[0, 0][clean]) == 0


def test_zero_variance_needs_two_frames_and_exact_zero():
    noise = np.array([0.0, 0.0, 1e-3, np.nan])
    count = np.array([2, 1, 50, 50])
    assert zero_variance(noise, count).tolist() == [True, False, False, False]


def test_noise_switch_off_disables_the_stuck_rule(few_frames):
    stage = dark_stage(few_frames.dark["high"].analog[0], None, few_frames.config.detector)
    res = classify_dark([stage], few_frames.config.detector, Params(features=("offset",)))
    assert not np.any(res.mask & BadPixel.NOISE)
