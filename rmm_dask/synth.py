"""Synthetic AGIPD-like calibration sets with planted defects and their truth.

:func:`synthesize` makes, from one seed, the data the mask maker reads (a dark run
per gain stage and a flat run, raw 14-bit ADU, dims ``(module, cell, frame, y, x)``)
together with the truth: which defect was planted where, and which dark frames were
made to be outliers. :func:`score` compares a mask with that truth.

Physical model (paper sections 3.2-3.3), per module of 8 x 2 ASICs of 64 x 64 pixels:

* dark offset = gain base + per-ASIC offset + a plane inside each ASIC + per-pixel
  dispersion + a smooth per-ASIC function of the memory cell + per-pixel-per-cell
  dispersion; frames add Gaussian temporal noise (gain base x per-ASIC factor x
  per-pixel lognormal);
* gain indicator = stage level + per-ASIC and per-pixel dispersion, with temporal noise;
* a few dark frames are outliers: the whole module frame shifted by a common mode;
* flat (high gain) = dark + Poisson photons x ADU per photon x per-pixel response,
  under a smooth beam profile.

Within one ASIC the clean pixels are near-Gaussian in every feature of the paper,
and with the default 100 dark and 100 flat frames every planted defect lies more than
~11 robust sigma from them in a feature of :data:`EXPECTED` (the flat features
measured on dark-subtracted frames, with dark-bad pixels kept out of the local
background). A correct robust mask maker with lambda = 8, fitting one Gaussian per
ASIC and feature, then finds >= 99% of every kind and flags no clean pixel; a plain
mean/std model misses many (its sigma is inflated by the defects themselves). Fewer
frames thin the margins of STUCK, TELEGRAPH (a chain may not switch at all) and the
flat kinds.

Randomness: every stream is a ``SeedSequence(seed, spawn_key=(module, purpose, ...))``,
the same keys ``np.random.default_rng(seed).spawn`` hands out, addressed directly so
that the numbers of a module, run and cell do not depend on what is generated before
them. Same config, bit-identical arrays.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from .codes import BadPixel
from .detectors import AGIPD1M, Detector

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


# ---------------------------------------------------------------------------- clean model


def _offsets(config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Dark offsets (gain, cell, y, x) of a clean module."""
    det = config.detector
    grid = _asic_grid(det)
    n_gain = len(_stages(config))
    base = np.array([OFFSET_BASE[g] for g in _stages(config)], dtype=np.float32)[:, None, None]
    asic = _per_pixel(rng.normal(0.0, ASIC_OFFSET_SIGMA, (n_gain, *grid)), det)
    u, v = _asic_coordinates(det)
    slope_y, slope_x = (_per_pixel(rng.uniform(-0.5, 0.5, (n_gain, *grid)) * GRADIENT_MAX, det) for _ in range(2))
    pixel = _normal(rng, (n_gain, *det.module_shape), PIXEL_OFFSET_SIGMA)
    static = base + asic + slope_y * u + slope_x * v + pixel
    period = rng.uniform(*CELL_PERIOD, (n_gain, 1, *grid))
    phase = rng.uniform(0.0, 2 * np.pi, (n_gain, 1, *grid))
    cells = np.arange(config.cells)[None, :, None, None]
    per_cell = _per_pixel(CELL_OFFSET_AMPLITUDE * np.sin(2 * np.pi * cells / period + phase), det)
    per_cell += _normal(rng, (n_gain, config.cells, *det.module_shape), CELL_PIXEL_SIGMA)
    return static[:, None] + per_cell


