"""Facility scale (issue 14, parts 1 and 2): the mask graph of a full AGIPD-1M set, and memory
flat in the number of frames.

    .venv/bin/python benchmarks/bench_scale.py            (or make bench)
    .venv/bin/python benchmarks/bench_scale.py graph      (one part: graph, memory or rss)

* graph: build the mask of 16 modules x 352 cells, three dark runs and a flat, from reader
  arrays whose files are never read (the regions name files that do not exist): build time,
  creating the store's arrays and the write graph as the scheduler gets it (optimized and
  materialized), its tasks (and per (module, cell) chunk), and the time the
  distributed scheduler spends per task on a graph of the same shape whose tasks do nothing.
* memory: the chunk tasks of one module and cell streamed from a run of 2000 frames
  generated block by block: peak of the task's allocations (tracemalloc) against one frame
  block, and the time per frame.
* rss: ``rmm mask`` end to end on one module and cell of 64 and of 512 frames (EuXFEL RAW
  files written here): peak resident memory of the command and its worker processes,
  summed (psutil, sampled every 20 ms).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from functools import partial

import dask
import numpy as np
import xarray as xr
import zarr
from common import goal, header
from dask.core import flatten

from rmm_dask.detectors import get_detector
from rmm_dask.io import regions
from rmm_dask.io.common import DIMS, graph_array
from rmm_dask.io.euxfel import _plane, _RawBlock, _read_raw_block
from rmm_dask.mask import FRAME_BLOCK, Params, dark_stage, dark_stage_blocks, mask_from_stages
from rmm_dask.pipeline import build_mask
from rmm_dask.store import store_writes

BEFORE = {"build_s": 44.0, "tasks": 332_288, "rss_ratio": 487 / 307}  #: issue 14, measured before


def unread_run(name: str, n_modules: int, n_cells: int, n_frames: int) -> xr.Dataset:
    """A lazy AGIPD-like run as the EuXFEL reader makes it, over files that do not exist."""
    det = get_detector("AGIPD1M")
    shape = (2, *det.module_shape)
    segments = np.array([[0, 0, n_frames, 0]], dtype=np.int64)
    grid = np.empty((n_modules, n_cells), dtype=object)
    tasks = {}
    for m in range(n_modules):
        files = [f"/nonexistent/{name}/RAW-R0001-AGIPD{m:02d}-S00000.h5"]
        for c in range(n_cells):
            grid[m, c] = _RawBlock(files, ["INSTRUMENT/X/DET/0CH0:xtdf/image/data"], False, segments, n_cells, range(c, c + 1), n_frames, shape)
            tasks[(m, c, 0, 0, 0, 0)] = (_read_raw_block, grid[m, c])
    chunks = ((1,) * n_modules, (1,) * n_cells, (2,), (n_frames,), (shape[1],), (shape[2],))
    raw = graph_array(f"unread-{name}-{n_modules}-{n_cells}-{n_frames}", tasks, chunks, np.uint16)
    analog = regions.register(raw[:, :, 0], _read_raw_block, grid, partial(_plane, 0))
    gain = regions.register(raw[:, :, 1], _read_raw_block, regions.grid_of(analog), partial(_plane, 1))
    coords = {"module": np.arange(n_modules), "cell": np.arange(n_cells), "frame": np.arange(n_frames)}
    return xr.Dataset({"analog": (DIMS, analog), "gain": (DIMS, gain)}, coords=coords, attrs={"path": f"/nonexistent/{name}", "detector": "AGIPD1M"})


def _noop(*args):
    return None


def scheduler_seconds_per_task(graph: dict, keys: list) -> float:
    """Seconds per task of the distributed scheduler (one worker, one thread) on ``graph``'s shape, tasks doing nothing."""
    from dask.core import get_dependencies
    from distributed import Client, LocalCluster

    shaped = {k: (_noop, *sorted(get_dependencies(graph, k), key=str)) for k in graph}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        t = time.perf_counter()
        client.get(shaped, keys, sync=True)
        return (time.perf_counter() - t) / len(shaped)


