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
from rmm_dask.store import open_tree, write_store
from rmm_dask.summary import (
    GAP_COLOUR,
    GAP_LABEL,
    NEXUS_BITS,
    REJECTED,
    REJECTED_COLOUR,
    REJECTED_LABEL,
    VERDICT_GAP,
    VERDICT_RANK,
    VERDICT_STYLE,
    _figures,
    count_nexus_bits,
    detector_image,
    modules_side_by_side,
    pooled_codes,
    verdict_counts,
    write_figures,
)
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


def make_store(path, det, modules, frames=12, pixel_mask=None, cells=1, planted=None):
    """A store of synthetic runs of ``det`` (every dark gain stage of it, and a flat), written by the real
    writer; ``pixel_mask`` the runs' manufacturer's layer; ``planted`` (module, gain, cell, y, x) uint8 replaces
    the mask the analysis made, for figures of known content."""
    config = SynthConfig(modules=modules, cells=cells, frames=frames, flat_frames=frames, seed=5, detector=det)
    calib = synthesize(config)

    def run(r):
        data = {"analog": (DIMS, da.from_array(r.analog, chunks=(1, 1, -1, -1, -1)))}
        if r.gain is not None:
            data["gain"] = (DIMS, da.from_array(r.gain, chunks=(1, 1, -1, -1, -1)))
        if pixel_mask is not None:
            data["pixel_mask"] = (("module", "y", "x"), da.from_array(pixel_mask, chunks=(1, -1, -1)))
        coords = {"module": np.arange(modules), "cell": np.arange(cells), "frame": np.arange(r.analog.shape[2])}
        return xr.Dataset(data, coords=coords, attrs={"path": "/runs/x", "detector": det.name})

    ds = build_mask({g: run(r) for g, r in calib.dark.items()}, run(calib.flat), detector=det)
    if planted is not None:
        ds["mask"] = ds["mask"].copy(data=da.from_array(planted, chunks=ds["mask"].data.chunks))
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
    assert "verdict.png" not in paths and "snr_module00.png" in paths  # no manufacturer's layer: no verdict
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
    marks = gap.astype(np.uint8)  # the manufacturer's reject beside a gap: the reject is drawn
    marks[1, 3] = REJECTED
    fraction[1, 3] = np.nan
    image, drawn = pooled(fraction, marks, 2)
    assert drawn[0, 1] == REJECTED and np.isnan(image[0, 1]) and drawn[1, 1] == 0  # (1, 1): the masked 1.0 wins


def test_pooled_verdicts_keep_the_disagreements_first():
    """A pooled block of the verdict figure shows new over not confirmed over known over gap over good."""
    codes = np.zeros((2, 10), np.float32)
    codes[0, 0:2] = [1, 2]  # known and new: new
    codes[0, 2:4] = [1, 3]  # known and not confirmed
    codes[0, 4:6] = [VERDICT_GAP, 1]
    codes[0, 6:8] = [VERDICT_GAP, 0]  # a gap beside good pixels stays a gap
    codes[:, 8:] = np.nan  # no pixel (between modules)
    np.testing.assert_array_equal(pooled_codes(codes, 2, VERDICT_RANK)[0], [2, 3, 1, VERDICT_GAP, np.nan])



def png_colours(fig, png, ax, points):
    """The colours (r, g, b) of ``png`` (``fig`` as write_figures saved it, read back) at the image pixels
    ``points`` ((y, x) in ``ax``'s data coordinates)."""
    height = png.shape[0]
    assert png.shape[:2] == fig.canvas.get_width_height()[::-1]
    out = []
    for y, x in points:
        px, py = ax.transData.transform((x, y))
        out.append(png[int(height - py), int(px), :3])
    return out


def near(colour, expected) -> bool:
    """``colour`` (r, g, b) is ``expected`` (a colour name, hex or an RGBA tuple) within PNG rounding."""
    from matplotlib.colors import to_rgb

    return bool(np.allclose(colour, to_rgb(expected), atol=0.02))


