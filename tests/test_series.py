"""A run is what the detector wrote: directories, globs, part files, one file per module.

Files are written in the real layouts with h5py (LAMBDA-like ``<acq>_m<k>_part<NNNNN>.nxs``
module files, HDF5 stacks split over numbered files, NXmx master and data files, a virtual
dataset) for small detectors described in YAML files of our own.
"""

import os
import pickle

import h5py
import numpy as np
import pytest
import zarr

from rmm_dask.cli import main
from rmm_dask.detectors import get_detector
from rmm_dask.errors import InputError
from rmm_dask.io import open_run
from rmm_dask.io.files import classify
from rmm_dask.io.hdf5 import _read_region, _Region
from rmm_dask.synth.write_hdf5 import write_nxmx

from .cli_errors import one_line_error
from .conftest import raise_if_dask_computes

DATA = "/entry/instrument/detector/data"
MASK = "/entry/instrument/detector/pixel_mask"
NY, NX = 16, 24
MODULES, PARTS, PER_PART = 3, 5, 4
HOT = (1, 5, 7)  #: (module index, y, x) of a hot pixel planted in module file m2


@pytest.fixture
def detector(tmp_path):
    """A small LAMBDA-like detector of our own: 3 modules, one file per module, counting."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        f"name: TINYMOD\nmodules: {MODULES}\nmodule-shape: [{NY}, {NX}]\nasic-shape: [8, 12]\ncounting: true\n"
        f"edge-width: 0\ndataset: {DATA}\npixel-mask: {MASK}\n"
    )
    return str(path)


def counts(seed=0, modules=MODULES, frames=PARTS * PER_PART):
    """Dark counts (module, frame, y, x), each module with its own level so that a mix-up shows, and a hot pixel."""
    rng = np.random.default_rng(seed)
    data = rng.poisson(1.0, (modules, frames, NY, NX)).astype(np.int32) + 10 * np.arange(modules, dtype=np.int32)[:, None, None, None]
    if modules > HOT[0]:
        data[HOT[0], :, HOT[1], HOT[2]] = rng.poisson(200.0, frames)
    return data


def pixel_masks(modules=MODULES):
    """A different manufacturer mask per module (bit 0 gap columns, bit 31 'virtual' on module k's row k)."""
    masks = np.zeros((modules, NY, NX), np.uint32)
    masks[:, :, 11:13] = 1
    for m in range(modules):
        masks[m, m, :] |= np.uint32(1 << 31)
    return masks


def write_module_parts(directory, data, masks=None, *, stem="scan", per_part=PER_PART, suffix=".nxs"):
    """``<stem>_m<k>_part<NNNNN><suffix>`` files as X-Spectrum LAMBDA writes them: each holds one
    module's (frame, y, x) counts and its pixel_mask."""
    directory.mkdir(parents=True, exist_ok=True)
    masks = pixel_masks(len(data)) if masks is None else masks
    paths = []
    for m in range(len(data)):
        for p, a in enumerate(range(0, data.shape[1], per_part)):
            path = directory / f"{stem}_m{m + 1}_part{p:05d}{suffix}"
            with h5py.File(path, "w") as f:
                f.create_dataset(DATA, data=data[m, a : a + per_part], chunks=(1, NY, NX))
                f[MASK] = masks[m]
            paths.append(path)
    return paths


def listing(directory):
    """Every entry of a directory with its size and modification time."""
    return sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(directory))


def read_tasks(ds):
    """The read tasks of a run's analog data: (function, region) of every block, as the reader registered them."""
    from rmm_dask.io.regions import frame_sources

    return [(source.reader, source.region) for source in frame_sources(ds.analog.data).ravel()]


# ---------------------------------------------------------------------------- file names


