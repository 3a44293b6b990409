"""Runs streamed through the chunk tasks in blocks of frames: the same mask, bit for bit, as
the chunk in memory; memory that does not grow with the run; a graph of a few tasks per chunk."""

import tracemalloc

import dask
import numpy as np
import pytest
import xarray as xr

import rmm_dask.pipeline as pipeline
from rmm_dask import features as F
from rmm_dask.detectors import get_detector
from rmm_dask.mask import Params, dark_stage, dark_stage_blocks, flat_feature
from rmm_dask.pipeline import build_mask
from rmm_dask.store import write_store
from rmm_dask.synth import GAINS, SynthConfig, synthesize

from .conftest import raise_if_dask_computes
from .stores import assert_same_store

DIMS = ("module", "cell", "frame", "y", "x")
BLOCK = 16  #: frames per block in these tests: runs of 100 frames span 7 blocks


@pytest.fixture(scope="module")
def calib():
    """Two modules, two cells, 100 frames; one dark frame in ten shifted as a whole (F1 drops them)."""
    return synthesize(SynthConfig(modules=2, cells=2, frames=100, flat_frames=100, outlier_frame_fraction=0.1, seed=7))


@pytest.fixture(scope="module")
def on_disk(calib, tmp_path_factory):
    from rmm_dask.synth.on_disk import write_synthetic

    return write_synthetic(calib, tmp_path_factory.mktemp("raw"))


def in_memory(run, name):
    """A run as numpy-backed arrays: not a reader's, so the pipeline takes each chunk whole."""
    return xr.Dataset(
        {"analog": (DIMS, run.analog), "gain": (DIMS, run.gain)},
        coords={"module": np.arange(run.analog.shape[0]), "cell": np.arange(run.analog.shape[1]), "frame": np.arange(run.analog.shape[2])},
        attrs={"path": f"/runs/{name}", "detector": "AGIPD1M"},
    )


