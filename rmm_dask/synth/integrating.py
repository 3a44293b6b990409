"""Synthetic calibration sets of integrating (AGIPD-like) detectors: clean model and frames.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .defects import _Layout, _layout, _plant, _truth
from .model import (
    _DARK,
    _DEFECTS,
    _FLAT,
    _PARAMETERS,
    ADC_MAX,
    ASIC_OFFSET_SIGMA,
    CELL_OFFSET_AMPLITUDE,
    CELL_PERIOD,
    CELL_PIXEL_SIGMA,
    GAIN_ASIC_SIGMA,
    GAIN_BITS,
    GAIN_LEVEL_BASE,
    GAIN_NOISE,
    GAIN_PIXEL_SIGMA,
    GAINS,
    GRADIENT_MAX,
    NOISE_ASIC_FACTOR,
    NOISE_BASE,
    OFFSET_BASE,
    OUTLIER_SHIFT,
    PIXEL_LOG_SIGMA,
    PIXEL_OFFSET_SIGMA,
    RESPONSE_SIGMA,
    Defect,
    Run,
    SynthConfig,
    SyntheticCalibration,
    Truth,
    _asic_coordinates,
    _asic_grid,
    _beam,
    _lognormal,
    _normal,
    _per_pixel,
    _rng,
    _stages,
    _telegraph_levels,
)

__all__ = ["synthesize_integrating"]


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



# ---------------------------------------------------------------------------- frames


@dataclass
class _Module:
    """Everything needed to generate the frames of one module."""

    model: dict[str, np.ndarray]
    layout: _Layout
    index: int
    stages: tuple  #: the detector's gain stages
    gain_kind: str  #: how the detector records its gain stage (Detector.gain)


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


def synthesize_integrating(config: SynthConfig) -> SyntheticCalibration:
    """Dark runs per gain stage and a flat run of an integrating detector, with planted defects and their truth."""
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