@pytest.mark.parametrize(
    "name, acquisition, module, part, kind",
    [
        ("scan_m1_part00000.nxs", "scan_m*_part*.nxs", 0, 0, "part"),
        ("scan_m3_part00004.nxs", "scan_m*_part*.nxs", 2, 4, "part"),
        ("dark_m2.nxs", "dark_m*.nxs", 1, None, "file"),
        ("r0003_master.h5", "r0003_master.h5", None, None, "master"),
        ("r0003_data_000002.h5", "r0003_data_*.h5", None, 2, "data"),
        ("stack_0012.h5", "stack_*.h5", None, 12, "running"),
        ("run.cxi", "run.cxi", None, None, "file"),
        ("farm_mixer.h5", "farm_mixer.h5", None, None, "file"),  # "_m" not followed by a number: no module
    ],
)
def test_file_names(name, acquisition, module, part, kind):
    f = classify(f"/data/{name}")
    assert (f.acquisition, f.module, f.part, f.kind) == (acquisition, module, part, kind)


# ---------------------------------------------------------------------------- module x part files


def test_module_and_part_files_join_into_one_lazy_run(tmp_path, detector):
    data = counts()
    paths = write_module_parts(tmp_path / "run", data)
    assert len(paths) == MODULES * PARTS
    before = listing(tmp_path / "run")
    with raise_if_dask_computes():
        ds = open_run(tmp_path / "run", detector)
    assert ds.analog.dims == ("module", "cell", "frame", "y", "x")
    assert ds.sizes == {"module": MODULES, "cell": 1, "frame": PARTS * PER_PART, "y": NY, "x": NX}
    assert ds.module.values.tolist() == [0, 1, 2]
    assert ds.attrs["files"] == sorted(str(p) for p in paths)
    assert ds.attrs["format"] == "hdf5-stack (module files layout)"
    # one read task per module; a task carries paths (strings), never an open file, and pickles
    tasks = read_tasks(ds)
    assert len(tasks) == MODULES
    for _, region in tasks:
        assert len(region.segments) == PARTS and all(isinstance(path, str) for path, *_ in region.segments)
        assert pickle.loads(pickle.dumps(region)).segments == region.segments
    values = ds.compute(scheduler="sync")
    expected = data.astype(np.float32)[:, None]  # (module, cell, frame, y, x)
    np.testing.assert_array_equal(values.analog.values, expected)
    np.testing.assert_array_equal(values.pixel_mask.values, pixel_masks())
    assert listing(tmp_path / "run") == before  # nothing written into the input directory, nothing touched


def test_glob_and_list_give_the_same_run(tmp_path, detector):
    data = counts(1)
    paths = write_module_parts(tmp_path / "run", data)
    by_dir = open_run(tmp_path / "run", detector)
    by_glob = open_run(str(tmp_path / "run" / "scan_m*_part*.nxs"), detector)
    shuffled = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))]
    by_list = open_run(shuffled, detector)
    for ds in (by_glob, by_list):
        assert ds.attrs["files"] == by_dir.attrs["files"]
        np.testing.assert_array_equal(ds.analog.values, by_dir.analog.values)
    assert by_glob.attrs["path"] == str(tmp_path / "run" / "scan_m*_part*.nxs")
    assert by_dir.attrs["path"] == str(tmp_path / "run")
    selected = open_run(tmp_path / "run", detector, modules=[2])
    np.testing.assert_array_equal(selected.analog.values[0, 0], data[2].astype(np.float32))
    np.testing.assert_array_equal(selected.pixel_mask.values[0], pixel_masks()[2])


