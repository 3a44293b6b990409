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

from . import model
from .counting import (
    COUNTING_KINDS,
    EXPECTED_COUNTING,
    FLAT_COUNTS,
    HOT_RATE,
    KNOWN_DEAD,
    LAMBDA_GAAS,
    LAMBDA_GAAS_GAP,
    NXMX_DEAD,
    NXMX_GAP,
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
from .model import *  # noqa: F403  (its constants, Defect, SynthConfig and the result classes: model.__all__)
from .model import SynthConfig, SyntheticCalibration
from .on_disk import write_synthetic
from .scoring import format_score, ideal_mask, score

__all__ = [
    *model.__all__,
    "synthesize", "plant_hot", "ideal_mask", "score", "format_score", "COUNTING_KINDS",
    "EXPECTED_COUNTING", "FLAT_COUNTS", "HOT_RATE", "KNOWN_DEAD", "LAMBDA_GAAS", "LAMBDA_GAAS_GAP", "NXMX_DEAD", "NXMX_GAP",
    "NXMX_VIRTUAL",
    "SPLIT", "SMALL_COUNTING", "CountingDark", "counting_dark", "virtual_pixels",
    "synthesize_counting", "synthesize_integrating", "write_synthetic",
]


def synthesize(config: SynthConfig = SynthConfig()) -> SyntheticCalibration:
    """Generate a calibration set (a dark run per gain stage and a flat run) with planted defects and their truth.

    Integrating detectors: :func:`.integrating.synthesize_integrating`; photon-counting
    detectors get their own model (:func:`.counting.synthesize_counting`).
    """
    if config.detector.counting:
        return synthesize_counting(config)
    return synthesize_integrating(config)
