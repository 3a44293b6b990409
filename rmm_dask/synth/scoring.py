"""Scoring a mask against the truth of a synthetic set: recall per planted kind, clean pixels flagged."""

from __future__ import annotations

import numpy as np

from ..codes import BadPixel
from .model import EXPECTED, Defect, Truth

__all__ = ["ideal_mask", "score", "format_score"]


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