def test_region_frames_read_those_frames_only(tmp_path, detector):
    data = counts(2)
    write_module_parts(tmp_path / "run", data)
    (read, region), *_ = read_tasks(open_run(tmp_path / "run", detector))
    assert read is _read_region
    head = region.frames(0, 6)  # part 0 (4 frames) and 2 frames of part 1
    assert isinstance(head, _Region) and head.shape == (6, NY, NX)
    assert [(os.path.basename(p), first, n) for p, _, first, n in head.segments] == [("scan_m1_part00000.nxs", 0, 4), ("scan_m1_part00001.nxs", 0, 2)]
    np.testing.assert_array_equal(_read_region(head)[0, 0], data[0, :6])
    middle = region.frames(5, 11)  # frames 1-3 of part 1 and 0-2 of part 2
    assert [(os.path.basename(p), first, n) for p, _, first, n in middle.segments] == [("scan_m1_part00001.nxs", 1, 3), ("scan_m1_part00002.nxs", 0, 3)]
    np.testing.assert_array_equal(_read_region(middle)[0, 0], data[0, 5:11])
    assert region.frames(0, 1000).shape == region.shape and region.frames(0, 1000).segments == region.segments
    assert region.shape == (PARTS * PER_PART, NY, NX)  # the region itself is unchanged
    with pytest.raises(ValueError, match="no frame"):
        region.frames(3, 3)


def test_parts_of_a_stack_split_over_numbered_files(tmp_path, detector):
    """Any stack with a running number: (frame, module, y, x) over files, joined in number order."""
    data = counts(3)
    run = tmp_path / "stack"
    run.mkdir()
    for i, a in enumerate(range(0, data.shape[1], 6)):  # 4 files of 6, 6, 6 and 2 frames: parts may differ in length
        with h5py.File(run / f"dark_{i + 1:04d}.h5", "w") as f:
            f["frames"] = np.moveaxis(data[:, a : a + 6], 0, 1)
    (run / "notes.txt").write_text("operator's notes: not part of the run\n")
    ds = open_run(run, detector, dataset="frames")
    assert ds.attrs["format"] == "hdf5-stack (modules layout)" and len(ds.attrs["files"]) == 4
    np.testing.assert_array_equal(ds.analog.values[:, 0], data.astype(np.float32))
    (_, region), *_ = read_tasks(ds)
    np.testing.assert_array_equal(_read_region(region.frames(0, 8))[0, 0], data[0, :8])


def test_nxmx_master_with_its_data_files_in_a_directory(tmp_path):
    """A directory with a master and its data files is the master; its data files alone are parts."""
    desc = tmp_path / "tiny-eiger.yaml"
    desc.write_text(
        f"name: TINYEIGER\nmodules: 2\nmodule-shape: [{NY}, {NX}]\nasic-shape: [8, 12]\ncounting: true\nedge-width: 0\n"
        f"module-grid: [2, 1]\nmodule-gap: [3, 0]\ndataset: /entry/data\npixel-mask: {MASK}\n"
    )
    det = get_detector(str(desc))
    frames = np.random.default_rng(4).poisson(2.0, (7, *det.frame_shape)).astype(np.int32)
    master = write_nxmx(tmp_path / "run" / "r0003_master.h5", frames, det, frames_per_file=3)
    by_master = open_run(master, det)
    with raise_if_dask_computes():
        by_dir = open_run(tmp_path / "run", det)
    assert by_dir.attrs["files"] == by_master.attrs["files"] and len(by_dir.attrs["files"]) == 4
    expected = np.moveaxis(det.split_frame(frames), 1, 0).astype(np.float32)
    np.testing.assert_array_equal(by_dir.analog.values[:, 0], expected)
    np.testing.assert_array_equal(by_dir.pixel_mask.values, det.split_frame(det.gap_mask().astype(np.uint32)))
    master.unlink()
    data_only = open_run(tmp_path / "run", det)  # r0003_data_000001.h5 ... as parts of a series
    np.testing.assert_array_equal(data_only.analog.values[:, 0], expected)
    (tmp_path / "run" / "r0003_data_000002.h5").unlink()
    with pytest.raises(InputError, match=r"run: part 2 missing from the series r0003_data_\*\.h5"):
        open_run(tmp_path / "run", det)


