"""Synthetic photon-counting detectors (PILATUS, EIGER, LAMBDA): dark and flat counts with planted defects.

:func:`synthesize_counting` is what :func:`rmm_dask.synth.synthesize` makes for a counting
detector. :func:`counting_dark` writes sparse darks with weakly firing pixels planted at
chosen rates: a real counting detector in the dark (X-Spectrum LAMBDA: ~0.004 counts
per frame) leaves a window of tied zeros that the paper's Gaussian model can only handle
with its sigma floor of 1/6, so that the Poisson test of :mod:`rmm_dask.counting` and the
paper's floor can be scored on the same data (tests/test_counting.py,
benchmarks/bench_counting.py); the full model plants far hotter pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..chips import NEXUS_GAP, NEXUS_VIRTUAL
from ..codes import BadPixel
from ..detectors import Detector
from .defects import _pixels_per_kind
from .model import (
    _DARK,
    _DEFECTS,
    _FLAT,
    _PARAMETERS,
    OVER_RESPONSE,
    PHOTONS_MEAN,
    RESPONSE_SIGMA,
    UNDER_RESPONSE,
    Defect,
    Run,
    SynthConfig,
    SyntheticCalibration,
    Truth,
    _beam,
    _normal,
    _rng,
    _telegraph_levels,
)

#: counting detectors: what is planted and the bits that find it
COUNTING_KINDS = (Defect.HOT, Defect.TELEGRAPH, Defect.OVER_RESPONDING, Defect.UNDER_RESPONDING)
EXPECTED_COUNTING: dict[Defect, BadPixel] = {
    Defect.HOT: BadPixel.OFFSET | BadPixel.NOISE,
    Defect.TELEGRAPH: BadPixel.OFFSET | BadPixel.NOISE,
    Defect.OVER_RESPONDING: BadPixel.FLAT_HIGH,
    Defect.UNDER_RESPONDING: BadPixel.FLAT_LOW,
    Defect.DEAD: BadPixel.FLAT_LOW,
    Defect.NO_DATA: BadPixel.NO_DATA,  #: the gap pixels of SynthConfig.gap_columns
}
HOT_RATE = (2.0, 20.0)  #: counts per frame of a hot pixel
FLAT_COUNTS = 50.0  #: mean counts per frame under the flat beam
KNOWN_DEAD = 4  #: dead pixels per module that the manufacturer's pixel mask flags (bit 1)
NXMX_DEAD = 2  #: NeXus/Dectris pixel_mask bit value of a dead pixel
NXMX_GAP = int(NEXUS_GAP)  #: NXmx pixel_mask bit of a gap pixel (no sensor: missing data)
NXMX_VIRTUAL = int(NEXUS_VIRTUAL)  #: NXmx pixel_mask bit of a virtual pixel (information, not a defect)
SPLIT = 3  #: logical pixels each large pixel at a LAMBDA chip boundary is split into


#: a high-Z LAMBDA 2M (GaAs, CdTe) as the synthetic model makes it: modules of 516 x 1554, two sensor tiles
#: of 3 chips each, 2 columns without sensor between them (LAMBDA_GAAS_GAP) and large (virtual) pixels at
#: the chip boundaries inside each tile. The real layout is in each file's pixel mask (not published).
LAMBDA_GAAS_GAP = (776, 777)
LAMBDA_GAAS = Detector(
    name="LAMBDA2M", n_modules=3, module_shape=(516, 1554), asic_shape=(258, 260), counting=True,
    dataset="/entry/instrument/detector/data", pixel_mask="/entry/instrument/detector/pixel_mask",
    chip_rows=(0, 258, 516), chip_columns=(0, 258, 518, 778, 1036, 1296, 1554), chips_from_mask=True,
)


def virtual_pixels(det: Detector, gap_columns=()) -> np.ndarray:
    """Bool (y, x): the virtual pixels of a module whose chip boundaries are given as lists (LAMBDA).

    At each inner boundary the two large pixels (3 x 55 um) are each split into SPLIT logical
    pixels: the SPLIT rows (columns) on either side of the boundary; not at a boundary that a
    gap (``gap_columns``, SynthConfig's) ends at: the tiles meet there. None for chips at a
    uniform pitch (the description gives no boundaries).
    """
    virtual = np.zeros(det.module_shape, dtype=bool)
    for axis, bounds in enumerate((det.chip_rows, det.chip_columns)):
        for b in (bounds or ())[1:-1]:
            if axis == 1 and b - 1 in gap_columns:
                continue
            index = [slice(None), slice(None)]
            index[axis] = slice(b - SPLIT, b + SPLIT)
            virtual[tuple(index)] = True
    return virtual


def synthesize_counting(config: SynthConfig) -> SyntheticCalibration:
    """Dark and flat counts (int32) of a photon-counting detector, one gain stage, one cell.

    Normal pixels count ``config.dark_rate`` in the dark and FLAT_COUNTS x beam x response under the
    flat; HOT pixels count HOT_RATE in the dark too, TELEGRAPH pixels switch between both,
    a DEAD block and KNOWN_DEAD single pixels count nothing (the single ones are flagged
    in ``model["pixel_mask"]``, as the manufacturer's mask would), and OVER/UNDER-responding
    pixels respond 1.5-3 and 0-0.5 times. The truth's ``expected`` says which bits find each.
    A LAMBDA's virtual pixels (:func:`virtual_pixels`: a large pixel's counts split over
    SPLIT logical pixels, which then count as normal ones) carry NXMX_VIRTUAL in the
    pixel mask; no defect is planted on them, so a mask maker that flags them is wrong.
    """
    det = config.detector
    if config.cells != 1:
        raise ValueError(f"{det.name} has one memory cell, not {config.cells}")
    shape = (config.modules, 1, config.frames, *det.module_shape)
    dark = Run(np.empty(shape, np.int32), None, "high")
    flat = Run(np.empty((config.modules, 1, config.flat_frames, *det.module_shape), np.int32), None, "high")
    defects = np.zeros((config.modules, 1, 1, *det.module_shape), dtype=np.uint16)
    pixel_mask = np.zeros((config.modules, *det.module_shape), dtype=np.uint32)
    n = _pixels_per_kind(config)
    virtual = virtual_pixels(det, config.gap_columns)
    gap = np.zeros(det.module_shape, dtype=bool)
    gap[:, list(config.gap_columns)] = True
    for m in range(config.modules):
        rng = _rng(config, m, _DEFECTS)
        dead = np.zeros(det.module_shape, dtype=bool)
        while not dead.any() or (dead & gap).any():  # the dead block away from the gap (missing there, not dead)
            dead[:] = False
            y0, x0 = (int(rng.integers(0, s - b)) for s, b in zip(det.module_shape, (8, 8)))
            dead[y0 : y0 + 8, x0 : x0 + 8] = True
        free = rng.permutation(np.flatnonzero(~(dead | virtual | gap)))
        kinds = dict(zip(COUNTING_KINDS, free[: n * len(COUNTING_KINDS)].reshape(-1, n)))
        known = free[n * len(COUNTING_KINDS) : n * len(COUNTING_KINDS) + KNOWN_DEAD]
        dead.reshape(-1)[known] = True
        pixel_mask[m].reshape(-1)[known] = NXMX_DEAD
        pixel_mask[m][virtual] |= np.uint32(NXMX_VIRTUAL)
        pixel_mask[m][gap] |= np.uint32(NXMX_GAP)
        plane = defects[m, 0, 0].reshape(-1)
        for kind, index in kinds.items():
            plane[index] |= np.uint16(kind)
        defects[m, 0, 0][dead] |= np.uint16(Defect.DEAD)
        defects[m, 0, 0][gap] |= np.uint16(Defect.NO_DATA)

        params = _rng(config, m, _PARAMETERS)
        rate = np.full(det.module_shape, config.dark_rate)
        rate.reshape(-1)[kinds[Defect.HOT]] = params.uniform(*HOT_RATE, n)
        tele_rate = params.uniform(*HOT_RATE, n)
        response = (1 + _normal(params, det.module_shape, RESPONSE_SIGMA)).astype(np.float64)
        response.reshape(-1)[kinds[Defect.OVER_RESPONDING]] *= params.uniform(*OVER_RESPONSE, n)
        response.reshape(-1)[kinds[Defect.UNDER_RESPONDING]] *= params.uniform(*UNDER_RESPONSE, n)
        beam = _beam(det, params) / PHOTONS_MEAN * FLAT_COUNTS * config.flat_level

        for run, purpose, lit in ((dark, _DARK, False), (flat, _FLAT, True)):
            frames = run.analog.shape[2]
            r = _rng(config, m, purpose, config.acquisition)
            level = np.broadcast_to(rate, (frames, *det.module_shape)).copy()
            on = _telegraph_levels(r, frames, n).astype(bool)
            level.reshape(frames, -1)[:, kinds[Defect.TELEGRAPH]] = np.where(on, tele_rate, config.dark_rate)
            if lit:
                level += beam * response
            counts = r.poisson(level).astype(np.int32)
            counts[:, dead] = 0
            counts[:, gap] = -1  # no sensor: the detector writes -1
            run.analog[m, 0] = counts
    truth = Truth(defects, {"high": np.zeros((config.modules, 1, config.frames), dtype=bool)}, det.asic_edges(), EXPECTED_COUNTING)
    return SyntheticCalibration(config, {"high": dark}, flat, truth, {"pixel_mask": pixel_mask})



# ---------------------------------------------------------------------------- sparse darks

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
