"""End to end: `rmm --help` and an argument error; `rmm mask` as a program against a plain h5py
read of the same files (both as new processes); worker threads against worker processes; the
pipeline against the kernels alone; worker memory against the chunk; and the wall-time model of
a full AGIPD-1M calibration set.

    .venv/bin/python benchmarks/bench_e2e.py     (or make bench)

Synthetic EuXFEL runs are written to a temporary directory and read once before timing,
so the data is in the page cache.
"""

from __future__ import annotations

import inspect
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import dask
from common import goal, header

from rmm_dask.cluster import dask_client
from rmm_dask.flatcheck import check_flat
from rmm_dask.io import open_run
from rmm_dask.mask import Params, module_mask
from rmm_dask.pipeline import build_mask
from rmm_dask.store import write_store
from rmm_dask.synth import GAINS, SynthConfig, synthesize
from rmm_dask.synth.on_disk import write_synthetic

MODULES, CELLS = 2, 4


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def start_sampling(dask_worker) -> int:
    """On a worker: sample its resident memory every 10 ms in a thread; return the current value."""
    import threading

    state = dask_worker.rmm_bench_memory = {"base": current_rss(), "on": True}
    state["peak"] = state["base"]

    def sample():
        while state["on"]:
            state["peak"] = max(state["peak"], current_rss())
            time.sleep(0.01)

    threading.Thread(target=sample, daemon=True).start()
    return state["base"]


def stop_sampling(dask_worker) -> int:
    """On a worker: stop sampling; the peak resident memory above the start, in bytes."""
    state = dask_worker.rmm_bench_memory
    state["on"] = False
    return state["peak"] - state["base"]


def make_set(root: Path, frames: int):
    calib = synthesize(SynthConfig(modules=MODULES, cells=CELLS, frames=frames, flat_frames=frames, seed=11))
    paths = write_synthetic(calib, root / f"f{frames}")
    for p in paths["dark-high"].parent.rglob("*.h5"):
        p.read_bytes()  # into the page cache
    nbytes = sum(calib.dark[g].analog.nbytes * 2 for g in GAINS) + calib.flat.analog.nbytes * 2
    return calib, paths, nbytes


def run_job(paths, out: Path, n_workers: int, threads: bool = False):
    """Wall time of open + graph + compute + publish on a fresh LocalCluster (worker processes, or
    ``threads`` of this process); worker memory (the process's, for threads)."""
    below = "1PB" if threads else 0  # rmm-dask.cluster.local-threads-below: threads for every job, or never
    with dask.config.set({"rmm-dask.cluster.local-threads-below": below}), dask_client("local", n_workers=n_workers, input_bytes=1, echo=lambda *_: None) as client:
        if client is not None:
            run = client.run
        else:  # threads of this process on Dask's threaded scheduler: no worker to run on, this process instead
            here = types.SimpleNamespace()
            run = lambda f: {"this process": f(**({"dask_worker": here} if "dask_worker" in inspect.signature(f).parameters else {}))}  # noqa: E731
        run(build_warmup)  # numba compiled (from its cache) before the clock starts
        run(start_sampling)
        t0 = time.perf_counter()
        darks = {g: open_run(paths[f"dark-{g}"]) for g in GAINS}
        flat = open_run(paths["flat"])
        checked = check_flat(darks, flat, detector="AGIPD1M")  # as rmm mask: the flat is then streamed too
        ds = build_mask(darks, flat, flat_check=checked)
        write_store(ds, out, compute=lambda d: dask.compute(d))
        wall = time.perf_counter() - t0
        peaks = run(stop_sampling)
    return wall, max(peaks.values())


def build_warmup():
    calib = synthesize(SynthConfig(cells=1, frames=12, flat_frames=12))
    module_mask([(calib.dark[g].analog[0], calib.dark[g].gain[0]) for g in GAINS], calib.flat.analog[0], calib.config.detector)


def kernel_seconds(calib) -> float:
    """The same work in this process, one core, arrays in memory: the kernels alone."""
    build_warmup()
    t0 = time.perf_counter()
    for m in range(MODULES):
        for c in range(CELLS):
            dark = [(calib.dark[g].analog[m, c : c + 1], calib.dark[g].gain[m, c : c + 1]) for g in GAINS]
            module_mask(dark, calib.flat.analog[m, c : c + 1], calib.config.detector, Params())
    return time.perf_counter() - t0


