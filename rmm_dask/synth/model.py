"""The synthetic model's vocabulary: its constants, defect kinds, configuration, results and shared draws.

Randomness: every stream is a ``SeedSequence(seed, spawn_key=(module, purpose, ...))``,
the same keys ``np.random.default_rng(seed).spawn`` hands out, addressed directly so
that the numbers of a module, run and cell do not depend on what is generated before
them. Same config, bit-identical arrays.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from ..codes import BadPixel
from ..detectors import AGIPD1M, Detector

GAINS = ("high", "medium", "low")
ADC_MAX = 16383  #: 14-bit ADC: raw values are clipped to [0, ADC_MAX]

# Dark analog offset (ADU)
OFFSET_BASE = {"high": 5000.0, "medium": 5600.0, "low": 6000.0}
ASIC_OFFSET_SIGMA = 300.0
GRADIENT_MAX = 20.0  #: largest |plane| inside an ASIC
PIXEL_OFFSET_SIGMA = 25.0
CELL_OFFSET_AMPLITUDE = 30.0
CELL_PERIOD = (32.0, 256.0)  #: period, in memory cells, of the per-ASIC cell variation
CELL_PIXEL_SIGMA = 5.0
# Temporal noise of the analog signal (ADU)
NOISE_BASE = {"high": 12.0, "medium": 6.0, "low": 4.0}
NOISE_ASIC_FACTOR = (0.85, 1.15)
PIXEL_LOG_SIGMA = 0.05  #: per-pixel lognormal spread of every temporal noise
# Digital gain indicator (ADU)
GAIN_LEVEL_BASE = {"high": 4800.0, "medium": 6700.0, "low": 8300.0}
GAIN_ASIC_SIGMA = 150.0
GAIN_PIXEL_SIGMA = 30.0
GAIN_NOISE = 8.0
# Outlying dark frames: common-mode shift of the whole module frame (ADU)
OUTLIER_SHIFT = (100.0, 400.0)
# Flat field
PHOTONS_MEAN = 8.0
BEAM_VARIATION = 0.15  #: the beam profile spans PHOTONS_MEAN x (1 +- BEAM_VARIATION)
ADU_PER_PHOTON = 65.0
RESPONSE_SIGMA = 0.02
# Planted defects
CELL_SPECIFIC_FRACTION = 0.3  #: of HOT and NOISY pixels, affecting one memory cell only
MIN_PER_KIND = 3
OFFSET_STEP = 25.0  #: HOT/COLD shift = U(*OFFSET_STEPS) x OFFSET_STEP
OFFSET_STEPS = (15.0, 60.0)
NOISY_FACTOR = (3.0, 8.0)
TELEGRAPH_AMPLITUDE = (8.0, 20.0)  #: in units of the pixel's temporal noise
TELEGRAPH_SWITCH = 0.1  #: probability per frame of changing level
GAIN_NOISY_FACTOR = (30.0, 100.0)
GAIN_FLIP = (0.05, 0.3)  #: gain bits (JUNGFRAU): fraction of frames a GAIN_NOISY pixel is in a wrong stage
#: gain bits of each stage, as JUNGFRAU records them
GAIN_BITS = {"high": 0, "medium": 1, "low": 3}
OVER_RESPONSE = (1.5, 3.0)
UNDER_RESPONSE = (0.0, 0.5)
DEAD_BLOCK = (16, 32)
NO_DATA_BLOCK = (32, 32)

DTYPES = ("uint16", "float32")
DARK_RATE = 0.01  #: counts per frame of a normal pixel of a counting detector in the dark (default)
LAMBDA_DARK_RATE = 0.004  #: the same for a LAMBDA: what real LAMBDA darks show

__all__ = [
    "ADC_MAX", "ADU_PER_PHOTON", "ASIC_OFFSET_SIGMA", "BEAM_VARIATION", "CELL_OFFSET_AMPLITUDE",
    "CELL_PERIOD", "CELL_PIXEL_SIGMA", "CELL_SPECIFIC_FRACTION", "CELL_SPECIFIC_KINDS", "DARK_RATE",
    "DEAD_BLOCK", "DTYPES", "EXPECTED", "GAIN_ASIC_SIGMA", "GAIN_BITS", "GAIN_FLIP",
    "GAIN_LEVEL_BASE", "GAIN_NOISE", "GAIN_NOISY_FACTOR", "GAIN_PIXEL_SIGMA", "GAINS",
    "GRADIENT_MAX", "LAMBDA_DARK_RATE", "MIN_PER_KIND", "NO_DATA_BLOCK", "NOISE_ASIC_FACTOR",
    "NOISE_BASE", "NOISY_FACTOR", "OFFSET_BASE", "OFFSET_STEP", "OFFSET_STEPS", "OUTLIER_SHIFT",
    "OVER_RESPONSE", "PHOTONS_MEAN", "PIXEL_KINDS", "PIXEL_LOG_SIGMA", "PIXEL_OFFSET_SIGMA",
    "RESPONSE_SIGMA", "TELEGRAPH_AMPLITUDE", "TELEGRAPH_SWITCH", "UNDER_RESPONSE", "Defect", "Run",
    "SynthConfig", "SyntheticCalibration", "Truth",
]


class Defect(enum.IntFlag):
    """Kinds of planted defects; the truth holds one flag per (module, gain, cell, y, x)."""

    HOT = 1  #: dark offset far too high
    COLD = 2  #: dark offset far too low
    NOISY = 4  #: temporal noise 3-8 times too large
    STUCK = 8  #: constant reading, no temporal noise
    TELEGRAPH = 16  #: flickers between two levels (random telegraph signal)
    GAIN_STUCK = 32  #: gain indicator stays at the high-gain level in every stage
    GAIN_NOISY = 64  #: gain indicator so noisy that the stages overlap
    OVER_RESPONDING = 128  #: flat response 1.5-3 times too high
    UNDER_RESPONDING = 256  #: flat response below half
    DEAD = 512  #: reads 0 in analog and gain (one block per module)
    NO_DATA = 1024  #: NaN in analog and gain (float32 data only, one block per module)


#: Mask bits a correct mask maker sets for each kind; any of them counts as found.
EXPECTED: dict[Defect, BadPixel] = {
    Defect.HOT: BadPixel.OFFSET,
    Defect.COLD: BadPixel.OFFSET,
    Defect.NOISY: BadPixel.NOISE,
    Defect.STUCK: BadPixel.NOISE,
    Defect.TELEGRAPH: BadPixel.NOISE | BadPixel.OFFSET,
    Defect.GAIN_STUCK: BadPixel.GAIN_SEPARATION | BadPixel.GAIN_LEVEL,
    Defect.GAIN_NOISY: BadPixel.GAIN_SEPARATION | BadPixel.GAIN_LEVEL,
    Defect.OVER_RESPONDING: BadPixel.FLAT_HIGH,
    Defect.UNDER_RESPONDING: BadPixel.FLAT_LOW,
    Defect.DEAD: BadPixel.OFFSET | BadPixel.NOISE,
    Defect.NO_DATA: BadPixel.NO_DATA,
}

#: Kinds planted on single pixels scattered over the module, in drawing order.
PIXEL_KINDS = (
    Defect.HOT,
    Defect.COLD,
    Defect.NOISY,
    Defect.STUCK,
    Defect.TELEGRAPH,
    Defect.GAIN_STUCK,
    Defect.GAIN_NOISY,
    Defect.OVER_RESPONDING,
    Defect.UNDER_RESPONDING,
)
#: Pixel kinds of which CELL_SPECIFIC_FRACTION affect one memory cell only.
CELL_SPECIFIC_KINDS = (Defect.HOT, Defect.NOISY)

# Purposes of the random streams (second element of every spawn key).
_PARAMETERS, _DEFECTS, _DARK, _FLAT, _NEW_HOT = range(5)


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesise. The defaults generate in a few seconds."""

    modules: int = 1
    cells: int = 2
    frames: int = 100  #: dark frames per cell per gain run
    flat_frames: int = 100  #: flat frames per cell
    #: scales the flat run's light: 1.0 is a flat field; ~0.02 of a counting detector's is
    #: the background of an empty frame (no crystal), as the DIALS validation writes
    flat_level: float = 1.0
    #: ADU of one photon in the flat (integrating detectors): with a high ``flat_level`` and a few
    #: tenths of an ADU, a bright and stable flat whose photon noise is close to the dark noise
    adu_per_photon: float = ADU_PER_PHOTON
    seed: int = 0
    #: which acquisition of the detector: another number gives new frames (noise, outlying
    #: frames, photons) of the same pixels and defects, as the next night's dark runs
    acquisition: int = 0
    defect_fraction: float = 2e-3  #: fraction of a module's non-edge pixels per pixel defect kind
    outlier_frame_fraction: float = 0.02  #: probability of a dark frame being an outlier
    dtype: str = "uint16"  #: "uint16" (raw) or "float32" (NO_DATA planted as NaN); counting detectors: int32
    detector: Detector = AGIPD1M
    dark_rate: float = DARK_RATE  #: counting detectors: counts per frame of a normal pixel in the dark
    #: counting detectors: columns of each module without sensor (a LAMBDA GaAs/CdTe module's gap
    #: between its two tiles, :data:`rmm_dask.synth.counting.LAMBDA_GAAS_GAP`): -1 counts (missing),
    #: pixel mask bit 0, and no large (virtual) pixels at the chip boundary the gap ends at
    gap_columns: tuple[int, ...] = ()

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {self.dtype!r}")
        stages = tuple(self.detector.gain_stages)
        if stages != GAINS[: len(stages)]:
            raise ValueError(f"detector {self.detector.name}: gain stages {stages} must be the first of {GAINS}")
        if not self.detector.counting and any(n % p for n, p in zip(self.detector.module_shape, self.detector.asic_shape)):
            raise ValueError(f"{self.detector.name}: the synthetic model needs ASICs that tile the module")
        for name in ("modules", "cells", "frames", "flat_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if any(not 0 <= c < self.detector.module_shape[1] for c in self.gap_columns):
            raise ValueError(f"gap columns {list(self.gap_columns)} are not columns of a {self.detector.name} module")
        if self.seed < 0 or self.acquisition < 0:
            raise ValueError("seed and acquisition must be non-negative")
        if not 0.0 <= self.outlier_frame_fraction < 1.0:
            raise ValueError("outlier_frame_fraction must be in [0, 1)")
        if self.defect_fraction < 0 or self.flat_level < 0 or self.adu_per_photon < 0 or self.dark_rate < 0:
            raise ValueError("defect_fraction, flat_level, adu_per_photon and dark_rate must be non-negative")


@dataclass
class Run:
    """One run: arrays of shape (module, cell, frame, y, x) in the configured dtype."""

    analog: np.ndarray
    gain: np.ndarray | None  #: digital gain indicator (gain bits for JUNGFRAU-like detectors; None without)
    gain_stage: str  #: "high", "medium" or "low"; the flat run is in "high"


@dataclass
class Truth:
    """Where the defects and outlying frames were planted."""

    defects: np.ndarray  #: uint16 Defect flags (module, gain, cell, y, x), gain in stage order; 0 = clean
    outlier_frames: dict[str, np.ndarray]  #: per dark gain: bool (module, cell, frame)
    edges: np.ndarray  #: bool (y, x): ASIC edge pixels
    #: the mask bits that find each kind, when they differ from EXPECTED (counting detectors)
    expected: dict | None = None

    def kind_mask(self, kind: Defect) -> np.ndarray:
        """Bool (module, gain, cell, y, x): where ``kind`` is planted."""
        return (self.defects & np.uint16(kind)) != 0

    def clean(self) -> np.ndarray:
        """Bool (module, gain, cell, y, x): nothing planted and not an ASIC edge."""
        return (self.defects == 0) & ~self.edges


@dataclass
class SyntheticCalibration:
    """A synthetic calibration set: dark runs for every gain, a flat run, the truth."""

    config: SynthConfig
    dark: dict[str, Run]  #: keys: the detector's gain stages
    flat: Run
    truth: Truth
    #: the per-pixel parameters behind the data with the defects applied (STUCK, DEAD and
    #: NO_DATA act on the frames only), float32, leading axis module:
    #: offset and noise (module, gain, cell, y, x); gain_level, gain_noise, gain_flip and
    #: telegraph_amplitude (module, gain, y, x); response and intensity (module, y, x).
    model: dict[str, np.ndarray] = field(default_factory=dict)


def _stages(config: SynthConfig) -> tuple[str, ...]:
    return tuple(config.detector.gain_stages)


def _pixel_kinds(config: SynthConfig) -> tuple:
    """The pixel kinds this detector can show: gain faults need a recorded gain and several stages."""
    det = config.detector
    if det.gain == "none" or len(det.gain_stages) < 2:
        return tuple(k for k in PIXEL_KINDS if k not in (Defect.GAIN_STUCK, Defect.GAIN_NOISY))
    return PIXEL_KINDS


# ---------------------------------------------------------------------------- randomness


def _rng(config: SynthConfig, module: int, purpose: int, *index: int) -> np.random.Generator:
    """The random stream of one module for one purpose (and run/cell index)."""
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(module, purpose, *index)))


