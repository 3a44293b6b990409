"""The public API: a light `import rmm_dask`, open_mask and bad_pixels on corrected-data-like arrays labelled as
EXtra-data labels them (truth: the planted defects), the HTML report's escaping, README's references."""

import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

import rmm_dask
from rmm_dask.apply import PRESETS, bad_pixels, bits_of, open_mask
from rmm_dask.codes import BadPixel
from rmm_dask.errors import InputError
from rmm_dask.pipeline import build_mask
from rmm_dask.store import write_store
from rmm_dask.synth import Defect, SynthConfig, synthesize

from .conftest import raise_if_dask_computes

REPO = Path(__file__).resolve().parents[1]
DIMS = ("module", "cell", "frame", "y", "x")
DARK_KINDS = Defect.HOT | Defect.COLD | Defect.NOISY | Defect.STUCK | Defect.TELEGRAPH | Defect.GAIN_STUCK | Defect.GAIN_NOISY | Defect.DEAD
FLAT_KINDS = Defect.OVER_RESPONDING | Defect.UNDER_RESPONDING
USER = (1, slice(100, 110), slice(20, 30))  #: the user's rectangle: module index 1
REJECT, VIRTUAL = (0, 5, slice(0, 7)), (1, 9, slice(0, 3))  #: manufacturer: dead (bit 1); virtual only (bit 31)


