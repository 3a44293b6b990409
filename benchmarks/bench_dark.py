"""Dark features F2-F5: one pass over raw analog + gain, against a plain streaming read.

    .venv/bin/python benchmarks/bench_dark.py     (or make bench)
"""

from __future__ import annotations

import numpy as np
from common import goal, header, streaming_read_seconds, timed

from rmm_dask import features as F


def main(cells: int = 2, frames: int = 256):
    header(f"dark features F2-F5 (per-pixel moments of analog and gain), {cells} cells x {frames} frames x 512 x 128 uint16")
    rng = np.random.default_rng(0)
    analog = (5000 + rng.normal(0, 12, (cells, frames, 512, 128))).astype(np.uint16)
    gain = (4800 + rng.normal(0, 8, (cells, frames, 512, 128))).astype(np.uint16)
    nbytes = analog.nbytes + gain.nbytes
    F.pixel_moments(analog[:1, :2])  # compile
    read = streaming_read_seconds(analog, gain)
    kernel, _ = timed(lambda: (F.pixel_moments(analog), F.pixel_moments(gain)))
    levels, _ = timed(F.frame_levels, analog)
    print(f"streaming read (numba sum, 1 core): {nbytes / read / 1e9:6.2f} GB/s")
    print(f"F2-F5 moments, analog + gain:        {nbytes / kernel / 1e9:6.2f} GB/s  ratio {read / kernel:.2f}  {goal(read / kernel, 0.4)}")
    print(f"F1 frame levels (analog):            {analog.nbytes / levels / 1e9:6.2f} GB/s of frames ({1e6 * levels / (cells * frames):.0f} us per frame)")


if __name__ == "__main__":
    main()
