"""Figures that fit the detector: square pixels, an assembled picture of every multi-module detector,
the manufacturer's mask counted per NeXus bit."""

import dataclasses

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from rmm_dask.cli import main
from rmm_dask.detectors import Detector, get_detector
from rmm_dask.pipeline import build_mask
from rmm_dask.store import write_store
from rmm_dask.summary import NEXUS_BITS, count_nexus_bits, detector_image, modules_side_by_side, write_figures
from rmm_dask.synth import SynthConfig, synthesize

DIMS = ("module", "cell", "frame", "y", "x")
#: a wide counting module, three of them, no frame layout in the description: a LAMBDA module's
#: shape (516 x 1556, 3 times wider than high) at a third of its size in each direction
WIDE = Detector(name="WIDE3", n_modules=3, module_shape=(172, 519), asic_shape=(86, 173), counting=True, edge_width=0)
#: planted manufacturer's bits: gap, dead, noisy, user, virtual -> pixels of module 0 at these rows
PLANTED = {0: 30, 1: 7, 4: 3, 8: 11, 31: 50}


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")  # width, height


def make_store(path, det, modules, frames=12, pixel_mask=None):
    calib = synthesize(SynthConfig(modules=modules, cells=1, frames=frames, flat_frames=frames, seed=5, detector=det))

    def run(r):
        data = {"analog": (DIMS, da.from_array(r.analog, chunks=(1, 1, -1, -1, -1)))}
        if pixel_mask is not None:
            data["pixel_mask"] = (("module", "y", "x"), da.from_array(pixel_mask, chunks=(1, -1, -1)))
        coords = {"module": np.arange(modules), "cell": [0], "frame": np.arange(r.analog.shape[2])}
        return xr.Dataset(data, coords=coords, attrs={"path": "/runs/x", "detector": det.name})

    ds = build_mask({"high": run(calib.dark["high"])}, run(calib.flat), detector=det)
    return write_store(ds, path, compute=lambda d: dask.compute(d, scheduler="sync"))


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    mask = np.zeros((3, *WIDE.module_shape), dtype=np.uint32)
    for bit, n in PLANTED.items():
        mask[0, bit, :n] |= np.uint32(1 << bit)  # row `bit`, the first n pixels
    mask[1, 100, :5] = 1 | 2  # gap and dead at once: counted under both
    return make_store(tmp_path_factory.mktemp("wide") / "m.zarr", WIDE, 3, pixel_mask=mask)


def test_module_images_keep_their_aspect(wide, tmp_path):
    paths = {p.name: p for p in write_figures(wide, tmp_path)}  # a path, or an open store (below)
    w, h = png_size(paths["mask_module00.png"])
    assert w / h > 2.0  # 519 / 172 = 3.0, with room for the colorbar and titles
    w, h = png_size(paths["detector.png"])  # three wide modules one above the other: nearly square
    assert 0.7 < w / h < 1.4


def test_a_tall_module_is_a_tall_picture(tmp_path):
    tall = dataclasses.replace(WIDE, name="TALL1", n_modules=1, module_shape=(512, 128), asic_shape=(64, 64))
    store = make_store(tmp_path / "m.zarr", tall, 1)
    paths = {p.name: p for p in write_figures(zarr.open_group(store, mode="r"), tmp_path / "png")}
    assert "detector.png" not in paths  # one module: its image is the whole detector
    w, h = png_size(paths["mask_module00.png"])
    assert h / w > 1.5


def test_assembled_images():
    modules = np.arange(3 * 4 * 10, dtype=np.float32).reshape(3, 4, 10)
    image, axis = modules_side_by_side(modules)
    assert axis == 0 and image.shape == (3 * 4 + 2 * 2, 10)  # wide modules stacked, 2-pixel gaps
    np.testing.assert_array_equal(image[6:10], modules[1])
    assert np.isnan(image[4:6]).all()
    tall, axis = modules_side_by_side(modules.transpose(0, 2, 1))
    assert axis == 1 and tall.shape == (10, 16)


def test_a_module_grid_detector_is_assembled_as_its_frame(tmp_path):
    det = get_detector("PILATUS300K")
    store = make_store(tmp_path / "m.zarr", det, 3)
    root = zarr.open_group(store, mode="r")
    image, how, _ = detector_image(root)
    assert image.shape == det.frame_shape and "3 x 1 modules" in how
    assert np.isnan(image[det.gap_mask()]).all() and np.isfinite(image[~det.gap_mask()]).all()
    w, h = png_size(next(p for p in write_figures(root, tmp_path / "png") if p.name == "detector.png"))
    assert h > w  # 619 x 487: taller than wide


