"""Issue 20, inputs: a run is proven complete, of one piece and lit before any worker starts.

Each refusal is checked where the user meets it, `rmm mask` in-process (exit code 2, one line
naming the file and the problem, no store, the inputs untouched), on real files: EuXFEL RAW
runs written with the package's writer and then damaged as in the field (a sequence file
missing, a file of another run copied in), HDF5 virtual datasets and NXmx links whose
targets lack the frames, and dark runs of a detector that was off. The legitimate cases
beside them (a silent counting dark, a stuck ASIC, NaN gap pixels, a run whose modules are
split into different numbers of files, trains the DAQ skipped) are opened or checked too.
"""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest

from rmm_dask.cli import main
from rmm_dask.errors import InputError
from rmm_dask.io import open_run
from rmm_dask.signalcheck import MAX_CONSTANT, check_signal, constant_fraction
from rmm_dask.synth.write_euxfel import write_raw_run

from .cli_errors import one_line_error
from .conftest import raise_if_dask_computes

SMALL = """\
name: SMALL64
modules: 1
module-shape: [64, 64]
asic-shape: [32, 32]
gain-stages: [high]
gain: none
cells: 1
counting: {counting}
edge-width: 1
dataset: {dataset}
"""


def _frames(rng, shape, level=1000.0, noise=5.0) -> np.ndarray:
    return (level + noise * rng.standard_normal(shape)).round().astype(np.uint16)


def _raw_run(run_dir, run_number, *, frames=12, per_file=4, first_train=10000, seed=0, **kw):
    """A 2-module, 1-cell AGIPD RAW run of ``frames`` trains in sequence files of ``per_file`` trains."""
    rng = np.random.default_rng(seed)
    analog = _frames(rng, (2, 1, frames, 512, 128))
    gain = _frames(rng, (2, 1, frames, 512, 128), level=5000.0)
    return write_raw_run(run_dir, analog, gain, run_number=run_number, first_train_id=first_train,
                         trains_per_file=per_file, **kw)


def _mask_refused(capsys, tmp_path, run, *needles, extra=()):
    """`rmm mask --dark-high RUN` exits 2 with one line holding the needles; no store, the run unchanged."""
    before = sorted(os.listdir(run)) if os.path.isdir(run) else None
    out = tmp_path / "m.zarr"
    assert main(["mask", "--dark-high", str(run), "--out", str(out), "--workers", "1", *extra]) == 2
    line = one_line_error(capsys, "rmm mask: ", *needles)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".m.zarr")]
    if before is not None:
        assert sorted(os.listdir(run)) == before  # nothing written into the run
    return line


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory):
    """Run 2: modules AGIPD00 and AGIPD01 in sequence files S00000-S00002 of 4 trains each."""
    return _raw_run(tmp_path_factory.mktemp("raw") / "r0002", 2)


def _copy(run, tmp_path, name="r0002"):
    return shutil.copytree(run, tmp_path / name)


# ---------------------------------------------------------------------------- 1. sequence files missing


def test_a_sequence_file_missing_from_the_middle_is_refused(raw_run, tmp_path, capsys):
    run = _copy(raw_run, tmp_path)
    (run / "RAW-R0002-AGIPD00-S00001.h5").unlink()
    _mask_refused(capsys, tmp_path, run, str(run),
                  "RAW-R0002-AGIPD00-S00001.h5 missing: sequences S00000, S00002 of AGIPD00 present")


def test_a_first_sequence_file_missing_is_refused(raw_run, tmp_path):
    run = _copy(raw_run, tmp_path)
    for m in (0, 1):
        (run / f"RAW-R0002-AGIPD{m:02d}-S00000.h5").unlink()
    with pytest.raises(InputError, match=r"RAW-R0002-AGIPD00-S00000\.h5 missing: sequences S00001-S00002 of AGIPD00"):
        open_run(run)


def test_a_module_without_its_last_sequence_file_is_refused(raw_run, tmp_path, capsys):
    run = _copy(raw_run, tmp_path)
    (run / "RAW-R0002-AGIPD01-S00002.h5").unlink()
    _mask_refused(capsys, tmp_path, run, "RAW-R0002-AGIPD01-S00002.h5 missing: AGIPD01 has sequences S00000-S00001"
                  " with trains up to 10007, AGIPD00 has S00000-S00002 with trains up to 10011")


