"""Was the detector on? A run with no signal is refused on a few frames, before any worker starts.

A dark run taken with an integrating detector switched off (or not read out) is all zeros,
or one constant value: every pixel is then "stuck" and the mask flags 100% of the
pixel-planes, without a word. An integrating detector's dark noise is always above its ADC
step (the rule that flags a zero-variance pixel as NOISE, :mod:`rmm_dask.mask`, rests on
it), so in a run that was taken with the detector on hardly any pixel holds one value over
:data:`SAMPLE_FRAMES` frames: a stuck ASIC is 1/16 of an AGIPD module, a dead module
1/16 of the detector. :func:`check_signal` reads those frames of the blocks the flat check
samples (the first module's first cells, the last module's middle ones) of every dark
run and the flat run, and refuses a run in which :data:`MAX_CONSTANT` or more of the
sampled pixels of a module are constant (all zero or not), naming the run and the module.

Not checked, on purpose:

* photon-counting detectors (``counting: true``: PILATUS, EIGER, LAMBDA): a normal dark
  counts 0 almost everywhere, so a silent dark is what a working detector records (their
  flats are judged by the flat check's counting rate, :mod:`rmm_dask.flatcheck`);
* missing values (NaN: gaps, pixels a reader marks as having no value) are left out; a
  pixel with fewer than two values in the sample says nothing; a module where no pixel has
  two values is refused as having no data;
* the gain plane (AGIPD's gain value, JUNGFRAU's gain bits): it legitimately takes few
  values, one in a dark of one stage; only the analog signal is judged.

:func:`constant_fraction` is numpy only; :func:`check_signal` is what
:func:`rmm_dask.job.run_mask` calls, before the flat check (whose verdict an all-zero dark
would mislead: an offset and noise of 0 make every flat look like another stage's).
"""

from __future__ import annotations

import numpy as np

from .detectors import Detector, run_detector
from .errors import InputError
from .flatcheck import SAMPLE_FRAMES

__all__ = ["MAX_CONSTANT", "SAMPLE_FRAMES", "constant_fraction", "check_signal"]

#: a run is refused when at least this fraction of a sampled module's pixels is constant over
#: the sample: a run with the detector on has a few percent at most (stuck pixels, an ASIC)
MAX_CONSTANT = 0.99


def constant_fraction(sample: np.ndarray) -> tuple[float, int, bool]:
    """Of a sample ``(..., frame, y, x)``: the fraction of pixels whose value does not change over the
    frames, the number of pixels judged (those with at least two values that are not NaN), and
    whether every value judged is 0. A fraction of 1.0 with no pixel judged means no data."""
    values = np.moveaxis(np.asarray(sample), -3, -1)  # (..., y, x, frame)
    if values.dtype.kind == "f":
        valid = np.isfinite(values)
        judged = valid.sum(axis=-1) >= 2
        with np.errstate(invalid="ignore"):
            high = np.where(valid, values, -np.inf).max(axis=-1)
            low = np.where(valid, values, np.inf).min(axis=-1)
        zero = not np.any(np.where(valid & judged[..., None], values, 0) != 0)
    else:
        judged = np.full(values.shape[:-1], values.shape[-1] >= 2)
        high, low = values.max(axis=-1), values.min(axis=-1)
        zero = not bool(values.any())
    n = int(judged.sum())
    if n == 0:
        return 1.0, 0, False
    return float(np.count_nonzero((high == low) & judged)) / n, n, zero


def _percent(fraction: float) -> str:
    """100% only when every pixel is constant; otherwise at most 99.9%."""
    return "100%" if fraction >= 1.0 else f"{min(100 * fraction, 99.9):.1f}%"


def check_signal(darks: dict, flat=None, *, detector: Detector | str | None = None,
                 frames: int = SAMPLE_FRAMES) -> None:
    """Refuse, on ``frames`` frames of up to two (module, cells) blocks of each run, a dark or flat run
    of an integrating detector that shows no signal (see the module's docstring).

    ``darks`` ({gain stage: dataset}) and ``flat`` (a dataset or None) are the lazy runs of
    :func:`rmm_dask.io.open_run`. Reads the frames here, with no cluster
    (:func:`rmm_dask.io.sample.sample_frames`). Raises :class:`InputError` naming the run:
    ``no signal: 100% of pixels of module 0 are constant over 16 frames (all zero: detector
    off?)``. Returns nothing; does nothing for a counting detector.
    """
    from .io.sample import sample_blocks, sample_frames

    detector = run_detector(darks, flat, detector)
    if detector.counting:
        return
    runs = [(f"{g} dark", ds) for g, ds in darks.items()] + ([("flat", flat)] if flat is not None else [])
    for role, ds in runs:
        for m, b in sample_blocks(ds):
            sample = sample_frames(ds.analog.data, m, b, frames)
            fraction, judged, zero = constant_fraction(sample)
            if fraction < MAX_CONSTANT:
                continue
            module = int(ds.module.values[m])
            n = sample.shape[2]
            if judged == 0:
                problem = f"no signal: no pixel of module {module} has a value in {n} frames (all missing)"
            else:
                state = "all zero: detector off?" if zero else "detector off or not read out?"
                share = _percent(fraction)
                problem = f"no signal: {share} of pixels of module {module} are constant over {n} frames ({state})"
            raise InputError(ds.attrs.get("path", f"<{role} run>"),
                             f"{problem}; a {role} run shows noise in every working pixel; nothing was published")
