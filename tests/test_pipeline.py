"""The Dask graph: lazy, equal to the in-memory recipe, independent of chunking and workers, atomic."""

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from rmm_dask.errors import InputError
from rmm_dask.mask import Params, module_mask
from rmm_dask.pipeline import build_mask
from rmm_dask.store import export_h5, open_store, write_store
from rmm_dask.synth import GAINS, SynthConfig, synthesize

from .conftest import raise_if_dask_computes
from .stores import assert_same_store, store_arrays

DIMS = ("module", "cell", "frame", "y", "x")


def as_dataset(run, name, cells_per_chunk=1, frames=None):
    """A run as open_run returns it: lazy, chunked per (module, cells)."""
    n = run.analog.shape[2] if frames is None else frames
    chunks = (1, cells_per_chunk, -1, -1, -1)
    return xr.Dataset(
        {
            "analog": (DIMS, da.from_array(run.analog[:, :, :n], chunks=chunks)),
            "gain": (DIMS, da.from_array(run.gain[:, :, :n], chunks=chunks)),
        },
        coords={"module": np.arange(run.analog.shape[0]), "cell": np.arange(run.analog.shape[1]), "frame": np.arange(n)},
        attrs={"path": f"/runs/{name}", "detector": "AGIPD1M"},
    )


@pytest.fixture(scope="module")
def calib():
    return synthesize(SynthConfig(modules=2, cells=2, frames=30, flat_frames=30, seed=1))


def runs(calib, cells_per_chunk=1):
    darks = {g: as_dataset(calib.dark[g], f"dark-{g}", cells_per_chunk) for g in GAINS}
    return darks, as_dataset(calib.flat, "flat", cells_per_chunk)


def test_building_the_graph_reads_nothing(calib):
    darks, flat = runs(calib)
    with raise_if_dask_computes():
        ds = build_mask(darks, flat)
        assert ds.mask.dims == ("module", "gain", "cell", "y", "x")
        assert ds.mask.shape == (2, 3, 2, 512, 128)
        assert ds.flat_snr.dims == ("module", "cell", "y", "x")
        assert ds.rejected_frames_high.shape == (2, 2, 30)
        ds.mask.sum()  # still lazy
    with pytest.raises(AssertionError, match="computed"), raise_if_dask_computes():
        ds.mask.values  # noqa: B018 - the guard itself works


def test_graph_equals_the_in_memory_recipe(calib):
    darks, flat = runs(calib)
    ds = build_mask(darks, flat).compute(scheduler="sync")
    for m in range(2):
        ref = module_mask([(calib.dark[g].analog[m], calib.dark[g].gain[m]) for g in GAINS], calib.flat.analog[m], calib.config.detector)
        np.testing.assert_array_equal(ds.mask.values[m], ref.mask)
        np.testing.assert_array_equal(ds.offset.values[m], ref.features["offset"])
        np.testing.assert_array_equal(ds.snr_flat.values[m], ref.snr["flat_snr"])
        np.testing.assert_array_equal(ds.rejected_frames_low.values[m], ref.rejected_frames[2])


@pytest.fixture(scope="module")
def on_disk(calib, tmp_path_factory):
    """The same calibration set written as EuXFEL RAW runs."""
    from rmm_dask.synth.on_disk import write_synthetic

    return write_synthetic(calib, tmp_path_factory.mktemp("raw"))


def opened(paths, cells_per_chunk):
    from rmm_dask.io import open_run

    darks = {g: open_run(paths[f"dark-{g}"], cells_per_chunk=cells_per_chunk) for g in GAINS}
    return darks, open_run(paths["flat"], cells_per_chunk=cells_per_chunk)


def test_graph_from_opened_runs_reads_no_pixels(on_disk, monkeypatch):
    from rmm_dask.io import euxfel

    def no_read(*args, **kwargs):
        raise AssertionError("pixel data read while building the graph")

    monkeypatch.setattr(euxfel, "_read_raw_block", no_read)
    with raise_if_dask_computes():
        ds = build_mask(*opened(on_disk, 1))
        ds.mask.sum()
    assert ds.mask.shape == (2, 3, 2, 512, 128)


@pytest.mark.slow
def test_bit_identical_across_chunkings_and_workers(on_disk, calib, tmp_path):
    from distributed import Client, LocalCluster

    sync = lambda d: dask.compute(d, scheduler="sync")  # noqa: E731
    one = write_store(build_mask(*opened(on_disk, 1)), tmp_path / "one.zarr", compute=sync)
    two = write_store(build_mask(*opened(on_disk, 2)), tmp_path / "two.zarr", compute=lambda d: dask.compute(d, scheduler="threads"))
    assert_same_store(one, two)
    for n_workers in (1, 2):
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, Client(cluster):
            path = write_store(build_mask(*opened(on_disk, 1)), tmp_path / f"w{n_workers}.zarr")
        assert_same_store(one, path)
    # and the same as the in-memory arrays the runs were written from
    mem = write_store(build_mask(*runs(calib, 2)), tmp_path / "mem.zarr", compute=sync)
    assert_same_store(one, mem, skip="rejected_frames/train_id")  # in memory, frames have no train ids