def test_complete_sequences_are_read_lazily_and_whole(raw_run):
    with raise_if_dask_computes():
        ds = open_run(raw_run)
    assert ds.sizes["frame"] == 12 and len(ds.attrs["files"]) == 6
    assert not [n for n in ds.attrs["notes"] if "train" in n]


def test_train_ids_the_daq_skipped_are_a_note(tmp_path):
    keep = np.r_[0:4, 7:12]
    rng = np.random.default_rng(1)
    analog = _frames(rng, (1, 1, keep.size, 512, 128))
    run = write_raw_run(tmp_path / "r0005", analog, analog, run_number=5, train_ids=10000 + keep, trains_per_file=4)
    ds = open_run(run)
    note = "3 train ids between 10000 and 10011 are in no file of the run (the longest gap: 10004..10006)"
    assert note in " ".join(ds.attrs["notes"])
    np.testing.assert_array_equal(ds.train_id, 10000 + keep)
    np.testing.assert_array_equal(ds.analog.values, analog)


# ---------------------------------------------------------------------------- 2. files of another run


@pytest.mark.parametrize("renamed", [False, True], ids=["own-name", "renamed"])
def test_a_file_of_another_run_is_refused(raw_run, tmp_path, capsys, renamed):
    other = _raw_run(tmp_path / "r0009", 9, frames=4, first_train=90000, seed=9)
    run = _copy(raw_run, tmp_path)
    name = "RAW-R0002-AGIPD00-S00003.h5" if renamed else "RAW-R0009-AGIPD00-S00000.h5"
    shutil.copy(other / "RAW-R0009-AGIPD00-S00000.h5", run / name)
    why = "its METADATA/runNumber is 9" if renamed else "its name says R0009"
    _mask_refused(capsys, tmp_path, run, f"{run / name}: is a file of run 9 ({why}),"
                  " not of run 2 (the directory r0002)")


def test_a_file_of_another_proposal_is_refused(raw_run, tmp_path, capsys):
    run = shutil.copytree(raw_run, tmp_path / "p700000" / "raw" / "r0002")
    other = _raw_run(tmp_path / "elsewhere" / "r0002", 2, frames=4, first_train=50000, proposal=801234)
    shutil.copy(other / "RAW-R0002-AGIPD00-S00000.h5", run / "RAW-R0002-AGIPD00-S00003.h5")
    _mask_refused(capsys, tmp_path, run, "RAW-R0002-AGIPD00-S00003.h5: is a file of proposal 801234 (its METADATA/"
                  "proposalNumber), not of proposal 700000 (the directory p700000)")


def test_a_sequence_file_copied_under_another_sequence_number_is_refused(raw_run, tmp_path):
    run = _copy(raw_run, tmp_path)
    shutil.copy(run / "RAW-R0002-AGIPD00-S00000.h5", run / "RAW-R0002-AGIPD00-S00003.h5")
    with pytest.raises(InputError, match="S00003.h5: is named as sequence 3 but its METADATA/sequenceNumber is 0"):
        open_run(run)


def test_trains_in_two_sequence_files_are_refused(raw_run, tmp_path, capsys):
    run = _copy(raw_run, tmp_path)
    copy = run / "RAW-R0002-AGIPD00-S00003.h5"
    shutil.copy(run / "RAW-R0002-AGIPD00-S00000.h5", copy)
    with h5py.File(copy, "r+") as f:  # consistent with its new name: only its trains give it away
        f["METADATA/sequenceNumber"][0] = 3
    _mask_refused(capsys, tmp_path, run, f"{copy}: holds 4 trains of SPB_DET_AGIPD1M-1/DET/0CH0:xtdf (10000..10003)"
                  " that RAW-R0002-AGIPD00-S00000.h5 holds too")


