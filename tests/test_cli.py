"""The `rmm` command line end to end on synthetic EuXFEL runs written to disk."""

import os
import shutil

import numpy as np
import pytest
import zarr

from rmm_dask.cli import main

from .cli_errors import one_line_error
from .conftest import mask_args, raw


def test_mask_show_export(store, tmp_path, capsys):
    root = zarr.open_group(store, mode="r")
    assert root["mask"].shape == (1, 3, 2, 512, 128)
    assert root.attrs["inputs"]["flat"]["path"].endswith("r0004")
    files = root.attrs["inputs"]["dark-low"]["files"]
    assert files and files[0]["path"].endswith(".h5") and files[0]["size"] > 0 and files[0]["mtime"].startswith("20")
    assert main(["show", str(store), "--cells", "--png", str(tmp_path / "png")]) == 0
    out = capsys.readouterr().out
    for word in ("OFFSET", "NOISE", "module 0", "gain high", "cell 1"):
        assert word in out
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["detector.png", "mask_module00.png", "snr_histograms.png"]
    assert main(["export", str(store), "--to", "h5", "--out", str(tmp_path / "m.h5")]) == 0
    import h5py

    with h5py.File(tmp_path / "m.h5") as f:
        np.testing.assert_array_equal(f["mask"][:], root["mask"][:])


def test_performance_report_works_offline(store):
    """--report: one HTML page that loads nothing from the network (bokeh inline, not from its CDN)."""
    import re

    html = store.with_name("report.html").read_text()
    sources = re.findall(r"<script[^>]*\bsrc=[\"']([^\"']+)", html)
    assert not [s for s in sources if re.match(r"(https?:)?//", s)], sources
    assert "Bokeh" in html and "task-stream" in html.lower().replace(" ", "-")  # the page itself is there


def test_missing_run(tmp_path, capsys):
    assert main(["mask", "--dark-high", str(tmp_path / "r0099"), "--out", str(tmp_path / "m.zarr")]) == 2
    one_line_error(capsys, "r0099", "no such file or directory")
    assert not (tmp_path / "m.zarr").exists()


def test_truncated_file(runs, tmp_path, capsys):
    bad = tmp_path / "r0001"
    shutil.copytree(raw(runs, 1), bad)
    victim = sorted(bad.glob("*.h5"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])
    args = mask_args(runs, tmp_path / "m.zarr")
    args[args.index("--dark-high") + 1] = str(bad)
    assert main(args) == 2
    one_line_error(capsys, victim.name)
    assert [p.name for p in tmp_path.iterdir()] == ["r0001"]


def test_runs_of_different_cells(runs, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["synth", "--out", str(other), "--modules", "1", "--cells", "3", "--frames", "12"]) == 0
    capsys.readouterr()
    args = mask_args(runs, tmp_path / "m.zarr")
    args[args.index("--dark-low") + 1] = str(other / "raw" / "r0003")
    assert main(args) == 2
    one_line_error(capsys, "r0003", "cells")
    assert not (tmp_path / "m.zarr").exists()


def test_dark_run_given_as_flat(runs, tmp_path, capsys):
    args = mask_args(runs, tmp_path / "m.zarr")
    args[args.index("--flat") + 1] = raw(runs, 2)
    assert main(args) == 2
    one_line_error(capsys, "r0002", "not a flat in high gain", "medium-gain dark run")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept(store, runs, capsys):
    before = zarr.open_group(store, mode="r").attrs["end_time"]
    assert main(mask_args(runs, store)) == 2
    one_line_error(capsys, "exists already")
    assert zarr.open_group(store, mode="r").attrs["end_time"] == before


def test_bad_config(runs, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rmm-dask:\n  lamda: 7\n")
    assert main(mask_args(runs, tmp_path / "m.zarr", "--config", str(cfg))) == 2
    one_line_error(capsys, "c.yaml", "unknown parameters ['lamda']")


@pytest.mark.slow
def test_demo(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--modules", "1", "--cells", "1", "--frames", "40", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    for word in ("dashboard: http", "HOT", "UNDER_RESPONDING", "clean pixels flagged", "Zarr store:", "export: "):
        assert word in out
    assert (tmp_path / "d" / "mask.zarr").is_dir() and (tmp_path / "d" / "mask.h5").is_file()


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--flat-stage", "low", "--detector", "AGIPD1M"], ["--flat-stage", "no --dark-low"]),
        (["--detector", "EIGER99"], ["--detector", "unknown detector 'EIGER99'"]),
        (["--cells-per-chunk", "0"], ["--cells-per-chunk", "at least 1"]),
        (["--lambda", "-1"], ["--lambda", "must be a finite number above 0, not -1"]),
    ],
)
def test_bad_options(runs, tmp_path, capsys, extra, needles):
    args = mask_args(runs, tmp_path / "m.zarr", *extra)
    if "--flat-stage" in extra:  # only a high dark and the flat
        args = ["mask", "--dark-high", raw(runs, 1), "--flat", raw(runs, 4), "--out", str(tmp_path / "m.zarr"), *extra]
    assert main(args) == 2
    one_line_error(capsys, *needles)
    assert list(tmp_path.iterdir()) == []