def test_streamed_runs_give_the_mask_of_the_chunks_in_memory(calib, on_disk, tmp_path, monkeypatch):
    from rmm_dask.io import open_run

    outliers = calib.truth.outlier_frames["high"]
    blocks_hit = {f // BLOCK for f in np.flatnonzero(outliers[0, 0])}
    assert len(blocks_hit) >= 3, "the planted outlying frames should lie in several blocks"
    calls = {"streamed": 0, "whole": 0}
    streamed, whole = pipeline.dark_stage_blocks, pipeline.dark_stage

    def count(kind, f):
        def wrapped(*args, **kwargs):
            calls[kind] += 1
            return f(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(pipeline, "FRAME_BLOCK", BLOCK)
    monkeypatch.setattr(pipeline, "dark_stage_blocks", count("streamed", streamed))
    monkeypatch.setattr(pipeline, "dark_stage", count("whole", whole))
    sync = lambda d: dask.compute(d, scheduler="sync")  # noqa: E731
    darks = {g: open_run(on_disk[f"dark-{g}"], cells_per_chunk=1) for g in GAINS}
    ds = build_mask(darks, open_run(on_disk["flat"], cells_per_chunk=1), flat_check={"checked": "test"})
    streamed_store = write_store(ds, tmp_path / "streamed.zarr", compute=sync)
    assert calls == {"streamed": 3 * 2 * 2, "whole": 0}  # each dark stage of each chunk once, streamed
    mem = build_mask({g: in_memory(calib.dark[g], f"dark-{g}") for g in GAINS}, in_memory(calib.flat, "flat"), flat_check={"checked": "test"})
    memory_store = write_store(mem, tmp_path / "memory.zarr", compute=sync)
    assert calls["whole"] == 3 * 1 * 2  # one chunk of both cells per module, in memory
    assert_same_store(streamed_store, memory_store, skip="rejected_frames/train_id")
    rejected = ds.rejected_frames_high.values
    np.testing.assert_array_equal(rejected, outliers)  # F1 dropped exactly the planted frames, in every block


def test_dark_stage_of_a_long_run_streamed_in_bounded_memory():
    """2000 frames (a EuXFEL dark run), outlying frames in many blocks: the streamed stage is the
    in-memory one bit for bit, and its memory is a few blocks, not the run."""
    # 64 x 64 pixels, F1 sampling one in 16 as it does on an AGIPD module (4096 of 65536)
    det, params, n, shape = get_detector("AGIPD1M"), Params(f1_pixels=256), 2000, (1, 64, 64)
    rng = np.random.default_rng(3)
    analog = rng.integers(4000, 4041, (1, n, *shape[1:]), dtype=np.uint16)
    shifted = np.arange(n) % 131 == 5
    analog[:, shifted] += 200
    gain = rng.integers(5000, 5011, analog.shape, dtype=np.uint16)
    reads = []

    def read(a, b):
        reads.append((a, b))
        return analog[:, a:b].copy(), gain[:, a:b].copy()  # fresh blocks, as a reader's

    block = 64
    dark_stage_blocks(read, 2 * block, det, params, block=block)  # compile the kernels first
    reads.clear()
    tracemalloc.start()
    stage = dark_stage_blocks(read, n, det, params, block=block)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ref = dark_stage(analog, gain, det, params)
    for name in ("keep", "levels", "offset", "noise", "count", "gain_mean", "gain_std"):
        np.testing.assert_array_equal(getattr(stage, name), getattr(ref, name), err_msg=name)
    np.testing.assert_array_equal(~stage.keep[0], shifted)
    block_bytes = 2 * block * analog[0, 0].nbytes
    sample_bytes = n * params.f1_pixels * 2  # the F1 sample of every frame is kept (uint16)
    assert peak < 2.5 * block_bytes + sample_bytes, f"peak {peak} for blocks of {block_bytes} bytes"
    assert peak < (analog.nbytes + gain.nbytes) / 8
    full = [r for r in reads if r[1] - r[0] == block]
    assert len(full) == n // block and all(b - a <= block for a, b in reads)  # one pass, then only dropped frames
    assert sum(b - a for a, b in reads) == n + int(shifted.sum())


def test_float_runs_streamed_give_the_same_stage():
    """Float data (NaN missing) take the float path: F1, then two passes of sums in frame order."""
    det, n = get_detector("AGIPD1M"), 90
    rng = np.random.default_rng(5)
    analog = rng.normal(100.0, 3.0, (2, n, 32, 64)).astype(np.float32)
    analog[:, [7, 40, 41, 88]] += 80.0
    analog[0, :5, 3, 3] = np.nan
    stage = dark_stage_blocks(lambda a, b: (analog[:, a:b], None), n, det, block=BLOCK)
    ref = dark_stage(analog, None, det)
    for name in ("keep", "levels", "offset", "noise", "count"):
        np.testing.assert_array_equal(getattr(stage, name), getattr(ref, name), err_msg=name)
    assert (~ref.keep).sum() >= 8


def test_flat_feature_of_blocks_equals_the_whole_flat(calib):
    det = calib.config.detector
    flat = calib.flat.analog[0]
    offset = dark_stage(calib.dark["high"].analog[0], None, det).offset
    blocks = [flat[:, a : a + BLOCK] for a in range(0, flat.shape[1], BLOCK)]
    np.testing.assert_array_equal(flat_feature(blocks, offset, det), flat_feature(flat, offset, det))


def test_run_moments_remove_what_was_added():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 2**16, (3, 50, 8, 8), dtype=np.uint16)
    keep = rng.random((3, 50)) > 0.3
    m = F.RunMoments(x.dtype, (3,), (8, 8), 50)
    m.add(x)
    m.remove(x, ~keep)
    for got, want in zip(m.result(keep), F.pixel_moments(x, keep)):
        np.testing.assert_array_equal(got, want)


def test_graph_has_a_few_tasks_per_chunk_and_reads_nothing(on_disk):
    from rmm_dask.io import open_run

    with raise_if_dask_computes():
        darks = {g: open_run(on_disk[f"dark-{g}"], cells_per_chunk=1) for g in GAINS}
        ds = build_mask(darks, open_run(on_disk["flat"], cells_per_chunk=1), flat_check={"checked": "test"})
        graph = dict(ds.__dask_graph__())
    chunks = 2 * 2
    outputs = len([v for v in ds.data_vars if "cell" in ds[v].dims])  # arrays with a block per chunk
    # per chunk: a stage per dark run, the finish, an output per array; no read task (the tasks read)
    assert len(graph) <= chunks * (len(GAINS) + 1 + outputs) + 8
    assert not any(str(k[0] if isinstance(k, tuple) else k).startswith("euxfel-raw") for k in graph)


def test_store_is_written_by_one_task_per_chunk(on_disk, tmp_path):
    """The graph the scheduler gets for a store: a few tasks per chunk (the writes of every
    array of a chunk in one), the user's layer written once per module."""
    import zarr

    from rmm_dask.io import open_run
    from rmm_dask.store import store_writes, write_store

    darks = {g: open_run(on_disk[f"dark-{g}"], cells_per_chunk=1) for g in GAINS}
    flat = open_run(on_disk["flat"], cells_per_chunk=1)
    user = np.zeros((2, *darks["high"].analog.shape[-2:]), dtype=np.uint8)
    user[1, 5:9, 7] = 1
    ds = build_mask(darks, flat, flat_check={"checked": "test"}, user_mask=user)
    (optimized,) = dask.optimize(store_writes(ds, zarr.open_group(tmp_path / "graph.zarr", mode="w-", zarr_format=3)))
    graph = dict(optimized.__dask_graph__())
    # per chunk at most a stage per dark run, the verdicts and the write (without layers all fuse
    # into one); besides: the user mask's two module blocks and the writer's list of targets
    assert len(graph) <= 2 * 2 * (len(GAINS) + 2) + 2 + 1
    path = write_store(ds, tmp_path / "m.zarr", compute=lambda d: dask.compute(d, scheduler="threads"))
    root = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(root["layers/user"][:], user)
    np.testing.assert_array_equal(root["mask"][:], ds.mask.values)



def test_store_of_irregular_cell_chunks_is_the_mask(tmp_path):
    """Cells in chunks of unequal size (as after dropping a run's first cell): the Zarr chunks
    are the largest dask chunk, so the store is written array by array, never by two tasks
    into one Zarr chunk, and it holds the mask whatever the threads do."""
    import zarr

    from rmm_dask.store import store_writes

    small = synthesize(SynthConfig(modules=1, cells=5, frames=20, flat_frames=20, seed=3))
    darks = {g: in_memory(small.dark[g], g) for g in GAINS}
    flat = in_memory(small.flat, "flat").drop_vars("gain")
    reference = None
    for cells in ((5,), (1, 2, 2), (2, 3), (1, 1, 1, 1, 1)):
        ds = build_mask({g: v.chunk({"cell": cells}) for g, v in darks.items()}, flat.chunk({"cell": cells}), flat_check={"checked": "test"})
        writes = store_writes(ds, zarr.open_group(tmp_path / f"g{len(cells)}.zarr", mode="w-", zarr_format=3))
        names = [name for w in (writes if isinstance(writes, tuple) else (writes,)) for name in w.__dask_graph__().layers]
        per_chunk = any(str(name).startswith("write_chunk") for name in names)
        assert per_chunk == (len(set(cells[:-1]) | {max(cells)}) == 1)  # one task per chunk only where chunks are Zarr chunks
        path = write_store(ds, tmp_path / f"m{len(cells)}.zarr", compute=lambda d: dask.compute(d, scheduler="threads", num_workers=4))
        stored = zarr.open_group(path, mode="r")["mask"][:]
        reference = stored if reference is None else reference
        np.testing.assert_array_equal(stored, reference)
    assert stored.any()
