"""Timing helpers shared by the benchmarks: medians of repeated runs, and references
measured in the same run (these machines are shared and noisy, so absolute times mean
little; ratios to a reference taken minutes apart on the same machine do)."""

from __future__ import annotations

import statistics
import time

import numba
import numpy as np


def timed(f, *args, repeat: int = 5, **kwargs):
    """(median seconds over ``repeat`` calls, last result)."""
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = f(*args, **kwargs)
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


@numba.njit(nogil=True, cache=True)
def _sum_u16(x):
    s = np.uint64(0)
    for i in range(x.size):
        s += x[i]
    return s


def streaming_read_seconds(*arrays, repeat: int = 5) -> float:
    """Median time of the plainest single-core pass over the arrays (a numba sum): the reference."""
    flat = [a.reshape(-1) for a in arrays]
    _sum_u16(flat[0][:16])
    return timed(lambda: [_sum_u16(f) for f in flat], repeat=repeat)[0]


def goal(ratio: float, target: float, higher_is_better: bool = True) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    return f"{'met' if ok else 'NOT met'} (goal {'>=' if higher_is_better else '<='} {target:g})"


def header(title: str) -> None:
    print(f"\n== {title} ==")
