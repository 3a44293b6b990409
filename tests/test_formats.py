"""Detectors beyond AGIPD: descriptions, readers of each real layout, exports read back, user masks."""

import re

import dask
import h5py
import numpy as np
import pytest
import zarr

from rmm_dask.cli import main
from rmm_dask.codes import BadPixel
from rmm_dask.detectors import DETECTORS, get_detector
from rmm_dask.errors import InputError
from rmm_dask.exports import EUXFEL, NEXUS, export
from rmm_dask.io import open_run
from rmm_dask.mask import Params
from rmm_dask.pipeline import build_mask
from rmm_dask.store import write_store
from rmm_dask.synth import SynthConfig, synthesize
from rmm_dask.synth.write_cbf import write_cbf_series
from rmm_dask.synth.write_euxfel import write_jungfrau_run
from rmm_dask.synth.write_hdf5 import write_cxi, write_nxmx
from rmm_dask.usermask import read_user_mask

from .conftest import raise_if_dask_computes


def rng(seed=0):
    return np.random.default_rng(seed)


def sync(collection):
    return dask.compute(collection, scheduler="sync")


# ---------------------------------------------------------------------------- descriptions


def test_detector_descriptions():
    assert {d.name for d in DETECTORS.values()} >= {"AGIPD1M", "JUNGFRAU1M", "JUNGFRAU4M", "CSPAD", "PILATUS300K", "PILATUS6M", "EIGER1M", "EIGER16M"}
    assert get_detector("pilatus6m").frame_shape == (2527, 2463)  # 12 x 5 modules, gaps 17 and 7
    assert get_detector("EIGER16M").frame_shape == (4371, 4150)
    assert get_detector("CSPAD").frame_shape == (1480, 1552)  # Cheetah's slab
    assert get_detector("PILATUS6M").counting and get_detector("PILATUS6M").min_sigma == pytest.approx(1 / 6)
    cspad = get_detector("CSPAD")
    assert cspad.module_origins()[:2] == [(0, 0), (185, 0)] and cspad.module_origins()[8] == (0, 388)  # quadrant 1
    frames = rng().integers(0, 100, (2, *cspad.frame_shape))
    np.testing.assert_array_equal(cspad.join_frame(cspad.split_frame(frames)), frames)
    pilatus = get_detector("PILATUS300K")
    gaps = pilatus.gap_mask()
    assert gaps.sum() == 2 * 17 * 487 and gaps[195:212].all() and not gaps[:195].any()
    assert pilatus.asic_windows(0) == [(0, 98), (98, 195)]  # chips with the inter-chip row, the last cut
    edges = get_detector("JUNGFRAU1M").asic_edges()
    assert edges[:, 255].all() and edges[:, 256].all() and not edges[1:255, 1:255].any()


def test_detector_from_a_yaml_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: MINE\nmodules: 1\nmodule-shape: [64, 96]\nasic-shape: [32, 48]\ngain: bits\ngain-stages: [high, medium]\n")
    det = get_detector(str(path))
    assert (det.name, det.module_shape, det.gain, det.gain_stages) == ("MINE", (64, 96), "bits", ("high", "medium"))
    # a store of a detector from your own file: it records the description, so it exports and shows
    raw = (rng(6).normal(1000, 5, (12, 64, 96)).astype(np.uint16) & 0x3FFF) | (np.uint16(1) << 14)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["data"] = raw
    darks = {"medium": open_run(tmp_path / "s.h5", str(path), dataset="data")}
    store = write_store(build_mask(darks, detector=det, user_mask=np.full((1, 64, 96), 2)), tmp_path / "m.zarr", compute=sync)
    (nexus,) = export(store, "nexus", tmp_path / "m.nxs")
    with h5py.File(nexus) as f:
        assert ((f["entry/instrument/detector/pixel_mask"][()] & 256) != 0).all()  # user value 2: still the user bit
    assert main(["show", str(store), "--png", str(tmp_path / "png")]) == 0
    path.write_text("name: BAD\nmodules: 1\nmodule-shape: [64, 96]\nasic-shape: [32, 48]\nsize: 3\n")
    with pytest.raises(KeyError, match=r"unknown keys \['size'\]"):
        get_detector(str(path))


# ---------------------------------------------------------------------------- readers