def test_a_later_sequence_with_earlier_trains_is_refused(raw_run, tmp_path):
    """Another acquisition's file under the run's and proposal's numbers: its trains come before those of S00002."""
    run = _copy(raw_run, tmp_path)
    other = _raw_run(tmp_path / "other" / "r0002", 2, frames=4, first_train=9000)
    copy = shutil.copy(other / "RAW-R0002-AGIPD01-S00000.h5", run / "RAW-R0002-AGIPD01-S00003.h5")
    with h5py.File(copy, "r+") as f:
        f["METADATA/sequenceNumber"][0] = 3
    with pytest.raises(InputError, match=r"S00003\.h5: holds trains 9000\.\.9003, but RAW-R0002-AGIPD01-S00002\.h5, an"
                       r" earlier sequence of SPB_DET_AGIPD1M-1/DET/1CH0:xtdf, holds trains up to 10011"):
        open_run(run)


# ---------------------------------------------------------------------------- 3. virtual datasets and links


@pytest.fixture
def small(tmp_path):
    def write(counting=False, dataset="/data"):
        path = tmp_path / f"small-{counting}-{dataset.strip('/').replace('/', '-')}.yaml"
        path.write_text(SMALL.format(counting=str(counting).lower(), dataset=dataset))
        return str(path)
    return write


def _vds(run, second_source, second_frames=20):
    """run/dark.h5: a VDS (40, 64, 64) of /data in run/a.h5 (20 frames) and ``second_source`` in run/b.h5."""
    rng = np.random.default_rng(3)
    run.mkdir()
    with h5py.File(run / "a.h5", "w") as f:
        f["data"] = _frames(rng, (20, 64, 64))
    with h5py.File(run / "b.h5", "w") as f:
        f[second_source] = _frames(rng, (second_frames, 64, 64))
    layout = h5py.VirtualLayout(shape=(40, 64, 64), dtype=np.uint16)
    layout[0:20] = h5py.VirtualSource("a.h5", "data", shape=(20, 64, 64))
    layout[20:40] = h5py.VirtualSource("b.h5", "data", shape=(20, 64, 64))
    with h5py.File(run / "dark.h5", "w") as f:
        f.create_virtual_dataset("data", layout, fillvalue=0)
    return run / "dark.h5"


def test_a_vds_whose_source_lacks_the_dataset_is_refused(tmp_path, capsys, small):
    vds = _vds(tmp_path / "run", "other")
    _mask_refused(capsys, tmp_path, vds, f"{vds}: virtual dataset /data maps frames from data in b.h5, which that file"
                  " lacks", extra=("--detector", small()))


def test_a_vds_whose_source_is_too_short_is_refused(tmp_path, small):
    vds = _vds(tmp_path / "run", "data", second_frames=10)
    needs = r"from data in b\.h5, which has shape \(10, 64, 64\): the mapping needs \(20, 64, 64\)"
    with pytest.raises(InputError, match=needs):
        open_run(vds, small())


def test_a_complete_vds_is_read_whole(tmp_path, small):
    vds = _vds(tmp_path / "run", "data")
    ds = open_run(vds, small())
    with h5py.File(vds.parent / "a.h5") as a, h5py.File(vds.parent / "b.h5") as b:
        np.testing.assert_array_equal(ds.analog.values[0, 0], np.concatenate([a["data"][()], b["data"][()]]))
    assert {os.path.basename(p) for p in ds.attrs["files"]} == {"dark.h5", "a.h5", "b.h5"}


def test_an_nxmx_link_to_a_data_file_without_the_frames_is_refused(tmp_path, small):
    rng = np.random.default_rng(4)
    with h5py.File(tmp_path / "s_data_000001.h5", "w") as f:
        f["entry/data/data"] = _frames(rng, (10, 64, 64))
    with h5py.File(tmp_path / "s_data_000002.h5", "w") as f:
        f["entry/data/other"] = _frames(rng, (10, 64, 64))
    with h5py.File(tmp_path / "s_master.h5", "w") as f:
        for k in (1, 2):
            f[f"entry/data/data_{k:06d}"] = h5py.ExternalLink(f"s_data_{k:06d}.h5", "/entry/data/data")
    lacks = "data_000002 links to /entry/data/data in s_data_000002.h5, which that file lacks"
    with pytest.raises(InputError, match=lacks):
        open_run(tmp_path / "s_master.h5", small(dataset="/entry/data"))


