"""Robust fit: speed and accuracy beside the reference library, measured in the same run.

    .venv/bin/python benchmarks/bench_robust.py     (or make bench)

rmm_dask.robust.robust_gaussian against RobustGaussianFittingLibrary.fitValue on the
same data, each result's errors against the truth beside its time. The reference is
called as its authors advise (modelValueInit at the median: its default start at 0 makes
its sort quadratic); its plain default call is timed once too.
"""

from __future__ import annotations

import numpy as np
from common import goal, header, timed

from rmm_dask.robust import robust_gaussian

N = 65536
MU, SIGMA = 100.0, 5.0


def sample(fraction, seed, shape=()):
    rng = np.random.default_rng(seed)
    x = rng.normal(MU, SIGMA, shape + (N,))
    out = rng.random(x.shape) < fraction
    x[out] = rng.uniform(MU - 100 * SIGMA, MU + 100 * SIGMA, int(out.sum()))
    return x.astype(np.float32)


def main():
    try:
        import RobustGaussianFittingLibrary as rgf
    except ImportError:
        rgf = None
        print("RobustGaussianFittingLibrary not installed (pip install '.[bench]'): reference columns skipped")
    header(f"robust fit of {N} values (errors in units of the true sigma; outliers uniform over +-100 sigma)")
    robust_gaussian(sample(0.1, 0))  # compile
    print(f"{'outliers':>9} {'rmm ms':>8} {'mu err':>8} {'sig err':>8} {'ref ms':>8} {'mu err':>8} {'sig err':>8} {'ratio':>7}")
    ratios = []
    for fraction in (0.0, 0.1, 0.3, 0.45):
        x = sample(fraction, 1)
        t, (mu, sigma) = timed(robust_gaussian, x, repeat=9)
        row = f"{fraction:>9.0%} {1e3 * t:>8.2f} {(mu - MU) / SIGMA:>+8.4f} {sigma / SIGMA - 1:>+8.4f}"
        if rgf is not None:
            tr, (rmu, rsigma) = timed(rgf.fitValue, x, modelValueInit=float(np.median(x)), repeat=3)
            ratios.append(tr / t)
            row += f" {1e3 * tr:>8.1f} {(rmu - MU) / SIGMA:>+8.4f} {rsigma / SIGMA - 1:>+8.4f} {tr / t:>6.0f}x"
        print(row)
    if ratios:
        print(f"speed-up, worst case: {min(ratios):.0f}x  {goal(min(ratios), 200)}")
        x = sample(0.3, 3)
        t0, _ = timed(rgf.fitValue, x, repeat=1)
        print(f"reference with its default start at 0: {t0:.2f} s for the same {N} values")
    batch = sample(0.3, 2, (352,))
    t, _ = timed(robust_gaussian, batch, repeat=3)
    print(f"batch of 352 x {N} (one feature of one AGIPD module, every cell): {t:.3f} s, {1e3 * t / 352:.2f} ms per vector")


if __name__ == "__main__":
    main()