def test_jungfrau_euxfel_run(tmp_path):
    """Two modules, 3 storage cells in a non-sorted order; read back through EXtra-data's metadata."""
    det = get_detector("JUNGFRAU1M")
    r = rng(1)
    shape = (2, 3, 12, *det.module_shape)
    adc = r.integers(0, 1 << 14, shape, dtype=np.uint16)
    gain = r.choice(np.array([0, 1, 3], np.uint16), shape)
    run = write_jungfrau_run(tmp_path / "r0007", adc, gain, run_number=7, cell_ids=[15, 0, 1])
    with raise_if_dask_computes():
        ds = open_run(run, det, cells_per_chunk=2)
    assert ds.cell.values.tolist() == [15, 0, 1] and ds.module.values.tolist() == [0, 1]
    assert ds.analog.data.chunks[1] == (2, 1)
    assert ds.attrs["source"] == "SPB_IRDA_JF4M" and ds.attrs["run"] == 7
    values = ds.compute(scheduler="sync")
    np.testing.assert_array_equal(values.analog.values, adc)
    np.testing.assert_array_equal(values.gain.values, gain)
    # what EXtra-data reads from the same files
    from extra_data import RunDirectory
    from extra_data.components import JUNGFRAU

    jf = JUNGFRAU(RunDirectory(run), raw=True)
    np.testing.assert_array_equal(jf.get_array("data.adc")[1].values[:, 0], adc[1, 0])  # module JNGFR02, first cell


def test_cxi_cspad_slab_and_module_stack(tmp_path):
    det = get_detector("CSPAD")
    frames = rng(2).integers(0, 30000, (4, *det.frame_shape)).astype(np.int16)
    path = write_cxi(tmp_path / "r0001.cxi", frames, det)
    with h5py.File(path) as f:
        assert f["cxi_version"][()] == 130 and f["entry_1/data_1/data"].shape == frames.shape
    ds = open_run(path, det, modules=[0, 9, 31])
    assert ds.attrs["format"] == "hdf5-stack (frame layout)"
    expected = det.split_frame(frames)  # (frame, module, y, x)
    np.testing.assert_array_equal(ds.analog.values[:, 0], np.moveaxis(expected, 1, 0)[[0, 9, 31]])
    stacked = tmp_path / "stack.h5"
    with h5py.File(stacked, "w") as f:
        f["entry_1/data_1/data"] = expected[:, :2]
    ds = open_run(stacked, det)
    np.testing.assert_array_equal(ds.analog.values[:, 0], np.moveaxis(expected[:, :2], 1, 0))