@pytest.mark.parametrize("shape", [(516, 1554), (512, 128), (1608, 1554), (4362, 4148)])
def test_every_verdict_line_is_visible_in_its_colour(shape, tmp_path):
    """The verdict figure pools blocks by their highest-ranked verdict: each planted column and row of
    known, new and not confirmed pixels (a new column between gap columns, an isolated known pixel) is
    drawn in its own colour, found in the PNG's pixels, at sizes that pool from 1 x 1 to 6 x 6."""
    import matplotlib.image
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from rmm_dask.summary import FIGURE_DPI, verdict_drawing

    ny, nx = shape
    codes = np.zeros(shape, np.float32)
    columns = {1: 1, nx // 3: 3, 2 * nx // 3: 2, nx - 2: 1}  # x: verdict
    for x, code in columns.items():
        codes[:, x] = code
    codes[:, [2 * nx // 3 - 1, 2 * nx // 3 + 1]] = VERDICT_GAP  # gaps beside a new column: it stays new
    rows = {ny // 2 + 1: 3, ny // 2 + 9: 2}
    for y, code in rows.items():
        codes[y, :] = code
    alone = (ny // 5, nx // 2 + 5)
    codes[alone] = 1
    counts = np.bincount(codes.astype(np.int64).ravel(), minlength=5)
    assert counts[1:4].min() > 100  # not circled: the test sees the pooled pixels alone
    fig, ax = verdict_drawing(codes, counts, "upper", ("x", "y"), "planted")
    FigureCanvasAgg(fig)
    fig.savefig(tmp_path / "v.png", dpi=FIGURE_DPI)
    png = matplotlib.image.imread(tmp_path / "v.png")[..., :3]
    height = png.shape[0]

    def is_colour(code):
        return np.all(np.abs(png - np.asarray(matplotlib.colors.to_rgb(VERDICT_STYLE[code][0]))) < 0.02, axis=-1)

    def at(x, y):
        dx, dy = ax.transData.transform((x, y))
        return int(height - dy), int(dx)

    for x, code in columns.items():
        top, col = at(x, ny * 0.1)
        bottom, _ = at(x, ny * 0.4)
        band = is_colour(code)[top:bottom, max(col - 1, 0) : col + 2]
        assert band.any(axis=1).mean() > 0.95, (shape, "column", x, VERDICT_STYLE[code][1])
    for y, code in rows.items():
        row, left = at(nx * 0.4, y)
        _, right = at(nx * 0.6, y)
        band = is_colour(code)[max(row - 1, 0) : row + 2, left:right]
        assert band.any(axis=0).mean() > 0.95, (shape, "row", y, VERDICT_STYLE[code][1])
    r, c = at(alone[1], alone[0])
    assert is_colour(1)[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].any(), (shape, "pixel")
    texts = [t.get_text().replace("\n", " ") for t in fig.legends[0].get_texts()]
    assert texts[:3] == [f"{VERDICT_STYLE[code][1]}: {counts[code]:,} pixels" for code in (1, 2, 3)]


#: planted in module 0 of the verdicts store: rows of 150 pixels and a gap column (y or x: where)
KNOWN_ROW, NEW_ROW, UNCONFIRMED_ROW, GAP_COLUMN, FEW_ROW = 20, 40, 60, 300, 100


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    """WIDE runs whose mask and manufacturer's layer hold known, new and not confirmed rows and a gap column;
    module 1: 7 pixels only the manufacturer rejects (few: circled)."""
    layer = np.zeros((3, *WIDE.module_shape), dtype=np.uint32)
    planted = np.zeros((3, 1, 1, *WIDE.module_shape), dtype=np.uint8)
    layer[0, KNOWN_ROW, :150] = 1 << 1  # dead, and rmm's OFFSET: known
    planted[0, :, :, KNOWN_ROW, :150] = 1
    planted[0, :, :, NEW_ROW, :150] = 2  # NOISE, the manufacturer's layer clean: new
    layer[0, UNCONFIRMED_ROW, :150] = 1 << 4  # noisy for the manufacturer, good for rmm
    layer[0, :, GAP_COLUMN] |= 1  # no sensor: rmm's NO_DATA
    planted[0, :, :, :, GAP_COLUMN] = 128
    layer[1, FEW_ROW, 10:17] = 1 << 2
    return make_store(tmp_path_factory.mktemp("verdicts") / "m.zarr", WIDE, 3, pixel_mask=layer, planted=planted)


def test_the_verdict_and_mask_figures_draw_the_manufacturers_layer(verdicts, tmp_path):
    """verdict.png: known, new, not confirmed and gaps in their colours with their counts; the mask figures:
    gaps and the manufacturer's rejects in their own colours, with a legend, a few rejects circled."""
    from matplotlib.image import imread

    published = {p.name: p for p in write_figures(verdicts, tmp_path / "png")}
    figures = dict(_figures(open_tree(verdicts)))
    assert list(figures) == [p for p in published] and "verdict.png" in figures
    counts = verdict_counts(verdicts)
    assert counts == {"known": 150, "new": 150, "not confirmed": 150 + 7}
    fig = figures["verdict.png"]
    texts = [t.get_text().replace("\n", " ") for t in fig.legends[0].get_texts()]
    assert texts == ["known: bad for both: 150 pixels", "new: found by rmm only: 150 pixels",
                     "not confirmed: the manufacturer rejects, rmm finds good: 157 pixels",
                     f"good for both: {3 * 172 * 519 - 450 - 7 - 172:,} pixels", f"{GAP_LABEL}: 172 pixels"]
    ax = fig.axes[0]  # three modules one above the other: module 0 on top, its own rows
    colours = png_colours(fig, imread(published["verdict.png"]), ax,
                          [(KNOWN_ROW, 70), (NEW_ROW, 70), (UNCONFIRMED_ROW, 70), (90, GAP_COLUMN), (90, 70)])
    assert [near(c, VERDICT_STYLE[code][0]) for c, code in zip(colours, (1, 2, 3, VERDICT_GAP, 0))] == [True] * 5

    fig = figures["mask_module00.png"]
    assert [t.get_text().replace("\n", " ") for t in fig.legends[0].get_texts()] == [GAP_LABEL, REJECTED_LABEL]
    assert "(edges, gaps and rejects left out)" in fig.axes[-1].get_ylabel().replace("\n", " ")
    colours = png_colours(fig, imread(published["mask_module00.png"]), fig.axes[0],
                          [(KNOWN_ROW, 70), (NEW_ROW, 70), (UNCONFIRMED_ROW, 70), (90, GAP_COLUMN), (90, 70)])
    from matplotlib import colormaps

    expected = [REJECTED_COLOUR, colormaps["magma"](1.0), REJECTED_COLOUR, GAP_COLOUR, colormaps["magma"](0.0)]
    assert [near(c, e) for c, e in zip(colours, expected)] == [True] * 5  # known: drawn as the manufacturer's
    fig = figures["mask_module01.png"]  # 7 rejects: circled, and said so
    texts = [t.get_text().replace("\n", " ") for t in fig.legends[0].get_texts()]
    assert texts == [f"{REJECTED_LABEL} (the 7 circled)"]
    rings = [c for c in fig.axes[0].collections if c.get_offsets().shape[0] == 7]
    assert rings and sorted(map(tuple, rings[0].get_offsets().tolist())) == [(x, FEW_ROW) for x in range(10, 17)]
    assert "mask_module02.png" in figures and not figures["mask_module02.png"].legends  # nothing apart: no legend


@pytest.fixture(scope="module")
def agipd(tmp_path_factory):
    """An AGIPD module of 2 cells with its three dark gain stages and a flat (ASIC edges masked unanalysed)."""
    return make_store(tmp_path_factory.mktemp("agipd") / "m.zarr", get_detector("AGIPD1M"), 1, cells=2)


def beyond(store, i, name, lam):
    """(below -lam, above +lam) per gain stage (one for flat_snr) of the store's SNRs, ASIC edges left out,
    read with zarr: what the histograms' legends must say."""
    root = zarr.open_group(store, mode="r")
    values = root["snr"][name][i]
    edge = (root["mask"][i, 0, 0] & 64) != 0
    series = values.reshape(-1, *values.shape[-3:]) if values.ndim == 4 else values[None]
    return [(int((v[:, ~edge] < -lam).sum()), int((v[:, ~edge] > lam).sum())) for v in series]


@pytest.mark.parametrize("lam", [None, 5.0])
def test_snr_histograms_per_module_state_lambda_and_count_beyond_it(agipd, wide, lam):
    """A figure per module, a panel per feature: lambda in the title and the x label, lines at +-lambda, and
    per gain stage the counts beyond -lambda and +lambda that the store's SNRs give; with the stuck pixels
    NOISE marks within +-lambda, the counts add up to the mask's."""
    import re

    for store, modules in ((agipd, 1), (wide, 3)):
        root = zarr.open_group(store, mode="r")
        threshold = 8.0 if lam is None else lam
        figures = {n: f for n, f in _figures(open_tree(store), lam=lam) if n.startswith("snr")}
        assert list(figures) == [f"snr_module{m:02d}.png" for m in range(modules)]
        for i, fig in enumerate(figures.values()):
            title = fig._suptitle.get_text()
            stated = f"lambda = {threshold:g}: pixels beyond +-{threshold:g} robust sigmas are bad"
            assert f"module {i}:" in title and stated in title
            assert ("photon counting" in title) == (store == wide)
            names = sorted(root["snr"].array_keys())
            for ax, name in zip(fig.axes, names):
                assert ax.get_title().startswith(name) and f"lambda = +-{threshold:g}" in ax.get_xlabel()
                assert sorted(line.get_xdata()[0] for line in ax.lines) == [-threshold, threshold]
                texts = [t.get_text() for t in ax.get_legend().get_texts()]
                said = [tuple(int(n.replace(",", "")) for n in m.groups()) for t in texts
                        if (m := re.search(rf"([\d,]+) below -{threshold:g}, ([\d,]+) above \+{threshold:g}$", t))]
                assert said == beyond(store, i, name, threshold), (store, i, name)
                if store == agipd and len(said) > 1:
                    gains = [t.split(":")[0] for t in texts if " gain: " in t]
                    assert gains == ["high gain", "medium gain", "low gain"]
                if lam is None and name == "noise" and store == agipd:  # the tally of NOISE with the mask's
                    mask = root["mask"][i]
                    edge = (mask[0, 0] & 64) != 0
                    noise = int((((mask & 2) != 0) & ~edge).sum())
                    within = sum(int(t.split()[1].replace(",", "")) for t in texts if t.lstrip().startswith("+"))
                    assert noise == sum(b + a for b, a in said) + within and within > 0
                    assert any("(zero variance: stuck)" in t for t in texts)
