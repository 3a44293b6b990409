"""What `rmm show`, `rmm show --html` and the nightly page say of a mask (issue 22, item 2): parameters by
name, value and meaning; every input file; the frames F1 rejected per dark run; rmm's verdict against the
manufacturer's pixel mask; the comparison with the previous version; every line within 80 columns.

Two small real stores, made once for the module: a two-module AGIPD set with outlying dark frames planted
(F1 rejects them; train ids recorded) and a one-module LAMBDA set with the manufacturer's pixel mask.
What the reports say is checked against the stores' own arrays, read with zarr.
"""

import json
import os
import shutil
import subprocess
import sys
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import zarr

from rmm_dask.cli import main
from rmm_dask.diff import diff_masks
from rmm_dask.report import summary_html
from rmm_dask.store import open_store
from rmm_dask.summary import count_bits, verdict_counts

from .cli_errors import one_line_error
from .stores import store_arrays

ROOT = Path(__file__).resolve().parents[1]


def words(text: str) -> str:
    """The text with its folding undone: every run of white space one space."""
    return " ".join(text.split())


class Tables(HTMLParser):
    """The tables of a page, each under the heading (h2/h3) before it: {heading: [[cell, ...], ...]}; the
    text of paragraphs of a class in ``paragraphs``, and the figures' captions."""

    def __init__(self, page: str):
        super().__init__()
        self.tables, self.paragraphs, self.captions = {}, {}, []
        self._heading, self._text, self._where = "", None, None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if tag in ("h2", "h3", "td", "th", "figcaption", "p"):
            self._text = ""
            self._where = dict(attrs).get("class") if tag == "p" else None
        if tag == "table":
            self.tables[self._heading] = []
        elif tag == "tr":
            self.tables[self._heading].append([])

    def handle_endtag(self, tag):
        if tag in ("h2", "h3"):
            self._heading = self._text
        elif tag in ("td", "th"):
            self.tables[self._heading][-1].append(self._text)
        elif tag == "figcaption":
            self.captions.append(self._text)
        elif tag == "p" and self._where:
            self.paragraphs.setdefault(self._where, []).append(words(self._text))
        if tag in ("h2", "h3", "td", "th", "figcaption", "p"):
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text += data


def rmm(capsys, *argv) -> str:
    """`rmm ARGV` in this process: exit 0, nothing on stderr; its output with the folding undone."""
    assert main([str(a) for a in argv]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return words(captured.out)


def unchanged(store, before: dict) -> None:
    """The store holds exactly the arrays it held before: the reports only read it."""
    after = store_arrays(store)
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)


@pytest.fixture(scope="module")
def agipd(tmp_path_factory):
    """Two AGIPD modules, 2 cells, 16 dark frames with 15% outlying frames: runs and their mask store."""
    from rmm_dask.synth import SynthConfig, synthesize, write_synthetic

    base = tmp_path_factory.mktemp("agipd")
    calib = synthesize(SynthConfig(modules=2, cells=2, frames=16, flat_frames=12, outlier_frame_fraction=0.15, seed=7))
    runs = write_synthetic(calib, base / "set", truth=None)
    store = base / "m.zarr"
    argv = ["mask", "--dark-high", runs["dark-high"], "--dark-low", runs["dark-low"], "--flat", runs["flat"],
            "--out", store, "--workers", "1"]
    assert main([str(a) for a in argv]) == 0
    return runs, store


@pytest.fixture(scope="module")
def lower(agipd, tmp_path_factory):
    """The mask of the same runs at lambda 5: more pixels bad than at 8 (as the next version of a nightly)."""
    runs, _ = agipd
    store = tmp_path_factory.mktemp("lower") / "m.zarr"
    assert main(["mask", "--dark-high", str(runs["dark-high"]), "--dark-low", str(runs["dark-low"]), "--flat",
                 str(runs["flat"]), "--out", str(store), "--workers", "1", "--lambda", "5"]) == 0
    return store


@pytest.fixture(scope="module")
def lam(tmp_path_factory):
    """One LAMBDA module (dark and flat of 12 frames), its manufacturer's pixel mask kept as a layer: its mask store."""
    base = tmp_path_factory.mktemp("lambda")
    assert main(["synth", "--detector", "lambda", "--frames", "12", "--modules", "1", "--out", str(base / "set")]) == 0
    store = base / "m.zarr"
    raw = base / "set" / "raw"
    assert main(["mask", "--dark-high", str(raw / "r0001"), "--flat", str(raw / "r0002"), "--out", str(store),
                 "--workers", "1"]) == 0
    return store