def failing(ds, after_module=1):
    """ds with its mask made to fail on computing one module: an exception injected mid-write."""

    def boom(block, block_info=None):
        if block_info[0]["chunk-location"][0] >= after_module:
            raise RuntimeError("injected failure while writing")
        return block

    bad = ds.copy()
    bad["mask"] = ds.mask.copy(data=ds.mask.data.map_blocks(boom, dtype=ds.mask.dtype))
    return bad


def test_failed_write_leaves_no_store_and_keeps_the_old_one(calib, tmp_path):
    target = tmp_path / "mask.zarr"
    sync = lambda d: dask.compute(d, scheduler="sync")  # noqa: E731
    ds = build_mask(*runs(calib))
    with pytest.raises(RuntimeError, match="injected"):
        write_store(failing(ds), target, compute=sync)
    assert list(tmp_path.iterdir()) == []  # no store, no partial leftovers

    write_store(ds, target, compute=sync)
    before = store_arrays(target)
    with pytest.raises(RuntimeError, match="injected"):
        write_store(failing(ds), target, overwrite=True, compute=sync)
    assert [p.name for p in tmp_path.iterdir()] == ["mask.zarr"]
    after = store_arrays(target)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)

    def interrupt(d):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_store(ds, target, overwrite=True, compute=interrupt)
    assert [p.name for p in tmp_path.iterdir()] == ["mask.zarr"]
    with pytest.raises(InputError, match="exists already"):
        write_store(ds, target, compute=sync)


def test_store_layout_provenance_and_h5_export(calib, tmp_path):
    import h5py

    darks, flat = runs(calib)
    path = write_store(build_mask(darks, flat, params=Params(lam=7.0)), tmp_path / "m.zarr", compute=lambda d: dask.compute(d, scheduler="sync"))
    root = open_store(path)
    assert root["mask"].dtype == np.uint8 and root["mask"].shape == (2, 3, 2, 512, 128)
    assert set(root["features"].array_keys()) == {"offset", "noise", "gain_mean", "gain_std", "flat_snr"}
    assert set(root["rejected_frames"].array_keys()) >= {"high", "medium", "low"}
    attrs = root.attrs
    assert attrs["parameters"]["lam"] == 7.0 and attrs["detector"] == "AGIPD1M"
    assert attrs["inputs"]["dark-high"]["path"] == "/runs/dark-high" and attrs["inputs"]["flat"]["frames"] == 30
    assert attrs["start_time"] <= attrs["end_time"] and attrs["software"].startswith("rmm-dask")
    assert xr.open_zarr(path).mask.shape == (2, 3, 2, 512, 128)

    h5 = export_h5(path, tmp_path / "m.h5")
    with h5py.File(h5) as f:
        np.testing.assert_array_equal(f["mask"][:], root["mask"][:])
        np.testing.assert_array_equal(f["features/flat_snr"][:], root["features/flat_snr"][:])
        np.testing.assert_array_equal(f["rejected_frames/high"][:], root["rejected_frames/high"][:])
        assert '"lam": 7.0' in f.attrs["parameters"]
    with pytest.raises(InputError, match="exists already"):
        export_h5(path, h5)
    with pytest.raises(InputError, match="not an rmm-dask mask store|no such mask store"):
        export_h5(tmp_path / "nothing.zarr", tmp_path / "x.h5")


def test_mismatched_runs_are_refused_before_anything_runs(calib):
    darks, flat = runs(calib)
    other = synthesize(SynthConfig(modules=1, cells=2, frames=30, flat_frames=30))
    with pytest.raises(InputError, match=r"/runs/other: medium run has modules \[0\], but the high run"):
        build_mask({**darks, "medium": as_dataset(other.dark["medium"], "other")}, flat)
    short = as_dataset(calib.dark["low"], "short", frames=5)
    with pytest.raises(InputError, match="/runs/short: low run has 5 frames per cell, at least 10 needed"):
        build_mask({**darks, "low": short}, flat)
    with pytest.raises(ValueError, match="gain stages"):
        build_mask({"ultra": darks["high"]})


def test_a_dark_run_given_as_flat_is_refused(calib, tmp_path):
    darks, _ = runs(calib)
    ds = build_mask(darks, as_dataset(calib.dark["high"], "flat-that-is-dark"))
    with pytest.raises(InputError, match="/runs/flat-that-is-dark: the flat run is not lit"):
        write_store(ds, tmp_path / "m.zarr", compute=lambda d: dask.compute(d, scheduler="sync"))
    assert list(tmp_path.iterdir()) == []


def test_dark_runs_of_different_lengths(calib):
    darks, flat = runs(calib)
    darks["medium"] = as_dataset(calib.dark["medium"], "short-medium", frames=20)
    ds = build_mask(darks, flat).compute(scheduler="sync")
    assert ds.rejected_frames_high.shape == (2, 2, 30) and ds.rejected_frames_medium.shape == (2, 2, 20)
    assert ds.mask.shape == (2, 3, 2, 512, 128)
