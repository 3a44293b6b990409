"""Sparse photon-counting darks with weakly firing pixels, and their truth.

A real counting detector in the dark (X-Spectrum LAMBDA: ~0.004 counts per frame)
leaves a window of tied zeros that the paper's Gaussian model can only handle with
its sigma floor of 1/6. :func:`counting_dark` writes such a run with noisy pixels
planted at chosen rates (counts per frame), so that the Poisson test of
:mod:`rmm_dask.counting` and the paper's floor can be scored on the same data
(tests/test_counting.py, benchmarks/bench_counting.py). Kept apart from
:mod:`rmm_dask.synth`, whose counting model plants far hotter pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detectors import Detector

#: a LAMBDA-like counting module: 2 x 6 Medipix3 chips of 256 x 256 would be large for
#: tests; 4 x 4 chips of 64 x 64 keep the statistics per chip and cost little
SMALL_COUNTING = Detector(name="COUNTING-TEST", n_modules=1, module_shape=(256, 256), asic_shape=(64, 64), counting=True, edge_width=0)


@dataclass
class CountingDark:
    counts: np.ndarray  #: int32 (cell, frame, y, x)
    rate: np.ndarray  #: float (cell, y, x): the planted rate of each pixel, counts per frame
    noisy: np.ndarray  #: bool (cell, y, x): where a noisy pixel is planted


def counting_dark(
    detector: Detector = SMALL_COUNTING,
    *,
    cells: int = 1,
    frames: int = 50,
    background: float = 0.004,
    noisy_rates=(0.2, 2.0),
    noisy_fraction: float = 0.01,
    chip_spread: float = 0.0,
    seed: int = 0,
) -> CountingDark:
    """Dark counts of one module: every pixel Poisson at ``background`` counts per frame
    (times a per-chip factor ``1 + U(-chip_spread, chip_spread)``), and a ``noisy_fraction`` of
    pixels at rates drawn uniformly from ``noisy_rates``. ``cells`` are independent repeats
    (more pixels for the statistics)."""
    rng = np.random.default_rng(seed)
    ny, nx = detector.module_shape
    ay, ax = detector.asic_shape
    chips = 1 + rng.uniform(-chip_spread, chip_spread, (cells, -(-ny // ay), -(-nx // ax)))
    rate = np.repeat(np.repeat(chips, ay, axis=-2), ax, axis=-1)[:, :ny, :nx] * background
    noisy = rng.random((cells, ny, nx)) < noisy_fraction
    rate = np.where(noisy, rng.uniform(*noisy_rates, (cells, ny, nx)), rate)
    counts = rng.poisson(rate[:, None], (cells, frames, ny, nx)).astype(np.int32)
    return CountingDark(counts, rate, noisy)