def test_parameters_read_as_name_value_and_meaning(agipd, tmp_path, capsys):
    """Before: `  parameters: {'lam': 8.0, 'method': 'rmm', ...}` (a Python dict, 158 characters), a JSON
    dump on the page. Now a table of name, value and meaning, a key rmm does not know shown as it is."""
    _, store = agipd
    capsys.readouterr()
    shown = rmm(capsys, "show", store)
    assert "lambda 8.0 robust sigmas from the model beyond which a pixel is bad (--lambda)" in shown
    assert "method rmm statistics of the normal pixels' model: rmm (the paper's robust fit)" in shown
    assert "window none the model's windows [y, x]; none: one model per chip (ASIC)" in shown
    assert "features offset, noise, gain_separation, gain_level, flat the features that may set bits" in shown
    assert "'lam'" not in shown and "{" not in shown
    # a store of a later rmm-dask with a parameter this one does not know: shown by its stored name
    copy = tmp_path / "later.zarr"
    shutil.copytree(store, copy)
    for path in (copy, *copy.rglob("*")):  # published stores are read-only
        path.chmod(0o755 if path.is_dir() else 0o644)
    root = zarr.open_group(copy, mode="r+")
    root.attrs["parameters"] = {**root.attrs["parameters"], "lam": 6.5, "new_knob": [1, 2, 3]}
    with warnings.catch_warnings():  # zarr: consolidated metadata is not in the v3 spec yet
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(copy)
    before = store_arrays(copy)
    shown = rmm(capsys, "show", copy, "--html", tmp_path / "r.html")
    assert "lambda 6.5 robust sigmas" in shown and "new_knob 1, 2, 3" in shown
    rows = Tables((tmp_path / "r.html").read_text()).tables["Parameters"]
    assert rows[0] == ["name", "value", "meaning"]
    assert rows[1] == ["lambda", "6.5", "robust sigmas from the model beyond which a pixel is bad (--lambda)"]
    assert ["new_knob", "1, 2, 3", ""] in rows and len(rows) == 1 + 11  # the ten known and the new one
    unchanged(copy, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["later.zarr", "r.html"]


def test_inputs_count_every_file_and_files_lists_them(agipd, tmp_path, capsys):
    """Before: each run's directory only. Now `rmm show` counts each run's files and their size (`--files`
    lists them: name, size, time); the page lists every file of every run by its full path."""
    runs, store = agipd
    inputs = zarr.open_group(store, mode="r").attrs["inputs"]
    capsys.readouterr()
    shown = rmm(capsys, "show", store)
    for role in ("dark-high", "dark-low", "flat"):
        files = inputs[role]["files"]
        size = sum(f["size"] for f in files) / 1e6
        frames = 12 if role == "flat" else 16
        assert f"{role}: {runs[role]} ({frames} frames per cell; 2 files, {size:.1f} MB)" in shown
    assert "files: 6 (--files lists them with their sizes and times)" in shown
    assert "RAW-R0001-AGIPD00-S00000.h5" not in shown
    listed = rmm(capsys, "show", store, "--files", "--html", tmp_path / "r.html")
    for role, info in inputs.items():
        for record in info["files"]:
            name = Path(record["path"]).name
            when = f"{record['mtime'][:10]} {record['mtime'][11:19]} UTC"
            assert f"{role} {name} {record['size'] / 1e6:.1f} MB {when}" in listed
    rows = Tables((tmp_path / "r.html").read_text()).tables["Input files"]
    expected = [[role, r["path"], f"{r['size'] / 1e6:.1f} MB", str(r["size"]),
                 f"{r['mtime'][:10]} {r['mtime'][11:19]} UTC"] for role, info in inputs.items() for r in info["files"]]
    assert rows[1:] == expected and len(expected) == 6
    # an existing page is refused before anything is written; the page and the store stay as they were
    page = (tmp_path / "r.html").read_bytes()
    assert main(["show", str(store), "--files", "--html", str(tmp_path / "r.html")]) == 2
    one_line_error(capsys, "rmm show: ", str(tmp_path / "r.html"))
    assert (tmp_path / "r.html").read_bytes() == page and sorted(os.listdir(tmp_path)) == ["r.html"]


def test_rejected_frames_per_dark_run_with_their_train_ids(agipd, tmp_path, capsys):
    """Before: not shown. Now per dark run the frames F1 rejected of all, per module where they differ, and
    the train ids of those frames; in full on the page. Checked against /rejected_frames of the store."""
    _, store = agipd
    group = zarr.open_group(store, mode="r")["rejected_frames"]
    before = store_arrays(store)
    capsys.readouterr()
    shown = rmm(capsys, "show", store, "--html", tmp_path / "r.html")
    rows = Tables((tmp_path / "r.html").read_text()).tables["Frames rejected by F1"]
    assert rows[0] == ["run", "rejected", "of frames", "module x cell x frame", "per module", "train ids"]
    per_module = {}
    for stage in ("high", "low"):
        hit, trains = group[stage][:], group[f"train_id_{stage}"][:]
        assert hit.shape == (2, 2, 16) and hit.any()
        rejected = [int(t) for t in trains[hit.any(axis=(0, 1))]]
        per_module[stage] = [int(n) for n in hit.sum(axis=(1, 2))]
        line = f"dark-{stage}, rejected by F1: {int(hit.sum())} of 64 frames (2 modules x 2 cells x 16)"
        if per_module[stage][0] != per_module[stage][1]:
            line += f"; module 0: {per_module[stage][0]}, module 1: {per_module[stage][1]}"
        listed = rejected[:8]
        line += f"; train{'s' if len(rejected) > 1 else ''} " + ", ".join(map(str, listed))
        assert line + (f" and {len(rejected) - 8} more" if len(rejected) > 8 else "") in shown
        assert [f"dark-{stage}", str(int(hit.sum())), "64", "2 x 2 x 16",
                f"module 0: {per_module[stage][0]}, module 1: {per_module[stage][1]}",
                ", ".join(map(str, rejected))] in rows
    assert len(set(per_module["low"])) == 2  # the seed plants more outlying frames in one module: named apart
    assert "flat, rejected" not in shown and len(rows) == 3  # F1 judges dark frames only
    unchanged(store, before)
    assert sorted(os.listdir(tmp_path)) == ["r.html"]


def test_verdict_against_the_manufacturers_pixel_mask(lam, agipd, tmp_path, capsys):
    """Before: not shown. Now known / new / not confirmed pixels and what each means, as verdict_counts
    counts them, in `rmm show` and on the page; a store without the manufacturer's layer says it has none."""
    counts = verdict_counts(lam)
    assert counts["known"] > 0 and counts["new"] > 0  # the synthetic dead pixels, and rmm's own finds
    before = store_arrays(lam)
    capsys.readouterr()
    shown = rmm(capsys, "show", lam, "--html", tmp_path / "r.html")
    assert "rmm's verdict against the manufacturer's pixel_mask (pixels; gaps left out)" in shown
    assert f"known {counts['known']} rejected by the manufacturer and masked by rmm" in shown
    assert f"new {counts['new']} found bad by rmm, not rejected by the manufacturer" in shown
    assert f"not confirmed {counts['not confirmed']} rejected by the manufacturer, good in every plane" in shown
    page = Tables((tmp_path / "r.html").read_text())
    assert page.tables["rmm's verdict against the manufacturer's pixel_mask (pixels; gaps left out)"][1:] == [
        ["known", str(counts["known"]), "rejected by the manufacturer and masked by rmm"],
        ["new", str(counts["new"]), "found bad by rmm, not rejected by the manufacturer"],
        ["not confirmed", str(counts["not confirmed"]),
         "rejected by the manufacturer, good in every plane of rmm's mask"]]
    # figure captions in words, not file stems
    assert page.captions[:3] == ["module 0: masked pixels per gain stage", "rmm's verdict against the manufacturer's "
                                 "pixel_mask", "the manufacturer's pixel_mask per NeXus bit"]
    assert not any("_" in c and "pixel_mask" not in c for c in page.captions)
    unchanged(lam, before)
    _, plain = agipd
    assert verdict_counts(plain) is None
    assert "no manufacturer's pixel_mask in the store: no verdict against it" in rmm(capsys, "show", plain)
    assert sorted(os.listdir(tmp_path)) == ["r.html"]


def test_nightly_page_compares_with_the_previous_version(agipd, lower, tmp_path, capsys):
    """Before: "N pixel-planes newly bad, M recovered" and bits without saying what they count. Now pixel-
    planes and distinct pixels, newly bad and recovered, overall and per bit; "first version" without one."""
    _, store = agipd  # v0001 at lambda 8, v0002 at lambda 5
    capsys.readouterr()
    before = store_arrays(lower)
    diff = diff_masks(store, lower) | {"against": "v0001"}
    assert diff["newly_bad_distinct"] > 0 and diff["newly_bad"] > diff["newly_bad_distinct"]  # 2 stages x 2 cells
    root = open_store(lower)
    counts = count_bits(root)
    summary = {"detector": "AGIPD", "version": "v0002", "status": "published", "reasons": [], "timings": {"total": 3.0},
               "diff": {k: diff[k] for k in ("against", "newly_bad", "recovered", "newly_bad_distinct",
                                             "recovered_distinct", "bits", "newly_bad_pixels", "pixels_truncated")}}
    summary = json.loads(json.dumps(summary))  # as the service reads it back from summary.json
    page = Tables(summary_html(summary, root, counts, []))
    assert page.tables["Changes against v0001"] == [
        ["", "pixel-planes", "pixels"], ["newly bad", str(diff["newly_bad"]), str(diff["newly_bad_distinct"])],
        ["recovered", str(diff["recovered"]), str(diff["recovered_distinct"])]]
    bits = page.tables["Bits set and cleared"]
    assert bits[0] == ["bit", "set: pixel-planes", "set: pixels", "cleared: pixel-planes", "cleared: pixels"]
    changed = {name: row for name, row in diff["bits"].items() if row["set"] or row["cleared"]}
    assert "OFFSET" in changed and len(bits) == 1 + len(changed)
    for name, row in changed.items():
        assert [name, *(str(row[k]) for k in ("set", "set_distinct", "cleared", "cleared_distinct"))] in bits
        assert row["set_distinct"] <= row["set"]
    # the pixels rmm diff lists, as many as it counts
    assert sum(p["planes"] for p in diff["newly_bad_pixels"]) == diff["newly_bad"]
    first = Tables(summary_html(summary | {"version": "v0001", "diff": None}, root, counts, []))
    assert first.paragraphs["changes"] == ["First version: no earlier current version to compare with."]
    held = summary | {"diff": None, "status": "held", "reasons": ["cannot compare with v0001: its mask is damaged"]}
    assert Tables(summary_html(held, root, counts, [])).paragraphs["changes"] == [
        "Cannot compare with v0001: its mask is damaged."]
    unchanged(lower, before)
    assert sorted(os.listdir(tmp_path)) == []


def test_show_and_diff_fit_80_columns(lam, agipd, lower, tmp_path):
    """Before: at COLUMNS=80 `rmm show` printed lines of 101-159 characters (header, parameters, detector,
    chips, layer). Now every line of `rmm show` (with --files) and of `rmm diff` is within 80 columns."""
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT)}
    _, plain = agipd

    def run(*argv) -> list[str]:
        done = subprocess.run([sys.executable, "-m", "rmm_dask", *map(str, argv)], env=env, capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        lines = done.stdout.splitlines()
        assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
        return lines

    shown = run("show", lam, "--files")
    text = words("\n".join(shown))
    for needle in ("LAMBDA750K mask", "made by rmm-dask", "dark-high:", "parameters", "detector: LAMBDA750K",
                   "chips: chip rows", "layer manufacturer:", "rmm's verdict against", "input files"):
        assert needle in text, needle
    assert len(shown) > 40
    diff = diff_masks(plain, lower)
    diffed = words("\n".join(run("diff", plain, lower)))
    assert (f"{diff['newly_bad']} pixel-planes newly bad ({diff['newly_bad_distinct']} distinct pixels)" in diffed
            and "counts of pixel-planes (module, gain, cell, y, x); px: the distinct pixels (module, y, x)" in diffed)
    offset = diff["bits"]["OFFSET"]
    assert (f"OFFSET {offset['set']} ({offset['set_distinct']} px) "
            f"{offset['cleared']} ({offset['cleared_distinct']} px)") in diffed
    assert sorted(os.listdir(tmp_path)) == []