def test_virtual_dataset_lists_its_source_files(tmp_path, detector):
    data = counts(5, modules=1, frames=12)[0]
    run = tmp_path / "vds"
    run.mkdir()
    layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
    for i, name in enumerate(("src_a.h5", "src_b.h5")):
        with h5py.File(run / name, "w") as f:
            f["frames"] = data[6 * i : 6 * i + 6]
        layout[6 * i : 6 * i + 6] = h5py.VirtualSource(name, "frames", shape=(6, NY, NX))
    with h5py.File(run / "all.h5", "w") as f:
        f.create_virtual_dataset("frames", layout)
    ds = open_run(run / "all.h5", detector, dataset="frames")
    assert ds.attrs["files"] == [str(run / n) for n in ("all.h5", "src_a.h5", "src_b.h5")]
    np.testing.assert_array_equal(ds.analog.values[0, 0], data.astype(np.float32))
    from rmm_dask.pipeline import _describe  # what the store records of an input run

    assert [f["path"] for f in _describe(ds)["files"]] == ds.attrs["files"]
    (run / "src_b.h5").unlink()  # HDF5 would read its frames as fill values
    with pytest.raises(InputError, match=r"all\.h5: virtual dataset /frames has a missing source file src_b\.h5"):
        open_run(run / "all.h5", detector, dataset="frames")


# ---------------------------------------------------------------------------- refusals


@pytest.fixture
def run_dir(tmp_path):
    return tmp_path / "run"


def test_a_missing_part_is_named(run_dir, detector):
    write_module_parts(run_dir, counts())
    for m in range(MODULES):
        (run_dir / f"scan_m{m + 1}_part00002.nxs").unlink()
    with pytest.raises(InputError, match=r"run: part 2 missing from the series scan_m\*_part\*\.nxs \(between scan_m1_part00001\.nxs and scan_m1_part00003\.nxs\)"):
        open_run(run_dir, detector)


def test_a_missing_first_part_is_named(run_dir, detector):
    write_module_parts(run_dir, counts())
    for m in range(MODULES):
        (run_dir / f"scan_m{m + 1}_part00000.nxs").unlink()
    with pytest.raises(InputError, match=r"run: part 0 missing: the series scan_m\*_part\*\.nxs starts at part 1"):
        open_run(run_dir, detector)


def test_one_module_file_of_a_part_missing(run_dir, detector):
    write_module_parts(run_dir, counts())
    (run_dir / "scan_m3_part00004.nxs").unlink()
    with pytest.raises(InputError, match=r"run: module file m3 of part 4 missing \(scan_m3_part00004\.nxs\)"):
        open_run(run_dir, detector)
    (run_dir / "scan_m2_part00001.nxs").unlink()
    with pytest.raises(InputError, match=r"part 1 missing from the series .* \(between scan_m2_part00000\.nxs and scan_m2_part00002\.nxs\)"):
        open_run(run_dir, detector)


def test_a_whole_module_missing(run_dir, detector):
    write_module_parts(run_dir, counts())
    for p in range(PARTS):
        (run_dir / f"scan_m2_part{p:05d}.nxs").unlink()
    with pytest.raises(InputError, match=r"run: module file\(s\) m2 missing \(found m1, m3; the detector has 3 modules\)"):
        open_run(run_dir, detector)


def test_a_module_beyond_the_detector(run_dir, detector):
    write_module_parts(run_dir, counts(modules=4))
    with pytest.raises(InputError, match=r"scan_m4_part00000\.nxs: is named as module m4; the detector has modules m1\.\.m3"):
        open_run(run_dir, detector)


def test_a_doubled_module_file(run_dir, tmp_path, detector):
    paths = write_module_parts(run_dir, counts())
    os.link(run_dir / "scan_m2_part00003.nxs", run_dir / "scan_m2_part3.nxs")  # the same part under another number width
    with pytest.raises(InputError, match=r"scan_m2_part3\.nxs: doubles scan_m2_part00003\.nxs \(both part 3 of module m2\)"):
        open_run(run_dir, detector)
    with pytest.raises(InputError, match=r"scan_m1_part00000\.nxs: given twice"):
        open_run([*paths, paths[0]], detector)
    single = tmp_path / "single"
    single.mkdir()
    data = counts(modules=1)[0]
    for name in ("dark_m1.nxs", "dark_m01.nxs"):
        with h5py.File(single / name, "w") as f:
            f[DATA] = data
    with pytest.raises(InputError, match=r"dark_m01\.nxs: doubles dark_m1\.nxs: both are module m1, and neither name has a part number"):
        open_run(single, detector)


