"""F6 flat-field SNR: time per 512 x 128 frame against RGFLib's fitBackground with the same
window, and agreement of the pixels both flag on a synthetic flat with planted defects.

    .venv/bin/python benchmarks/bench_flat.py     (or make bench)

The reference fits a robust plane in a 15 x 15 window around every pixel (fitBackground,
its defaults otherwise); it takes seconds per frame, so it is timed on a stripe of the
module and scaled, and its agreement is measured on 128 x 128 pixels (2 x 2 ASICs).
"""

from __future__ import annotations

import numpy as np
from common import goal, header, timed

from rmm_dask import features as F
from rmm_dask.detectors import AGIPD1M
from rmm_dask.mask import Params, dark_stage, module_mask
from rmm_dask.synth import GAINS, Defect, SynthConfig, synthesize

FRAMES = 24
ROWS = 128  # rows of the module used for the agreement (2 x 2 ASICs)


def flags(mean_snr, lam=8.0):
    snr = F.local_snr(mean_snr, AGIPD1M.asic_shape, exclude=AGIPD1M.asic_edges()[:ROWS])
    with np.errstate(invalid="ignore"):
        return snr > lam, snr < -lam


def main():
    try:
        import RobustGaussianFittingLibrary as rgf
    except ImportError:
        rgf = None
        print("RobustGaussianFittingLibrary not installed (pip install '.[bench]'): reference skipped")
    calib = synthesize(SynthConfig(cells=1, frames=100, flat_frames=FRAMES, seed=7))
    flat = calib.flat.analog[0, 0]  # (frame, y, x)
    stage = dark_stage(calib.dark["high"].analog[0], calib.dark["high"].gain[0], AGIPD1M)
    offset = stage.offset[0]
    dark_bad = module_mask([(calib.dark[g].analog[0], calib.dark[g].gain[0]) for g in GAINS], None, AGIPD1M, Params()).mask[0, 0] != 0
    exclude = AGIPD1M.asic_edges() | dark_bad

    header(f"F6 flat-field SNR per 512 x 128 frame ({FRAMES} frames)")
    F.flat_snr(flat[:1], offset, exclude=exclude)  # compile
    t, ours = timed(F.flat_snr, flat, offset, exclude=exclude, repeat=3)
    per_frame = t / FRAMES
    print(f"rmm-dask (robust plane per 16 x 16 tile): {1e3 * per_frame:7.1f} ms per frame")
    if rgf is None:
        return
    z = (flat[0, :64].astype(np.float32) - offset[:64]).astype(np.float32)
    tr, _ = timed(rgf.fitBackground, z, inMask=(~exclude[:64]).astype(np.int8), winX=15, winY=15, repeat=1)
    ref_frame = tr * 512 / 64
    print(f"RGFLib fitBackground 15 x 15 (a 64 x 128 stripe x 8): {ref_frame:7.2f} s per frame")
    print(f"speed-up: {ref_frame / per_frame:.0f}x  {goal(ref_frame / per_frame, 300)}")
    full = 200 * 352 * 16 * per_frame / 3600
    print(f"F6 of a full AGIPD-1M flat run (200 frames x 352 cells x 16 modules): {full:.1f} core-hours "
          f"(reference: {200 * 352 * 16 * ref_frame / 3600:.0f}); {goal(full, 10, higher_is_better=False)}")

    header(f"F6 flags on {ROWS} x 128 pixels, {FRAMES} frames: rmm-dask against RGFLib backgrounds")
    total = np.zeros((ROWS, 128))
    for frame in flat[:, :ROWS]:
        z = (frame.astype(np.float32) - offset[:ROWS]).astype(np.float32)
        mean, std = rgf.fitBackground(z, inMask=(~exclude[:ROWS]).astype(np.int8), winX=15, winY=15)
        total += (z - mean) / std
    theirs_high, theirs_low = flags(total / FRAMES)
    ours_high, ours_low = flags(ours[:ROWS])
    truth = calib.truth
    for name, a, b, kind in (("FLAT_HIGH", ours_high, theirs_high, Defect.OVER_RESPONDING), ("FLAT_LOW", ours_low, theirs_low, Defect.UNDER_RESPONDING)):
        planted = truth.kind_mask(kind)[0, 0, 0, :ROWS]
        both, either = int((a & b).sum()), int((a | b).sum())
        print(f"{name:9}: rmm-dask {int(a.sum()):4}, RGFLib {int(b.sum()):4}, both {both:4}, either {either:4} "
              f"(agreement {both / max(either, 1):.1%}); planted {kind.name} {int(planted.sum())}: "
              f"found {int((a & planted).sum())} and {int((b & planted).sum())}")


if __name__ == "__main__":
    main()