def _normal(rng: np.random.Generator, shape, sigma: float = 1.0) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    x *= np.float32(sigma)
    return x


def _lognormal(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    return np.exp(_normal(rng, shape, sigma))


# ---------------------------------------------------------------------------- geometry


def _asic_grid(det: Detector) -> tuple[int, int]:
    """Number of ASICs along y and x of one module."""
    return det.module_shape[0] // det.asic_shape[0], det.module_shape[1] // det.asic_shape[1]


def _per_pixel(values: np.ndarray, det: Detector) -> np.ndarray:
    """Expand per-ASIC values (..., asics_y, asics_x) to pixels (..., y, x)."""
    ay, ax = det.asic_shape
    return np.repeat(np.repeat(values, ay, axis=-2), ax, axis=-1).astype(np.float32)


def _asic_coordinates(det: Detector) -> tuple[np.ndarray, np.ndarray]:
    """Position of every pixel inside its ASIC, scaled to [-1, 1]: (y column, x row)."""
    ay, ax = det.asic_shape
    u = (np.arange(det.module_shape[0]) % ay) / (ay - 1) * 2 - 1
    v = (np.arange(det.module_shape[1]) % ax) / (ax - 1) * 2 - 1
    return u[:, None].astype(np.float32), v[None, :].astype(np.float32)


def _block(det: Detector, asic: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Bool (y, x): a block of ``size`` inside ASIC number ``asic``, one clean pixel away from its edge."""
    ay, ax = det.asic_shape
    gap = det.edge_width + 1
    if size[0] > ay - 2 * gap or size[1] > ax - 2 * gap:
        raise ValueError(f"a {size} block does not fit inside a {det.asic_shape} ASIC of {det.name}")
    row, col = divmod(asic, _asic_grid(det)[1])
    y0 = row * ay + int(rng.integers(gap, ay - gap - size[0] + 1))
    x0 = col * ax + int(rng.integers(gap, ax - gap - size[1] + 1))
    block = np.zeros(det.module_shape, dtype=bool)
    block[y0 : y0 + size[0], x0 : x0 + size[1]] = True
    return block


# ---------------------------------------------------------------------------- shared by both models


def _beam(det: Detector, rng: np.random.Generator) -> np.ndarray:
    """Mean photons per pixel and frame (y, x): a broad Gaussian beam, PHOTONS_MEAN x (1 +- BEAM_VARIATION)."""
    ny, nx = det.module_shape
    y = np.arange(ny)[:, None]
    x = np.arange(nx)[None, :]
    cy, cx = rng.uniform(0.25, 0.75) * ny, rng.uniform(0.25, 0.75) * nx
    width = rng.uniform(0.5, 1.0) * ny
    bump = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2))
    profile = 1 + BEAM_VARIATION * (2 * (bump - bump.min()) / (bump.max() - bump.min()) - 1)
    return (PHOTONS_MEAN * profile / profile.mean()).astype(np.float32)



def _telegraph_levels(rng: np.random.Generator, frames: int, n: int) -> np.ndarray:
    """(frame, pixel) 0/1 states of two-state Markov chains switching with TELEGRAPH_SWITCH per frame."""
    start = rng.random(n) < 0.5
    switches = rng.random((frames, n)) < TELEGRAPH_SWITCH
    switches[0] = start
    return (np.cumsum(switches, axis=0) % 2).astype(np.float32)

