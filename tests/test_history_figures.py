"""Issue 23 item 2: the figures and page of `rmm history --png/--html`, and `rmm export --to frequency`.

Histories are built by the real code from nightly versions written as rmm writes mask stores
(tests/test_history.py `write_version`); figures are checked from the PNG's pixels and from the
figure's own data, exports from the HDF5 file against counts made directly from the nights' codes."""

import json
import os

import h5py
import numpy as np
import pytest
import zarr

from rmm_dask import history_figures
from rmm_dask.cli import main
from rmm_dask.nightly import history
from tests.cli_errors import one_line_error
from tests.test_history import EDGE, NO_DATA, OFFSET, planted_nights, tree, write_version  # noqa: F401 (fixture)

PIXEL, COLUMN, UNSEEN_AT = (300, 40), 90, (100, 7)  #: (y, x) of the pixel bad on one night; the column; a dead pixel


@pytest.fixture
def one_pixel(store, tmp_path):
    """A detector directory of 5 nights, all good but: the pixel PIXEL bad on night 3 only (one cell of one gain),
    the column COLUMN bad on nights 2 and 4 (every plane), the pixel UNSEEN_AT without data every night; its
    history built."""
    root = tmp_path / "masks" / "AGIPD"
    shape = tuple(zarr.open_group(store, mode="r")["mask"].shape)
    for night in range(5):
        codes = np.zeros(shape, np.uint8)
        codes[..., 0] = EDGE
        if night == 2:
            codes[(0, 1, 1, *PIXEL)] = OFFSET
        if night in (1, 3):
            codes[..., COLUMN] = OFFSET
        codes[(0, slice(None), slice(None), *UNSEEN_AT)] = NO_DATA
        write_version(root, night + 1, codes, darks=night + 1, template=store)
    history.update(root, lambda line: None)
    return root


def colours_at(png, fig, ax, points):
    """The (r, g, b) of the saved ``png`` (``fig`` drawn again) around each (y, x) data point of ``ax``: a 3 x 3
    screen-pixel patch each."""
    height = png.shape[0]
    assert png.shape[:2] == tuple(fig.canvas.get_width_height()[::-1])
    out = []
    for y, x in points:
        px, py = ax.transData.transform((x, y))
        r, c = int(height - py), int(px)
        out.append(png[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2, :3].reshape(-1, 3))
    return out


def has(patch, colour) -> bool:
    from matplotlib.colors import to_rgb

    return bool(np.any(np.all(np.abs(patch - np.asarray(to_rgb(colour))) < 0.03, axis=-1)))


def test_a_pixel_bad_on_one_night_and_a_column_are_visible_in_the_png_at_two_sizes(one_pixel, tmp_path, capsys):
    """One module of 512 x 128 through `rmm history --png` (drawn pixel for pixel), and 2 modules of 1024 x 1024
    drawn by the same function (pooled 3 x 3): the pixel bad on 1 of 5 nights is drawn in the scale's colour of 1/5
    (of the nights it was seen), the column bad on 2 of 5 in that of 2/5, the dead pixel in the never-seen colour,
    the good pixels grey."""
    import matplotlib.image
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    from rmm_dask.summary import FIGURE_DPI

    cmap, norm = colormaps[history_figures.FREQUENCY_CMAP], Normalize(1e-6, 1.0)
    one, two = cmap(norm(1 / 5)), cmap(norm(2 / 5))
    assert main(["history", str(one_pixel), "--png", str(tmp_path / "png")]) == 0
    out = capsys.readouterr().out
    assert f"figure: {tmp_path / 'png' / 'frequency.png'}" in " ".join(out.split())
    assert sorted(os.listdir(tmp_path / "png")) == ["counts.png", "frequency.png"]
    result = history.report(one_pixel)
    fig = dict(history_figures.figures(result))["frequency.png"]  # the figure the command saved, drawn again
    ax = fig.axes[0]
    png = matplotlib.image.imread(tmp_path / "png" / "frequency.png")
    pixel, column, dead, good = colours_at(png, fig, ax, [PIXEL, (200, COLUMN), UNSEEN_AT, (400, 60)])
    assert has(pixel, one) and has(column, two) and has(dead, history_figures.UNSEEN_COLOUR)
    assert has(good, history_figures.NEVER_BAD_COLOUR) and not has(good, one)
    legend = [" ".join(t.get_text().split()) for t in fig.legends[0].get_texts()]
    assert legend == [f"never bad in the last 5 night(s): {65536 - 514:,} pixels",
                      "never seen (no data in the last 5 night(s)): 1 pixels",
                      "bad on at least one night (the colour scale): 513 pixels"]  # 513 > CIRCLED: not circled
    assert "fraction of the last 5 nights bad" in fig.axes[1].get_ylabel()  # the colourbar

    big = (2, 1024, 1024)  # pooled: fewer screen pixels than detector pixels
    bad, seen = np.zeros(big, np.uint8), np.full(big, 5, np.uint8)
    bad[1, 611, 403] = 1
    bad[0, :, 700] = 2
    seen[1, 10:20, 10:20] = 0
    fig, axes = history_figures.frequency_figure(bad, seen, 5, [{"version": "v0001", "date": "2026-12-01"}] * 5)
    fig.savefig(tmp_path / "big.png", dpi=FIGURE_DPI)
    png = matplotlib.image.imread(tmp_path / "big.png")
    assert "3 x 3 px per drawn block" in axes[0].get_xlabel()
    (pixel,) = colours_at(png, fig, axes[1], [(611, 403)])
    column = colours_at(png, fig, axes[0], [(y, 700) for y in range(50, 1000, 50)])
    (dead,) = colours_at(png, fig, axes[1], [(15, 15)])
    assert has(pixel, one) and all(has(patch, two) for patch in column)
    assert has(dead, history_figures.UNSEEN_COLOUR)


