"""LAMBDA and detectors whose chips are not evenly spaced: descriptions, chip windows, the series writer."""

from dataclasses import asdict, replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from rmm_dask import features as F
from rmm_dask.cli import main
from rmm_dask.codes import BadPixel
from rmm_dask.detectors import ALIASES, DETECTORS, detector_of, get_detector, load_detector
from rmm_dask.io import open_run
from rmm_dask.mask import Params, _outliers
from rmm_dask.pipeline import _jsonable, build_mask
from rmm_dask.synth import NXMX_VIRTUAL, SynthConfig, score, synthesize, virtual_pixels
from rmm_dask.synth.write_lambda import lambda_file_name, write_lambda_run

from .conftest import raise_if_dask_computes

LAMBDA_YAML = """name: TINYLAMBDA
modules: 2
module-shape: [70, 134]
chip-rows: [0, 35, 70]
chip-columns: [0, 44, 90, 134]
gain-stages: [high]
counting: true
dataset: /entry/instrument/detector/data
pixel-mask: /entry/instrument/detector/pixel_mask
"""


@pytest.fixture
def tiny(tmp_path):
    """A small LAMBDA-like detector of our own: chips of 35 rows and 44, 46, 44 columns."""
    path = tmp_path / "tiny.yaml"
    path.write_text(LAMBDA_YAML)
    return get_detector(path)


# ---------------------------------------------------------------------------- the layout


def test_lambda_modules_are_2_x_6_medipix3_chips_with_split_boundary_pixels():
    for name, modules in (("LAMBDA750K", 1), ("LAMBDA2M", 3)):
        det = get_detector(name)
        assert det.n_modules == modules and det.counting and det.edge_width == 0
        # 256-pixel chips, each boundary's two large pixels split into 3: 4 pixels more per boundary
        assert det.module_shape == (2 * 256 + 1 * 4, 6 * 256 + 5 * 4) == (516, 1556)
        rows, cols = det.asic_windows(0), det.asic_windows(1)
        assert [b - a for a, b in rows] == [258, 258]
        assert [b - a for a, b in cols] == [258, 260, 260, 260, 260, 258]  # not a uniform pitch
        assert not det.uniform_chips
        assert det.dataset == "/entry/instrument/detector/data"
        assert det.pixel_mask == "/entry/instrument/detector/pixel_mask"
    virtual = virtual_pixels(get_detector("LAMBDA750K"))
    # 6 rows across the module, 5 x 6 columns down it, counted once where they cross
    assert virtual.sum() == 6 * 1556 + 30 * 516 - 6 * 30
    assert virtual[255:261, 0].all() and not virtual[254, 0] and not virtual[261, 0]
    assert virtual[0, 255:261].all() and virtual[0, 515:521].all() and not virtual[0, 514] and not virtual[0, 521]


def test_builtin_descriptions_are_mirrored_in_configs():
    here = Path(__file__).parents[1]
    for path in (here / "rmm_dask" / "detectors").glob("*.yaml"):
        assert (here / "configs" / "detectors" / path.name).read_text() == path.read_text(), path.name


def test_names_are_case_insensitive_and_have_short_aliases():
    assert get_detector("lambda2m") is get_detector("LAMBDA2M") is get_detector("LaMbDa")
    assert get_detector("agipd").name == "AGIPD1M" and get_detector("Jungfrau").name == "JUNGFRAU1M"
    assert get_detector("PILATUS").name == "PILATUS300K" and get_detector("eiger").name == "EIGER1M"
    assert get_detector("cspad").name == "CSPAD"
    assert all(target.lower() in DETECTORS for target in ALIASES.values())
    with pytest.raises(KeyError, match="lambda"):
        get_detector("medipix")


def test_round_trip_of_a_stored_description_with_chip_boundaries(tiny):
    for det in (tiny, get_detector("LAMBDA2M"), get_detector("AGIPD1M")):
        stored = _jsonable(asdict(det))  # as the store's attrs keep it (JSON: lists)
        back = detector_of({"detector": det.name, "detector_description": stored})
        assert back == det and back.asic_windows(1) == det.asic_windows(1)
    old = {k: v for k, v in _jsonable(asdict(get_detector("EIGER1M"))).items() if k not in ("chip_rows", "chip_columns")}
    assert detector_of({"detector_description": old}) == get_detector("EIGER1M")  # stores written before the new fields


