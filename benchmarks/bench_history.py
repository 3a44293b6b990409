"""Issue 23 item 1: appending a night to the pixel history costs O(one mask), whatever the nights before.

Writes ten nightly versions of one synthetic AGIPD module (their mask stores as rmm writes them, planted random
codes; the store attributes of a real `rmm mask` of a small synthetic set), builds the history of night 1, appends
nights 2..10 one at a time and prints, for night 2 and night 10, the time and the bytes read (``rchar`` of
/proc/self/io: every read system call, page cache or not) and their ratio (the issue asks <= 1.5).

    .venv/bin/python benchmarks/bench_history.py [--cells 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def main() -> int:
    from rmm_dask.cli import main as rmm
    from rmm_dask.nightly import history
    from tests.test_history import write_version

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--nights", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="appends of each night timed (the best is kept)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rmm-bench-history-"))
    try:
        quiet = open("/dev/null", "w")
        stdout, sys.stdout = sys.stdout, quiet
        try:
            assert rmm(["synth", "--out", str(work / "s"), "--modules", "1", "--cells", "2", "--frames", "12"]) == 0
            assert rmm(["mask", "--dark-high", str(work / "s/raw/r0001"), "--out", str(work / "t.zarr"),
                        "--workers", "1"]) == 0
        finally:
            sys.stdout = stdout
        rng = np.random.default_rng(0)
        shape = (1, 1, args.cells, 512, 128)
        root = work / "masks" / "AGIPD"
        aside = work / "aside"
        aside.mkdir()
        for night in range(1, args.nights + 1):
            codes = np.where(rng.random(shape) < 0.02, rng.integers(1, 64, shape), 0).astype(np.uint8)
            write_version(aside, night, codes, darks=night, template=work / "t.zarr")
        results = {}
        for night in range(1, args.nights + 1):
            shutil.move(aside / f"v{night:04d}", root / f"v{night:04d}") if root.exists() else (
                root.mkdir(parents=True), shutil.move(aside / f"v{night:04d}", root / f"v{night:04d}"))
            if night == 1:
                history.update(root, lambda line: None)
                continue
            best = None
            for _ in range(args.repeat):  # the same append again: the history of night - 1 kept aside
                keep = work / "keep.zarr"
                if keep.exists():
                    shutil.rmtree(keep)
                shutil.copytree(root / "history.zarr", keep)
                r0, t0 = rchar(), time.perf_counter()
                history.update(root, lambda line: None)
                took, read = time.perf_counter() - t0, rchar() - r0
                best = (took, read) if best is None or took < best[0] else best
                if _ < args.repeat - 1:
                    shutil.rmtree(root / "history.zarr")
                    shutil.move(keep, root / "history.zarr")
            results[night] = best
        mask_bytes = sum(p.stat().st_size for p in (root / "v0001" / "mask.zarr").rglob("*") if p.is_file())
        hist_bytes = sum(p.stat().st_size for p in (root / "history.zarr").rglob("*") if p.is_file())
        print(f"{int(np.prod(shape)):,} pixel-planes per night; mask store {mask_bytes / 1e6:.2f} MB,"
              f" history after {args.nights} nights {hist_bytes / 1e6:.2f} MB")
        print("night  seconds  MB read")
        for night, (took, read) in results.items():
            print(f"{night:5d}  {took:7.3f}  {read / 1e6:7.2f}")
        (t2, b2), (tn, bn) = results[2], results[args.nights]
        print(f"night {args.nights} / night 2: time {tn / t2:.2f}x, bytes read {bn / b2:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