def test_the_counts_figure_and_the_page_say_what_report_says(tree, tmp_path, capsys):  # noqa: F811
    """`rmm history --last 4 --png --html --json`: the counts figure's lines are report()'s numbers (per night
    flagged, newly bad and healed; per bit), the page holds the same tables, both figures and what the history does
    not tell; every output read-only."""
    import base64

    root, nights = tree
    page, figs, js = tmp_path / "h.html", tmp_path / "png", tmp_path / "h.json"
    assert main(["history", str(root), "--rebuild", "--last", "4", "--png", str(figs), "--html", str(page),
                 "--json", str(js)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"page: {page}" in out and f"figure: {figs / 'counts.png'}" in out
    result = json.loads(js.read_text())
    fig = history_figures.counts_figure(result)
    totals, bits = fig.axes[0], fig.axes[1]
    lines = {line.get_label(): line for line in totals.get_lines()}
    assert list(lines) == ["flagged", "newly bad", "healed"]
    for key, label, _ in history_figures.TOTALS:
        assert list(lines[label].get_xdata()) == [3, 4, 5, 6]
        assert list(lines[label].get_ydata()) == [row[key] for row in result["per_night"]]
    flagged = [int((((c & NO_DATA) == 0) & ((c & ~np.uint8(EDGE | NO_DATA)) != 0)).sum()) for c in nights[-4:]]
    assert [row["flagged"] for row in result["per_night"]] == flagged  # and those are the nights' own counts
    per_bit = {line.get_label(): list(line.get_ydata()) for line in bits.get_lines()}
    assert "ASIC_EDGE" not in per_bit
    assert per_bit["NOISE"] == [int(((c & 2) != 0).sum()) for c in nights[-4:]]
    labels = [t.get_text() for t in fig.axes[2].get_xticklabels()]
    assert labels == ["3\n12-03", "4\n12-04", "5\n12-05", "6\n12-06"]  # night and the darks' day

    text = page.read_text()
    assert text.count("<img ") == 2 and "What this does not tell: nights held or not published are not counted" in text
    assert "reach back 64 nights at most (N &lt;= 64)" in text
    for row in result["per_night"]:
        assert f"<td>{row['version']}</td>" in text
    assert "<td>0</td><td>high</td><td>0</td><td>10</td><td>10</td><td>5</td>" in text  # the most changed plane
    embedded = text.split('alt="counts" src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(embedded) == (figs / "counts.png").read_bytes()
    for path in (page, js, figs, figs / "counts.png", figs / "frequency.png"):
        assert not path.stat().st_mode & 0o222, path


def test_rmm_history_figures_refused_before_anything_is_written(tree, tmp_path, capsys):  # noqa: F811
    """A symbolic link at --png, an existing --html without --overwrite: one line, exit 2; nothing published (not
    the JSON either), the link's target untouched."""
    root, _ = tree
    history.update(root, lambda line: None)
    target = tmp_path / "theirs"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    (tmp_path / "png").symlink_to(target)
    js = tmp_path / "h.json"
    assert main(["history", str(root), "--json", str(js), "--png", str(tmp_path / "png")]) == 2
    one_line_error(capsys, f"rmm history: {tmp_path / 'png'}: is a symbolic link", "not writing the history figures")
    assert os.listdir(target) == ["keep.txt"] and not js.exists()
    page = tmp_path / "h.html"
    page.write_text("old page")
    assert main(["history", str(root), "--html", str(page), "--png", str(tmp_path / "figs")]) == 2
    one_line_error(capsys, f"{page}: exists already (give --overwrite to replace it)")
    assert page.read_text() == "old page" and not (tmp_path / "figs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.html", "masks", "png", "theirs"]


# ------------------------------------------------------------------------------------------ --to frequency


def test_export_frequency_is_the_truth_over_the_last_n_nights(tree, tmp_path, capsys):  # noqa: F811
    """`rmm export PUBLISH/NAME --to frequency --last 4` and of history.zarr over all nights: /seen, /bad, /frequency
    equal the counts made from the nights' codes (a night without data in neither), NaN where never seen; the
    attributes name the nights, N and how to cut."""
    root, nights = tree
    history.update(root, lambda line: None)
    out = tmp_path / "f.h5"
    assert main(["export", str(root), "--to", "frequency", "--last", "4", "--out", str(out)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert f"{root / 'history.zarr'}: the last 4 night(s), v0003" in said and f"exported: {out}" in said
    c = np.stack(nights[-4:])
    seen = ((c & NO_DATA) == 0).sum(0)
    bad = (((c & NO_DATA) == 0) & ((c & ~np.uint8(EDGE | NO_DATA)) != 0)).sum(0)
    with h5py.File(out) as f:
        assert f["frequency"].dtype == np.float32 and f["seen"].dtype == f["bad"].dtype == np.uint16
        np.testing.assert_array_equal(f["seen"][...], seen)
        np.testing.assert_array_equal(f["bad"][...], bad)
        frequency = f["frequency"][...]
        assert not np.isnan(frequency).any()  # every plane seen on some of the 4 nights
        np.testing.assert_allclose(frequency[seen > 0], (bad / np.maximum(seen, 1))[seen > 0], rtol=1e-6)
        attrs = dict(f.attrs)
    assert attrs["N"] == 4 and attrs["cut"] == "frequency >= 0.2" and "frequency >= 0.2" in attrs["description"]
    assert [n["version"] for n in json.loads(attrs["nights"])] == ["v0003", "v0004", "v0005", "v0006"]
    assert attrs["history"] == str(root / "history.zarr") and attrs["software"].startswith("rmm-dask ")
    assert not out.stat().st_mode & 0o222

    every = tmp_path / "all.h5"  # all 6 nights: the history's exact counts over all nights
    assert main(["export", str(root / "history.zarr"), "--to", "frequency", "--out", str(every)]) == 0
    counters = history.open_history(root / "history.zarr")
    with h5py.File(every) as f:
        assert f.attrs["N"] == 6
        np.testing.assert_array_equal(f["seen"][...], counters["seen"][...])
        np.testing.assert_array_equal(f["bad"][...], counters["bad"][...])
    newest = tmp_path / "one.h5"  # the last night alone: its planes without data have no fraction
    assert main(["export", str(root), "--to", "frequency", "--last", "1", "--out", str(newest)]) == 0
    with h5py.File(newest) as f:
        unseen = (nights[-1] & NO_DATA) != 0
        assert unseen.any() and np.array_equal(np.isnan(f["frequency"][...]), unseen)
        assert not f["seen"][...][unseen].any()


def test_export_frequency_refusals_leave_nothing(tree, store, tmp_path, capsys):  # noqa: F811
    """One line, exit 2, nothing written: a mask store --to frequency, a history --to h5, --last with --to h5, a
    symbolic link at --out (its target untouched), an existing file without --overwrite, a damaged history."""
    root, _ = tree
    history.update(root, lambda line: None)
    out = tmp_path / "f.h5"
    assert main(["export", str(store), "--to", "frequency", "--out", str(out)]) == 2
    one_line_error(capsys, f"rmm export: {store}: is a mask store, not a pixel history", "nothing was written")
    assert main(["export", str(root / "history.zarr"), "--to", "h5", "--out", str(out)]) == 2
    one_line_error(capsys, "is a pixel history, not a mask store: it exports only --to frequency")
    assert main(["export", str(root), "--to", "nexus", "--out", str(out)]) == 2
    one_line_error(capsys, f"{root}: is a nightly detector's directory, not a mask store", "--to frequency")
    assert main(["export", str(store), "--to", "h5", "--last", "3", "--out", str(out)]) == 2
    one_line_error(capsys, "rmm export: --last: counts nights: it goes with --to frequency")
    assert not out.exists()

    target = tmp_path / "theirs.h5"
    target.write_bytes(b"theirs")
    out.symlink_to(target)
    assert main(["export", str(root), "--to", "frequency", "--out", str(out)]) == 2
    one_line_error(capsys, f"{out}: is a symbolic link", "not writing the export through it")
    assert target.read_bytes() == b"theirs" and out.is_symlink()
    out.unlink()
    out.write_bytes(b"old")
    assert main(["export", str(root), "--to", "frequency", "--out", str(out)]) == 2
    one_line_error(capsys, f"{out}: exists already (give --overwrite to replace it)")
    assert out.read_bytes() == b"old"

    chunk = root / "history.zarr" / "recent_seen" / "c.0.0.0.0.0"
    data = chunk.read_bytes()
    chunk.chmod(0o644)
    chunk.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    fresh = tmp_path / "g.h5"
    assert main(["export", str(root), "--to", "frequency", "--out", str(fresh)]) == 2
    one_line_error(capsys, "damaged history: chunk recent_seen/c.0.0.0.0.0 does not match its checksum",
                   "the next nightly pass rebuilds it")
    assert not fresh.exists() and out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5", "masks", "theirs.h5"]