# ---------------------------------------------------------------------------- 4. no signal


@pytest.fixture(scope="module")
def off_run(tmp_path_factory):
    """A dark run of an AGIPD module that was off: every value 0."""
    zeros = np.zeros((1, 2, 16, 512, 128), np.uint16)
    return write_raw_run(tmp_path_factory.mktemp("off") / "r0007", zeros, zeros, run_number=7)


def test_a_dark_run_of_a_detector_that_was_off_is_refused(off_run, tmp_path, capsys):
    _mask_refused(capsys, tmp_path, off_run, f"{off_run}: no signal: 100% of pixels of module 0 are constant over 16"
                  " frames (all zero: detector off?)", "nothing was published")


def test_with_a_flat_the_dark_that_was_off_is_named_not_the_flat(off_run, runs, tmp_path, capsys):
    out = tmp_path / "m.zarr"
    args = ["mask", "--dark-high", str(off_run), "--dark-medium", str(runs / "raw" / "r0002"), "--dark-low",
            str(runs / "raw" / "r0003"), "--flat", str(runs / "raw" / "r0004"), "--out", str(out), "--workers", "1"]
    assert main(args) == 2
    line = one_line_error(capsys, f"{off_run}: no signal: 100% of pixels of module 0")
    assert "flat" not in line.split("no signal")[0] and not out.exists()


def test_a_constant_nonzero_stack_is_refused(tmp_path, capsys, small):
    with h5py.File(tmp_path / "dark.h5", "w") as f:
        f["data"] = np.full((20, 64, 64), 16383, np.uint16)  # the ADC's maximum everywhere
    _mask_refused(capsys, tmp_path, tmp_path / "dark.h5", "no signal: 100% of pixels of module 0 are constant over 16"
                  " frames (detector off or not read out?)", extra=("--detector", small()))


def _stack(tmp_path, name, data):
    with h5py.File(tmp_path / name, "w") as f:
        f["data"] = data
    return tmp_path / name


def test_what_is_not_refused_as_no_signal(tmp_path, small):
    """A silent counting dark, a stuck ASIC, NaN gap pixels: each has its reason to be constant or missing."""
    rng = np.random.default_rng(5)
    counts = np.zeros((20, 64, 64), np.int32)
    counts[3, 10, 10] = 1  # a working counting detector in the dark: one count in 81920 pixel-frames
    for data, counting in ((counts, True), (np.zeros((20, 64, 64), np.int32), True)):
        det = small(counting=True)
        check_signal({"high": open_run(_stack(tmp_path, f"c{data.sum()}.h5", data), det)}, detector=det)
    stuck = _frames(rng, (20, 64, 64))
    stuck[:, :32, :32] = 4000  # one ASIC of four stuck: 25% constant
    gaps = _frames(rng, (20, 64, 64)).astype(np.float32)
    gaps[:, :, 20:40] = np.nan  # pixels a reader marks missing are left out
    for name, data in (("stuck.h5", stuck), ("gaps.h5", gaps)):
        ds = open_run(_stack(tmp_path, name, data), small())
        check_signal({"high": ds}, ds, detector=small())  # the same run as flat too: also judged, also fine


def test_a_stack_without_any_value_is_refused(tmp_path, small):
    ds = open_run(_stack(tmp_path, "nan.h5", np.full((20, 64, 64), np.nan, np.float32)), small())
    with pytest.raises(InputError, match="nan.h5: no signal: no pixel of module 0 has a value in 16 frames"):
        check_signal({"high": ds}, detector=small())


def test_constant_fraction():
    rng = np.random.default_rng(6)
    sample = _frames(rng, (1, 1, 16, 8, 8)).astype(np.float32)
    assert constant_fraction(sample)[:2] == (0.0, 64)
    sample[..., :4, :] = 7.0  # half the pixels constant
    sample[..., 0, 0, 0] = np.nan  # one of them also missing once: still 15 values, still constant
    assert constant_fraction(sample) == (0.5, 64, False)
    assert constant_fraction(np.zeros((1, 1, 16, 8, 8), np.uint16)) == (1.0, 64, True)
    assert MAX_CONSTANT == 0.99
