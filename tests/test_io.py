"""The I/O layer: EuXFEL RAW runs written in the facility's layout, read back lazily and exactly.

Every test writes real files (RAW runs with the package's writer, plain HDF5 stacks
with h5py) and reads them through the public readers; nothing is mocked but the
counters that prove nothing is read before compute.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import cloudpickle
import dask
import h5py
import numpy as np
import pytest

from rmm_dask.detectors import description, get_detector
from rmm_dask.errors import InputError
from rmm_dask.io import euxfel, open_run
from rmm_dask.synth import EXPECTED, GAINS, Defect, SynthConfig, synthesize
from rmm_dask.synth.on_disk import read_truth, write_synthetic
from rmm_dask.synth.write_euxfel import write_raw_run

from .conftest import raise_if_dask_computes

CONFIG = SynthConfig(modules=2, cells=3, frames=12, flat_frames=12, outlier_frame_fraction=0.1)
DET_ID = "SPB_DET_AGIPD1M-1"
Y, X = CONFIG.detector.module_shape


# ---------------------------------------------------------------------------- helpers and fixtures


@pytest.fixture(scope="module")
def calib():
    return synthesize(CONFIG)


@pytest.fixture(scope="module")
def written(calib, tmp_path_factory):
    """The synthetic set on disk uncompressed, plus the dark high run gzip-compressed."""
    out = tmp_path_factory.mktemp("synthetic")
    paths = write_synthetic(calib, out)
    run = calib.dark["high"]
    gzip_dir = out / "gzip" / "r0001"
    paths["dark-high-gzip"] = write_raw_run(gzip_dir, run.analog, run.gain, run_number=1, compression="gzip")
    return paths


def source(module):
    return f"{DET_ID}/DET/{module}CH0:xtdf"


def assemble(run_dir, *files):
    """A run directory made of the given files (copied)."""
    run_dir.mkdir(parents=True)
    for f in files:
        shutil.copy(f, run_dir / f.name)
    return run_dir


def write_stack(path, data, name="entry/data"):
    with h5py.File(path, "w") as f:
        f.create_dataset(name, data=data, chunks=(1, *data.shape[1:]))
    return path


def stack_data(n_frames=4, modules=None, dtype=np.float32):
    rng = np.random.default_rng(1)
    shape = (n_frames, Y, X) if modules is None else (n_frames, modules, Y, X)
    return rng.integers(0, 1000, shape).astype(dtype)


# ---------------------------------------------------------------------------- the writer


@pytest.mark.parametrize("key", ["dark-high", "dark-high-gzip"])
def test_written_run_opens_with_extra_data_and_validates(written, calib, key):
    from extra_data import RunDirectory
    from extra_data.components import AGIPD1M
    from extra_data.validation import RunValidator

    run_dir = written[key]
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "RAW-R0001-AGIPD00-S00000.h5",
        "RAW-R0001-AGIPD01-S00000.h5",
    ]
    RunValidator(str(run_dir)).validate()  # raises ValidationError listing the problems

    run = RunDirectory(run_dir)
    assert run.instrument_sources == {source(0), source(1)}
    assert list(run.train_ids) == list(range(10000, 10000 + CONFIG.frames))
    det = AGIPD1M(run, raw=True)
    assert set(det.frame_counts) == {CONFIG.cells}
    data = det["image.data"].ndarray(decompress_threads=1)  # (module, frame, 2, y, x), train-major
    assert data.shape == (2, CONFIG.frames * CONFIG.cells, 2, Y, X)
    analog = calib.dark["high"].analog.swapaxes(1, 2).reshape(2, -1, Y, X)
    gain = calib.dark["high"].gain.swapaxes(1, 2).reshape(2, -1, Y, X)
    np.testing.assert_array_equal(data[:, :, 0], analog)
    np.testing.assert_array_equal(data[:, :, 1], gain)
    cells = run[source(1), "image.cellId"].ndarray()
    assert cells.shape == (CONFIG.frames * CONFIG.cells, 1)
    np.testing.assert_array_equal(cells[:, 0], np.tile(np.arange(CONFIG.cells), CONFIG.frames))

    with h5py.File(run_dir / "RAW-R0001-AGIPD01-S00000.h5") as f:
        ds = f[f"INSTRUMENT/{source(1)}/image/data"]
        assert ds.chunks == (1, 2, Y, X)
        assert (ds.compression, ds.shuffle) == (("gzip", True) if key.endswith("gzip") else (None, False))
        assert f[f"INSTRUMENT/{source(1)}/image/trainId"].shape == (CONFIG.frames * CONFIG.cells, 1)
        assert f["METADATA/dataFormatVersion"][0] == b"1.2"


def test_extra_data_validate_command_line(written):
    done = subprocess.run(
        [sys.executable, "-m", "extra_data.validation", str(written["flat"])], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No problems found" in done.stdout


def test_sequence_files_and_refusal_to_overwrite(calib, tmp_path):
    run = calib.dark["low"]
    run_dir = write_raw_run(tmp_path / "r0007", run.analog, run.gain, run_number=7, trains_per_file=5)
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == [f"RAW-R0007-AGIPD{m:02d}-S{s:05d}.h5" for m in range(2) for s in range(3)]
    ds = open_run(run_dir)
    np.testing.assert_array_equal(ds.analog.values, run.analog)
    assert ds.attrs["run"] == 7 and len(ds.attrs["files"]) == 6
    with pytest.raises(InputError, match="r0007: exists and is not an empty directory"):
        write_raw_run(run_dir, run.analog, run.gain, run_number=7)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial run left behind


# ---------------------------------------------------------------------------- the reader


@pytest.mark.parametrize("cells_per_chunk", [1, 2])
@pytest.mark.parametrize("key", ["dark-high", "dark-high-gzip"])
def test_open_run_returns_the_written_arrays(written, calib, key, cells_per_chunk):
    ds = open_run(written[key], cells_per_chunk=cells_per_chunk)
    assert ds.analog.dims == ds.gain.dims == ("module", "cell", "frame", "y", "x")
    assert ds.analog.dtype == ds.gain.dtype == np.uint16
    assert ds.analog.data.chunks == ((1, 1), (1, 1, 1) if cells_per_chunk == 1 else (2, 1), (12,), (Y,), (X,))
    loaded = ds.compute()
    np.testing.assert_array_equal(loaded.analog.values, calib.dark["high"].analog)
    np.testing.assert_array_equal(loaded.gain.values, calib.dark["high"].gain)

    np.testing.assert_array_equal(ds.module, [0, 1])
    np.testing.assert_array_equal(ds.cell, [0, 1, 2])
    np.testing.assert_array_equal(ds.frame, np.arange(12))
    np.testing.assert_array_equal(ds.train_id, np.arange(10000, 10012))
    assert ds.train_id.dims == ("frame",) and ds.train_id.dtype == np.uint64
    np.testing.assert_array_equal(ds.pulse_id, [0, 1, 2])
    assert ds.pulse_id.dims == ("cell",)
    for name in ("module", "cell", "frame"):
        assert ds[name].dtype.kind == "i"
    assert ds.attrs["detector"] == "AGIPD1M"
    assert ds.attrs["source"] == DET_ID
    assert ds.attrs["path"] == str(written[key])
    assert ds.attrs["run"] == 1
    assert ds.attrs["format"] == "euxfel-raw"
    assert ds.attrs["files"] == [str(written[key] / f"RAW-R0001-AGIPD{m:02d}-S00000.h5") for m in (0, 1)]
    assert ds.attrs["notes"] == ["2 of AGIPD1M's 16 modules in the run; no data source for modules 2-15"]


class _SpyID:
    """Stands in for a pixel dataset's low-level ``DatasetID``: records each ``read`` and
    passes it on (every other attribute is the real one's)."""

    def __init__(self, dsid, name: str, reads: list):
        self._dsid, self._name, self._reads = dsid, name, reads

    def read(self, *args, **kwargs):
        self._reads.append(self._name)
        return self._dsid.read(*args, **kwargs)

    def __getattr__(self, attr):
        return getattr(self._dsid, attr)


@pytest.fixture
def pixel_reads(monkeypatch):
    """The HDF5 reads of pixel data (``.../image/data``), one entry per ``DatasetID.read``.

    The reader reads through h5py's low-level ``DatasetID.read`` (an extension type whose
    methods cannot be replaced), so the spy replaces ``Dataset.id`` of pixel datasets by a
    recording stand-in; h5py's own high-level reads go through ``id.read`` too.
    """
    reads = []
    real_id = h5py.Dataset.id

    def spied_id(self):
        dsid = real_id.fget(self)
        name = h5py.h5i.get_name(dsid) or b""
        return _SpyID(dsid, name.decode(), reads) if name.endswith(b"image/data") else dsid

    monkeypatch.setattr(h5py.Dataset, "id", property(spied_id))
    return reads


def test_pixel_read_spy_sees_the_readers_reads(written, pixel_reads):
    """The spy is not blind: a low-level read as the reader makes it, and a high-level slice, are both recorded."""
    dataset = f"INSTRUMENT/{source(0)}/image/data"
    with h5py.File(written["dark-high"] / "RAW-R0001-AGIPD00-S00000.h5", "r") as f:
        ds = f[dataset]
        space = ds.id.get_space()
        space.select_hyperslab((0, 0, 0, 0), (1, 2, Y, X))
        frame = np.empty((1, 2, Y, X), np.uint16)
        ds.id.read(h5py.h5s.create_simple(frame.shape), space, frame)
        assert pixel_reads == ["/" + dataset]
        np.testing.assert_array_equal(ds[0], frame[0])
    assert pixel_reads == ["/" + dataset] * 2


def test_open_is_lazy_and_reads_each_block_once(written, pixel_reads, monkeypatch):
    """No pixel read and no compute at open or while building a reduction; on compute one
    read per block, and one HDF5 read per frame written (each frame holds both planes)."""
    blocks = []
    real_read = euxfel._read_raw_block

    def counting_read(block):
        blocks.append((block.datasets[0], block.positions))
        return real_read(block)

    monkeypatch.setattr(euxfel, "_read_raw_block", counting_read)

    with raise_if_dask_computes():
        ds = open_run(written["dark-high-gzip"], cells_per_chunk=2)
        total = ds.analog.astype("f8").sum() + ds.gain.isel(cell=0).mean()
        ds.analog.isel(module=1, frame=slice(0, 4))
    assert pixel_reads == [] and blocks == []
    with pytest.raises(AssertionError, match="something was computed"), raise_if_dask_computes():
        total.compute()

    both = ds.compute(scheduler="sync")  # analog and gain: slices of one read
    per_module = CONFIG.cells * CONFIG.frames  # frames each module's file holds
    assert sorted(pixel_reads) == sorted(f"/INSTRUMENT/{source(m)}/image/data" for m in range(CONFIG.modules) for _ in range(per_module))
    assert sorted(blocks) == sorted((f"INSTRUMENT/{source(m)}/image/data", p) for m in (0, 1) for p in ((0, 1), (2,)))
    assert both.analog.shape == (2, 3, 12, Y, X)


def test_graph_pickles_and_computes_in_other_processes(written, calib):
    ds = open_run(written["dark-high-gzip"])
    graph = ds.analog.data.__dask_graph__()
    assert len(cloudpickle.dumps(graph)) < 100_000  # paths and indices, no data and no open files
    with dask.config.set(scheduler="processes", num_workers=2):
        part = ds.isel(module=[1], cell=[0, 2]).compute()
    np.testing.assert_array_equal(part.analog.values, calib.dark["high"].analog[[1]][:, [0, 2]])
    np.testing.assert_array_equal(part.gain.values, calib.dark["high"].gain[[1]][:, [0, 2]])


def test_cell_ids_in_sequence_order_and_module_selection(calib, tmp_path):
    run = calib.flat
    run_dir = write_raw_run(tmp_path / "r0004", run.analog, run.gain, run_number=4, cell_ids=[7, 3, 12])
    ds = open_run(run_dir, modules=[1])
    np.testing.assert_array_equal(ds.cell, [7, 3, 12])
    np.testing.assert_array_equal(ds.module, [1])
    np.testing.assert_array_equal(ds.analog.sel(cell=3).values, run.analog[1:, 1])
    assert ds.attrs["notes"] == [] and ds.attrs["files"] == [str(run_dir / "RAW-R0004-AGIPD01-S00000.h5")]
    with pytest.raises(InputError, match=r"no data source for module\(s\) \[5\]"):
        open_run(run_dir, modules=[1, 5])


def test_trains_missing_in_a_module_are_dropped(calib, tmp_path):
    run = calib.dark["medium"]
    full = write_raw_run(tmp_path / "full", run.analog, run.gain, run_number=2)
    keep = np.setdiff1d(np.arange(12), [3, 4, 7])
    part = write_raw_run(
        tmp_path / "part",
        run.analog[1:, :, keep],
        run.gain[1:, :, keep],
        run_number=2,
        train_ids=10000 + keep,
        module_numbers=[1],
        trains_per_file=4,  # module 1 in three sequence files, module 0 in one
    )
    run_dir = assemble(tmp_path / "r0002", full / "RAW-R0002-AGIPD00-S00000.h5", *sorted(part.iterdir()))
    ds = open_run(run_dir, cells_per_chunk=2)
    np.testing.assert_array_equal(ds.train_id, 10000 + keep)
    assert "dropped 3 of 12 trains missing in module 1" in ds.attrs["notes"]
    np.testing.assert_array_equal(ds.analog.values, run.analog[:, :, keep])
    np.testing.assert_array_equal(ds.gain.values, run.gain[:, :, keep])
    assert len(ds.attrs["files"]) == 4


def test_suspect_trains_are_dropped(calib, tmp_path):
    """Trains the DAQ flagged suspect (INDEX/flag = 0) are not used (EXtra-data's inc_suspect_trains=False)."""
    run = calib.dark["high"]
    run_dir = write_raw_run(tmp_path / "r0001", run.analog, run.gain, run_number=1)
    with h5py.File(run_dir / "RAW-R0001-AGIPD00-S00000.h5", "r+") as f:
        f["INDEX/flag"][[2, 11]] = 0
    with h5py.File(run_dir / "RAW-R0001-AGIPD01-S00000.h5", "r+") as f:
        f["INDEX/flag"][11] = 0
    ds = open_run(run_dir)
    keep = np.setdiff1d(np.arange(12), [2, 11])
    np.testing.assert_array_equal(ds.train_id, 10000 + keep)
    assert "dropped 1 of 11 trains flagged suspect (INDEX/flag = 0) in module 0" in ds.attrs["notes"]
    assert "ignored 1 of 12 trains flagged suspect (INDEX/flag = 0) in every module" in ds.attrs["notes"]
    np.testing.assert_array_equal(ds.analog.values, run.analog[:, :, keep])


def test_a_train_with_another_cell_sequence_is_dropped(calib, tmp_path):
    run = calib.dark["high"]
    cells = np.broadcast_to(np.arange(3), (2, 12, 3)).copy()
    cells[1, 5] = [0, 2, 1]  # module 1, train 10005: cells in another order
    run_dir = write_raw_run(tmp_path / "r0001", run.analog, run.gain, run_number=1, cell_ids=cells)
    ds = open_run(run_dir)
    keep = np.setdiff1d(np.arange(12), [5])
    np.testing.assert_array_equal(ds.train_id, 10000 + keep)
    (note,) = [n for n in ds.attrs["notes"] if n.startswith("dropped")]
    assert "dropped 1 of 12 trains of module 1 with a cell sequence other than the run's" in note
    assert "train 10005" in note and "RAW-R0001-AGIPD01-S00000.h5" in note
    np.testing.assert_array_equal(ds.analog.values, run.analog[:, :, keep])


def test_inconsistent_cell_sequences_everywhere(calib, tmp_path):
    run = calib.dark["high"]
    three = write_raw_run(tmp_path / "three", run.analog[:1], run.gain[:1], run_number=1)
    two = write_raw_run(tmp_path / "two", run.analog[1:, :2], run.gain[1:, :2], run_number=1, module_numbers=[1])
    run_dir = assemble(tmp_path / "r0001", *three.iterdir(), *two.iterdir())
    with pytest.raises(InputError) as err:
        open_run(run_dir)
    message = str(err.value)
    assert str(run_dir) in message and "no train has the same cell sequence in every module" in message
    assert "RAW-R0001-AGIPD01-S00000.h5" in message and "2 frames, cells 0..1" in message


# ---------------------------------------------------------------------------- errors


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(InputError, match="nowhere: no such file or directory"):
        open_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no \.h5 files"):
        open_run(tmp_path / "empty")


def test_a_raw_file_instead_of_its_run(written):
    path = written["flat"] / "RAW-R0004-AGIPD00-S00000.h5"
    with pytest.raises(InputError, match=r"S00000\.h5: is one file of a EuXFEL run: open its run directory .*r0004"):
        open_run(path)


def test_truncated_raw_file(written, tmp_path):
    run_dir = assemble(tmp_path / "r0001", *sorted(written["dark-high"].iterdir()))
    victim = run_dir / "RAW-R0001-AGIPD01-S00000.h5"
    os.truncate(victim, victim.stat().st_size // 2)
    with pytest.raises(InputError, match=r"RAW-R0001-AGIPD01-S00000\.h5: truncated HDF5 file"):
        open_run(run_dir)


def test_file_damaged_after_open_fails_at_compute_naming_it(written, tmp_path):
    run_dir = assemble(tmp_path / "r0001", *sorted(written["dark-high"].iterdir()))
    ds = open_run(run_dir)
    victim = run_dir / "RAW-R0001-AGIPD00-S00000.h5"
    os.truncate(victim, victim.stat().st_size // 2)
    with pytest.raises(InputError, match=r"RAW-R0001-AGIPD00-S00000\.h5: cannot read INSTRUMENT/.*/image/data"):
        ds.analog.isel(module=0, cell=0).compute(scheduler="sync")


def test_non_hdf5_files(written, tmp_path):
    run_dir = assemble(tmp_path / "r0001", *sorted(written["dark-high"].iterdir()))
    (run_dir / "RAW-R0001-AGIPD02-S00000.h5").write_text("not HDF5 at all\n" * 100)
    with pytest.raises(InputError, match=r"RAW-R0001-AGIPD02-S00000\.h5: not an HDF5 file"):
        open_run(run_dir)
    with pytest.raises(InputError, match=r"RAW-R0001-AGIPD02-S00000\.h5: not an HDF5 file"):
        open_run(run_dir / "RAW-R0001-AGIPD02-S00000.h5", dataset="/data")


def test_hdf5_file_without_detector_sources(tmp_path):
    run_dir = tmp_path / "r0003"
    run_dir.mkdir()
    write_stack(run_dir / "stack.h5", stack_data())
    with pytest.raises(InputError, match=r"r0003: cannot open as a EuXFEL run|stack\.h5: not a EuXFEL data file"):
        open_run(run_dir)


# ---------------------------------------------------------------------------- plain HDF5 stacks


def test_stack_one_module_float_with_nan(tmp_path):
    data = stack_data(5)
    data[2, 10, 20] = np.nan
    path = write_stack(tmp_path / "stack.h5", data)
    with raise_if_dask_computes():
        ds = open_run(path, dataset="/entry/data")
        ds.analog.mean("frame")
    assert "gain" not in ds
    assert ds.analog.dims == ("module", "cell", "frame", "y", "x") and ds.analog.dtype == np.float32
    np.testing.assert_array_equal(ds.module, [0])
    np.testing.assert_array_equal(ds.cell, [0])
    np.testing.assert_array_equal(ds.frame, np.arange(5))
    np.testing.assert_array_equal(ds.analog.values[0, 0], data)  # NaN == NaN for assert_array_equal
    assert ds.attrs == {
        "detector": "AGIPD1M",
        "detector_description": description(get_detector("AGIPD1M")),
        "source": "/entry/data",
        "path": str(path),
        "run": -1,
        "format": "hdf5-stack (module layout)",
        "notes": ["read as one memory cell: AGIPD1M's 352 cells are those of EuXFEL runs; for a stack of several, "
                  "describe it in a YAML file with cells: N (interleaved) or cell-ids: PATH"],
        "files": [str(path)],
        "chips": "from the description",
        "detector_source": "given: AGIPD1M",
        "detector_notes": [],
    }


def test_stack_of_modules_pickles_and_selects(tmp_path):
    data = stack_data(3, modules=4, dtype=np.uint16)
    path = write_stack(tmp_path / "modules.h5", data, name="data")
    ds = open_run(path, dataset="data", modules=[1, 3])
    assert ds.analog.data.chunks == ((1, 1), (1,), (3,), (Y,), (X,))
    cloudpickle.dumps(ds.analog.data.__dask_graph__())
    np.testing.assert_array_equal(ds.module, [1, 3])
    np.testing.assert_array_equal(ds.analog.values[:, 0], data[:, [1, 3]].swapaxes(0, 1))


@pytest.mark.parametrize(
    "data, dataset, problem",
    [
        (
            np.zeros((4, 256, 256), np.float32),
            "entry/data",
            r"dataset entry/data has shape \(4, 256, 256\); AGIPD1M data is \(frame, 512, 128\) or \(frame, module, 512, 128\)",
        ),
        (
            np.zeros((4, Y, X), np.float32),
            "entry/missing",
            r"no dataset entry/missing \(datasets with 3 or 4 dims: /entry/data\)",
        ),
        (np.zeros((1, Y, X), np.float32), "entry/data", r"dataset entry/data has 1 frame\(s\), need at least 2"),
        (np.zeros((4, Y, X), bool), "entry/data", r"dataset entry/data holds bool values, expected integer or float"),
        (np.zeros((4, Y, X), np.float32), "entry", r"entry is a group without data_NNNNNN datasets, not a stack of frames"),
        (np.zeros((4, Y), np.float32), "entry/data", r"dataset entry/data has shape \(4, 512\); AGIPD1M data is \(frame, 512, 128\)"),
    ],
)
def test_stack_errors_name_file_dataset_and_problem(tmp_path, data, dataset, problem):
    path = write_stack(tmp_path / "bad.h5", data) if data.ndim >= 3 else tmp_path / "bad.h5"
    if data.ndim < 3:
        with h5py.File(path, "w") as f:
            f["entry/data"] = data
    with pytest.raises(InputError, match=rf"bad\.h5: {problem}"):
        open_run(path, dataset=dataset)


def test_stack_file_needs_a_dataset_and_must_be_whole(tmp_path):
    path = write_stack(tmp_path / "stack.h5", stack_data(8))
    with pytest.raises(InputError, match=r"stack\.h5: is a file: a plain HDF5 stack of AGIPD1M needs the path of its"):
        open_run(path)
    os.truncate(path, path.stat().st_size - 1000)
    with pytest.raises(InputError, match=r"stack\.h5: truncated HDF5 file"):
        open_run(path, dataset="/entry/data")


# ---------------------------------------------------------------------------- synthetic sets on disk


def test_write_synthetic_and_read_truth(written, calib):
    assert {k: v.name for k, v in written.items() if k != "dark-high-gzip"} == {
        "dark-high": "r0001",
        "dark-medium": "r0002",
        "dark-low": "r0003",
        "flat": "r0004",
        "truth": "truth.h5",
    }
    assert written["dark-high"].parent.name == "raw"
    for key, run in [*((f"dark-{g}", calib.dark[g]) for g in GAINS), ("flat", calib.flat)]:
        ds = open_run(written[key])
        assert ds.attrs["run"] == int(written[key].name[1:])
        np.testing.assert_array_equal(ds.gain.values, run.gain)
    assert open_run(written["flat"]).frame.size == CONFIG.flat_frames

    truth = read_truth(written["truth"])
    np.testing.assert_array_equal(truth.defects, calib.truth.defects)
    np.testing.assert_array_equal(truth.edges, calib.truth.edges)
    assert set(truth.outlier_frames) == set(GAINS)
    for gain in GAINS:
        np.testing.assert_array_equal(truth.outlier_frames[gain], calib.truth.outlier_frames[gain])
        assert truth.outlier_frames[gain].dtype == bool
    with h5py.File(written["truth"]) as f:
        assert f.attrs["detector"] == "AGIPD1M" and f.attrs["cells"] == CONFIG.cells and f.attrs["seed"] == 0
        assert list(f.attrs["defect_names"]) == [k.name for k in Defect]
        assert list(f.attrs["defect_values"]) == [int(k) for k in Defect]
        assert list(f.attrs["expected_bits"]) == [int(EXPECTED[k]) for k in Defect]


def test_write_synthetic_refuses_float_and_read_truth_errors(calib, tmp_path):
    float_set = dataclasses.replace(calib, config=dataclasses.replace(CONFIG, dtype="float32"))
    with pytest.raises(ValueError, match="raw data is integer"):
        write_synthetic(float_set, tmp_path / "float")
    with pytest.raises(InputError, match="nothing.h5: no such file"):
        read_truth(tmp_path / "nothing.h5")
    write_stack(tmp_path / "other.h5", stack_data())
    with pytest.raises(InputError, match="other.h5: not a truth file: missing"):
        read_truth(tmp_path / "other.h5")
