"""Detectors described by their own files (issue 21): chip layouts from the pixel mask, memory cells in HDF5 stacks."""

import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from rmm_dask.chips import NEXUS_GAP, NEXUS_VIRTUAL, boundaries
from rmm_dask.cli import main
from rmm_dask.codes import BadPixel
from rmm_dask.detectors import get_detector, load_detector
from rmm_dask.errors import InputError
from rmm_dask.io import open_run
from rmm_dask.io.regions import frame_sources
from rmm_dask.pipeline import build_mask
from rmm_dask.store import open_tree
from rmm_dask.synth import LAMBDA_GAAS, LAMBDA_GAAS_GAP, SynthConfig, score, synthesize, virtual_pixels
from rmm_dask.synth.write_lambda import write_lambda_run

from .cli_errors import one_line_error
from .conftest import raise_if_dask_computes

GAAS_COLUMNS = [0, 258, 518, 778, 1036, 1296, 1554]


# ---------------------------------------------------------------------------- boundaries from marks


def test_a_run_of_virtual_lines_is_a_boundary_in_its_middle_a_gap_after_it():
    mask = np.zeros((40, 60), np.uint32)
    mask[17:23] |= NEXUS_VIRTUAL  # 6 virtual rows: two large pixels split into 3 each
    mask[:, 30:32] |= NEXUS_GAP  # a 2-column gap, as between EIGER chips
    mask[:, 0] |= NEXUS_GAP  # along the border: part of the outer chip
    mask[5, 10:35] |= NEXUS_GAP  # a part of a row (fewer than half its pixels): no boundary
    mask[:, 45] |= np.uint32(2)  # a dead column (bit 1) is no boundary
    assert boundaries(mask, 0) == (0, 20, 40)
    assert boundaries(mask, 1) == (0, 32, 60)
    assert boundaries(np.zeros((40, 60), np.uint32), 0) is None


def test_eiger_chip_gaps_give_its_uniform_pitch_and_lambda_virtual_pixels_its_chips():
    eiger = np.zeros((514, 1030), np.uint32)
    eiger[256:258] |= NEXUS_GAP
    for c in (256, 514, 772):
        eiger[:, c : c + 2] |= NEXUS_GAP
    assert boundaries(eiger, 0) == (0, 258, 514) and boundaries(eiger, 1) == (0, 258, 516, 774, 1030)
    si = get_detector("LAMBDA750K")
    marks = np.where(virtual_pixels(si), NEXUS_VIRTUAL, 0).astype(np.uint32)
    assert boundaries(marks, 0) == si.chip_rows and boundaries(marks, 1) == si.chip_columns


def test_marks_that_make_no_chip_layout_are_refused():
    mask = np.zeros((40, 60), np.uint32)
    mask[2:4] |= NEXUS_VIRTUAL
    with pytest.raises(ValueError, match="chips of 3 rows"):
        boundaries(mask, 0)


# ---------------------------------------------------------------------------- LAMBDA GaAs series


@pytest.fixture(scope="module")
def gaas(tmp_path_factory):
    """A 516 x 1554 GaAs LAMBDA module's dark and flat series (parts of 4 frames), with its truth."""
    calib = synthesize(SynthConfig(detector=LAMBDA_GAAS, modules=1, cells=1, frames=12, flat_frames=12,
                                   gap_columns=LAMBDA_GAAS_GAP))
    root = tmp_path_factory.mktemp("gaas")
    runs = {}
    for key, run in (("dark", calib.dark["high"]), ("flat", calib.flat)):
        runs[key] = write_lambda_run(root / key, run.analog[:, 0], LAMBDA_GAAS, pixel_mask=calib.model["pixel_mask"],
                                     frames_per_part=4)
    return calib, runs


