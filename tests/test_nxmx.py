"""NXmx master files describe their detector (issue 21, section 2): rmm_dask.io.nxmx.describe_nxmx on
synthetic EIGER (Dectris) and JUNGFRAU (Jungfraujoch) files, each key it needs refused in one line when
missing, layouts it cannot read, files that are not NXmx, and the run read back with what it described."""

import shutil

import h5py
import numpy as np
import pytest

from rmm_dask.detectors import Detector, get_detector
from rmm_dask.errors import InputError
from rmm_dask.exports import nx_detector
from rmm_dask.io import open_hdf5_stack, open_run
from rmm_dask.io.nxmx import GIVE, describe_nxmx
from rmm_dask.synth.write_nxmx import (
    EIGER_1M,
    EIGER_COUNT_CUTOFF,
    JUNGFRAU_1M,
    jungfraujoch_limits,
    write_eiger_nxmx,
    write_jungfraujoch_nxmx,
)

from .conftest import raise_if_dask_computes

DET = "/entry/instrument/detector"
DEAD = [(0, 5, 7), (1, 300, 1000)]  #: (module, y, x) of the pixels each pixel mask flags dead


def _frames(det: Detector, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """3 full frames of counts and the pixel mask (gaps bit 0, DEAD bit 1) of ``det``."""
    frames = np.random.default_rng(seed).poisson(2.0, (3, *det.frame_shape))
    mask = det.gap_mask().astype(np.uint32)
    for m, y, x in DEAD:
        oy, ox = det.module_origins()[m]
        mask[oy + y, ox + x] |= 2
    return frames, mask


@pytest.fixture(scope="module")
def eiger(tmp_path_factory):
    """An EIGER 1M master as Dectris writes it, with 2 data files (2 + 1 frames); the frames and mask written."""
    frames, mask = _frames(EIGER_1M, 1)
    master = write_eiger_nxmx(tmp_path_factory.mktemp("eiger") / "r0001_master.h5", frames, pixel_mask=mask,
                              frames_per_file=2)
    return master, frames, mask


@pytest.fixture(scope="module")
def jungfrau(tmp_path_factory):
    """A JUNGFRAU 1M master as Jungfraujoch writes it (a virtual /entry/data/data over 2 data files)."""
    frames, mask = _frames(JUNGFRAU_1M, 2)
    master = write_jungfraujoch_nxmx(tmp_path_factory.mktemp("jungfrau") / "r0002_master.h5", frames,
                                     pixel_mask=mask, frames_per_file=2)
    return master, frames, mask


def _master_alone(master, tmp_path):
    """A copy of the master without its data files (describing it must not need them)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    copy = tmp_path / master.name
    shutil.copyfile(master, copy)
    return copy


def _refused(path, *needles) -> str:
    """describe_nxmx(path)'s one-line InputError, naming the file and holding every needle."""
    with pytest.raises(InputError) as info:
        describe_nxmx(path)
    text = str(info.value)
    assert "\n" not in text and info.value.path == str(path), text
    for needle in needles:
        assert needle in text, text
    return text


# ---------------------------------------------------------------------------- the two writers' files


def test_eiger_master_is_described_field_by_field(eiger, tmp_path):
    master = _master_alone(eiger[0], tmp_path)  # the data files are not needed: metadata only
    det, notes = describe_nxmx(master)
    assert det == Detector(
        name="EIGER2 Si 1M", n_modules=2, module_shape=(514, 1030), asic_shape=(258, 258), counting=True,
        module_grid=(2, 1), module_gap=(37, 0), module_order="row", dataset="/entry/data",
        pixel_mask=f"{DET}/pixel_mask", saturation_value=EIGER_COUNT_CUTOFF, chips_from_mask=True,
    )
    assert det.gain_stages == ("high",) and det.n_cells == 1 and det.gain == "none" and det.edge_width == 0
    assert det.frame_shape == EIGER_1M.frame_shape and det.module_origins() == EIGER_1M.module_origins()
    assert notes == [
        f"name 'EIGER2 Si 1M' from {DET}/description 'Dectris EIGER2 Si 1M'",
        f"module shape [514, 1030] from {DET}/module_0/data_size (all 2 modules)",
        "frames from /entry/data (2 data_NNNNNN links)",
        f"frame [1065, 1030] from {DET}/detectorSpecific/y_pixels_in_detector and x_pixels_in_detector",
        f"2 modules on a 2 x 1 grid with gaps [37, 0], numbered along rows, from the data_origin of {DET}/module_0, "
        f"{DET}/module_1",
        f"counting: true (photon counting), from {DET}/type 'photon counting hybrid pixel detector'",
        "asic shape [258, 258] from the EIGER family's chips",
        f"saturation value {EIGER_COUNT_CUTOFF} from {DET}/saturation_value",
        f"pixel mask {DET}/pixel_mask",
    ]


def test_jungfraujoch_master_is_described_field_by_field(jungfrau, tmp_path):
    master = _master_alone(jungfrau[0], tmp_path)  # its virtual dataset gives the frame without its sources
    det, notes = describe_nxmx(master)
    saturation, underload = jungfraujoch_limits(2)
    assert (saturation, underload) == (65530, -65532)
    assert det == Detector(
        name="JUNGFRAU 1M", n_modules=2, module_shape=(514, 1030), asic_shape=(258, 258), counting=True,
        module_grid=(2, 1), module_gap=(36, 0), dataset="/entry/data/data", pixel_mask=f"{DET}/pixel_mask",
        saturation_value=saturation, underload_value=underload, chips_from_mask=True,
    )
    assert notes == [
        f"name 'JUNGFRAU 1M' from {DET}/description 'PSI JUNGFRAU 1M'",
        f"module shape [514, 1030] from {DET}/ARRAY_D0M0/data_size (all 2 modules)",
        "frames from /entry/data/data",
        "frame [1064, 1030] from the shape of /entry/data/data",
        f"2 modules on a 2 x 1 grid with gaps [36, 0], numbered along rows, from the data_origin of {DET}/ARRAY_D0M0, "
        f"{DET}/ARRAY_D0M1",
        f"counting: false (integrating), from {DET}/type 'adaptive gain switching pixel array detector'",
        "counting: true after all: its frames are int32 photon counts converted from the raw values (signed "
        "integers), judged as counts (values down to underload_value are data)",
        "asic shape [258, 258] from the JUNGFRAU family's chips",
        f"saturation value 65530 from {DET}/saturation_value",
        f"underload value -65532 from {DET}/underload_value",
        f"pixel mask {DET}/pixel_mask",
    ]


def test_nxmx_files_have_the_layout_of_their_writers(eiger, jungfrau):
    with h5py.File(eiger[0]) as f:
        d = f[DET]
        assert [d[f"module_{m}/data_origin"][()].tolist() for m in (0, 1)] == [[0, 0], [551, 0]]
        fast = d["module_0/fast_pixel_direction"]
        assert fast.attrs["transformation_type"] == "translation" and fast.attrs["vector"].tolist() == [1, 0, 0]
        assert fast.attrs["depends_on"] == f"{DET}/module_0/module_offset" and "offset" in fast.attrs
        assert d["module_0/module_offset"].attrs["depends_on"] == f"{DET}/transformations/translation"
        assert d["detectorSpecific/countrate_correction_count_cutoff"][()] == EIGER_COUNT_CUTOFF
        data = f["entry/data/data_000001"]
        assert data.dtype == np.uint32 and data[0, 520, 0] == data[0, 5, 7] == 2**32 - 1  # gap and dead pixel
    with h5py.File(jungfrau[0]) as f:
        data = f["entry/data/data"]
        assert data.is_virtual and data.dtype == np.int32 and len(data.virtual_sources()) == 2
        assert f[f"{DET}/ARRAY_D0M1/data_origin"][()].tolist() == [550, 0]
        assert f[f"{DET}/ARRAY_D0M0/slow_pixel_direction"].attrs["vector"].tolist() == [0, -1, 0]


def test_runs_read_with_the_described_detector_hold_what_was_written(eiger, jungfrau):
    for master, frames, mask in (eiger, jungfrau):
        det, _ = describe_nxmx(master)
        with raise_if_dask_computes():
            ds = open_hdf5_stack(master, det.dataset, det)
        assert ds.analog.shape == (2, 1, 3, 514, 1030)
        read = ds.analog.values[:, 0]  # (module, frame, y, x)
        written = np.moveaxis(det.split_frame(frames), 1, 0)
        good = det.split_frame(mask) == 0  # (module, y, x): the pixels written as counts
        for m in range(2):
            np.testing.assert_array_equal(read[m][:, good[m]], written[m][:, good[m]])
        np.testing.assert_array_equal(ds.pixel_mask.values, det.split_frame(mask))
        by_directory = open_run(master.parent, det)  # the master stands for its data files
        assert by_directory.attrs["files"] == ds.attrs["files"] and len(ds.attrs["files"]) == 3


def test_values_beyond_the_limits_are_read_as_missing(eiger, jungfrau):
    """Dectris marks flagged pixels 2^32 - 1 (above saturation_value), Jungfraujoch INT32_MIN (below
    underload_value): read as missing once the reader honours the limits (the lead's part of issue 21)."""
    for master, frames, mask in (eiger, jungfrau):
        det, _ = describe_nxmx(master)
        read = open_hdf5_stack(master, det.dataset, det).analog.values[:, 0]
        dead = [read[m, :, y, x] for m, y, x in DEAD]
        if not np.isnan(dead).any():
            pytest.skip(f"the reader does not read values beyond saturation/underload as missing yet ({dead[0][0]})")
        assert np.isnan(dead).all() and np.isfinite(read[0, :, 0, 0]).all()


# ---------------------------------------------------------------------------- what the file may lack or change


def _edit(master, tmp_path, change) -> str:
    """A copy of the master alone, changed by ``change(h5py.File)``."""
    copy = _master_alone(master, tmp_path)
    with h5py.File(copy, "r+") as f:
        change(f)
    return copy


def test_values_from_elsewhere_when_the_file_lacks_them(eiger, tmp_path):
    """No type: counting from the description; no saturation_value: Dectris' count cutoff; no detectorSpecific
    pixel counts: the frame from the modules' extent; no pixel mask: none."""
    def strip(f):
        for key in ("type", "saturation_value", "detectorSpecific/x_pixels_in_detector", "pixel_mask"):
            del f[f"{DET}/{key}"]

    det, notes = describe_nxmx(_edit(eiger[0], tmp_path, strip))
    assert det.counting and det.saturation_value == EIGER_COUNT_CUTOFF and det.pixel_mask is None
    assert det.frame_shape == (1065, 1030)
    assert f"counting: true (photon counting), from {DET}/description 'Dectris EIGER2 Si 1M'" in notes
    cutoff = f"{DET}/detectorSpecific/countrate_correction_count_cutoff"
    assert f"saturation value {EIGER_COUNT_CUTOFF} from {cutoff}" in notes
    assert "frame [1065, 1030] from the modules' extent (the file gives no frame size)" in notes
    assert not any(n.startswith("pixel mask") for n in notes)


def _without(key):
    return lambda f: f.__delitem__(f"{DET}/{key}")


def _set(key, value):
    def change(f):
        if key in f[DET]:
            del f[f"{DET}/{key}"]
        f[f"{DET}/{key}"] = value
    return change


def _no_type(description):
    def change(f):
        del f[f"{DET}/type"]
        _set("description", description)(f)
    return change


@pytest.mark.parametrize("change, needles", [
    (_without("module_1/data_size"), [f"{DET}/module_1/data_size is missing"]),
    (_without("module_0/data_origin"), [f"{DET}/module_0/data_origin is missing"]),
    (_set("module_1/data_size", [514, 1028]), ["modules differ in size", "module_1/data_size [514, 1028]"]),
    (_set("module_0/data_origin", [0.5, 0]), [f"{DET}/module_0/data_origin is [0.5, 0.0]: expected two whole numbers"]),
    (_set("module_1/data_stride", [-1, 1]), ["module_1/data_stride is [-1, 1]: expected two whole numbers"]),
    (_no_type("foo"), [f"{DET}/type is missing and its description 'foo' names no known detector: cannot tell whether "
                       "it counts photons"]),
    (lambda f: [f.__delitem__(f"{DET}/{k}") for k in ("type", "description")],
     [f"{DET}/type is missing and it has no description: cannot tell whether it counts photons"]),
    (_set("type", "charge integrating"), ["type 'charge integrating' and its description 'Dectris EIGER2 Si 1M' "
                                          "disagree"]),
    (lambda f: [f.__delitem__(f"{DET}/module_{m}") for m in (0, 1)], [f"{DET} has no NXdetector_module group"]),
    (lambda f: [f.__delitem__(f"entry/data/data_00000{i}") for i in (1, 2)],
     ["/entry/data/data_000001 (or /entry/data/data) is missing: no frames"]),
    (_set("saturation_value", "high"), [f"{DET}/saturation_value is ", "expected one number"]),
])
def test_each_missing_or_unusable_key_gives_one_line_naming_it(eiger, tmp_path, change, needles):
    text = _refused(_edit(eiger[0], tmp_path, change), *needles)
    assert text.endswith(GIVE)


def test_layouts_that_are_not_a_regular_grid_are_refused(eiger, tmp_path):
    def diagonal(f):  # a frame twice as wide, the second module beside the first one's corner
        _set("detectorSpecific/x_pixels_in_detector", np.uint32(2070))(f)
        _set("module_1/data_origin", [551, 1040])(f)

    _refused(_edit(eiger[0], tmp_path, diagonal), "its 2 NXdetector_module groups do not lie on a regular grid of the "
             "1065 x 2070 frame (2 modules in 2 rows and 2 columns)", GIVE)
    _refused(_edit(eiger[0], tmp_path / "short", _set("module_1/data_origin", [540, 0])),
             "do not lie on a regular grid of the 1065 x 1030 frame (the modules cover 1054 x 1030 pixels of it)")
    _refused(_edit(eiger[0], tmp_path / "beyond", _set("module_1/data_origin", [600, 0])),
             f"{DET}/module_1 (data_origin [600, 0], data_size [514, 1030]) reaches beyond the 1065 x 1030 frame")

    def swapped(f):
        _set("module_0/data_origin", [551, 0])(f)
        _set("module_1/data_origin", [0, 0])(f)

    _refused(_edit(eiger[0], tmp_path / "swapped", swapped), "are numbered neither along the rows of their grid nor "
                                                              "down its columns")


def test_one_module_covering_the_frame_is_one_module(eiger, tmp_path):
    """Dectris' FileWriter writes the whole frame as one NXdetector_module called ``module``."""
    master, frames, mask = eiger

    def one_module(f):
        del f[f"{DET}/module_1"]
        f.move(f"{DET}/module_0", f"{DET}/module")
        _set("module/data_size", [1065, 1030])(f)

    copy = _edit(master, tmp_path, one_module)
    det, notes = describe_nxmx(copy)
    assert (det.n_modules, det.module_shape, det.module_grid, det.asic_shape) == (1, (1065, 1030), None, (258, 258))
    assert f"one module covering the frame, from {DET}/module" in notes
    assert "asic shape [258, 258] from the EIGER family's chips (not a [514, 1030] module: chips at that pitch from " \
           "its corner)" in notes
    for data_file in master.parent.glob("*_data_*.h5"):
        shutil.copyfile(data_file, tmp_path / data_file.name)
    read = open_hdf5_stack(copy, det.dataset, det).analog.values[0, 0]
    np.testing.assert_array_equal(read[:, mask == 0], frames[:, mask == 0])
    _refused(_edit(copy, tmp_path / "part", _set("module/data_size", [514, 1030])),
             "its one module /entry/instrument/detector/module (data_origin [0, 0], data_size [514, 1030]) covers part "
             "of the 1065 x 1030 frame")


# ---------------------------------------------------------------------------- other files


def test_files_that_are_not_nxmx_masters_are_refused(eiger, tmp_path):
    stack = tmp_path / "stack.h5"
    with h5py.File(stack, "w") as f:
        f["data"] = np.zeros((2, 4, 4), dtype=np.uint16)
    _refused(stack, "not a NeXus/NXmx file (no NXdetector in an NXinstrument of an NXentry, by their NX_class "
                    "attributes): give --detector FILE.yaml")
    no_class = _edit(eiger[0], tmp_path, lambda f: f["entry/instrument"].attrs.__delitem__("NX_class"))
    _refused(no_class, "not a NeXus/NXmx file")
    data_file = next(eiger[0].parent.glob("r0001_data_000001.h5"))
    _refused(data_file, "is an NXmx data file (frames only, its detector is described in its master file): describe "
                        "r0001_master.h5 instead")
    text = tmp_path / "notes.txt"
    text.write_text("not HDF5\n")
    _refused(text, "not an HDF5 file")


def test_a_lambda_file_is_the_builtin_lambda2m(tmp_path):
    """X-Spectrum's files say "Lambda" and have no NXdetector_module: the built-in description, with a note."""
    path = tmp_path / "scan_m1_part00000.nxs"
    with h5py.File(path, "w") as f:
        d = nx_detector(f)
        d["description"] = "Lambda"
        d["data"] = np.zeros((2, 4, 4), dtype=np.int32)
    det, notes = describe_nxmx(path)
    assert det == get_detector("LAMBDA2M")
    assert notes == [f"LAMBDA: the built-in LAMBDA2M, from {DET}/description 'Lambda' (its files have no "
                     "NXdetector_module)"]
