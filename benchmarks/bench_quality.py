"""Mask quality beside speed: recall per planted defect kind and the fraction of clean
pixels flagged, for the robust statistics (RMM), median/MAD (psana style) and mean/std
(non-robust), on the same synthetic set.

    .venv/bin/python benchmarks/bench_quality.py     (or make bench)
"""

from __future__ import annotations

import time

import numpy as np
from common import header

from rmm_dask.mask import Params, module_mask
from rmm_dask.synth import GAINS, SynthConfig, score, synthesize

METHODS = ("rmm", "mad", "nonrobust")


def main():
    table(SynthConfig(modules=2, cells=2, frames=100, flat_frames=100, seed=21))
    # a badly damaged detector: 3% of the pixels per kind, ~27% of all pixels defective
    table(SynthConfig(modules=1, cells=2, frames=100, flat_frames=100, seed=22, defect_fraction=0.03))


def table(cfg: SynthConfig):
    calib = synthesize(cfg)
    header(f"mask quality: {cfg.modules} modules x {cfg.cells} cells x {cfg.frames} frames, {cfg.defect_fraction:.1%} of pixels per defect kind, lambda = 8")
    scores, times = {}, {}
    for method in METHODS:
        t0 = time.perf_counter()
        masks = [
            module_mask([(calib.dark[g].analog[m], calib.dark[g].gain[m]) for g in GAINS], calib.flat.analog[m], cfg.detector, Params(method=method)).mask
            for m in range(cfg.modules)
        ]
        times[method] = time.perf_counter() - t0
        scores[method] = score(np.stack(masks), calib.truth)
    print(f"{'defect kind':<18} {'planted':>8}" + "".join(f" {m:>10}" for m in METHODS))
    for kind, (_, n) in scores["rmm"]["recall"].items():
        print(f"{kind:<18} {n:>8}" + "".join(f" {100 * scores[m]['recall'][kind][0] / n:>9.1f}%" for m in METHODS))
    print(f"{'clean flagged':<18} {scores['rmm']['clean']:>8}" + "".join(f" {scores[m]['false_positive_fraction']:>10.1e}" for m in METHODS))
    print(f"{'time (1 core)':<18} {'':>8}" + "".join(f" {times[m]:>9.1f}s" for m in METHODS))


if __name__ == "__main__":
    main()