def test_manufacturer_bits_are_counted_per_bit(wide, tmp_path, capsys):
    counts = count_nexus_bits(zarr.open_group(wide, mode="r")["layers/manufacturer"])
    expected = {NEXUS_BITS[b]: n for b, n in PLANTED.items()}
    expected["gap"] += 5
    expected["dead"] += 5
    assert {k: v for k, v in counts.items() if k not in ("reject", "any")} == expected
    rejecting = sum(n for b, n in PLANTED.items() if b < 16)  # NeXus bits 0-15 reject; 31 (virtual) informs
    assert counts["reject"] == rejecting + 5 and counts["any"] == counts["reject"] + PLANTED[31]
    assert main(["show", str(wide), "--png", str(tmp_path / "png"), "--html", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("layer manufacturer:"))
    assert f"{counts['reject']} pixels rejected" in line and f"{counts['any']} with any bit" in line
    for name, n in expected.items():
        assert f"{name} {n}" in line
    page = (tmp_path / "r.html").read_text()
    assert "<th>virtual</th>" in page and "<td>50</td>" in page and "<th>user</th>" in page
    assert (tmp_path / "png" / "manufacturer_bits.png").stat().st_size > 1000


def test_a_jungfrau_with_a_module_grid_is_assembled_as_its_frame(tmp_path):
    """A JUNGFRAU as Jungfraujoch writes it (NXmx: modules tiling one frame) is laid out by its frame;
    only a JUNGFRAU described without a module grid (EuXFEL: a file per module) goes to EXtra-geom."""
    det = Detector(name="JUNGFRAU-JFJ", n_modules=2, module_shape=(64, 128), asic_shape=(64, 64), module_grid=(2, 1),
                   module_gap=(6, 0))
    store = make_store(tmp_path / "m.zarr", det, 2)
    image, how, origin = detector_image(store)
    assert image.shape == det.frame_shape == (134, 128) and origin == "upper"
    assert how == "JUNGFRAU-JFJ frame layout (2 x 1 modules)"
    assert np.isnan(image[64:70]).all() and np.isfinite(image[det.gap_mask() == 0]).all()
    assert "detector.png" in {p.name for p in write_figures(store, tmp_path / "png")}


@pytest.mark.parametrize("shape", [(516, 1554), (512, 128), (1065, 1030), (4362, 4148)])
def test_every_single_bad_column_and_row_is_visible_in_the_png(shape, tmp_path):
    """A module figure with fewer screen pixels than detector pixels pools blocks by their most masked
    pixel: each single bad column and row (and an isolated bad pixel) is drawn, found in the PNG's pixels."""
    import matplotlib.image
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from rmm_dask.summary import FIGURE_DPI, _draw_image, _image_figure

    ny, nx = shape
    fraction = np.zeros(shape, np.float32)
    columns, rows = [1, nx // 3, nx // 3 + 2, nx - 2], [ny // 2 + 1]
    fraction[:, columns] = 1.0
    fraction[rows, :] = 1.0
    fraction[ny // 5, nx // 2 + 5] = 1.0  # one pixel alone
    gap = np.zeros(shape, bool)
    fig, (ax,), cax = _image_figure(shape, 1)
    FigureCanvasAgg(fig)
    im = _draw_image(ax, fraction, gap, "upper")
    fig.colorbar(im, cax=cax)
    fig.savefig(tmp_path / "f.png", dpi=FIGURE_DPI)
    png = matplotlib.image.imread(tmp_path / "f.png")[..., :3]
    height = png.shape[0]
    bright = np.all(np.abs(png - np.asarray(im.cmap(1.0)[:3])) < 0.02, axis=-1)  # the colour of "masked"

    def at(x, y):  # the PNG pixel (row, column) of detector pixel (x, y)
        dx, dy = ax.transData.transform((x, y))
        return int(height - dy), int(dx)

    for x in columns:
        top, col = at(x, ny * 0.1)
        bottom, _ = at(x, ny * 0.4)
        band = bright[top:bottom, max(col - 1, 0) : col + 2]
        assert band.any(axis=1).mean() > 0.95, (shape, "column", x)
    for y in rows:
        row, left = at(nx * 0.4, y)
        _, right = at(nx * 0.3 + nx * 0.3, y)
        band = bright[max(row - 1, 0) : row + 2, left:right]
        assert band.any(axis=0).mean() > 0.95, (shape, "row", y)
    r, c = at(nx // 2 + 5, ny // 5)
    assert bright[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].any(), (shape, "pixel")


def test_pooled_blocks_show_their_most_masked_pixel_then_gaps():
    from rmm_dask.summary import pooled

    fraction = np.zeros((4, 6), np.float32)
    gap = np.zeros((4, 6), bool)
    fraction[0, 1] = 0.25  # block (0, 0): masked in a quarter of the cells
    gap[:, 2] = True  # block (0, 1) and (1, 1): gap pixels, one of them beside a masked pixel
    fraction[:, 2] = np.nan
    fraction[3, 3] = 1.0
    fraction[2:, 4:] = np.nan  # block (1, 2): absent pixels only (between modules)
    image, drawn_gap = pooled(fraction, gap, 2)
    np.testing.assert_array_equal(image[0, :2], [0.25, np.nan])
    assert image[1, 1] == 1.0 and not drawn_gap[1, 1]  # a bad pixel wins over the gap beside it
    assert drawn_gap[0, 1] and not drawn_gap[0, 0] and np.isnan(image[1, 2]) and not drawn_gap[1, 2]
    assert pooled(fraction, gap, 1)[0] is fraction