def test_a_gaas_series_is_read_with_the_chips_its_pixel_mask_marks(gaas):
    calib, runs = gaas
    with raise_if_dask_computes():
        dark = open_run(runs["dark"], "LAMBDA750K")
        flat = open_run(runs["flat"], None)  # no description: the LAMBDA files say what they are
        ds = build_mask({"high": dark}, flat)
    described = ds.attrs["detector_description"]
    assert described["module_shape"] == [516, 1554] and described["chip_columns"] == GAAS_COLUMNS
    assert described["chip_rows"] is None and described["asic_shape"] == [258, 260]  # rows at a uniform pitch
    assert dark.attrs["chips"] == ds.attrs["chips"] and flat.attrs["chips"].startswith(dark.attrs["chips"][:100])
    assert "from the pixel mask /entry/instrument/detector/pixel_mask of" in ds.attrs["chips"]
    assert "columns [0, 258, 518, 778, 1036, 1296, 1554]" in ds.attrs["chips"]
    mask = ds["mask"].compute(scheduler="sync").values
    scores = score(mask, calib.truth)
    for kind, (found, planted) in scores["recall"].items():  # in 12 frames a telegraph pixel may never switch on
        assert found >= (0.8 if kind == "TELEGRAPH" else 0.9) * planted, (kind, found, planted)
    assert scores["recall"]["NO_DATA"] == (2 * 516, 2 * 516)  # the gap: missing, nothing else
    assert scores["false_positives"] <= 3
    clean_virtual = virtual_pixels(LAMBDA_GAAS, LAMBDA_GAAS_GAP) & (calib.truth.defects[0, 0, 0] == 0)
    assert not mask[0, 0, 0][clean_virtual].any()