def test_parts_of_different_frame_shape_or_dtype_name_both_files(run_dir, detector):
    write_module_parts(run_dir, counts())
    victim = run_dir / "scan_m2_part00003.nxs"
    with h5py.File(victim, "r+") as f:
        del f[DATA]
        f[DATA] = np.zeros((PER_PART, NY, NX), np.int16)
    with pytest.raises(InputError, match=rf"{victim}: dataset {DATA} holds int16 frames of shape \({NY}, {NX}\), but .*scan_m1_part00000\.nxs holds int32"):
        open_run(run_dir, detector)
    with h5py.File(victim, "r+") as f:
        del f[DATA]
        f[DATA] = np.zeros((PER_PART, NY, NX + 2), np.int32)
    with pytest.raises(InputError, match=rf"scan_m2_part00003\.nxs: dataset .* of shape \({NY}, {NX + 2}\), but .*scan_m1_part00000\.nxs holds int32 frames of shape \({NY}, {NX}\)"):
        open_run(run_dir, detector)


def test_module_files_of_different_lengths_or_masks(run_dir, detector):
    write_module_parts(run_dir, counts())
    victim = run_dir / "scan_m3_part00004.nxs"
    with h5py.File(victim, "r+") as f:
        data = f[DATA][:2]
        del f[DATA]
        f[DATA] = data
    with pytest.raises(InputError, match=r"scan_m3_part00000\.nxs: module m3 has 18 frames, module m1 .* has 20"):
        open_run(run_dir, detector)
    with h5py.File(victim, "r+") as f:
        del f[DATA]
        f[DATA] = np.zeros((PER_PART, NY, NX), np.int32)
    with h5py.File(run_dir / "scan_m2_part00000.nxs", "r+") as f:
        del f[MASK]
    with pytest.raises(InputError, match=rf"scan_m2_part00000\.nxs: has no pixel mask {MASK}, but .*scan_m1_part00000\.nxs has one"):
        open_run(run_dir, detector)


def test_a_module_file_must_hold_one_module(run_dir, detector):
    run_dir.mkdir()
    for m in range(MODULES):
        with h5py.File(run_dir / f"dark_m{m + 1}.nxs", "w") as f:
            f[DATA] = np.zeros((4, MODULES, NY, NX), np.int32)
    with pytest.raises(InputError, match=rf"dark_m1\.nxs: dataset {DATA} has shape \(4, 3, {NY}, {NX}\); one module's file"):
        open_run(run_dir, detector)
    with pytest.raises(InputError, match=r"dark_m1\.nxs: module file\(s\) m2, m3 missing \(found m1; the detector has 3 modules\)"):
        open_run(run_dir / "dark_m1.nxs", detector)


def test_mixed_acquisitions_in_one_directory(run_dir, detector):
    write_module_parts(run_dir, counts())
    write_module_parts(run_dir, counts(), stem="other")
    with pytest.raises(InputError, match=r"run: holds files of more than one acquisition: other_m\*_part\*\.nxs \(other_m1_part00000\.nxs\) and scan_m\*_part\*\.nxs \(scan_m1_part00000\.nxs\)"):
        open_run(run_dir, detector)


def test_empty_directory_glob_matching_nothing_and_no_hdf5(tmp_path, detector):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: empty directory"):
        open_run(tmp_path / "empty", detector)
    with pytest.raises(InputError, match=r"scan_m\*\.nxs: no file matches the pattern"):
        open_run(str(tmp_path / "empty" / "scan_m*.nxs"), detector)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "README").write_text("nothing here\n")
    with pytest.raises(InputError, match=r"text: no HDF5 files .* \(it holds README\)"):
        open_run(tmp_path / "text", detector)
    write_module_parts(tmp_path / "run", counts())
    with pytest.raises(InputError, match=r"run: is a directory among other paths"):
        open_run([tmp_path / "run", tmp_path / "run" / "scan_m1_part00000.nxs"], detector)