def test_nxmx_eiger_with_linked_data_files_and_pixel_mask(tmp_path):
    det = get_detector("EIGER1M")
    frames = rng(3).poisson(2.0, (5, *det.frame_shape)).astype(np.int32)
    frames[:, det.gap_mask()] = -1  # as Dectris fills the gaps
    frames[0, 10, 20] = -2  # a bad pixel
    mask = det.gap_mask().astype(np.uint32)
    mask[10, 20] |= 2  # dead
    master = write_nxmx(tmp_path / "r0003_master.h5", frames, det, pixel_mask=mask, frames_per_file=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r0003_data_000001.h5", "r0003_data_000002.h5", "r0003_master.h5"]
    with raise_if_dask_computes():
        ds = open_run(master, det)
    assert "manufacturer pixel mask" in ds.attrs["notes"][0]
    assert ds.attrs["files"] == [str(tmp_path / n) for n in ("r0003_data_000001.h5", "r0003_data_000002.h5", "r0003_master.h5")]
    values = ds.compute(scheduler="sync")
    assert values.analog.dtype == np.float32 and np.isnan(values.analog.values).sum() == 1  # negative counts: missing
    expected = np.moveaxis(det.split_frame(frames), 1, 0).astype(np.float32)
    expected[expected < 0] = np.nan
    np.testing.assert_array_equal(values.analog.values[:, 0], expected)
    np.testing.assert_array_equal(values.pixel_mask.values, det.split_frame(mask))
    assert values.pixel_mask.values[0, 10, 20] == 2
    (tmp_path / "r0003_data_000002.h5").unlink()
    with pytest.raises(InputError, match=r"r0003_master\.h5: cannot open /entry/data/data_000002 \(a missing or unreadable data file"):
        open_run(master, det)


def test_cbf_pilatus_series(tmp_path):
    det = get_detector("PILATUS300K")
    frames = rng(4).poisson(3.0, (3, *det.frame_shape)).astype(np.int32)
    frames[:, det.gap_mask()] = -1
    frames[1, 5, 6] = -2
    run = write_cbf_series(tmp_path / "r0002", frames, det)
    import fabio

    image = fabio.open(str(run / "frame_00002.cbf"))
    np.testing.assert_array_equal(image.data, frames[1])
    assert image.pilatus_headers["Detector"].startswith("PILATUS300K")
    with raise_if_dask_computes():
        ds = open_run(run, det)
    values = ds.analog.values
    expected = np.moveaxis(det.split_frame(frames.astype(np.float32)), 1, 0)
    assert np.isnan(values[0, 0, 1, 5, 6]) and np.isnan(values).sum() == 1
    expected[0, 1, 5, 6] = np.nan
    np.testing.assert_array_equal(values[:, 0], expected)
    assert ds.analog.data.chunks[0] == (1, 1, 1) and ds.analog.data.chunks[2] == (3,)
    (run / "frame_00003.cbf").write_bytes((run / "frame_00003.cbf").read_bytes()[:2000])
    with pytest.raises(InputError, match=r"frame_00003\.cbf: cannot decode the CBF frame"):
        open_run(run, det).analog.compute(scheduler="sync")
    (run / "frame_00001.cbf").write_text("not a cbf")
    with pytest.raises(InputError, match=r"frame_00001\.cbf: not a CBF file"):
        open_run(run, det)


def test_stack_with_gain_bits_of_a_described_detector(tmp_path):
    desc = tmp_path / "jf.yaml"
    desc.write_text("name: JFSTACK\nmodules: 1\nmodule-shape: [64, 64]\nasic-shape: [32, 32]\ngain: bits\ngain-stages: [high, medium, low]\n")
    raw = rng(5).integers(0, 1 << 14, (6, 64, 64), dtype=np.uint16) | (np.uint16(1) << 14)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["data"] = raw
    ds = open_run(tmp_path / "s.h5", str(desc), dataset="data").compute(scheduler="sync")
    np.testing.assert_array_equal(ds.analog.values[0, 0], raw & 0x3FFF)
    assert (ds.gain.values == 1).all()


# ---------------------------------------------------------------------------- a store with layers, and its exports


@pytest.fixture(scope="module")
def eiger_store(tmp_path_factory):
    """A photon-counting EIGER1M mask from NXmx runs with the manufacturer's pixel mask, and a user mask."""
    det = get_detector("EIGER1M")
    out = tmp_path_factory.mktemp("eiger")
    calib = synthesize(SynthConfig(modules=2, cells=1, frames=24, flat_frames=24, detector=det))
    from rmm_dask.synth.on_disk import write_synthetic

    runs = write_synthetic(calib, out)
    user = np.zeros(det.frame_shape, np.uint8)
    user[500:560, 600:700] = 1  # a beamstop shadow, in the full frame
    np.save(out / "beamstop.npy", user)
    darks = {"high": open_run(runs["dark-high"], det)}
    user_mask = read_user_mask(str(out / "beamstop.npy"), det, darks["high"].module.values)
    ds = build_mask(darks, open_run(runs["flat"], det), detector=det, params=Params(), user_mask=user_mask)
    store = write_store(ds, out / "mask.zarr", compute=sync)
    return store, det, calib, det.join_frame(det.split_frame(user))  # the part on the modules (not in the gaps)


def test_store_keeps_layers_apart(eiger_store):
    store, det, calib, user = eiger_store
    root = zarr.open_group(store, mode="r")
    manufacturer = root["layers/manufacturer"][:]
    np.testing.assert_array_equal(manufacturer, calib.model["pixel_mask"])  # gaps are not in the module stack
    np.testing.assert_array_equal(root["layers/user"][:], det.split_frame(user))
    assert user.sum() == 60 * 100 - 37 * 100  # rows 514-550 are the gap between the two modules
    assert np.count_nonzero(manufacturer) == 2 * 4  # KNOWN_DEAD per module


def expected_union(root) -> np.ndarray:
    mask = root["mask"][:]
    return np.bitwise_or.reduce(mask.reshape(mask.shape[0], -1, *mask.shape[-2:]), axis=1)


def test_nexus_export_bits(eiger_store, tmp_path):
    store, det, _, user = eiger_store
    root = zarr.open_group(store, mode="r")
    (path,) = export(store, "nexus", tmp_path / "mask.nxs")
    with h5py.File(path) as f:
        pixel_mask = f["entry/instrument/detector/pixel_mask"][()]
        assert f["entry/instrument/detector"].attrs["NX_class"] == "NXdetector"
    assert pixel_mask.dtype == np.uint32 and pixel_mask.shape == det.frame_shape
    union = det.join_frame(expected_union(root))
    manufacturer = det.join_frame(root["layers/manufacturer"][:])
    gaps = det.gap_mask()
    assert ((pixel_mask & 1) != 0).tolist() == gaps.tolist()  # bit 0: gap
    assert (((pixel_mask & 2) != 0) == ((manufacturer & 2) != 0) | ((union & BadPixel.NO_DATA) != 0)).all()  # bit 1: dead
    assert (((pixel_mask & 8) != 0) == ((union & BadPixel.FLAT_HIGH) != 0)).all()  # bit 3: over-responding
    assert (((pixel_mask & 4) != 0) == ((union & BadPixel.FLAT_LOW) != 0)).all()  # bit 2: under-responding
    noisy = (union & (BadPixel.OFFSET | BadPixel.NOISE | BadPixel.GAIN_SEPARATION | BadPixel.GAIN_LEVEL)) != 0
    assert (((pixel_mask & 16) != 0) == noisy).all()  # bit 4: noisy
    assert (((pixel_mask & 256) != 0) == (user != 0)).all()  # bit 8: user
    assert ((pixel_mask == 0) == ((union == 0) & (manufacturer == 0) & (user == 0) & ~gaps)).all()
    assert {int(v) for v in NEXUS.values()} <= {1 << b for b in (1, 2, 3, 4, 5)}


def parse_geometry(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        line = line.split(";", 1)[0].strip()
        if "=" in line:
            key, value = (s.strip() for s in line.split("=", 1))
            out[key] = value
    return out


def test_crystfel_export_read_with_crystfel_rules(eiger_store, tmp_path):
    store, det, _, user = eiger_store
    root = zarr.open_group(store, mode="r")
    mask_file, geom_file = export(store, "crystfel", tmp_path / "mask.h5")
    geom = parse_geometry(geom_file.read_text())
    bad = np.zeros(det.frame_shape, bool)
    alone = {}
    for n in range(3):
        assert geom[f"mask{n}_file"] == str(mask_file)
        with h5py.File(geom[f"mask{n}_file"]) as f:
            v = f[geom[f"mask{n}_data"]][()].astype(np.int64)
        good_bits, bad_bits = int(geom[f"mask{n}_goodbits"], 0), int(geom[f"mask{n}_badbits"], 0)
        alone[n] = ((v & good_bits) != good_bits) | ((v & bad_bits) != 0)  # CrystFEL's rule
        bad |= alone[n]
    union = det.join_frame(expected_union(root), fill=BadPixel.NO_DATA)  # gaps: in no panel; bad if ever read
    manufacturer = det.join_frame(root["layers/manufacturer"][:])
    assert (alone[0] == (union != 0)).all()
    assert (alone[1] == (user != 0)).all()
    assert (alone[2] == (manufacturer != 0)).all()
    assert "mask_bad = 0xffffffff" in geom_file.read_text()  # the CrystFEL 0.9 form, as a comment
    # the pair is checked before either is written: an existing .geom leaves no new .h5 behind
    (tmp_path / "other.geom").write_text("keep")
    with pytest.raises(InputError, match=r"other\.geom: exists already"):
        export(store, "crystfel", tmp_path / "other.h5")
    assert not (tmp_path / "other.h5").exists() and (tmp_path / "other.geom").read_text() == "keep"


def test_cheetah_export(eiger_store, tmp_path):
    store, det, _, user = eiger_store
    root = zarr.open_group(store, mode="r")
    (path,) = export(store, "cheetah", tmp_path / "cheetah.h5")
    with h5py.File(path) as f:
        good, rmm, user_good = f["data/data"][()], f["data/rmm"][()], f["data/user"][()]
    union = det.join_frame(expected_union(root), fill=1)
    assert set(np.unique(good)) <= {0, 1} and good.shape == det.frame_shape
    gaps = det.gap_mask()  # bad in every map
    assert ((rmm == 1) == (union == 0)).all() and ((user_good == 0) == ((user != 0) | gaps)).all()
    assert (good == rmm & user_good & f_manufacturer(root, det)).all()


def f_manufacturer(root, det):
    return det.join_frame((root["layers/manufacturer"][:] == 0).astype(np.uint8), fill=0)


@pytest.fixture(scope="module")
def agipd_store(store):
    """An AGIPD store of one module, three gain stages and two cells: the session's (tests/conftest.py)."""
    return store


def test_euxfel_export_read_with_extra_badpixels(agipd_store, tmp_path):
    extra = pytest.importorskip("extra.calibration", reason="EXtra (euxfel-extra) is not installed")
    B = extra.BadPixels
    root = zarr.open_group(agipd_store, mode="r")
    (path,) = export(agipd_store, "euxfel", tmp_path / "bp.h5")
    mask = root["mask"][:]
    with h5py.File(path) as f:
        bp = f["mask"][()]
        assert f["mask"].attrs["dims"].tolist() == ["module", "gain", "cell", "y", "x"]
        assert [g.decode() if isinstance(g, bytes) else g for g in f["gain"][()]] == ["high", "medium", "low"]
    assert bp.shape == mask.shape == (1, 3, 2, 512, 128) and bp.dtype == np.uint32
    pairs = [
        (BadPixel.OFFSET, B.OFFSET_OUT_OF_THRESHOLD), (BadPixel.NOISE, B.NOISE_OUT_OF_THRESHOLD),
        (BadPixel.GAIN_SEPARATION, B.GAIN_THRESHOLDING_ERROR), (BadPixel.GAIN_LEVEL, B.WRONG_GAIN_VALUE),
        (BadPixel.ASIC_EDGE, B.NON_STANDARD_SIZE), (BadPixel.NO_DATA, B.NO_DARK_DATA),
    ]
    for ours, theirs in pairs:
        assert (((mask & ours) != 0) == ((bp & theirs) != 0)).all(), ours
    assert (((mask & (BadPixel.FLAT_HIGH | BadPixel.FLAT_LOW)) != 0) == ((bp & B.FF_GAIN_DEVIATION) != 0)).all()
    assert ((mask == 0) == (bp == 0)).all()
    assert set(int(v) for v in EUXFEL.values()) <= {int(b) for b in B}


def test_cheetah_stacks_euxfel_modules(agipd_store, tmp_path):
    (path,) = export(agipd_store, "cheetah", tmp_path / "c.h5")
    with h5py.File(path) as f:
        good = f["data/data"][()]
    assert good.shape == (16 * 512, 128)  # all 16 modules along y, as Cheetah and OM lay out AGIPD
    assert not good[512:].any()  # modules not in the store are bad
    union = expected_union(zarr.open_group(agipd_store, mode="r"))[0]
    assert ((good[:512] == 1) == (union == 0)).all()


# ---------------------------------------------------------------------------- user masks


def test_user_mask_files(tmp_path):
    det = get_detector("PILATUS300K")
    frame = np.zeros(det.frame_shape, np.uint8)
    frame[0:10, 0:20] = 1
    import tifffile

    tifffile.imwrite(tmp_path / "m.tif", frame)
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["beamstop/mask"] = 1 - frame  # 1 = good, as Cheetah
    np.save(tmp_path / "m.npy", det.split_frame(frame))
    a = read_user_mask(str(tmp_path / "m.tif"), det, [0, 1, 2])
    b = read_user_mask(f"{tmp_path / 'm.h5'}:/beamstop/mask", det, [0, 1, 2], good_is_one=True)
    c = read_user_mask(str(tmp_path / "m.npy"), det, [1])
    import fabio.cbfimage

    fabio.cbfimage.CbfImage(data=frame.astype(np.int32)).write(str(tmp_path / "m.cbf"))
    assert (read_user_mask(str(tmp_path / "m.cbf"), det, [0, 1, 2]) == a).all()
    assert a.shape == (3, 195, 487) and a.sum() == 200 and (a == b).all() and c.sum() == 0
    np.save(tmp_path / "two.npy", np.zeros((2, 195, 487)))
    with pytest.raises(InputError, match=r"two\.npy: the user mask has 2 modules; the run has 3 and PILATUS300K 3"):
        read_user_mask(str(tmp_path / "two.npy"), det, [0, 1, 2])
    np.save(tmp_path / "bad.npy", np.zeros((7, 7)))
    with pytest.raises(InputError, match=r"bad\.npy: the user mask has shape \(7, 7\); PILATUS300K masks are"):
        read_user_mask(str(tmp_path / "bad.npy"), det, [0])
    with pytest.raises(InputError, match=r"m\.h5: no dataset /nope"):
        read_user_mask(f"{tmp_path / 'm.h5'}:/nope", det, [0])


# ---------------------------------------------------------------------------- demos


@pytest.mark.slow
@pytest.mark.parametrize("detector, extra", [("pilatus", ["--frames", "40"]), ("jungfrau", ["--modules", "1", "--frames", "24"]), ("cspad", ["--frames", "16"])])
def test_demo_per_detector(tmp_path, capsys, detector, extra):
    assert main(["demo", "--detector", detector, "--out", str(tmp_path / "d"), "--workers", "1", *extra]) == 0
    out = capsys.readouterr().out
    assert "HOT" in out and "clean pixels flagged" in out
    hot = re.search(r"HOT\s+(\d+)\s+(\d+)", out)
    assert hot and hot[1] == hot[2]  # every hot pixel found
    for suffix in ("mask.zarr", "mask.h5", "mask.nxs", "mask.crystfel.geom", "mask.euxfel.h5", "mask.cheetah.h5"):
        assert (tmp_path / "d" / suffix).exists(), suffix