def test_import_rmm_dask_is_light():
    code = (
        "import sys, rmm_dask\n"
        "heavy = [m for m in ('numba', 'distributed', 'dask', 'xarray') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "rmm_dask.open_mask, rmm_dask.bad_pixels, rmm_dask.write_store, rmm_dask.export\n"
        "heavy = [m for m in ('numba', 'distributed', 'rmm_dask.cluster') if m in sys.modules]\n"
        "assert not heavy, heavy  # stores know no clusters\n"
        "print(sorted(rmm_dask.__all__))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for name in ("open_run", "build_mask", "write_store", "open_mask", "export"):
        assert name in proc.stdout
    assert rmm_dask.build_mask is build_mask and rmm_dask.open_mask is open_mask


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A 2-module AGIPD-like mask with planted defects, a manufacturer's pixel_mask and a user's mask; and its truth."""
    calib = synthesize(SynthConfig(modules=2, cells=2, frames=30, flat_frames=30, seed=3))
    pixel_mask = np.zeros((2, 512, 128), np.uint32)
    pixel_mask[REJECT] = 1 << 1
    pixel_mask[VIRTUAL] = np.uint32(1 << 31)
    user = np.zeros((2, 512, 128), np.uint8)
    user[USER] = 1

    def run(r, name, first=False):
        data = {v: (DIMS, da.from_array(getattr(r, v), chunks=(1, 1, -1, -1, -1))) for v in ("analog", "gain")}
        if first:
            data["pixel_mask"] = (("module", "y", "x"), da.from_array(pixel_mask, chunks=(1, -1, -1)))
        coords = {"module": [0, 1], "cell": [0, 1], "frame": np.arange(r.analog.shape[2])}
        return xr.Dataset(data, coords=coords, attrs={"path": f"/runs/{name}", "detector": "AGIPD1M"})

    darks = {g: run(calib.dark[g], g, first=g == "high") for g in calib.dark}
    ds = build_mask(darks, run(calib.flat, "flat"), user_mask=user)
    store = write_store(ds, tmp_path_factory.mktemp("api") / "mask.zarr", compute=lambda d: dask.compute(d, scheduler="sync"))
    return store, calib.truth


def corrected_like(modules=(1, 0), trains=(10000, 10001, 10002), cells=(0, 1)):
    """Corrected AGIPD data as EXtra-data labels it: AGIPD1M(run).get_array('image.data', subtrain_index='cellId',
    unstack_pulses=True) has dims (module, train, cell, slow_scan, fast_scan)."""
    values = np.random.default_rng(0).normal(1.0, 0.1, (len(modules), len(trains), len(cells), 512, 128)).astype(np.float32)
    coords = {"module": list(modules), "train": list(trains), "cell": list(cells)}
    return xr.DataArray(values, dims=("module", "train", "cell", "slow_scan", "fast_scan"), coords=coords)


def planted(truth, kinds, gain=None) -> np.ndarray:
    """Bool (module, cell, y, x): where defects of ``kinds`` are planted, in any gain stage or in one."""
    hit = (truth.defects & np.uint16(kinds)) != 0
    return hit.any(axis=1) if gain is None else hit[:, gain]


def test_open_mask_and_bad_pixels_are_lazy(published):
    store, _ = published
    with raise_if_dask_computes():
        ds = open_mask(store)
        bad = bad_pixels(ds, "dark", like=corrected_like())
        masked = corrected_like().where(~bad)
    assert isinstance(ds.mask.data, da.Array) and isinstance(bad.data, da.Array) and isinstance(masked.data, da.Array)
    assert ds.mask.dims == ("module", "gain", "cell", "y", "x") and list(ds.gain.values) == ["high", "medium", "low"]
    assert set(ds.data_vars) == {"mask", "pixel_mask", "user_mask"}
    with pytest.raises(InputError, match="no such mask store"):
        open_mask(Path(store).with_name("nothing.zarr"))


def test_data_where_not_bad_masks_the_planted_defects(published):
    store, truth = published
    data = corrected_like()  # modules in the order [1, 0]: aligned by label, not by position
    bad = rmm_dask.bad_pixels(rmm_dask.open_mask(store), "dark", like=data)
    assert bad.dims == ("module", "cell", "slow_scan", "fast_scan")
    masked = data.where(~bad)
    assert masked.dims == data.dims and masked.shape == data.shape
    gone = masked.isnull().sel(module=[0, 1]).values  # (module, train, cell, y, x), in store order
    assert (gone == gone[:, :1]).all()  # the same pixels in every train
    gone = gone[:, 0]  # (module, cell, y, x)

    dark = planted(truth, DARK_KINDS)
    assert gone[dark].mean() > 0.99, gone[dark].mean()  # recall of the planted dark defects (measured: all)
    assert gone[REJECT[0], :, REJECT[1], REJECT[2]].all()  # manufacturer's dead pixels
    assert not gone[VIRTUAL[0], :, VIRTUAL[1], VIRTUAL[2]].any()  # virtual alone: not a reason
    assert gone[USER[0], :, USER[1], USER[2]].all()  # the user's rectangle
    layers = np.zeros_like(gone)
    layers[REJECT[0], :, REJECT[1], REJECT[2]] = layers[USER[0], :, USER[1], USER[2]] = True
    clean = (truth.defects == 0).all(axis=1) & ~truth.edges & ~layers
    assert gone[clean].mean() < 1e-4, gone[clean].mean()  # few clean pixels lost (lambda = 8)
    assert not gone[..., truth.edges].all()  # "dark" leaves the ASIC edges to the user

    alone = data.where(~bad_pixels(store, "dark", layers=False, like=data)).isnull().sel(module=[0, 1]).values[:, 0]
    assert not alone[USER[0], :, USER[1], USER[2]][clean[USER[0], :, USER[1], USER[2]]].any()

    flat = data.where(~bad_pixels(store, "flat", like=data)).isnull().sel(module=[0, 1]).values[:, 0]
    assert flat[planted(truth, FLAT_KINDS)].mean() > 0.9  # measured 0.93 (30 flat frames)
    every = data.where(~bad_pixels(store, "all", like=data)).isnull().sel(module=[0, 1]).values[:, 0]
    assert every[..., truth.edges].all() and every[dark].mean() >= gone[dark].mean()


def test_one_gain_stage(published):
    store, truth = published
    high = bad_pixels(store, BadPixel.OFFSET | BadPixel.NOISE, gain="high", layers=False).values
    anyg = bad_pixels(store, BadPixel.OFFSET | BadPixel.NOISE, layers=False).values
    assert high.shape == (2, 2, 512, 128)
    hot = planted(truth, Defect.HOT | Defect.COLD | Defect.NOISY, gain=0)
    assert high[hot].mean() > 0.95
    assert (anyg | ~high).all()  # one stage is part of any stage
    assert np.array_equal(bad_pixels(store, ["OFFSET", "noise"], gain=0, layers=False).values, high)


def stack_frames(unstacked):
    """(module, train, cell, y, x) -> (module, train_pulse, dim_0, dim_1), levels trainId and cellId: as get_dask_array."""
    stacked = unstacked.stack(train_pulse=("train", "cell")).transpose("module", "train_pulse", "slow_scan", "fast_scan")
    index = stacked.indexes["train_pulse"].set_names(["trainId", "cellId"])
    stacked = stacked.drop_vars(["train_pulse", "train", "cell"]).assign_coords(xr.Coordinates.from_pandas_multiindex(index, "train_pulse"))
    return stacked.rename(slow_scan="dim_0", fast_scan="dim_1")  # get_dask_array leaves the pixel dims unnamed


def test_frames_stacked_with_a_cell_level(published):
    """AGIPD1M(run).get_dask_array('image.data', subtrain_index='cellId'): frames on one dim, (trainId, cellId) levels."""
    store, _ = published
    unstacked = corrected_like()
    stacked = stack_frames(unstacked)
    bad = bad_pixels(store, "dark", like=stacked)
    assert bad.dims == ("module", "train_pulse", "dim_0", "dim_1")
    masked = stacked.where(~bad)
    expected = unstacked.where(~bad_pixels(store, "dark", like=unstacked)).stack(train_pulse=("train", "cell"))
    np.testing.assert_array_equal(masked.values, expected.transpose("module", "train_pulse", "slow_scan", "fast_scan").values)
    frames = xr.DataArray(np.ones((2, 3, 512, 128)), dims=("module", "train", "slow_scan", "fast_scan"), coords={"module": [0, 1]})
    per_pixel = bad_pixels(store, "dark", like=frames)  # no memory cells in the data: bad in any cell
    np.testing.assert_array_equal(per_pixel.values, bad_pixels(store, "dark").any("cell").values)
    assert list(masked.indexes["train_pulse"].names) == ["trainId", "cellId"]  # the frames keep their labels
    with pytest.raises(ValueError, match=r"frames of memory cells \[7\] that the mask .*mask.zarr has not"):
        bad_pixels(store, "dark", like=stack_frames(corrected_like(cells=(0, 7))))


def test_groups_of_bits():
    assert bits_of("dark") == PRESETS["dark"] and BadPixel.ASIC_EDGE not in bits_of("dark")
    assert bits_of("all") == BadPixel(0xFF) and bits_of(["flat", "ASIC_EDGE"]) == BadPixel.FLAT_HIGH | BadPixel.FLAT_LOW | BadPixel.NO_DATA | BadPixel.ASIC_EDGE
    assert bits_of(BadPixel.NOISE | BadPixel.OFFSET) == 3 and bits_of(8) == BadPixel.GAIN_LEVEL
    with pytest.raises(ValueError, match="unknown group of bits 'hot'"):
        bits_of("hot")
    with pytest.raises(ValueError, match="out of the mask's range"):
        bits_of(256)


def test_html_report_escapes_store_paths_and_attrs(published, tmp_path):
    import zarr

    from rmm_dask.report import mask_report

    store, _ = published
    named = tmp_path / "m<script>alert(2)<.zarr"  # any byte but '/' may be in a name
    shutil.copytree(store, named)
    for path in (named, *named.rglob("*")):  # published stores are read-only
        path.chmod(0o755 if path.is_dir() else 0o644)
    root = zarr.open_group(named, mode="r+")
    root.attrs["host"] = "<script>alert(3)</script>"
    root.attrs["inputs"] = {**root.attrs["inputs"], "flat": {"path": "/runs/<img src=x onerror=alert(4)>", "frames": 30}}
    with warnings.catch_warnings():  # zarr: consolidated metadata is not in the v3 spec yet (xarray reads it)
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(named)
    page = mask_report(named, tmp_path / "r.html").read_text()
    assert "alert(2)" in page and "alert(3)" in page and "alert(4)" in page
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(4)&gt;" in page
    assert page.count("<script>") == 1  # the page's own, which counts the decoded figures


def readme_references(text: str) -> list[str]:
    """Paths into the repository that README names: under a top-level directory, or a notebook or Markdown file."""
    tops = "|".join(re.escape(p.name) for p in REPO.iterdir() if p.is_dir() and not p.name.startswith((".git", ".venv", "__")))
    paths = re.findall(rf"(?<![\w./~$-])((?:{tops}|\.ci)/[\w./*-]*[\w*/])", text)
    files = re.findall(r"(?<![\w./~$-])([\w-]+\.(?:md|ipynb))\b", text)
    return sorted(set(paths + files))


def test_readme_cites_only_files_in_the_repository():
    text = (REPO / "README.md").read_text()
    refs = readme_references(text)
    assert "rmm_dask/publish.py" in refs or "configs/rmm.yaml" in refs  # the pattern finds what README cites
    missing = [r for r in refs if not list(REPO.glob(r.rstrip("/"))) and not list(REPO.rglob(r))]
    assert not missing, f"README.md names files that are not in the repository: {missing}"
    modules = sorted(set(re.findall(r"\brmm_dask\.(\w+)", text)))
    unknown = [m for m in modules if not ((REPO / "rmm_dask" / f"{m}.py").exists() or (REPO / "rmm_dask" / m).is_dir() or m in rmm_dask.__all__)]
    assert not unknown, f"README.md names rmm_dask.<name> that do not exist: {unknown}"


def test_bad_pixels_take_extra_datas_jungfrau_module_numbers(tmp_path):
    """EXtra-data numbers JUNGFRAU modules from 1 (JNGFR01), rmm from 0: data.where(~bad) masks
    each module with its own mask, and keeps every module."""
    from extra_data import RunDirectory
    from extra_data.components import JUNGFRAU

    from rmm_dask.detectors import get_detector
    from rmm_dask.synth.on_disk import write_synthetic

    det = get_detector("JUNGFRAU1M")
    calib = synthesize(SynthConfig(modules=2, cells=1, frames=16, flat_frames=16, detector=det, seed=2))
    paths = write_synthetic(calib, tmp_path / "set")
    darks = {g: rmm_dask.open_run(paths[f"dark-{g}"], det) for g in det.gain_stages}
    store = write_store(build_mask(darks, detector=det), tmp_path / "m.zarr")
    run = tmp_path / "copy"
    shutil.copytree(paths["dark-high"], run)  # EXtra-data's RunDirectory may write its map into the run
    data = JUNGFRAU(RunDirectory(str(run)), raw=True).get_array("data.adc").astype(np.float32)
    assert list(data.module.values) == [1, 2]
    masked = data.where(~rmm_dask.bad_pixels(rmm_dask.open_mask(store), "all", like=data))
    assert list(masked.module.values) == [1, 2]
    expected = np.asarray(rmm_dask.open_mask(store).mask.values != 0).any(axis=1)  # (module, cell, y, x), any gain
    for i, label in enumerate((1, 2)):
        np.testing.assert_array_equal(np.isnan(masked.sel(module=label).values).all(axis=0), expected[i])
