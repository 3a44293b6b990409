"""Downstream validation (`make validate`): does the mask keep a real spot finder from taking
bad pixels for Bragg peaks? The paper's Tables 1-3 in miniature.

A synthetic PILATUS 300K (photon counting, 3 modules) with planted bad pixels (hot,
flickering, over- and under-responding, dead) records a dark run, a flat run and a run of
EMPTY frames (no crystal: a background of about one count per pixel). Masks are made from
the dark and flat runs and given to DIALS the documented way (README, "DIALS: from an rmm
mask to `dials.import`"): `rmm export --to nexus`, `python -m rmm_dask.dials_mask` against the imported
experiments, `dials.import ... mask=mask.pickle`; then `dials.find_spots` (Debian package
`dials`) runs on the empty frames as stills with `spotfinder.filter.min_spot_size=1`, as
one-pixel peak finders do, with:

* no mask (only the gaps between modules, which DIALS masks itself);
* a naive mean-threshold mask: pixels whose mean dark count is more than 3 standard
  deviations above the mean of all pixels (one threshold for the detector, non-robust);
* a non-robust mask: the same pipeline with mean/std in place of the robust fit;
* the RMM mask (rmm-dask's defaults);
* the planted pixels themselves (the best any mask can do).

It prints spots per empty frame and the fraction of empty frames counted as hits (>= 10
spots): with no mask every empty frame is a hit; the RMM mask must bring that to <= 5%.
Exit code 1 if it does not. DIALS runs in Debian's own Python (/usr/bin/python3), which
writes the pickles (rmm_dask/dials_pickle.py); rmm-dask runs in this one. The two masks that
are no rmm store (naive, planted) go through the same rmm_dask.dials_mask.write_pickle.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import numpy as np

from rmm_dask.detectors import get_detector
from rmm_dask.dials_mask import dials_panels, dials_python, write_pickle
from rmm_dask.io import open_run
from rmm_dask.mask import Params
from rmm_dask.pipeline import build_mask
from rmm_dask.store import write_store
from rmm_dask.synth import FLAT_COUNTS, SynthConfig, synthesize
from rmm_dask.synth.on_disk import full_frames
from rmm_dask.synth.write_cbf import write_cbf_series

HIT = 10  #: spots that make a frame a "hit"
GOAL = 0.05  #: largest fraction of empty frames the RMM mask may leave as hits
RMM = str(Path(sys.executable).with_name("rmm"))  #: the `rmm` command of this environment

COUNT_SPOTS = r"""
import sys, collections
from dials.array_family import flex
table = flex.reflection_table.from_file(sys.argv[1])
counts = collections.Counter(list(table["id"]))
print(" ".join(str(counts.get(i, 0)) for i in range(int(sys.argv[2]))))
"""


def run(cmd: list, cwd: Path, log: Path) -> None:
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"{' '.join(map(str, cmd))} failed (exit {proc.returncode}); see {log}")


def rmm_to_dials(store: Path, experiments: Path, work: Path) -> tuple[Path, np.ndarray]:
    """The documented path: ``rmm export --to nexus``, ``python -m rmm_dask.dials_mask``; the pickle and its panel."""
    nexus, pickle = work / f"{store.stem}.nxs", work / f"{store.stem}.pickle"
    run([RMM, "export", str(store), "--to", "nexus", "--out", str(nexus)], work, work / f"export_{store.stem}.log")
    run([sys.executable, "-m", "rmm_dask.dials_mask", str(nexus), str(experiments), "--out", str(pickle)],
        work, work / f"dials_mask_{store.stem}.log")
    (good,) = dials_panels(nexus, experiments)  # what went into the pickle: one panel, the full frame
    return pickle, good


def find_spots(work: Path, cbfs: list[str], mask: Path | None, name: str, n_frames: int, nproc: int) -> np.ndarray:
    """Spots per frame found by dials.find_spots on the empty stills, imported with ``dials.import ... mask=``."""
    experiments = work / f"{name}.expt"
    imported = ["dials.import", *cbfs, "convert_sequences_to_stills=True", f"output.experiments={experiments}"]
    run(imported + ([f"mask={mask}"] if mask is not None else []), work, work / f"import_{name}.log")
    refl = work / f"{name}.refl"
    cmd = ["dials.find_spots", str(experiments), "spotfinder.filter.min_spot_size=1", f"nproc={nproc}", f"output.reflections={refl}"]
    run(cmd, work, work / f"find_spots_{name}.log")
    out = subprocess.run([dials_python(), "-c", COUNT_SPOTS, str(refl), str(n_frames)], check=True, capture_output=True, text=True)
    return np.array(out.stdout.split(), dtype=int)


def make_mask(runs: dict, det, method: str, out: Path) -> Path:
    darks = {"high": open_run(runs["dark"], det)}
    ds = build_mask(darks, open_run(runs["flat"], det), detector=det, params=Params(method=method))
    with dask.config.set(scheduler="threads"):
        store = write_store(ds, out / f"{method}.zarr", compute=lambda c: dask.compute(c))
    return store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100, help="frames of the dark and flat runs")
    parser.add_argument("--empty", type=int, default=40, help="empty frames to search for spots")
    parser.add_argument("--background", type=float, default=1.0, help="mean counts per pixel of an empty frame")
    parser.add_argument("--bad-fraction", type=float, default=0.0013, help="planted pixels per kind, as a fraction of a module")
    parser.add_argument("--keep", metavar="DIR", help="work here and keep the files (default: a temporary directory, removed)")
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    if not shutil.which("dials.find_spots"):
        sys.exit("dials.find_spots not found: install Debian's dials package (apt-get install dials, ~4 minutes)")
    det = get_detector("PILATUS300K")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rmm-validate-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    config = dict(modules=det.n_modules, cells=1, frames=args.frames, flat_frames=args.frames, seed=7,
                  defect_fraction=args.bad_fraction, detector=det)
    calib = synthesize(SynthConfig(**config))
    empty = synthesize(SynthConfig(**{**config, "flat_frames": args.empty}, acquisition=1, flat_level=args.background / FLAT_COUNTS)).flat
    planted = (calib.truth.defects[:, 0, 0] != 0)  # (module, y, x)
    runs = {name: write_cbf_series(work / name, full_frames(run.analog, det, "cbf"), det)
            for name, run in (("dark", calib.dark["high"]), ("flat", calib.flat), ("empty", empty))}
    print(f"synthetic {det.name}: {int(planted.sum())} planted bad pixels of {planted.size}; dark and flat runs of {args.frames} frames, "
          f"{args.empty} empty frames (mean {empty.analog.mean():.2f} counts per pixel) in {work}")

    cbfs = sorted(str(p) for p in runs["empty"].glob("*.cbf"))
    run(["dials.import", *cbfs, "convert_sequences_to_stills=True", "output.experiments=empty.expt"], work, work / "import.log")
    masks = {"no mask": None}  # label -> (mask.pickle, its good pixels)
    dark_mean = calib.dark["high"].analog[:, 0].mean(axis=1)  # (module, y, x)
    naive = det.join_frame((dark_mean <= dark_mean.mean() + 3 * dark_mean.std()).astype(np.uint8), fill=0) != 0
    masks["naive mean threshold"] = (write_pickle([naive], work / "naive.pickle"), naive)
    for label, method in (("non-robust (mean/std)", "nonrobust"), ("RMM", "rmm")):
        masks[label] = rmm_to_dials(make_mask(runs, det, method, work), work / "empty.expt", work)
    ideal = det.join_frame((~planted).astype(np.uint8), fill=0) != 0
    masks["planted pixels (ideal)"] = (write_pickle([ideal], work / "ideal.pickle"), ideal)
    print(f"\ndials.find_spots on {args.empty} empty frames (stills, min_spot_size=1); a hit has >= {HIT} spots")
    print(f"{'mask':<26}{'masked px':>10}{'missed':>8}{'spots/frame':>13}{'max':>6}{'false hits':>12}")
    results = {}
    for label, entry in masks.items():
        mask_file, masked, missed = None, 0, int(planted.sum())
        if entry is not None:
            mask_file, good = entry
            masked = int((~good & ~det.gap_mask()).sum())
            missed = int((planted & det.split_frame(good)).sum())
        spots = find_spots(work, cbfs, mask_file, f"m{len(results)}", args.empty, args.nproc)
        hits = float((spots >= HIT).mean())
        results[label] = hits
        print(f"{label:<26}{masked:>10}{missed:>8}{spots.mean():>13.1f}{spots.max():>6}{100 * hits:>11.1f}%")
    ok = results["no mask"] >= 0.99 and results["RMM"] <= GOAL
    print(f"\nRMM false hits {100 * results['RMM']:.1f}% (goal <= {100 * GOAL:.0f}%), no mask {100 * results['no mask']:.1f}%: "
          f"{'met' if ok else 'NOT met'}  ({time.perf_counter() - t0:.0f} s)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
