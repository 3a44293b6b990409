"""Bit codes of the mask: one uint8 per (module, gain, cell, y, x), 0 = good.

The values are fixed by DESIGN.md and shared with every store and export.
"""

import enum

import numpy as np

MASK_DTYPE = np.uint8


class BadPixel(enum.IntFlag):
    """Why a pixel is masked. Several bits may be set at once."""

    OFFSET = 1  #: F2: dark offset outlier
    NOISE = 2  #: F3: dark noise outlier (too noisy, or too quiet e.g. stuck)
    GAIN_SEPARATION = 4  #: F4: gain stages not separable
    GAIN_LEVEL = 8  #: F5: mean gain indicator outlier
    FLAT_HIGH = 16  #: F6: too often too bright under flat light
    FLAT_LOW = 32  #: F6: too often too dark under flat light
    ASIC_EDGE = 64  #: geometry: masked without analysis
    NO_DATA = 128  #: no valid data (NaN, no frames left after F1, unreadable)


def describe(code: int) -> str:
    """'OFFSET|NOISE' for 3, 'GOOD' for 0."""
    code = int(code)
    if code == 0:
        return "GOOD"
    return "|".join(bit.name for bit in BadPixel if code & bit)