# ---------------------------------------------------------------------------- descriptions of your own


def test_own_description_has_no_edge_unless_it_says_so(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: MINE\nmodules: 1\nmodule-shape: [64, 96]\nasic-shape: [32, 48]\n")
    assert get_detector(path).edge_width == 0 and not get_detector(path).asic_edges().any()
    path.write_text("name: MINE\nmodules: 1\nmodule-shape: [64, 96]\nasic-shape: [32, 48]\nedge-width: 2\n")
    assert get_detector(path).asic_edges().sum() == 64 * 96 - 4 * (28 * 44)
    # a built-in description must state its edge width
    with pytest.raises(ValueError, match="edge-width"):
        load_detector(_without_edge(tmp_path), builtin=True)


def _without_edge(tmp_path):
    path = tmp_path / "noedge.yaml"
    path.write_text("name: X\nmodules: 1\nmodule-shape: [64, 96]\nasic-shape: [32, 48]\n")
    return path


@pytest.mark.parametrize(
    "extra, problem",
    [
        ("asic-shape: [32, 48]\ncells: -1\n", "cells must be at least 1"),
        ("asic-shape: [32, 48]\ngain-stages: []\n", "at least one gain stage"),
        ("chip-rows: [0, 40, 30, 64]\nchip-columns: [0, 96]\n", "chip-rows .* increasing boundaries from 0 to the module's 64"),
        ("chip-rows: [0, 32, 60]\nchip-columns: [0, 96]\n", "chip-rows .* to the module's 64"),
        ("asic-shape: [32, 48]\nchip-columns: [10, 96]\n", "chip-columns"),
        ("asic-shape: [32, 48]\nedge-width: -1\n", "edge-width must be 0 or more"),
        ("asic-shape: [32, 48]\nedge-width: 16\n", "leaves nothing inside a chip"),
        ("chip-rows: [0, 64]\n", r"asic-shape \(or chip-rows and chip-columns\)"),
        ("asic-shape: [32]\n", "asic-shape must be a list of 2"),
        ("asic-shape: [32, 48]\ncells: many\n", "cells must be an integer"),
    ],
)
def test_impossible_descriptions_are_refused_with_the_reason(tmp_path, extra, problem):
    path = tmp_path / "bad.yaml"
    path.write_text("name: BAD\nmodules: 1\nmodule-shape: [64, 96]\n" + extra)
    with pytest.raises(KeyError, match=problem):
        get_detector(path)


def test_cli_refuses_a_bad_description_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: BAD\nmodules: 1\nmodule-shape: [64, 96]\nchip-rows: [0, 70]\nchip-columns: [0, 96]\n")
    code = main(["mask", "--dark-high", str(tmp_path), "--detector", str(path), "--out", str(tmp_path / "m.zarr")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--detector" in err and "chip-rows" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m.zarr").exists()


# ---------------------------------------------------------------------------- chip windows


def test_local_model_follows_chips_that_are_not_evenly_spaced(tiny):
    """Each chip has its own level; a defect is found against its own chip's model, and
    windows at a uniform pitch that straddle the chip boundaries would flag normal pixels."""
    rng = np.random.default_rng(5)
    ny, nx = tiny.module_shape
    level = np.zeros((ny, nx))
    for i, (y0, y1) in enumerate(tiny.asic_windows(0)):
        for j, (x0, x1) in enumerate(tiny.asic_windows(1)):
            level[y0:y1, x0:x1] = 100.0 * (1 + i + 3 * j)  # chips far apart in units of the pixel spread (1)
    feature = (level + rng.normal(0, 1.0, (ny, nx)))[None]  # (cell, y, x)
    planted = [(3, 40), (50, 47), (20, 133), (66, 89)]  # near chip borders (chips 44, 46, 44 wide)
    for y, x in planted:
        feature[0, y, x] += 15.0  # 15 sigma of its chip, below the gaps between chips
    snr, bad = _outliers(feature, tiny, Params())
    assert sorted(zip(*np.nonzero(bad[0]))) == sorted(planted)
    _, uniform = _outliers(feature, tiny, Params(window=(35, 45)))  # 45-pixel windows straddle the 44 | 46 boundaries
    assert uniform[0].sum() > 50


def test_explicit_uniform_windows_give_the_old_results_bit_for_bit():
    agipd = get_detector("AGIPD1M")
    rng = np.random.default_rng(2)
    feature = rng.normal(0, 1, (2, *agipd.module_shape)) + np.repeat(np.repeat(rng.normal(0, 9, (2, 8, 2)), 64, 1), 64, 2)
    old = F.local_snr(feature, agipd.asic_shape, exclude=agipd.asic_edges())
    new = F.local_snr(feature, (agipd.asic_windows(0), agipd.asic_windows(1)), exclude=agipd.asic_edges())
    np.testing.assert_array_equal(old, new)
    # the per-window fits agree with the vectorised ones
    windows = (agipd.asic_windows(0), agipd.asic_windows(1))
    fit_on = np.where(agipd.asic_edges(), np.nan, feature)
    for a, b in zip(F._window_model(fit_on, windows, "rmm", 0.0), F._uniform_model(fit_on, (64, 64), "rmm", 0.0)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(ValueError, match="do not cover"):
        F.local_snr(feature, ([(0, 256)], [(0, 128)]))


def test_flat_tiles_and_edges_stay_inside_uneven_chips(tiny):
    for axis, size in ((0, 70), (1, 134)):
        bounds = F.tile_bounds(tiny.asic_windows(axis), 16)
        chip_bounds = {a for a, _ in tiny.asic_windows(axis)}
        assert chip_bounds <= set(bounds.tolist()) and bounds[-1] == size
    edged = replace(tiny, edge_width=1).asic_edges()
    assert edged[:, [43, 44, 89, 90]].all() and not edged[1:34, 45].any() and edged[[34, 35], 45].all()


# ---------------------------------------------------------------------------- synthetic LAMBDA series


def test_writer_writes_one_file_per_module_and_part(tmp_path):
    det = get_detector("LAMBDA2M")
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.004, (3, 5, *det.module_shape)).astype(np.int32)
    counts[:, :, 100, 100] = -1  # a gap pixel
    mask = np.zeros((3, *det.module_shape), np.uint32)
    mask[:, 100, 100] = 1
    mask[:, virtual_pixels(det)] |= np.uint32(NXMX_VIRTUAL)
    run = write_lambda_run(tmp_path / "dark", counts, det, pixel_mask=mask, acquisition="dark_00001", frames_per_part=2)
    names = sorted(p.name for p in run.iterdir())
    assert names == sorted(lambda_file_name("dark_00001", m, p) for m in (1, 2, 3) for p in (0, 1, 2))
    assert names[0] == "dark_00001_m1_part00000.nxs"
    for m in range(3):
        parts = []
        for p in range(3):
            with h5py.File(run / lambda_file_name("dark_00001", m + 1, p)) as f:
                d = f["entry/instrument/detector"]
                parts.append(d["data"][()])
                assert d["data"].dtype == np.int32 and d["description"][()] == b"Lambda"
                np.testing.assert_array_equal(d["pixel_mask"][()], mask[m])
                np.testing.assert_array_equal(d["frame_numbers"][()], np.arange(2 * p, min(2 * p + 2, 5)))
        assert [len(x) for x in parts] == [2, 2, 1]
        np.testing.assert_array_equal(np.concatenate(parts), counts[m])
    with pytest.raises(Exception, match="not an empty directory"):
        write_lambda_run(run, counts, det)
    with pytest.raises(ValueError, match="1 to 3 modules"):
        write_lambda_run(tmp_path / "x", counts[:, :, :10], det)


def test_synthetic_lambda_keeps_virtual_pixels_apart_from_defects(tiny):
    calib = synthesize(SynthConfig(detector=tiny, modules=2, cells=1, frames=40, flat_frames=40, dark_rate=0.004))
    virtual = virtual_pixels(tiny)
    assert virtual.sum() == 6 * 134 + 2 * 6 * 70 - 2 * 36
    pm = calib.model["pixel_mask"]
    assert ((pm & np.uint32(NXMX_VIRTUAL)) != 0)[:, virtual].all() and not ((pm & np.uint32(NXMX_VIRTUAL)) != 0)[:, ~virtual].any()
    assert not (calib.truth.defects[..., virtual] & ~np.uint16(512)).any()  # only the dead block may cover them
    clean = calib.truth.clean()[:, 0, 0] & ~virtual
    rate = calib.dark["high"].analog[:, 0].mean(axis=1)[clean].mean()
    assert 0.003 < rate < 0.005  # real LAMBDA darks: ~0.004 counts per frame


def test_a_lambda_part_file_goes_through_the_pipeline(tiny, tmp_path):
    """One module file of a LAMBDA-like series (gaps -1, the manufacturer's dead and virtual pixels):
    opened lazily, masked per chip, gaps missing, virtual pixels not flagged, planted defects found."""
    one = replace(tiny, n_modules=1)
    calib = synthesize(SynthConfig(detector=one, modules=1, cells=1, frames=60, flat_frames=60, dark_rate=0.004))
    gap = np.zeros(one.module_shape, bool)
    gap[10, 10:14] = True  # pixels the module does not have (data -1, pixel_mask bit 0)
    pm = calib.model["pixel_mask"].copy()
    pm[:, gap] |= np.uint32(1)
    runs = {}
    for key, run in (("dark", calib.dark["high"]), ("flat", calib.flat)):
        counts = run.analog[:, 0].copy()
        counts[:, :, gap] = -1
        d = write_lambda_run(tmp_path / key, counts, one, pixel_mask=pm, frames_per_part=60)
        runs[key] = d / lambda_file_name(key, 1, 0)
    with raise_if_dask_computes():
        dark = open_run(runs["dark"], one)
        flat = open_run(runs["flat"], one)
        ds = build_mask({"high": dark}, flat, detector=one)
    assert ds.attrs["detector_description"]["chip_columns"] == [0, 44, 90, 134]
    out = ds.compute(scheduler="sync")
    mask = out["mask"].values
    assert (mask[0, 0, 0][gap] == BadPixel.NO_DATA).all()
    np.testing.assert_array_equal(out["pixel_mask"].values, pm)
    truth_mask = mask.copy()
    truth_mask[..., gap] = 0  # the gaps are not the planted pixels' business
    scores = score(truth_mask, calib.truth)
    for kind, (found, planted) in scores["recall"].items():
        assert found >= 0.9 * planted, (kind, found, planted)
    assert scores["false_positives"] <= len(np.flatnonzero(gap))  # nothing but the gaps, which score counts as clean
    virtual_clean = virtual_pixels(one) & (calib.truth.defects[0, 0, 0] == 0) & ~gap
    assert not mask[0, 0, 0][virtual_clean].any()


@pytest.mark.slow
def test_rmm_mask_takes_a_lambda_2m_acquisition_directory(tmp_path, capsys):
    """Acceptance: one acquisition's 15 files (3 modules x 5 parts) and nothing else given."""
    out = tmp_path / "set"
    assert main(["synth", "--detector", "LAMBDA", "--out", str(out), "--frames", "50", "--flat-frames", "1"]) == 0  # (the flat is not used)
    run = out / "raw" / "r0001"
    assert len(list(run.glob("r0001_m[123]_part0000[0-4].nxs"))) == 15 and len(list(run.iterdir())) == 15
    capsys.readouterr()
    assert main(["mask", "--detector", "LAMBDA2M", "--dark-high", str(run), "--out", str(tmp_path / "m.zarr")]) == 0
    from rmm_dask.store import open_store
    from rmm_dask.synth.on_disk import read_truth

    root = open_store(tmp_path / "m.zarr")
    mask, truth = root["mask"][:], read_truth(out / "truth.h5")
    assert mask.shape == (3, 1, 1, 516, 1556)
    hot = truth.kind_mask(next(k for k in truth.expected if k.name == "HOT"))
    assert (mask[hot] & (BadPixel.OFFSET | BadPixel.NOISE)).all()
    assert not (mask[truth.clean()] != 0).any()  # clean pixels, virtual ones included, are not flagged
    assert int((root["layers"]["manufacturer"][:] & np.uint32(NXMX_VIRTUAL) != 0).sum()) == 3 * virtual_pixels(get_detector("LAMBDA2M")).sum()