def bench_graph(n_modules: int = 16, n_cells: int = 352, n_frames: int = 64):
    header(f"mask graph of a full set: {n_modules} modules x {n_cells} cells, 3 dark runs + flat, nothing read")
    darks = {g: unread_run(f"dark-{g}", n_modules, n_cells, n_frames) for g in ("high", "medium", "low")}
    flat = unread_run("flat", n_modules, n_cells, n_frames)
    t = time.perf_counter()
    ds = build_mask(darks, flat, flat_check={"checked": "benchmark"})
    build = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:  # the arrays' metadata only: nothing is computed
        t = time.perf_counter()
        writes = store_writes(ds, zarr.open_group(tmp, mode="w-", zarr_format=3))
        (optimized,) = dask.optimize(writes)  # what the scheduler is given
        graph = dict(optimized.__dask_graph__())
        materialize = time.perf_counter() - t
    chunks = n_modules * n_cells
    print(f"build:        {build:6.2f} s (before {BEFORE['build_s']:.0f} s)  {goal(build, 5.0, higher_is_better=False)}")
    print(f"store graph:  {materialize:6.2f} s to create the arrays, optimize and materialize the write graph  "
          f"{goal(build + materialize, 5.0, higher_is_better=False)} (with the build)")
    print(f"tasks:        {len(graph):,} as the scheduler gets them (before {BEFORE['tasks']:,}), "
          f"{len(graph) / chunks:.1f} per (module, cell) chunk for 4 runs")
    if "--no-scheduler" not in sys.argv:
        keys = list(flatten(optimized.__dask_keys__()))
        per_task = scheduler_seconds_per_task(graph, keys)
        print(f"scheduler:    {1e6 * per_task:6.0f} us per task (distributed, tasks doing nothing): {per_task * len(graph):.0f} s for the set")


class _Generated:
    """Frames of a dark run made block by block (seeded per block): a long run without its memory."""

    def __init__(self, n_frames: int, cells: int = 1, seed: int = 0):
        self.n_frames, self.cells, self.seed = n_frames, cells, seed

    def read(self, a: int, b: int):
        shape = (self.cells, b - a, 512, 128)
        analog, gain = np.empty(shape, dtype=np.uint16), np.empty(shape, dtype=np.uint16)  # as a reader's block
        for f in range(a, b):  # each frame from its own seed: the same frame whatever the range read
            rng = np.random.default_rng([self.seed, f])
            analog[:, f - a] = rng.integers(4980, 5021, shape[2:], dtype=np.uint16) + (300 if f % 97 == 0 else 0)
            gain[:, f - a] = rng.integers(4790, 4811, shape[2:], dtype=np.uint16)
        return analog, gain

    def __iter__(self):  # as a flat: blocks of frames in order
        for a in range(0, self.n_frames, FRAME_BLOCK):
            yield self.read(a, min(a + FRAME_BLOCK, self.n_frames))[0]


def bench_memory(n_frames: int = 2000):
    header(f"chunk tasks streamed: one module and cell, {n_frames} frames per run, blocks of {FRAME_BLOCK} frames")
    det, params = get_detector("AGIPD1M"), Params()
    block_bytes = 2 * FRAME_BLOCK * 512 * 128 * 2  # analog + gain of one block, uint16 (a reader's read)
    warm = _Generated(64)
    mask_from_stages([dark_stage_blocks(warm.read, 64, det, params)] * 3, warm, det, params)  # compile
    run = _Generated(n_frames)
    tracemalloc.start()
    t = time.perf_counter()
    stage = dark_stage_blocks(run.read, n_frames, det, params)
    _, stage_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    stage_s = time.perf_counter() - t
    flat = _Generated(n_frames, seed=1)
    t = time.perf_counter()
    result = mask_from_stages([stage] * 3, flat, det, params)
    _, finish_peak = tracemalloc.get_traced_memory()
    finish_s = time.perf_counter() - t
    tracemalloc.stop()
    assert result.mask.shape == (3, 1, 512, 128)
    print(f"frame block:  {block_bytes / 2**20:.1f} MiB (analog + gain)")
    print(f"dark stage:   peak {stage_peak / 2**20:6.1f} MiB = {stage_peak / block_bytes:.2f} x the block  {goal(stage_peak / block_bytes, 2.5, higher_is_better=False)}"
          f"  ({1e3 * stage_s / n_frames:.2f} ms per frame, {int((~stage.keep).sum())} frames dropped)")
    print(f"finish (F6):  peak {finish_peak / 2**20:6.1f} MiB = {finish_peak / block_bytes:.2f} x the block  {goal(finish_peak / block_bytes, 2.5, higher_is_better=False)}"
          f"  ({1e3 * finish_s / n_frames:.2f} ms per frame)")
    tracemalloc.start()  # before: the task held the chunk's whole run (the reader's array) and worked on it
    whole = [np.concatenate(v, axis=1) for v in zip(*(run.read(a, min(a + FRAME_BLOCK, n_frames)) for a in range(0, n_frames, FRAME_BLOCK)))]
    same = dark_stage(whole[0], whole[1], det, params)
    _, memory_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del whole
    assert all(np.array_equal(getattr(same, k), getattr(stage, k), equal_nan=True) for k in ("keep", "offset", "noise", "gain_mean", "gain_std"))
    print(f"in memory:    peak {memory_peak / 2**20:6.1f} MiB = {memory_peak / block_bytes:.2f} x the block (the whole chunk, as before; same stage bit for bit)")