def _noise(config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Temporal analog noise (gain, cell, y, x) of a clean module."""
    det = config.detector
    stages = _stages(config)
    base = np.array([NOISE_BASE[g] for g in stages], dtype=np.float32)[:, None, None]
    asic = _per_pixel(rng.uniform(*NOISE_ASIC_FACTOR, (len(stages), *_asic_grid(det))), det)
    noise = base * asic * _lognormal(rng, (len(stages), *det.module_shape), PIXEL_LOG_SIGMA)
    return np.repeat(noise[:, None], config.cells, axis=1)


def _gain_levels(config: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gain indicator mean and temporal noise (gain, y, x) of a clean module."""
    det = config.detector
    stages = _stages(config)
    shape = (len(stages), *det.module_shape)
    base = np.array([GAIN_LEVEL_BASE[g] for g in stages], dtype=np.float32)[:, None, None]
    asic = _per_pixel(rng.normal(0.0, GAIN_ASIC_SIGMA, (len(stages), *_asic_grid(det))), det)
    level = base + asic + _normal(rng, shape, GAIN_PIXEL_SIGMA)
    return level, GAIN_NOISE * _lognormal(rng, shape, PIXEL_LOG_SIGMA)


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


def _clean_model(config: SynthConfig, module: int) -> dict[str, np.ndarray]:
    """Per-pixel parameters of one module without defects (see SyntheticCalibration.model)."""
    rng = _rng(config, module, _PARAMETERS)
    det = config.detector
    offset = _offsets(config, rng)
    noise = _noise(config, rng)
    gain_level, gain_noise = _gain_levels(config, rng)
    response = 1 + _normal(rng, det.module_shape, RESPONSE_SIGMA)
    return {
        "offset": offset,
        "noise": noise,
        "gain_level": gain_level,
        "gain_noise": gain_noise,
        "gain_flip": np.zeros_like(gain_level),
        "telegraph_amplitude": np.zeros_like(gain_level),
        "response": response,
        "intensity": _beam(det, rng),
    }


# ---------------------------------------------------------------------------- defects


@dataclass
class _Layout:
    """Where the defects of one module sit."""

    pixels: dict[Defect, np.ndarray]  #: flat (y * nx + x) indices per pixel kind
    only_cell: dict[Defect, np.ndarray]  #: per pixel: the one cell it affects, -1 for all cells
    dead: np.ndarray  #: bool (y, x)
    no_data: np.ndarray  #: bool (y, x); all False for uint16 data

    def cells_affected(self, kind: Defect, cells: int) -> np.ndarray:
        """Bool (cell, pixel) for the pixels of ``kind``."""
        only = self.only_cell[kind]
        return (only < 0) | (only == np.arange(cells)[:, None])


def _pixels_per_kind(config: SynthConfig) -> int:
    n_inner = int(np.count_nonzero(~config.detector.asic_edges()))
    return max(MIN_PER_KIND, int(round(config.defect_fraction * n_inner)))


def _layout(config: SynthConfig, rng: np.random.Generator) -> _Layout:
    """Draw the defect positions of one module: two blocks, then non-overlapping pixel sets.

    The NO_DATA block is drawn for both dtypes, so that the other defects sit at the
    same pixels; with uint16 data it is left as normal pixels.
    """
    det = config.detector
    n_asics = int(np.prod(_asic_grid(det)))
    if n_asics < 2:
        raise ValueError(f"{det.name}: need at least two ASICs per module for the DEAD and NO_DATA blocks")
    dead_asic, no_data_asic = rng.choice(n_asics, size=2, replace=False)
    dead = _block(det, dead_asic, DEAD_BLOCK, rng)
    no_data = _block(det, no_data_asic, NO_DATA_BLOCK, rng)
    free = np.flatnonzero(~(det.asic_edges() | dead | no_data))
    n = _pixels_per_kind(config)
    kinds = _pixel_kinds(config)
    if n * len(kinds) > free.size:
        raise ValueError(f"defect_fraction {config.defect_fraction} is too large for {free.size} free pixels")
    chosen = rng.permutation(free)[: n * len(kinds)].reshape(len(kinds), n)
    pixels = dict(zip(kinds, chosen))
    only_cell = {kind: np.full(n, -1) for kind in kinds}
    n_specific = int(round(CELL_SPECIFIC_FRACTION * n))
    for kind in CELL_SPECIFIC_KINDS:
        only_cell[kind][:n_specific] = rng.integers(0, config.cells, n_specific)
    if config.dtype != "float32":
        no_data = np.zeros_like(no_data)
    return _Layout(pixels, only_cell, dead, no_data)


def _truth(layout: _Layout, config: SynthConfig) -> np.ndarray:
    """Defect flags (gain, cell, y, x) of one module."""
    n_gain = len(_stages(config))
    defects = np.zeros((n_gain, config.cells, *config.detector.module_shape), dtype=np.uint16)
    flat = defects.reshape(n_gain, config.cells, -1)
    for kind, index in layout.pixels.items():
        flat[:, :, index] |= np.where(layout.cells_affected(kind, config.cells), np.uint16(kind), np.uint16(0))
    defects[..., layout.dead] |= np.uint16(Defect.DEAD)
    defects[..., layout.no_data] |= np.uint16(Defect.NO_DATA)
    return defects


def _plant(model: dict[str, np.ndarray], layout: _Layout, config: SynthConfig, rng: np.random.Generator) -> None:
    """Change the parameters of the defective pixels, in place (STUCK, DEAD, NO_DATA act on the frames)."""
    n_gain, cells = len(_stages(config)), config.cells
    offset = model["offset"].reshape(n_gain, cells, -1)
    noise = model["noise"].reshape(n_gain, cells, -1)
    response = model["response"].reshape(-1)
    p = layout.pixels
    n = p[Defect.HOT].size

    for kind, sign in ((Defect.HOT, 1.0), (Defect.COLD, -1.0)):
        shift = sign * OFFSET_STEP * rng.uniform(*OFFSET_STEPS, n)
        offset[:, :, p[kind]] += layout.cells_affected(kind, cells) * shift.astype(np.float32)
    factor = rng.uniform(*NOISY_FACTOR, n).astype(np.float32)
    noise[:, :, p[Defect.NOISY]] *= np.where(layout.cells_affected(Defect.NOISY, cells), factor, np.float32(1))
    tele = p[Defect.TELEGRAPH]
    amplitude = rng.uniform(*TELEGRAPH_AMPLITUDE, (n_gain, n)) * noise[:, 0, tele]
    model["telegraph_amplitude"].reshape(n_gain, -1)[:, tele] = amplitude
    if Defect.GAIN_STUCK in p:
        gain_level = model["gain_level"].reshape(n_gain, -1)
        gain_noise = model["gain_noise"].reshape(n_gain, -1)
        gain_level[:, p[Defect.GAIN_STUCK]] = gain_level[0, p[Defect.GAIN_STUCK]]  # stays in high gain
        gain_noise[:, p[Defect.GAIN_NOISY]] *= rng.uniform(*GAIN_NOISY_FACTOR, (n_gain, n)).astype(np.float32)
        model["gain_flip"].reshape(n_gain, -1)[:, p[Defect.GAIN_NOISY]] = rng.uniform(*GAIN_FLIP, (n_gain, n))
    response[p[Defect.OVER_RESPONDING]] *= rng.uniform(*OVER_RESPONSE, n).astype(np.float32)
    response[p[Defect.UNDER_RESPONDING]] *= rng.uniform(*UNDER_RESPONSE, n).astype(np.float32)


# ---------------------------------------------------------------------------- frames


@dataclass
class _Module:
    """Everything needed to generate the frames of one module."""

    model: dict[str, np.ndarray]
    layout: _Layout
    index: int
    stages: tuple  #: the detector's gain stages
    gain_kind: str  #: how the detector records its gain stage (Detector.gain)


def _telegraph_levels(rng: np.random.Generator, frames: int, n: int) -> np.ndarray:
    """(frame, pixel) 0/1 states of two-state Markov chains switching with TELEGRAPH_SWITCH per frame."""
    start = rng.random(n) < 0.5
    switches = rng.random((frames, n)) < TELEGRAPH_SWITCH
    switches[0] = start
    return (np.cumsum(switches, axis=0) % 2).astype(np.float32)


def _signal_frames(mod: _Module, gain: str, cell: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Float32 analog dark frames (frame, y, x): offset, noise and telegraph flicker."""
    g = mod.stages.index(gain)
    analog = _normal(rng, (frames, *mod.model["offset"].shape[-2:]))
    analog *= mod.model["noise"][g, cell]
    analog += mod.model["offset"][g, cell]
    tele = mod.layout.pixels[Defect.TELEGRAPH]
    amplitude = mod.model["telegraph_amplitude"][g].reshape(-1)[tele]
    analog.reshape(frames, -1)[:, tele] += _telegraph_levels(rng, frames, tele.size) * amplitude
    return analog


def _gain_frames(mod: _Module, gain: str, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Float32 gain indicator frames (frame, y, x); for gain bits, the bits of each frame's stage."""
    g = mod.stages.index(gain)
    if mod.gain_kind == "bits":
        stuck = np.zeros(mod.model["gain_flip"].shape[-2:], dtype=bool)
        stuck.reshape(-1)[mod.layout.pixels[Defect.GAIN_STUCK]] = True
        wrong = rng.random((frames, *stuck.shape)) < mod.model["gain_flip"][g]
        other = GAIN_BITS[mod.stages[(g + 1) % len(mod.stages)]]
        bits = np.where(stuck, GAIN_BITS["high"], GAIN_BITS[gain])
        return np.where(wrong, other, bits).astype(np.float32)
    out = _normal(rng, (frames, *mod.model["gain_level"].shape[-2:]))
    out *= mod.model["gain_noise"][g]
    out += mod.model["gain_level"][g]
    return out


def _digitise(frames: np.ndarray, mod: _Module, stuck_value: np.ndarray | None, dtype: str) -> np.ndarray:
    """Apply STUCK, DEAD and NO_DATA to float frames (frame, y, x), round, clip to 14 bits, cast."""
    if stuck_value is not None:
        frames.reshape(frames.shape[0], -1)[:, mod.layout.pixels[Defect.STUCK]] = stuck_value
    frames[:, mod.layout.dead] = 0
    np.rint(frames, out=frames)
    np.clip(frames, 0, ADC_MAX, out=frames)
    if dtype == "float32":
        frames[:, mod.layout.no_data] = np.nan
        return frames
    return frames.astype(dtype)


def _stuck_value(mod: _Module, gain: str, cell: int) -> np.ndarray:
    """The constant reading of the STUCK pixels: their offset, rounded."""
    offset = mod.model["offset"][mod.stages.index(gain), cell].reshape(-1)
    return np.rint(offset[mod.layout.pixels[Defect.STUCK]])


def _dark_cell(mod: _Module, gain: str, cell: int, config: SynthConfig):
    """(analog, gain, outlier flags) of one dark cell: (frame, y, x) arrays and bool (frame,)."""
    rng = _rng(config, mod.index, _DARK, config.acquisition, GAINS.index(gain), cell)
    frames = config.frames
    analog = _signal_frames(mod, gain, cell, frames, rng)
    outliers = rng.random(frames) < config.outlier_frame_fraction
    shift = rng.choice([-1.0, 1.0], frames) * rng.uniform(*OUTLIER_SHIFT, frames)
    analog += (outliers * shift).astype(np.float32)[:, None, None]
    analog = _digitise(analog, mod, _stuck_value(mod, gain, cell), config.dtype)
    if mod.gain_kind == "none":
        return analog, None, outliers
    return analog, _digitise(_gain_frames(mod, gain, frames, rng), mod, None, config.dtype), outliers


def _flat_cell(mod: _Module, cell: int, config: SynthConfig):
    """(analog, gain) of one flat cell in high gain: dark frames plus photons x ADU x response."""
    rng = _rng(config, mod.index, _FLAT, config.acquisition, cell)
    frames = config.flat_frames
    analog = _signal_frames(mod, "high", cell, frames, rng)
    photons = rng.poisson(mod.model["intensity"] * np.float32(config.flat_level), (frames, *mod.model["intensity"].shape)).astype(np.float32)
    photons *= np.float32(config.adu_per_photon) * mod.model["response"]
    analog += photons
    analog = _digitise(analog, mod, _stuck_value(mod, "high", cell), config.dtype)
    if mod.gain_kind == "none":
        return analog, None
    return analog, _digitise(_gain_frames(mod, "high", frames, rng), mod, None, config.dtype)


def _empty_run(config: SynthConfig, frames: int, stage: str) -> Run:
    shape = (config.modules, config.cells, frames, *config.detector.module_shape)
    gain = None if config.detector.gain == "none" else np.empty(shape, config.dtype)
    return Run(np.empty(shape, config.dtype), gain, stage)


# ---------------------------------------------------------------------------- public


def synthesize(config: SynthConfig = SynthConfig()) -> SyntheticCalibration:
    """Generate a calibration set (a dark run per gain stage and a flat run) with planted defects and their truth.

    Photon-counting detectors get their own model (:func:`_synthesize_counting`).
    """
    if config.detector.counting:
        return _synthesize_counting(config)
    stages = _stages(config)
    dark = {gain: _empty_run(config, config.frames, gain) for gain in stages}
    flat = _empty_run(config, config.flat_frames, "high")
    outliers = {gain: np.zeros((config.modules, config.cells, config.frames), dtype=bool) for gain in stages}
    models, defects = [], []
    for m in range(config.modules):
        model = _clean_model(config, m)
        rng = _rng(config, m, _DEFECTS)
        layout = _layout(config, rng)
        _plant(model, layout, config, rng)
        mod = _Module(model, layout, m, stages, config.detector.gain)
        for c in range(config.cells):
            for gain in stages:
                analog, gain_frames, outliers[gain][m, c] = _dark_cell(mod, gain, c, config)
                dark[gain].analog[m, c] = analog
                if gain_frames is not None:
                    dark[gain].gain[m, c] = gain_frames
            analog, gain_frames = _flat_cell(mod, c, config)
            flat.analog[m, c] = analog
            if gain_frames is not None:
                flat.gain[m, c] = gain_frames
        models.append(model)
        defects.append(_truth(layout, config))
    truth = Truth(np.stack(defects), outliers, config.detector.asic_edges())
    model = {name: np.stack([mdl[name] for mdl in models]) for name in models[0]}
    return SyntheticCalibration(config, dark, flat, truth, model)


def plant_hot(calib: SyntheticCalibration, n: int, *, seed: int = 0) -> np.ndarray:
    """Turn ``n`` clean pixels of every module hot in all cells and runs, in place (a pixel that
    went bad since the last acquisition); the truth is updated. Returns the (module, y, x) rows.

    The offset shift is drawn as for the planted HOT pixels; clean means no defect in any
    gain or cell and not on an ASIC edge.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_NEW_HOT,)))
    truth, det = calib.truth, calib.config.detector
    rows = []
    for m in range(calib.config.modules):
        clean = ~(truth.edges | (truth.defects[m] != 0).any(axis=(0, 1)))
        pixels = rng.choice(np.flatnonzero(clean), size=n, replace=False)
        ys, xs = np.unravel_index(np.sort(pixels), det.module_shape)
        shift = (OFFSET_STEP * rng.uniform(*OFFSET_STEPS, n)).astype(np.float32)
        for run in (*calib.dark.values(), calib.flat):
            values = run.analog[m][..., ys, xs]  # (cell, frame, n)
            run.analog[m][..., ys, xs] = np.clip(np.rint(values + shift), 0, ADC_MAX).astype(run.analog.dtype)
        truth.defects[m][..., ys, xs] |= np.uint16(Defect.HOT)
        rows += [(m, int(y), int(x)) for y, x in zip(ys, xs)]
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


# ---------------------------------------------------------------------------- photon counting

#: counting detectors: what is planted and the bits that find it
COUNTING_KINDS = (Defect.HOT, Defect.TELEGRAPH, Defect.OVER_RESPONDING, Defect.UNDER_RESPONDING)
EXPECTED_COUNTING: dict[Defect, BadPixel] = {
    Defect.HOT: BadPixel.OFFSET | BadPixel.NOISE,
    Defect.TELEGRAPH: BadPixel.OFFSET | BadPixel.NOISE,
    Defect.OVER_RESPONDING: BadPixel.FLAT_HIGH,
    Defect.UNDER_RESPONDING: BadPixel.FLAT_LOW,
    Defect.DEAD: BadPixel.FLAT_LOW,
}
HOT_RATE = (2.0, 20.0)  #: counts per frame of a hot pixel
FLAT_COUNTS = 50.0  #: mean counts per frame under the flat beam
KNOWN_DEAD = 4  #: dead pixels per module that the manufacturer's pixel mask flags (bit 1)
NXMX_DEAD = 2  #: NeXus/Dectris pixel_mask bit value of a dead pixel
NXMX_VIRTUAL = 1 << 31  #: NXmx pixel_mask bit of a virtual pixel (information, not a defect)
SPLIT = 3  #: logical pixels each large pixel at a LAMBDA chip boundary is split into


def virtual_pixels(det: Detector) -> np.ndarray:
    """Bool (y, x): the virtual pixels of a module whose chip boundaries are given as lists (LAMBDA).

    At each inner boundary the two large pixels (3 x 55 um) are each split into SPLIT logical
    pixels: the SPLIT rows (columns) on either side of the boundary. None for chips at a
    uniform pitch (the description gives no boundaries).
    """
    virtual = np.zeros(det.module_shape, dtype=bool)
    for axis, bounds in enumerate((det.chip_rows, det.chip_columns)):
        for b in (bounds or ())[1:-1]:
            index = [slice(None), slice(None)]
            index[axis] = slice(b - SPLIT, b + SPLIT)
            virtual[tuple(index)] = True
    return virtual


def _synthesize_counting(config: SynthConfig) -> SyntheticCalibration:
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
    virtual = virtual_pixels(det)
    for m in range(config.modules):
        rng = _rng(config, m, _DEFECTS)
        dead = np.zeros(det.module_shape, dtype=bool)
        y0, x0 = (int(rng.integers(0, s - b)) for s, b in zip(det.module_shape, (8, 8)))
        dead[y0 : y0 + 8, x0 : x0 + 8] = True
        free = rng.permutation(np.flatnonzero(~(dead | virtual)))
        kinds = dict(zip(COUNTING_KINDS, free[: n * len(COUNTING_KINDS)].reshape(-1, n)))
        known = free[n * len(COUNTING_KINDS) : n * len(COUNTING_KINDS) + KNOWN_DEAD]
        dead.reshape(-1)[known] = True
        pixel_mask[m].reshape(-1)[known] = NXMX_DEAD
        pixel_mask[m][virtual] |= np.uint32(NXMX_VIRTUAL)
        plane = defects[m, 0, 0].reshape(-1)
        for kind, index in kinds.items():
            plane[index] |= np.uint16(kind)
        defects[m, 0, 0][dead] |= np.uint16(Defect.DEAD)

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
            run.analog[m, 0] = counts
    truth = Truth(defects, {"high": np.zeros((config.modules, 1, config.frames), dtype=bool)}, det.asic_edges(), EXPECTED_COUNTING)
    return SyntheticCalibration(config, {"high": dark}, flat, truth, {"pixel_mask": pixel_mask})


def ideal_mask(truth: Truth) -> np.ndarray:
    """The mask a perfect mask maker would make: EXPECTED bits where planted, ASIC_EDGE on edges."""
    mask = np.zeros(truth.defects.shape, dtype=np.uint8)
    for kind, bits in (truth.expected or EXPECTED).items():
        mask[truth.kind_mask(kind)] |= np.uint8(bits)
    mask[..., truth.edges] |= np.uint8(BadPixel.ASIC_EDGE)
    return mask


def score(mask: np.ndarray, truth: Truth) -> dict:
    """Compare a mask (uint8, (module, gain, cell, y, x)) with the truth.

    Returns ``{"recall": {kind name: (found, planted)}`` for every kind planted at least
    once, ``"false_positive_fraction"``, ``"false_positives"``, ``"clean"}``. A planted
    pixel is found where the mask has any of its EXPECTED bits; a clean pixel is a false
    positive where the mask has any bit other than ASIC_EDGE.
    """
    mask = np.asarray(mask)
    if mask.shape != truth.defects.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the truth's {truth.defects.shape}")
    recall = {}
    for kind in Defect:
        planted = truth.kind_mask(kind)
        n_planted = int(np.count_nonzero(planted))
        if n_planted:
            found = planted & ((mask & int((truth.expected or EXPECTED)[kind])) != 0)
            recall[kind.name] = (int(np.count_nonzero(found)), n_planted)
    clean = truth.clean()
    flagged = (mask & (0xFF ^ int(BadPixel.ASIC_EDGE))) != 0
    n_clean = int(np.count_nonzero(clean))
    false_positives = int(np.count_nonzero(flagged & clean))
    return {
        "recall": recall,
        "false_positive_fraction": false_positives / n_clean if n_clean else 0.0,
        "false_positives": false_positives,
        "clean": n_clean,
    }


def format_score(scores: dict) -> str:
    """Plain-text table of :func:`score`: kind, planted, found, recall; then the false positives."""
    lines = [f"{'kind':<18}{'planted':>10}{'found':>10}{'recall':>10}"]
    for name, (found, planted) in scores["recall"].items():
        lines.append(f"{name:<18}{planted:>10}{found:>10}{100.0 * found / planted:>9.2f}%")
    lines.append(
        f"false positives: {scores['false_positives']} of {scores['clean']} clean pixels"
        f" (fraction {scores['false_positive_fraction']:.2e})"
    )
    return "\n".join(lines)