def program_seconds(*argv: str, check: bool = True, env: dict | None = None) -> float:
    """Wall time of ``python argv...`` as a new process: what a user waits for, start-up included."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=None if env is None else {**os.environ, **env})
    if check and done.returncode != 0:
        raise RuntimeError(f"{argv}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - t0


PLAIN_READ = """
import sys, h5py
for path in sys.argv[1:]:
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) and name.endswith("image/data") else None)
"""


def startup():
    header("start-up: `rmm --help` and an argument error, as new processes (median of 3)")
    for what, argv in (("rmm --help", ["--help"]), ("rmm mask --bogus", ["mask", "--bogus"])):
        t = statistics.median(program_seconds("-m", "rmm_dask", *argv, check=False) for _ in range(3))
        print(f"{what:18} {t:5.2f} s  {goal(t, 1.0, higher_is_better=False)}")


def end_to_end(paths, root: Path, nbytes: int):
    """`rmm mask` as the user runs it against a plain h5py read of the same files, both new processes."""
    files = sorted(str(p) for role in ("dark-high", "dark-medium", "dark-low", "flat") for p in Path(paths[role]).glob("*.h5"))
    plain = statistics.median(program_seconds("-c", PLAIN_READ, *files) for _ in range(3))
    runs = [a for role in ("dark-high", "dark-medium", "dark-low", "flat") for a in (f"--{role}", str(paths[role]))]
    t = program_seconds("-m", "rmm_dask", "mask", *runs, "--detector", "AGIPD1M", "--out", str(root / "e2e.zarr"))
    ratio = plain / t
    print(f"plain h5py read of the image data, new process: {plain:6.2f} s")
    print(f"rmm mask, new process (cache warm):             {t:6.2f} s  {nbytes / t / 1e9:5.2f} GB/s")
    print(f"rmm mask against the plain read: {ratio:.3f}  {goal(ratio, 0.1)}")
    # what rmm-dask.cluster.local-threads-below decides: the same command on worker processes
    processes = {"DASK_RMM_DASK__CLUSTER__LOCAL_THREADS_BELOW": "0"}
    tp = program_seconds("-m", "rmm_dask", "mask", *runs, "--detector", "AGIPD1M", "--out", str(root / "e2e-p.zarr"), env=processes)
    print(f"rmm mask on 2 worker processes instead:         {tp:6.2f} s: processes / threads {tp / t:.2f}  {goal(tp / t, 1.0)}")


def main():
    startup()
    with tempfile.TemporaryDirectory(prefix="rmm-bench-") as tmp:
        root = Path(tmp)
        frames = 128
        calib, paths, nbytes = make_set(root, frames)
        header(f"end to end: {MODULES} modules x {CELLS} cells x {frames} frames, 3 dark runs + flat, {nbytes / 1e9:.2f} GB of raw analog + gain")
        tk = kernel_seconds(calib)  # compiles the kernels (once after an install) before anything is timed
        print(f"kernels alone, 1 core:        {tk:6.1f} s  {nbytes / tk / 1e9:5.2f} GB/s per core")
        end_to_end(paths, root, nbytes)
        tt, _ = run_job(paths, root / "threads.zarr", 2, threads=True)
        t2, mem2 = run_job(paths, root / "w2.zarr", 2)
        print(f"LocalCluster, 2 threads in one process: {tt:6.1f} s  {nbytes / tt / 1e9:5.2f} GB/s")
        print(f"LocalCluster, 2 worker processes:       {t2:6.1f} s  {nbytes / t2 / 1e9:5.2f} GB/s")
        print(f"computing alone, once the cluster is up: processes / threads {t2 / tt:.2f}")
        ratio = tk / (2 * min(tt, t2))
        print(f"2 workers against 2 cores of kernels alone: {ratio:.2f}  {goal(ratio, 0.5)}")

        chunk = frames * 512 * 128 * 2 * 2  # one cell of one module: analog + gain, uint16
        print(f"worker peak memory above idle: {mem2 / 2**20:.0f} MiB = {mem2 / chunk:.1f} x the {chunk / 2**20:.0f} MiB chunk  {goal(mem2 / chunk, 2.5, higher_is_better=False)}")
        calib2, paths2, nbytes2 = make_set(root, 2 * frames)
        del calib2
        t4, mem4 = run_job(paths2, root / "f2.zarr", 2)
        print(f"with {2 * frames} frames: peak {mem4 / 2**20:.0f} MiB ({mem4 / mem2:.2f} x the {frames}-frame job; flat would be 1.0), {nbytes2 / t4 / 1e9:.2f} GB/s")

        header("model: a full AGIPD-1M calibration set (16 modules x 352 cells; 3 dark runs of 512 frames, flat of 200)")
        per_cell = tk / (MODULES * CELLS)  # measured core-seconds per (module, cell) at `frames` frames
        flat_share = _flat_seconds(calib) / (MODULES * CELLS)
        dark_share = per_cell - flat_share
        full_cell = dark_share * 512 / frames + flat_share * 200 / frames
        core_hours = full_cell * 16 * 352 / 3600
        efficiency = ratio
        print(f"per (module, cell): {full_cell:.1f} core-s (dark {dark_share * 512 / frames:.1f}, flat {flat_share * 200 / frames:.1f}); "
              f"total {core_hours:.1f} core-hours of kernels, {core_hours / efficiency:.1f} with the measured pipeline efficiency {efficiency:.2f}")
        for n in (16, 64, 256):
            print(f"  {n:4} workers: {core_hours / efficiency / n * 60:7.1f} min wall (data: {2.3e12 / (core_hours / efficiency / n * 3600) / 1e9:.1f} GB/s from storage needed)")


def _flat_seconds(calib) -> float:
    from rmm_dask import features as F

    t0 = time.perf_counter()
    for m in range(MODULES):
        F.flat_snr(calib.flat.analog[m], None, exclude=calib.config.detector.asic_edges())
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