def test_bad_method_in_config_and_export_to_a_missing_directory(store, runs, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rmm-dask:\n  method: median\n")
    assert main(mask_args(runs, tmp_path / "m.zarr", "--config", str(cfg))) == 2
    one_line_error(capsys, "c.yaml", "unknown statistics 'median'")
    assert main(["export", str(store), "--to", "h5", "--out", str(tmp_path / "no" / "m.h5")]) == 2
    one_line_error(capsys, "no such directory")


def test_sigterm_cleans_up_like_ctrl_c(runs, tmp_path):
    import subprocess
    import sys
    import time

    out = tmp_path / "m.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "rmm_dask", *mask_args(runs, out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(p.name.startswith(".m.zarr.partial") for p in tmp_path.iterdir()):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.terminate()
    assert proc.wait(timeout=60) == 130
    assert "interrupted; nothing was published" in proc.stderr.read()
    assert list(tmp_path.iterdir()) == []


def test_diff(store, tmp_path, capsys):
    import json
    import shutil

    from rmm_dask.codes import BadPixel

    new = tmp_path / "new.zarr"
    shutil.copytree(store, new)
    for p in [new, *new.rglob("*")]:  # the published store is read-only; its copy is ours to change
        p.chmod(p.stat().st_mode | 0o200)
    root = zarr.open_group(new, mode="r+")
    mask = root["mask"][:]
    good = np.argwhere(mask[0, :, 0] == 0)[:5]  # (gain, y, x) of 5 good pixels in module 0, cell 0
    for g, y, x in good:
        mask[0, g, 0, y, x] = BadPixel.NOISE
    bad = np.argwhere(mask[0, 0, 1] == BadPixel.OFFSET)[:2]  # 2 offset-only pixels of cell 1, high gain
    for y, x in bad:
        mask[0, 0, 1, y, x] = 0
    root["mask"][:] = mask
    assert main(["diff", str(store), str(new), "--cells", "--json", str(tmp_path / "d.json")]) == 0
    result = json.loads((tmp_path / "d.json").read_text())
    assert result["newly_bad"] == 5 and result["recovered"] == len(bad) == 2
    assert result["bits"]["NOISE"]["set"] == 5 and result["bits"]["OFFSET"]["cleared"] == 2
    assert result["cell"]["0"]["newly_bad"] == 5 and result["cell"]["1"]["recovered"] == 2
    assert result["module"]["0"] == {"newly_bad": 5, "recovered": 2}
    assert "5 pixels newly bad, 2 recovered" in capsys.readouterr().out
    assert main(["diff", str(store), str(tmp_path / "nothing.zarr")]) == 2
    one_line_error(capsys, "nothing.zarr", "no such mask store")


def test_show_html_report_renders_in_a_headless_browser(store, tmp_path, capsys):
    """The report is one self-contained page: every figure decodes, and chromium renders it."""
    import subprocess

    report = tmp_path / "report.html"
    assert main(["show", str(store), "--html", str(report)]) == 0
    assert f"report: {report}" in capsys.readouterr().out
    text = report.read_text()
    assert text.count("data:image/png;base64,") == 3 and "OFFSET" in text and "lam" in text and "r0004" in text
    assert "src=\"http" not in text and "href=" not in text  # nothing fetched from elsewhere
    assert main(["show", str(store), "--html", str(report)]) == 2  # exists: refused without --overwrite
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        message = "no chromium (Debian: apt-get install chromium) to render the report; its content was checked"
        if os.environ.get("RMM_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([browser, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'data-figures="3" data-figures-loaded="3"' in dom, dom[:300]
    png = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={png}", "--window-size=1200,2600", report.as_uri()], capture_output=True, timeout=120)
    import matplotlib.image

    pixels = matplotlib.image.imread(png)[..., :3]
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # figures in colour, not an empty page of text
