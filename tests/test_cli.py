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
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["detector.png", "mask_module00.png", "snr_module00.png"]
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


def test_a_missing_geometry_and_a_set_the_layout_cannot_hold_are_one_line(store, tmp_path, capsys):
    assert main(["show", str(store), "--png", str(tmp_path / "figs"), "--geometry", str(tmp_path / "none.geom")]) == 2
    one_line_error(capsys, "none.geom", "no such geometry file")
    assert main(["synth", "--detector", "pilatus", "--modules", "1", "--out", str(tmp_path / "set")]) == 2
    one_line_error(capsys, "--modules", "all 3 modules")
    assert list(tmp_path.iterdir()) == []


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
    clean = (mask[0] == 0).all(axis=(0, 1))
    clean[tuple(good[:, 1:].T)] = False  # not one of the 5
    everywhere = np.argwhere(clean)[0]  # a pixel good in every plane ...
    mask[0, :, :, everywhere[0], everywhere[1]] = BadPixel.NOISE  # ... bad in every gain and cell: 1 pixel
    planes = mask.shape[1] * mask.shape[2]
    root["mask"][:] = mask
    assert main(["diff", str(store), str(new), "--cells", "--json", str(tmp_path / "d.json")]) == 0
    result = json.loads((tmp_path / "d.json").read_text())
    assert result["newly_bad"] == 5 + planes and result["recovered"] == len(bad) == 2
    assert result["newly_bad_distinct"] == 5 + 1 and result["recovered_distinct"] == 2
    assert result["bits"]["NOISE"]["set"] == 5 + planes and result["bits"]["OFFSET"]["cleared"] == 2
    assert result["cell"]["1"]["recovered"] == 2
    assert result["module"]["0"] == {"newly_bad": 5 + planes, "recovered": 2, "newly_bad_distinct": 6,
                                     "recovered_distinct": 2}
    out = " ".join(capsys.readouterr().out.split())
    assert (f"{5 + planes} pixel-planes newly bad (6 distinct pixels), 2 recovered (2 distinct pixels)" in out)
    assert f"module 0 {5 + planes} (6 px) 2 (2 px)" in out
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


HEAVY = ("numba", "distributed", "matplotlib", "dask_jobqueue")


def _modules_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    import subprocess
    import sys

    probe = f"{code}\nimport sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return eval(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["mask", "--help"], ["export", "--help"], ["mask", "--bogus"], ["export", "s.zarr", "--to", "bogus", "--out", "x"]])
def test_help_and_argument_errors_load_no_heavy_module(argv):
    """`rmm --help` and argument errors answer at once: no numba, distributed, matplotlib or dask-jobqueue."""
    code = f"from rmm_dask.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert _modules_after(code) == []


def test_importing_the_configuration_loads_neither_the_kernels_nor_jobqueue():
    assert _modules_after("import rmm_dask.config") == []


def test_submit_passes_every_mask_option_on():
    """What `rmm submit` hands to the batch job parses back to the same options, for every option the two share."""
    import argparse

    from rmm_dask.cli import _add_mask_arguments, _mask_argv, build_parser

    shared = _add_mask_arguments(argparse.ArgumentParser(add_help=False))
    argv = ["submit", "--dark-high", "d1", "d2", "--dark-medium", "dm", "--dark-low", "dl*.h5", "--flat", "f", "--flat-stage", "high",
            "--out", "m.zarr", "--detector", "JUNGFRAU1M", "--dataset", "/data", "--config", "c.yaml", "--lambda", "7",
            "--method", "mad", "--cells-per-chunk", "3", "--workers", "4", "--jobqueue", "jq.yaml", "--user-mask", "u.npy",
            "--user-mask-good-is-one", "--accept-flat", "--overwrite"]
    given = build_parser().parse_args(argv)
    assert {a.dest for a in shared} <= {k for k, v in vars(given).items() if v not in (None, False)}  # the argv above sets them all
    again = build_parser().parse_args(["mask", *_mask_argv(given)])
    for action in shared:
        value, expected = getattr(again, action.dest), getattr(given, action.dest)
        if getattr(action, "path", False):  # made absolute for the job
            expected = [os.path.abspath(v) for v in expected] if isinstance(expected, list) else os.path.abspath(expected)
        assert value == expected, action.dest


def test_a_configuration_file_changes_dask_config_for_its_block_only(tmp_path):
    import dask.config
    import yaml

    from rmm_dask import config

    params, jobqueue = tmp_path / "c.yaml", tmp_path / "jq.yaml"
    params.write_text(yaml.safe_dump({"rmm-dask": {"lambda": 5.5, "f1": {"pixels": 100}, "cluster": {}}}))
    jobqueue.write_text(yaml.safe_dump({"jobqueue": {"slurm": {"queue": "calib"}}}))
    before = dask.config.get("rmm-dask")
    with config.scoped(config.load_config(params) | config.load_jobqueue_config(jobqueue)):
        assert dask.config.get("rmm-dask.lambda") == 5.5
        assert dask.config.get("rmm-dask.f1") == {**before["f1"], "pixels": 100}  # the rest of the section stays
        assert dask.config.get("rmm-dask.cluster") == before["cluster"]  # an empty section sets nothing
        assert dask.config.get("jobqueue.slurm.queue") == "calib"
        assert dask.config.get("jobqueue.slurm.name") == "rmm-worker"  # rmm_dask/jobqueue.yaml, registered first
        config.register_jobqueue_defaults()  # as a Slurm cluster does: the file's value wins
        assert dask.config.get("jobqueue.slurm.queue") == "calib"
    assert dask.config.get("rmm-dask") == before
    assert dask.config.get("jobqueue.slurm.queue") is None


def test_only_the_first_run_compiles_and_says_so(tmp_path):
    """A module of cached kernels is cold in a new cache directory, and warm in the next process once one of them ran."""
    import subprocess
    import sys

    (tmp_path / "probe_kernels.py").write_text(
        "import numba\n\n\n@numba.njit(cache=True)\ndef twice(x):\n    return 2 * x\n\n\n@numba.njit(cache=True)\ndef unused(x):\n    return x\n"
    )
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    code = (
        "import importlib.util, sys\n"
        "from rmm_dask.numba_cache import cold_kernels, compile_notice\n"
        f"spec = importlib.util.spec_from_file_location('rmm_dask.probe_kernels', {str(tmp_path / 'probe_kernels.py')!r})\n"
        "m = sys.modules['rmm_dask.probe_kernels'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(m)\n"
        "print(sorted(cold_kernels()), compile_notice())\n"
        "assert m.twice(3) == 6\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    first, second = (subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout for _ in range(2))
    assert first.startswith("['rmm_dask.probe_kernels.twice', 'rmm_dask.probe_kernels.unused'] compiling the kernels once (~")
    assert "later runs reuse them" in first
    assert second.strip() == "[] None"  # `unused` never compiled, but its module is cached: not a cold start


def test_small_local_jobs_run_in_threads_large_ones_in_processes():
    from rmm_dask.cluster import local_processes

    conf = {"local-threads-below": "8GB"}
    assert not local_processes(10**9, conf)  # the 2-module x 4-cell x 128-frame bench set: threads
    assert local_processes(8 * 10**9, conf) and local_processes(2 * 10**12, conf)  # a full AGIPD-1M set: processes
    assert local_processes(None, conf)  # size unknown: processes, as before
    assert local_processes(1, {"local-threads-below": 0}) and local_processes(1, {})  # 0 or unset: always processes
