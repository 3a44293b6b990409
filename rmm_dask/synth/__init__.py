"""Test and demo data: synthetic calibration sets with planted defects, their truth, and writers of real layouts.

:func:`synthesize` makes, from one seed, the data the mask maker reads (a dark run
per gain stage and a flat run, raw 14-bit ADU for integrating detectors or counts for
photon-counting ones, dims ``(module, cell, frame, y, x)``) together with the truth:
which defect was planted where, and which dark frames were made to be outliers.
:func:`score` compares a mask with that truth. :func:`write_synthetic` writes a set as
the detector's real runs (EuXFEL RAW, CXI, CBF, NXmx, LAMBDA) plus ``truth.h5``.

The package stands apart from the readers (:mod:`rmm_dask.io` never imports it), as
EXtra-data keeps its mock data apart. Modules, by what they model:

* :mod:`.model`: constants, defect kinds, :class:`SynthConfig`, the result classes,
  random streams and the draws both detector models share;
* :mod:`.integrating`: AGIPD-like integrating detectors (offsets, noise, gain, frames);
* :mod:`.defects`: where defects sit and what they change; :func:`plant_hot`;
* :mod:`.counting`: photon-counting detectors, and sparse counting darks (:func:`counting_dark`);
* :mod:`.scoring`: :func:`ideal_mask`, :func:`score`, :func:`format_score`;
* writers: :mod:`.write_euxfel` (RAW runs), :mod:`.write_hdf5` (CXI, NXmx),
  :mod:`.write_lambda`, :mod:`.write_cbf`, :mod:`.run_dir` (a run directory published
  whole) and :mod:`.on_disk` (a whole set and its truth file).
"""

from __future__ import annotations

from .counting import (
    COUNTING_KINDS,
    EXPECTED_COUNTING,
    FLAT_COUNTS,
    HOT_RATE,
    KNOWN_DEAD,
    NXMX_DEAD,
    NXMX_VIRTUAL,
    SMALL_COUNTING,
    SPLIT,
    CountingDark,
    counting_dark,
    synthesize_counting,
    virtual_pixels,
)
from .defects import plant_hot
from .integrating import synthesize_integrating
from .model import (
    ADC_MAX,
    ADU_PER_PHOTON,
    ASIC_OFFSET_SIGMA,
    BEAM_VARIATION,
    CELL_OFFSET_AMPLITUDE,
    CELL_PERIOD,
    CELL_PIXEL_SIGMA,
    CELL_SPECIFIC_FRACTION,
    CELL_SPECIFIC_KINDS,
    DARK_RATE,
    DEAD_BLOCK,
    DTYPES,
    EXPECTED,
    GAIN_ASIC_SIGMA,
    GAIN_BITS,
    GAIN_FLIP,
    GAIN_LEVEL_BASE,
    GAIN_NOISE,
    GAIN_NOISY_FACTOR,
    GAIN_PIXEL_SIGMA,
    GAINS,
    GRADIENT_MAX,
    LAMBDA_DARK_RATE,
    MIN_PER_KIND,
    NO_DATA_BLOCK,
    NOISE_ASIC_FACTOR,
    NOISE_BASE,
    NOISY_FACTOR,
    OFFSET_BASE,
    OFFSET_STEP,
    OFFSET_STEPS,
    OUTLIER_SHIFT,
    OVER_RESPONSE,
    PHOTONS_MEAN,
    PIXEL_KINDS,
    PIXEL_LOG_SIGMA,
    PIXEL_OFFSET_SIGMA,
    RESPONSE_SIGMA,
    TELEGRAPH_AMPLITUDE,
    TELEGRAPH_SWITCH,
    UNDER_RESPONSE,
    Defect,
    Run,
    SynthConfig,
    SyntheticCalibration,
    Truth,
)
from .scoring import format_score, ideal_mask, score

__all__ = [
    "GAINS",
    "ADC_MAX",
    "OFFSET_BASE",
    "ASIC_OFFSET_SIGMA",
    "GRADIENT_MAX",
    "PIXEL_OFFSET_SIGMA",
    "CELL_OFFSET_AMPLITUDE",
    "CELL_PERIOD",
    "CELL_PIXEL_SIGMA",
    "NOISE_BASE",
    "NOISE_ASIC_FACTOR",
    "PIXEL_LOG_SIGMA",
    "GAIN_LEVEL_BASE",
    "GAIN_ASIC_SIGMA",
    "GAIN_PIXEL_SIGMA",
    "GAIN_NOISE",
    "OUTLIER_SHIFT",
    "PHOTONS_MEAN",
    "BEAM_VARIATION",
    "ADU_PER_PHOTON",
    "RESPONSE_SIGMA",
    "CELL_SPECIFIC_FRACTION",
    "MIN_PER_KIND",
    "OFFSET_STEP",
    "OFFSET_STEPS",
    "NOISY_FACTOR",
    "TELEGRAPH_AMPLITUDE",
    "TELEGRAPH_SWITCH",
    "GAIN_NOISY_FACTOR",
    "GAIN_FLIP",
    "GAIN_BITS",
    "OVER_RESPONSE",
    "UNDER_RESPONSE",
    "DEAD_BLOCK",
    "NO_DATA_BLOCK",
    "DTYPES",
    "DARK_RATE",
    "LAMBDA_DARK_RATE",
    "Defect",
    "EXPECTED",
    "PIXEL_KINDS",
    "CELL_SPECIFIC_KINDS",
    "SynthConfig",
    "Run",
    "Truth",
    "SyntheticCalibration",
    "synthesize",
    "plant_hot",
    "ideal_mask",
    "score",
    "format_score",
    "COUNTING_KINDS",
    "EXPECTED_COUNTING",
    "FLAT_COUNTS",
    "HOT_RATE",
    "KNOWN_DEAD",
    "NXMX_DEAD",
    "NXMX_VIRTUAL",
    "SPLIT",
    "SMALL_COUNTING",
    "CountingDark",
    "counting_dark",
    "virtual_pixels",
    "synthesize_counting",
    "synthesize_integrating",
]


def synthesize(config: SynthConfig = SynthConfig()) -> SyntheticCalibration:
    """Generate a calibration set (a dark run per gain stage and a flat run) with planted defects and their truth.

    Integrating detectors: :func:`.integrating.synthesize_integrating`; photon-counting
    detectors get their own model (:func:`.counting.synthesize_counting`).
    """
    if config.detector.counting:
        return synthesize_counting(config)
    return synthesize_integrating(config)
