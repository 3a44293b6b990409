"""Where defects are planted in a synthetic module, how they change its parameters, and the truth they leave."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import (
    _NEW_HOT,
    ADC_MAX,
    CELL_SPECIFIC_FRACTION,
    CELL_SPECIFIC_KINDS,
    DEAD_BLOCK,
    GAIN_FLIP,
    GAIN_NOISY_FACTOR,
    MIN_PER_KIND,
    NO_DATA_BLOCK,
    NOISY_FACTOR,
    OFFSET_STEP,
    OFFSET_STEPS,
    OVER_RESPONSE,
    TELEGRAPH_AMPLITUDE,
    UNDER_RESPONSE,
    Defect,
    SynthConfig,
    SyntheticCalibration,
    _asic_grid,
    _block,
    _pixel_kinds,
    _stages,
)

__all__ = ["plant_hot"]


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