# ---------------------------------------------------------------------------- the command line


def test_rmm_mask_on_a_directory_of_module_and_part_files(tmp_path, detector, capsys):
    run = tmp_path / "dark"
    data = counts(7)
    write_module_parts(run, data)
    before = listing(run)
    out = tmp_path / "m.zarr"
    assert main(["mask", "--dark-high", str(run), "--detector", detector, "--out", str(out), "--workers", "1"]) == 0
    assert listing(run) == before  # the input directory is untouched
    root = zarr.open_group(str(out), mode="r")
    mask = root["mask"][:]  # (module, gain, cell, y, x)
    assert mask.shape == (MODULES, 1, 1, NY, NX)
    m, y, x = HOT
    assert np.argwhere(mask != 0).tolist() == [[m, 0, 0, y, x]]  # the hot pixel of file m2, in module 1, and nothing else
    np.testing.assert_array_equal(root["layers/manufacturer"][:], pixel_masks())  # each module file's own plane
    inputs = root.attrs["inputs"]["dark-high"]
    assert len(inputs["files"]) == MODULES * PARTS and inputs["frames"] == PARTS * PER_PART


def test_run_options_take_a_glob_or_several_paths(tmp_path, detector):
    """`--dark-high 'DIR/scan_m*_part*.nxs'` (quoted: rmm expands it) and `--flat DIR/*` (the shell's list)."""
    from rmm_dask.cli import _open_runs, _setup_config, build_parser

    write_module_parts(tmp_path / "dark", counts(8))
    write_module_parts(tmp_path / "flat", counts(9))
    flat_files = sorted(str(p) for p in (tmp_path / "flat").iterdir())
    args = build_parser().parse_args(
        ["mask", "--dark-high", str(tmp_path / "dark" / "scan_m*_part*.nxs"), "--flat", *flat_files, "--detector", detector, "--out", str(tmp_path / "m.zarr")]
    )
    assert args.flat == flat_files
    _setup_config(args)
    with raise_if_dask_computes():
        darks, flat = _open_runs(args, detector)
    assert darks["high"].attrs["files"] == sorted(str(p) for p in (tmp_path / "dark").iterdir())
    assert flat.attrs["files"] == flat_files and flat.sizes["module"] == MODULES
    np.testing.assert_array_equal(flat.analog.values[:, 0], counts(9).astype(np.float32))
    # `rmm submit` hands the same run to the batch job: the pattern as given (absolute), every path in order
    from rmm_dask.cli import _mask_argv
    from rmm_dask.submit import job_script

    argv = _mask_argv(args)
    assert argv[argv.index("--dark-high") + 1] == str(tmp_path / "dark" / "scan_m*_part*.nxs")
    i = argv.index("--flat")
    assert argv[i + 1 : i + 1 + len(flat_files)] == flat_files
    again = build_parser().parse_args(["mask", *argv])
    assert again.dark_high == args.dark_high and again.flat == args.flat
    script, _ = job_script(argv, tmp_path / "m.zarr")
    assert "'" + str(tmp_path / "dark" / "scan_m*_part*.nxs") + "'" in script  # quoted: the job's shell does not expand it


def test_rmm_mask_refuses_a_gap_with_one_line(tmp_path, detector, capsys):
    run = tmp_path / "dark"
    write_module_parts(run, counts())
    (run / "scan_m2_part00002.nxs").unlink()
    out = tmp_path / "m.zarr"
    assert main(["mask", "--dark-high", str(run), "--detector", detector, "--out", str(out)]) == 2
    one_line_error(capsys, str(run), "part 2 missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dark", "tiny.yaml"]
    assert main(["mask", "--dark-high", str(run / "nothing*.nxs"), "--detector", detector, "--out", str(out)]) == 2
    one_line_error(capsys, "nothing*.nxs", "no file matches the pattern")