def test_rmm_mask_needs_no_detector_and_describe_prints_what_gives_the_same_mask(gaas, tmp_path, capsys):
    _, runs = gaas
    assert main(["mask", "--dark-high", str(runs["dark"]), "--flat", str(runs["flat"]), "--out", str(tmp_path / "a.zarr")]) == 0
    capsys.readouterr()
    assert main(["describe", str(runs["dark"])]) == 0
    text = capsys.readouterr().out
    assert "# chip rows [0, 258, 516], columns [0, 258, 518, 778, 1036, 1296, 1554] from the pixel mask" in text
    described = yaml.safe_load(text)
    assert described["module-shape"] == [516, 1554] and described["chip-columns"] == GAAS_COLUMNS
    (tmp_path / "gaas.yaml").write_text(text)
    assert load_detector(tmp_path / "gaas.yaml") == _det(open_run(runs["dark"], None))
    assert main(["mask", "--dark-high", str(runs["dark"]), "--flat", str(runs["flat"]), "--out", str(tmp_path / "b.zarr"),
                 "--detector", str(tmp_path / "gaas.yaml")]) == 0
    a, b = open_tree(tmp_path / "a.zarr"), open_tree(tmp_path / "b.zarr")
    np.testing.assert_array_equal(a["mask"].values, b["mask"].values)
    capsys.readouterr()
    assert main(["show", str(tmp_path / "a.zarr")]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "detector: LAMBDA750K, 1 module(s) of 516 x 1554 pixels; description: described by" in shown
    assert "chips: chip rows [0, 258, 516], columns [0, 258, 518, 778, 1036, 1296, 1554] from the pixel mask" in shown


def _det(ds):
    from rmm_dask.detectors import detector_of

    return detector_of(ds.attrs)


def test_explicit_chip_boundaries_of_a_description_win_over_the_files(gaas, tmp_path):
    _, runs = gaas
    own = tmp_path / "own.yaml"
    own.write_text("name: MYGAAS\nmodules: 1\nmodule-shape: [516, 1554]\nchip-rows: [0, 258, 516]\n"
                   "chip-columns: [0, 518, 1036, 1554]\ncounting: true\ndataset: /entry/instrument/detector/data\n"
                   "pixel-mask: /entry/instrument/detector/pixel_mask\n")
    ds = open_run(runs["dark"], str(own))
    assert ds.attrs["chips"] == "from the description"
    assert _det(ds).chip_columns == (0, 518, 1036, 1554)


def _rewrite_masks(run: Path, change) -> None:
    for path in sorted(run.glob("*.nxs")):
        with h5py.File(path, "r+") as f:
            d = f["/entry/instrument/detector/pixel_mask"]
            d[...] = change(d[()], path.name)


def test_a_series_whose_mask_marks_no_chips_or_other_chips_per_module_is_one_line(gaas, tmp_path, capsys):
    calib, _ = gaas
    counts = np.concatenate([calib.dark["high"].analog[:, 0]] * 3)  # a LAMBDA 2M
    masks = np.concatenate([calib.model["pixel_mask"]] * 3)
    unmarked = write_lambda_run(tmp_path / "unmarked", counts[:1], LAMBDA_GAAS, pixel_mask=masks[:1] & np.uint32(0x7FFFFFFE))
    assert main(["mask", "--dark-high", str(unmarked), "--out", str(tmp_path / "m.zarr")]) == 2
    line = one_line_error(capsys, "unmarked_m1_part00000.nxs", "its pixel mask marks no chip boundaries", "(frame, 516, 1556)")
    assert "chip-rows and chip-columns" in line
    other = masks.copy()
    other[1][:, 1030:1040] = np.uint32(NEXUS_VIRTUAL)  # module 2's chips differ from module 1's
    mixed = write_lambda_run(tmp_path / "mixed", counts, LAMBDA_GAAS, pixel_mask=other)
    assert main(["mask", "--dark-high", str(mixed), "--out", str(tmp_path / "m.zarr")]) == 2
    one_line_error(capsys, "mixed_m2_part00000.nxs", "its pixel mask marks chip rows", "not one detector's modules")
    assert not (tmp_path / "m.zarr").exists()


def test_runs_whose_files_describe_other_chips_are_not_one_detector(gaas, tmp_path):
    calib, runs = gaas
    other = calib.model["pixel_mask"].copy()
    other[0][:, 1030:1040] = np.uint32(NEXUS_VIRTUAL)  # one more chip boundary
    flat = write_lambda_run(tmp_path / "flat", calib.flat.analog[:, 0], LAMBDA_GAAS, pixel_mask=other)
    with pytest.raises(InputError, match=r"its files describe LAMBDA750K with other asic_shape, chip_columns than dark-high's"):
        build_mask({"high": open_run(runs["dark"], None)}, open_run(flat, None))


# ---------------------------------------------------------------------------- memory cells in stacks

MODULE = (32, 48)
CELL_YAML = ("name: TWOCELL\nmodules: 1\nmodule-shape: [32, 48]\nasic-shape: [16, 16]\ngain-stages: [high]\n"
             "dataset: /data\n{extra}")
PEDESTAL = (1000.0, 3000.0)  #: per cell
HOT = (5, 7)  #: hot in cell 1 only


def cell_frames(per_cell=40, seed=0):
    """Raw frames of two interleaved memory cells (frame i is cell i mod 2) with different pedestals."""
    rng = np.random.default_rng(seed)
    raw = np.empty((2 * per_cell, *MODULE), np.float32)
    for c, level in enumerate(PEDESTAL):
        raw[c::2] = level + rng.normal(0, 5, (per_cell, *MODULE)) + rng.normal(0, 20, MODULE)
    raw[1::2, HOT[0], HOT[1]] += 300
    return raw


def write_parts(directory: Path, raw, splits=(30,), cell_ids=None) -> list[Path]:
    """``raw`` as part files split at the frames given (chunks of 4 frames: reads cross them), with ``/cellId``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths, edges = [], [0, *splits, len(raw)]
    for i, (a, b) in enumerate(zip(edges, edges[1:])):
        path = directory / f"stack_{i:05d}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("data", data=raw[a:b], chunks=(4, *MODULE))
            if cell_ids is not None:
                f["cellId"] = np.asarray(cell_ids[a:b], np.uint16)
        paths.append(path)
    return paths


def description(tmp_path, extra="cells: 2\n") -> str:
    path = tmp_path / f"twocell-{zlib.crc32(extra.encode())}.yaml"
    path.write_text(CELL_YAML.format(extra=extra))
    return str(path)


def test_interleaved_cells_each_get_their_own_model(tmp_path):
    raw = cell_frames()
    paths = write_parts(tmp_path / "run", raw)
    det = description(tmp_path)
    with raise_if_dask_computes():
        ds = open_run([str(p) for p in paths], det)
        built = build_mask({"high": ds}, detector=None)
    np.testing.assert_array_equal(ds.cell, [0, 1])
    assert ds.sizes["frame"] == 40 and ds.chunks["cell"] == (1, 1)
    assert "frames read as 2 memory cells: frame i is cell i mod 2" in " ".join(ds.attrs["notes"])
    for c in (0, 1):
        np.testing.assert_array_equal(ds.analog.values[0, c], raw[c::2])
        (source,) = frame_sources(ds.analog.data)[0, c : c + 1]
        (part,) = source.frames(13, 19).read()
        np.testing.assert_array_equal(part[0, 0], raw[c::2][13:19])  # across the part files' border (raw 30)
    out = built.compute(scheduler="sync")
    offset = out["offset"].values[0, 0]  # (cell, y, x)
    np.testing.assert_allclose(np.median(offset, axis=(1, 2)), PEDESTAL, atol=5)
    bad = out["mask"].values[0, 0] != 0
    assert bad[1, HOT[0], HOT[1]] and not bad[0, HOT[0], HOT[1]]  # hot in its own cell only
    assert bad.sum() == 1
    one = open_run([str(p) for p in paths], description(tmp_path, extra=""))  # cells: 1, as before: one mixed model
    assert one.sizes["cell"] == 1 and one.sizes["frame"] == 80
    two = build_mask({"high": open_run([str(p) for p in paths], det, cells_per_chunk=2)})
    np.testing.assert_array_equal(two["mask"].compute(scheduler="sync").values, out["mask"].values)


def test_cells_from_a_cell_id_dataset(tmp_path):
    raw = cell_frames(per_cell=10)
    ids = np.tile([5, 2], 10)  # cell 5 first in each cycle
    paths = write_parts(tmp_path / "run", raw, splits=(7,), cell_ids=ids)
    ds = open_run([str(p) for p in paths], description(tmp_path, extra="cells: 8\ncell-ids: /cellId\n"))
    np.testing.assert_array_equal(ds.cell, [2, 5])
    np.testing.assert_array_equal(ds.analog.values[0, 0], raw[1::2])  # cell 2: the second frame of each cycle
    np.testing.assert_array_equal(ds.analog.values[0, 1], raw[0::2])
    assert "cells [2, 5] from /cellId, a cycle of 2 frames" in " ".join(ds.attrs["notes"])


@pytest.mark.parametrize("case", ["not-divisible", "not-repeating", "ids-missing", "ids-wrong-length"])
def test_cells_that_do_not_fit_the_frames_are_one_line(tmp_path, capsys, case):
    raw = cell_frames(per_cell=10)
    ids = np.tile([0, 1], 10)
    extra = "cells: 2\ncell-ids: /cellId\n"
    if case == "not-divisible":
        raw, ids, extra, needles = raw[:19], None, "cells: 2\n", ("has 19 frames, not a whole number of cycles", "1 frame(s) more")
    elif case == "not-repeating":
        ids = ids.copy()
        ids[9] = 0  # frame 9 of cell 0 again: one dropped
        needles = ("/cellId: frame 9 has cell 0", "not one repeating sequence")
    elif case == "ids-missing":
        ids, needles = None, ("no dataset /cellId",)
    else:
        needles = ("cell-ids dataset /cellId holds", "one integer per frame")
    paths = write_parts(tmp_path / "run", raw, splits=(), cell_ids=ids)
    if case == "ids-wrong-length":
        with h5py.File(paths[0], "r+") as f:
            del f["cellId"]
            f["cellId"] = np.zeros(3, np.uint16)
    out = tmp_path / "m.zarr"
    assert main(["mask", "--dark-high", str(paths[0]), "--out", str(out), "--detector", description(tmp_path, extra)]) == 2
    one_line_error(capsys, *needles)
    assert not out.exists()


def test_a_builtin_description_with_cells_reads_a_stack_as_one_cell_and_says_so(tmp_path):
    det = get_detector("AGIPD1M")
    with h5py.File(tmp_path / "agipd.h5", "w") as f:
        f["data"] = np.zeros((6, *det.module_shape), np.float32)
    ds = open_run(str(tmp_path / "agipd.h5"), "AGIPD1M", dataset="/data")
    assert ds.sizes["cell"] == 1 and ds.sizes["frame"] == 6
    assert any("AGIPD1M's 352 cells are those of EuXFEL runs" in note for note in ds.attrs["notes"])


def test_a_gap_pixel_is_no_data_and_the_mask_of_a_cell_stack_is_per_cell(tmp_path):
    """Cells and bits together: the mask has a cell axis of the stack's cells, NO_DATA where NaN."""
    raw = cell_frames(per_cell=12)
    raw[:, 0, 0] = np.nan
    (path,) = write_parts(tmp_path / "run", raw, splits=())
    out = build_mask({"high": open_run(str(path), description(tmp_path))}).compute(scheduler="sync")
    assert out["mask"].shape == (1, 1, 2, *MODULE)
    assert (out["mask"].values[0, 0, :, 0, 0] == BadPixel.NO_DATA).all()


# ---------------------------------------------------------------------------- NXmx without a description


def test_an_nxmx_master_masks_without_detector_as_with_its_builtin_description(tmp_path, capsys):
    """`rmm mask` of an EIGER master and its data files, no --detector: the NXdetector_module groups give
    its layout, the same mask bit for bit as the built-in EIGER1M's."""
    assert main(["synth", "--detector", "eiger", "--out", str(tmp_path / "s"), "--frames", "10", "--flat-frames", "2"]) == 0
    raw = tmp_path / "s" / "raw"
    dark = raw / "r0001_master.h5"
    assert main(["mask", "--dark-high", str(dark), "--out", str(tmp_path / "m.zarr")]) == 0
    tree = open_tree(tmp_path / "m.zarr")
    assert tree.attrs["detector_source"] == f"described by {dark}"
    assert tree.attrs["detector_description"]["module_grid"] == [2, 1]
    with raise_if_dask_computes():
        builtin = build_mask({"high": open_run(str(dark), "EIGER1M")})
    np.testing.assert_array_equal(tree["mask"].values, builtin["mask"].compute(scheduler="sync").values)
    capsys.readouterr()
    assert main(["describe", str(dark)]) == 0
    text = capsys.readouterr().out
    assert "#   module shape [514, 1030] from /entry/instrument/detector/module_0/data_size (all 2 modules)" in text
    assert yaml.safe_load(text)["module-grid"] == [2, 1]


def test_a_jungfraujoch_master_of_converted_photons_masks_without_detector(tmp_path):
    """Jungfraujoch's int32 photon counts (darks count ~nothing): judged as counts, only the hot pixel found;
    negative counts down to its underload value are data, its flagged pixels (INT32_MIN) missing."""
    from rmm_dask.synth.write_nxmx import write_jungfraujoch_nxmx

    rng = np.random.default_rng(0)
    frames = rng.poisson(0.01, (10, 1064, 1030)).astype(np.int32)
    frames[:, 100, 100] = rng.poisson(5, 10)
    frames[:, 700, 40] = -1  # always a negative count: data (not missing), and a cold pixel
    master = write_jungfraujoch_nxmx(tmp_path / "jf_master.h5", frames)
    assert main(["mask", "--dark-high", str(master), "--out", str(tmp_path / "m.zarr")]) == 0
    tree = open_tree(tmp_path / "m.zarr")
    assert tree.attrs["detector_description"]["counting"] is True
    mask = tree["mask"].values[:, 0, 0]
    np.testing.assert_array_equal(np.argwhere(mask != 0), [[0, 100, 100], [1, 700 - 514 - 36, 40]])
    assert mask[1, 150, 40] & BadPixel.OFFSET and not mask[1, 150, 40] & BadPixel.NO_DATA


def test_a_run_opened_with_a_description_file_keeps_the_description(gaas, tmp_path):
    """From Python: the run carries its description, not only its name, so later calls work without the file."""
    _, runs = gaas
    own = tmp_path / "own.yaml"
    own.write_text("name: LAMBDA-GaAs-1554\nmodules: 1\nmodule-shape: [516, 1554]\nchip-rows: [0, 258, 516]\n"
                   f"chip-columns: {GAAS_COLUMNS}\ncounting: true\ndataset: /entry/instrument/detector/data\n"
                   "pixel-mask: /entry/instrument/detector/pixel_mask\n")
    dark = open_run(runs["dark"], str(own))
    own.unlink()  # gone: nothing reads it again
    with raise_if_dask_computes():
        ds = build_mask({"high": dark}, None)
    assert ds.attrs["detector"] == "LAMBDA-GaAs-1554" and ds["mask"].shape == (1, 1, 1, 516, 1554)
    assert ds.attrs["detector_source"] == f"given: {own}"


def test_what_a_mask_could_not_test_reads_not_tested_never_0(gaas, store, tmp_path, capsys):
    """A darks-only LAMBDA mask: no flat run, no gain recorded: rmm show and the HTML report say "not tested"
    for FLAT_*, GAIN_*; a mask of three gain stages and a flat tests everything."""
    from rmm_dask.tables import untested

    _, runs = gaas
    out = tmp_path / "dark-only.zarr"
    assert main(["mask", "--dark-high", str(runs["dark"]), "--out", str(out)]) == 0
    assert untested(open_tree(out).attrs) == {"FLAT_HIGH": "no flat run", "FLAT_LOW": "no flat run",
                                              "GAIN_SEPARATION": "LAMBDA750K records no gain stage",
                                              "GAIN_LEVEL": "LAMBDA750K records no gain stage"}
    capsys.readouterr()
    assert main(["show", str(out), "--html", str(tmp_path / "r.html")]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "FLAT_HIGH FHIGH not tested -" in shown and "GAIN_LEVEL GLVL not tested -" in shown
    assert ("not tested: FLAT_HIGH, FLAT_LOW (no flat run); GAIN_SEPARATION, GAIN_LEVEL (LAMBDA750K records no "
            "gain stage)") in shown
    page = (tmp_path / "r.html").read_text()
    assert "not tested: FLAT_HIGH, FLAT_LOW (no flat run)" in page and page.count("<td>not tested</td>") >= 8
    assert untested(open_tree(store).attrs) == {}