_WRITTEN: dict = {}  #: (directory, frames) -> the runs written there


def _rmm_mask_rss(frames: int, tmp: str, code: str | None = None) -> tuple[float, float]:
    """(peak RSS in MiB of the largest process, seconds) of ``rmm mask`` on one module and cell
    (``code``: a checkout of rmm-dask to run instead of this one, e.g. the code before)."""
    from rmm_dask.synth import SynthConfig, synthesize
    from rmm_dask.synth.on_disk import write_synthetic

    key = (tmp, frames)
    if key not in _WRITTEN:
        _WRITTEN[key] = write_synthetic(synthesize(SynthConfig(modules=1, cells=1, frames=frames, flat_frames=frames, seed=3)), os.path.join(tmp, f"f{frames}"))
    paths = _WRITTEN[key]
    out = os.path.join(tmp, f"m{frames}-{'before' if code else 'now'}.zarr")
    cmd = [sys.executable, "-m", "rmm_dask.cli", "mask", "--out", out, "--workers", "1"]
    for g in ("high", "medium", "low"):
        cmd += [f"--dark-{g}", str(paths[f"dark-{g}"])]
    cmd += ["--flat", str(paths["flat"])]
    env = dict(os.environ, PYTHONPATH=code) if code else None
    return _peak_tree_rss(cmd, env)


def _peak_tree_rss(cmd: list, env) -> tuple[float, float]:
    """(peak of the summed RSS of a command and all its processes in MiB, seconds), sampled every 20 ms."""
    import psutil

    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    top, peak, each = psutil.Process(proc.pid), 0, {}
    while proc.poll() is None:
        total = 0
        for p in [top, *top.children(recursive=True)]:
            try:
                rss = p.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            each[p.pid] = max(each.get(p.pid, 0), rss)
        peak = max(peak, total)
        time.sleep(0.02)
    print("   peaks per process (MiB):", sorted(round(v / 2**20) for v in each.values()))
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"rmm mask failed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    return peak / 2**20, seconds


def bench_rss():
    """With ``--before=DIR``: the same runs with the rmm-dask checkout in DIR too (the code before)."""
    header("rmm mask end to end, one module and cell: peak memory against run length")
    before = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--before=")), None)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for label, code in [("now", None)] + ([("before", before)] if before else []):
            (short, t_short), (long_, t_long) = _rmm_mask_rss(64, tmp, code), _rmm_mask_rss(512, tmp, code)
            ratio = long_ / short
            print(f"{label:7s} 64 frames: {short:5.0f} MiB ({t_short:.0f} s), 512 frames: {long_:5.0f} MiB ({t_long:.0f} s), "
                  f"ratio {ratio:.2f}  {goal(ratio, 1.25, higher_is_better=False)}")
    if not before:
        print(f"(before, issue 14: ratio {BEFORE['rss_ratio']:.2f}; --before=DIR measures it here)")


if __name__ == "__main__":
    parts = [a for a in sys.argv[1:] if not a.startswith("--")] or ["graph", "memory", "rss"]
    for part in parts:
        {"graph": bench_graph, "memory": bench_memory, "rss": bench_rss}[part]()
