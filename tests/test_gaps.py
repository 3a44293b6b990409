"""Gap pixels (no sensor behind them: NeXus pixel_mask bit 0, data -1) are missing data, not defects:
``rmm show`` counts them apart and its figures draw them in a colour of their own, while the mask and
its exports still mask them."""

from html.parser import HTMLParser

import dask
import h5py
import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from rmm_dask.cli import main
from rmm_dask.codes import BadPixel
from rmm_dask.detectors import get_detector
from rmm_dask.io import open_run
from rmm_dask.pipeline import build_mask
from rmm_dask.report import summary_html
from rmm_dask.store import open_store, open_tree, write_store
from rmm_dask.summary import GAP_COLOUR, GAP_LABEL, _figures, count_bits, gap_pixels, write_figures
from rmm_dask.synth.write_lambda import write_lambda_run
from rmm_dask.tables import CONTINUATION, detector_lines, gap_line

from .stores import store_arrays

#: a small LAMBDA GaAs-like detector: two modules of two sensor tiles with a 2-column gap between them
GAPPY_YAML = """name: GAPPY
modules: 2
module-shape: [40, 90]
chip-rows: [0, 40]
chip-columns: [0, 45, 90]
gain-stages: [high]
counting: true
dataset: /entry/instrument/detector/data
pixel-mask: /entry/instrument/detector/pixel_mask
"""
GAP = slice(44, 46)  #: the gap columns of both modules
HOT = [(0, 10, 43), (1, 20, 46)]  #: (module, y, x): real defects, right beside the gap
MISSING = (0, 30, 10)  #: a sensor pixel without data (-1, not a gap): a NO_DATA defect
DPI = 80  #: as write_figures saves them


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A LAMBDA-like dark run written as the detector writes it: -1 in the gaps, their pixel_mask bit 0 set."""
    tmp = tmp_path_factory.mktemp("gaps")
    (tmp / "gappy.yaml").write_text(GAPPY_YAML)
    det = get_detector(tmp / "gappy.yaml")
    counts = np.random.default_rng(3).poisson(0.004, (2, 20, 40, 90)).astype(np.int32)  # a LAMBDA dark
    counts[:, :, :, GAP] = -1
    for m, y, x in HOT:
        counts[m, :, y, x] = 50
    counts[MISSING[0], :, MISSING[1], MISSING[2]] = -1
    pixel_mask = np.zeros((2, 40, 90), np.uint32)
    pixel_mask[:, :, GAP] = 1
    return write_lambda_run(tmp / "dark", counts, det, pixel_mask=pixel_mask), det


def mask_store(run, out, *, layer=True):
    """The store the real pipeline makes of ``run`` (without its manufacturer's layer: ``layer=False``)."""
    path, det = run
    dark = open_run(path, det)
    ds = build_mask({"high": dark if layer else dark.drop_vars("pixel_mask")}, None, detector=det)
    return write_store(ds, out, compute=lambda d: dask.compute(d, scheduler="sync"))


@pytest.fixture(scope="module")
def gappy(run, tmp_path_factory):
    return mask_store(run, tmp_path_factory.mktemp("gappy") / "m.zarr")


def test_gaps_are_counted_apart_from_the_defects(gappy, tmp_path):
    tree = open_tree(gappy)
    gap = gap_pixels(tree, 0)
    assert gap.shape == (40, 90) and gap[:, GAP].all() and gap.sum() == 80
    counts = count_bits(gappy)
    assert counts["pixels"] == 2 * 40 * 90
    total = counts["total"]
    assert total["gap"] == 160  # pixels x gain stages x cells
    assert (total["OFFSET"], total["NO_DATA"], total["any"], total["flagged"]) == (2, 1, 3, 3)  # not the gaps' NO_DATA
    per_module = [(row["gap"], row["NO_DATA"], row["flagged"]) for row in counts["module"].values()]
    assert per_module == [(80, 1, 2), (80, 0, 1)]
    assert counts["gain"]["high"]["gap"] == counts["cell"][0]["gap"] == 160
    # the store's mask is not changed, and an export still masks the gaps
    mask = store_arrays(gappy)["mask"]
    assert (mask[:, 0, 0][:, :, GAP] == BadPixel.NO_DATA).all()
    assert main(["export", str(gappy), "--to", "cheetah", "--out", str(tmp_path / "good.h5")]) == 0
    with h5py.File(tmp_path / "good.h5") as f:
        good = f["data/data"][()].reshape(2, 40, 90)  # Cheetah: modules one above the other
    assert not good[:, :, GAP].any() and good.sum() == 2 * 40 * 90 - 160 - 3


def test_without_the_manufacturers_layer_nothing_says_where_gaps_are(run, tmp_path, capsys):
    store = mask_store(run, tmp_path / "m.zarr", layer=False)
    assert "layers" not in open_tree(store).children and not gap_pixels(store, 0).any()
    counts = count_bits(store)
    assert counts["total"]["gap"] == 0 and all(row["gap"] == 0 for row in counts["module"].values())
    assert counts["total"]["NO_DATA"] == 161 and counts["total"]["flagged"] == 163  # missing data, counted as such
    assert main(["show", str(store)]) == 0
    assert "gap pixels" not in capsys.readouterr().out


def test_rmm_show_says_the_gaps_are_missing_data_not_defects(gappy, capsys):
    before = store_arrays(gappy)
    assert main(["show", str(gappy)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    (line,) = [ln for ln in lines if ln.startswith("gap pixels:")]
    assert line.startswith("gap pixels: 160 (160 pixel-planes), no sensor behind them")
    assert "missing data, not defects" in line
    rows = {ln.split()[0]: ln.split() for ln in lines if ln.split()[:1] in (["NO_DATA"], ["OFFSET"], ["any"])}
    assert rows["NO_DATA"][2] == "1" and rows["OFFSET"][2] == "2" and rows["any"][2] == "3"  # not 161, 163
    modules = [ln.split() for ln in lines if ln.startswith("module ")]
    assert [m[-2:] for m in modules] == [["1", "2"], ["0", "1"]]  # NODAT, any
    after = store_arrays(gappy)  # the mask itself is not changed: only what is said of it
    assert before.keys() == after.keys() and sorted(p.name for p in gappy.parent.iterdir()) == ["m.zarr"]
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)


def pixel_colours(fig, png, ax, points):
    """The colours (r, g, b) at the centres of image pixels ``points`` ((y, x) of the image drawn on ``ax``)
    in ``png`` (the figure as write_figures published it, read back)."""
    fig.set_dpi(DPI)
    height = png.shape[0]
    assert png.shape[:2] == fig.canvas.get_width_height()[::-1]  # the figure's real size
    out = []
    for y, x in points:
        px, py = ax.transData.transform((x, y))
        out.append(tuple(png[int(height - py), int(px), :3]))
    return out


def near(colour, expected, tol=0.02) -> bool:
    """The colours agree within ``tol`` per channel (PNG rounding)."""
    return np.allclose(colour, expected, atol=tol)


def test_figures_draw_gaps_in_their_own_colour_beside_the_defects(gappy, tmp_path):
    published = {p.name: p for p in write_figures(gappy, tmp_path / "png")}
    figures = dict(_figures(open_tree(gappy)))
    masked, clean, gap_colour = colormaps["magma"](1.0)[:3], colormaps["magma"](0.0)[:3], to_rgb(GAP_COLOUR)
    for m, y, x in HOT:  # each module's figure: the gap column, the defect next to it, a clean pixel
        fig = figures[f"mask_module{m:02d}.png"]
        ax = fig.axes[0]
        png = imread(published[f"mask_module{m:02d}.png"])
        gap_here, defect, good = pixel_colours(fig, png, ax, [(y, 44), (y, x), (5, 20)])
        assert near(gap_here, gap_colour) and near(defect, masked) and near(good, clean)
        assert [t.get_text() for t in fig.legends[0].get_texts()] == [GAP_LABEL]
        assert "gaps left out" in fig.axes[-1].get_ylabel()
    fig = figures["mask_module00.png"]
    (missing,) = pixel_colours(fig, imread(published["mask_module00.png"]), fig.axes[0], [MISSING[1:]])
    assert near(missing, masked)  # a sensor pixel without data stays a defect
    # the assembled detector: modules one above the other with 2 rows between them
    fig = figures["detector.png"]
    png = imread(published["detector.png"])
    points = [(5, 45), (10, 43), (42 + 30, 44), (42 + 20, 46), (42 + 5, 20), (40, 20)]
    *colours, between = pixel_colours(fig, png, fig.axes[0], points)
    assert [near(c, e) for c, e in zip(colours, [gap_colour, masked, gap_colour, masked, clean])] == [True] * 5
    assert near(between, (1, 1, 1))  # no module: the figure's white, neither gap nor masked
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [GAP_LABEL]


class Paragraphs(HTMLParser):
    """The text of a page's ``<p class=...>`` elements, per class (entities decoded)."""

    def __init__(self, page: str):
        super().__init__()
        self.found: dict[str, list[str]] = {}
        self._in = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if tag == "p":
            self._in = dict(attrs).get("class")
            self.found.setdefault(self._in, []).append("")

    def handle_endtag(self, tag):
        self._in = None if tag == "p" else self._in

    def handle_data(self, data):
        if self._in is not None:
            self.found[self._in][-1] += data


def test_html_report_and_nightly_page_say_what_rmm_show_says(gappy, run, tmp_path, capsys):
    """`rmm show --html` and the nightly summary.html carry the detector lines and the gap line `rmm show` prints."""
    before = store_arrays(gappy)
    report = tmp_path / "r.html"
    assert main(["show", str(gappy), "--html", str(report)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    printed = captured.out.replace("\n" + CONTINUATION, " ").splitlines()  # show folds long lines
    root = open_store(gappy)
    counts = count_bits(root)
    lines = detector_lines(root)
    assert lines == ["detector: GAPPY, 2 module(s) of 40 x 90 pixels; description: given: GAPPY",
                     "chips: chip rows [0, 40], columns [0, 45, 90] from the description"]
    assert [f"  {line}" for line in lines] == [ln for ln in printed if ln.startswith(("  detector:", "  chips:"))]
    assert gap_line(counts) in printed
    page = Paragraphs(report.read_text())
    assert page.found["detector"] == lines and page.found["gap"] == [gap_line(counts)]
    nightly = {"detector": "GAPPY", "version": "v0001", "status": "published", "reasons": [], "diff": None,
               "timings": {"total": 1.0}}
    page = Paragraphs(summary_html(nightly, root, counts, []))
    assert page.found["detector"] == lines and page.found["gap"] == [gap_line(counts)]
    after = store_arrays(gappy)  # only read: the store is as it was, the report published beside nothing else
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    # a store whose runs say nothing of gaps: no gap line on the page (its missing pixels are NO_DATA defects)
    (tmp_path / "plain").mkdir()
    plain = mask_store(run, tmp_path / "plain" / "m.zarr", layer=False)
    page = Paragraphs(summary_html(nightly, open_store(plain), count_bits(plain), []))
    assert "gap" not in page.found and page.found["detector"] == lines
