"""Photon-counting darks: the exact Poisson test against the paper's sigma floor of 1/6.

Synthetic counting darks as a LAMBDA records them (0.004 counts per frame per normal
pixel, 50 frames) with 1% noisy pixels firing at 0.2-2 counts per frame; both rules
(Params(counting_test="poisson") and "floor") see the same data. Prints the recall per
rate bin and the clean pixels flagged, at lambda = 8, then the false alarms on a large
clean set at lambda = 8 and 3 against the tail probability.

    .venv/bin/python benchmarks/bench_counting.py     (or make bench)
"""

from __future__ import annotations

import time

import numpy as np
from common import header
from scipy import stats

from rmm_dask import counting
from rmm_dask.codes import BadPixel
from rmm_dask.mask import Params, module_mask
from rmm_dask.synth import SMALL_COUNTING, counting_dark

BINS = (0.2, 0.3, 0.5, 0.8, 1.2, 1.6, 2.0)
RULES = {"poisson": Params(), "floor (paper)": Params(counting_test="floor")}


def recall_table(frames: int, background: float, cells: int, seed: int):
    dark = counting_dark(cells=cells, frames=frames, background=background, noisy_rates=(BINS[0], BINS[-1]), noisy_fraction=0.01, chip_spread=0.3, seed=seed)
    n_pix = dark.rate.size
    header(
        f"counting dark: {cells} x {SMALL_COUNTING.module_shape[0]} x {SMALL_COUNTING.module_shape[1]} pixels ({n_pix}), "
        f"{frames} frames, background {background} counts/frame (chips +-30%), lambda = 8"
    )
    masks, times = {}, {}
    for name, params in RULES.items():
        t0 = time.perf_counter()
        masks[name] = module_mask([(dark.counts, None)], None, SMALL_COUNTING, params).mask[0]
        times[name] = time.perf_counter() - t0
    print(f"{'counts/frame':<14} {'planted':>8}" + "".join(f" {name:>14}" for name in RULES))
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        here = dark.noisy & (dark.rate >= lo) & (dark.rate < hi)
        row = "".join(f" {100 * np.mean(masks[n][here] & BadPixel.OFFSET != 0):>13.1f}%" for n in RULES)
        print(f"{f'{lo:.1f}-{hi:.1f}':<14} {here.sum():>8}" + row)
    clean = ~dark.noisy
    print(f"{'clean flagged':<14} {clean.sum():>8}" + "".join(f" {np.count_nonzero(masks[n][clean]):>14}" for n in RULES))
    print(f"{'time (1 core)':<14} {'':>8}" + "".join(f" {times[n]:>13.2f}s" for n in RULES))


def false_alarms():
    header("false alarms of the Poisson test on clean Poisson pixels (1M per expected total)")
    rng = np.random.default_rng(4)
    windows = ([(0, 256)], [(0, 256)])
    print(f"{'expected total':<15} {'lambda':>6} {'tail p/side':>11} {'flagged':>9} {'per pixel':>10} {'exact, both sides, discrete cuts':>33}")
    for m in (0.2, 3.0, 20.0, 200.0):
        t = rng.poisson(m, (16, 256, 256)).astype(float)
        z, _, _ = counting.counting_snr(t, np.ones(t.shape), windows)
        for lam in (8.0, 3.0):
            p = counting.tail_probability(lam)
            exact = stats.poisson.sf(stats.poisson.isf(p, m), m) + stats.poisson.cdf(stats.poisson.ppf(p, m) - 1, m)
            flagged = np.count_nonzero(np.abs(z) > lam)
            print(f"{m:<15g} {lam:>6g} {p:>11.2e} {flagged:>9} {flagged / t.size:>10.2e} {exact:>33.2e}")


def main():
    recall_table(frames=50, background=0.004, cells=8, seed=1)
    recall_table(frames=500, background=0.004, cells=2, seed=2)
    false_alarms()


if __name__ == "__main__":
    main()
