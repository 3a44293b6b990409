"""Robust fit speed and accuracy beside the reference library, measured in the same run.

    make bench      # or: .venv/bin/python benchmarks/bench_robust.py

Prints the median of repeated runs: time per 65536-value vector and per
(352 x 65536) batch for rmm_dask.robust.robust_gaussian, and for
RobustGaussianFittingLibrary.fitValue on the same data (started at the median,
as its authors advise), with both results' errors against the truth.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from rmm_dask.robust import robust_gaussian

N = 65536
MU, SIGMA = 100.0, 5.0


def sample(fraction, seed, shape=()):
    rng = np.random.default_rng(seed)
    x = rng.normal(MU, SIGMA, shape + (N,))
    out = rng.random(x.shape) < fraction
    x[out] = rng.uniform(MU - 100 * SIGMA, MU + 100 * SIGMA, int(out.sum()))
    return x.astype(np.float32)


def timed(f, *args, repeat=5, **kw):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = f(*args, **kw)
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main():
    try:
        import RobustGaussianFittingLibrary as rgf
    except ImportError:
        rgf = None
        print("RobustGaussianFittingLibrary not installed: reference columns skipped (pip install '.[bench]')")
    robust_gaussian(sample(0.1, 0))  # compile
    print(f"robust fit of {N} values, median of 5 runs; errors in units of the true sigma")
    print(f"{'outliers':>9} {'rmm ms':>8} {'mu err':>8} {'sig err':>8} {'ref ms':>8} {'mu err':>8} {'sig err':>8} {'speed-up':>9}")
    for fraction in (0.0, 0.1, 0.3, 0.45):
        x = sample(fraction, 1)
        t, (mu, sigma) = timed(robust_gaussian, x)
        row = f"{fraction:>9.0%} {1e3 * t:>8.2f} {(mu - MU) / SIGMA:>8.4f} {sigma / SIGMA - 1:>8.4f}"
        if rgf is not None:
            tr, (rmu, rsigma) = timed(rgf.fitValue, x, modelValueInit=float(np.median(x)), repeat=3)
            row += f" {1e3 * tr:>8.1f} {(rmu - MU) / SIGMA:>8.4f} {rsigma / SIGMA - 1:>8.4f} {tr / t:>8.0f}x"
        print(row)
    batch = sample(0.3, 2, (352,))
    t, _ = timed(robust_gaussian, batch, repeat=3)
    print(f"batch of 352 x {N}: {t:.3f} s ({1e3 * t / 352:.2f} ms per vector)")


if __name__ == "__main__":
    main()
