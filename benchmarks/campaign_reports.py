"""Fault campaign cases of issue 22 (reports): what `rmm show`, `rmm show --html` and the nightly page say of a
mask, checked against the store's own attributes and arrays (read with zarr): parameters by name, value and
meaning; every input file; the frames F1 rejected per dark run; rmm's verdict against the manufacturer's
pixel mask; the nightly comparison with the previous version; every line within 80 columns at COLUMNS=80.
Registered into benchmarks/fault_campaign.py (``make campaign``) by :func:`register`.
"""

from __future__ import annotations

SECTION = "reports-22"

#: a second calibration set for the nightly's facility tree (argv[1]): the same detector, the next
#: acquisition (new noise, new outlying frames), runs r0005 (flat) and r0006-r0008 (darks)
NEXT_SET_SNIPPET = """
import sys
from rmm_dask.synth.on_disk import write_synthetic
from rmm_dask.synth import SynthConfig, synthesize
calib = synthesize(SynthConfig(modules=1, cells=1, frames=32, seed=5, acquisition=1))
write_synthetic(calib, sys.argv[1], run_numbers={"flat": 5, "dark-high": 6, "dark-medium": 7, "dark-low": 8}, truth=None)
"""


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""
    import json
    import os
    import re
    import shutil
    import subprocess
    import sys
    import time

    import fault_campaign as fc
    import yaml

    def words(text: str) -> str:
        return " ".join(text.split())

    def lambda_mask(c):
        """A one-module LAMBDA set (`rmm synth --detector lambda`, 12 frames) and its mask ``c.dir / "l.zarr"``."""
        c.rmm("synth", "--detector", "lambda", "--frames", 12, "--modules", 1, "--out", c.dir / "lam", expect=0)
        store = c.dir / "l.zarr"
        raw = c.dir / "lam" / "raw"
        c.rmm("mask", "--dark-high", raw / "r0001", "--flat", raw / "r0002", "--out", store, "--workers", 1, expect=0)
        return store

    def attrs(store) -> dict:
        import zarr

        return dict(zarr.open_group(store, mode="r").attrs)

    @case(SECTION, "show and --html: parameters as name, value and meaning, not a raw dict")
    def case_reports_parameters(c):
        store = c.shared.store
        before = fc.snapshot(store)
        p = c.rmm("show", store, "--html", c.dir / "r.html", expect=0)
        shown = words(p.out)
        c.expect("lambda 8.0 robust sigmas from the model beyond which a pixel is bad" in shown,
                 f"no lambda row with its meaning: {shown[:300]!r}")
        c.expect("'lam'" not in shown and "{" not in shown, "the parameters printed as a raw dict")
        page = (c.dir / "r.html").read_text() if (c.dir / "r.html").is_file() else ""
        c.expect("<tr><td>lambda</td><td>8.0</td><td>robust sigmas" in page and '"lam"' not in page,
                 "the page has no parameters table (or still the JSON)")
        c.same(before, store, "the shown store")
        c.only(c.dir, ["TMP", "r.html"])

    @case(SECTION, "show --files and --html: every file of every run; an existing page refused, kept")
    def case_reports_inputs(c):
        store = c.shared.store
        files = [(role, r["path"], r["size"]) for role, info in attrs(store)["inputs"].items() for r in info["files"]]
        p = c.rmm("show", store, expect=0)
        c.expect(f"files: {len(files)} (--files lists them" in words(p.out), "no count of the input files")
        p = c.rmm("show", store, "--files", "--html", c.dir / "r.html", expect=0)
        listed = words(p.out)
        page = (c.dir / "r.html").read_text() if (c.dir / "r.html").is_file() else ""
        for role, path, size in files:
            c.expect(f"{role} {os.path.basename(path)} {size / 1e6:.1f} MB" in listed, f"--files does not list {path}")
            c.expect(f"<td>{role}</td><td>{path}</td>" in page and f"<td>{size}</td>" in page,
                     f"the page does not list {path} with its size")
        before = fc.snapshot(c.dir / "r.html")
        c.rmm("show", store, "--files", "--html", c.dir / "r.html", expect=2, needles=(str(c.dir / "r.html"),))
        c.same(before, c.dir / "r.html", "the existing page")
        c.only(c.dir, ["TMP", "r.html"])

    @case(SECTION, "show and --html: the frames F1 rejected per dark run, per module, their train ids")
    def case_reports_rejected_frames(c):
        import numpy as np
        import zarr

        store = c.dir / "m.zarr"  # 2 modules: the counts per module apart where they differ
        c.rmm(*c.shared.mask_args(store, runs=c.shared.s2m), expect=0)
        group = zarr.open_group(store, mode="r")["rejected_frames"]
        p = c.rmm("show", store, "--html", c.dir / "r.html", expect=0)
        shown = words(p.out)
        page = (c.dir / "r.html").read_text() if (c.dir / "r.html").is_file() else ""
        for stage in ("high", "medium", "low"):
            hit, trains = group[stage][:], group[f"train_id_{stage}"][:]
            line = f"dark-{stage}, rejected by F1: {int(hit.sum())} of {hit.size} frames"
            c.expect(line in shown, f"`rmm show` does not say {line!r}")
            per_module = [int(n) for n in hit.sum(axis=(1, 2))]
            if hit.any() and len(set(per_module)) > 1:
                c.expect(f"module 0: {per_module[0]}, module 1: {per_module[1]}" in shown,
                         f"dark-{stage}: the modules' counts {per_module} not named apart")
            ids = ", ".join(str(int(t)) for t in trains[np.asarray(hit).any(axis=(0, 1))])
            row = f"<tr><td>dark-{stage}</td><td>{int(hit.sum())}</td><td>{hit.size}</td>"
            c.expect(row in page and (not ids or f"<td>{ids}</td>" in page), f"the page's row of dark-{stage}")
        c.only(c.dir, ["TMP", "m.zarr", "r.html"])

    @case(SECTION, "show and --html of a LAMBDA mask: known / new / not confirmed against the manufacturer's mask")
    def case_reports_verdict(c):
        from rmm_dask.summary import verdict_counts

        store = lambda_mask(c)
        counts = verdict_counts(store)
        before = fc.snapshot(store)
        p = c.rmm("show", store, "--html", c.dir / "r.html", expect=0)
        shown = words(p.out)
        page = (c.dir / "r.html").read_text() if (c.dir / "r.html").is_file() else ""
        for name, n in counts.items():
            c.expect(f"{name} {n} " in shown, f"`rmm show` does not count {n} {name}")
            c.expect(f"<tr><td>{name}</td><td>{n}</td>" in page, f"the page does not count {n} {name}")
        captions = re.findall(r"<figcaption>([^<]*)</figcaption>", page)
        c.expect(bool(captions) and not any(re.fullmatch(r"[a-z_]+\d*", cap) for cap in captions),
                 f"figure captions are file stems: {captions}")
        p = c.rmm("show", c.shared.store, expect=0)
        c.expect("no manufacturer's pixel_mask in the store: no verdict against it" in words(p.out),
                 "a store without the layer does not say it has no verdict")
        c.same(before, store, "the shown store")
        c.only(c.dir, ["TMP", "lam", "l.zarr", "r.html"])

    @case(SECTION, "nightly summary.html: first version, then pixels and pixel-planes changed per bit against it")
    def case_reports_nightly_page(c):
        tree = c.dir / "facility" / "p700000"
        shutil.copytree(c.shared.facility, tree)
        cfg = c.dir / "nightly.yaml"
        cfg.write_text(yaml.safe_dump({"nightly": {
            "state": "state", "publish": "masks", "settle": 2, "workers": 1, "max-attempts": 3,
            "sanity": {"bad-fraction": [0.0, 0.2], "max-change": 0.5},
            "detectors": [{"name": "AGIPD", "detector": "AGIPD1M", "trees": [str(c.dir / "facility/p*/raw")]}]}}))
        time.sleep(2.1)  # settle: the copies' ctimes are new
        c.rmm("nightly", "--config", cfg, "--once", expect=0)
        first = fc.published(c) / "v0001" / "summary.html"
        page = first.read_text() if first.is_file() else ""
        c.expect("First version: no earlier current version to compare with." in page,
                 "v0001's page does not say it is the first version")
        done = subprocess.run([sys.executable, "-c", NEXT_SET_SNIPPET, str(tree)], env=c.env(), capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        time.sleep(2.1)
        c.rmm("nightly", "--config", cfg, "--once", expect=0)
        c.expect(fc.versions(c) == ["v0001", "v0002"] and fc.current(c) == "v0002",
                 f"versions {fc.versions(c)}, current {fc.current(c)}")
        second = fc.published(c) / "v0002"
        diff = json.loads((second / "diff.json").read_text()) if (second / "diff.json").is_file() else {}
        page = (second / "summary.html").read_text() if (second / "summary.html").is_file() else ""
        c.expect("<h2>Changes against v0001</h2>" in page, "v0002's page does not compare with v0001")
        for what, key in (("newly bad", "newly_bad"), ("recovered", "recovered")):
            row = f"<tr><td>{what}</td><td>{diff.get(key)}</td><td>{diff.get(key + '_distinct')}</td></tr>"
            c.expect(row in page, f"v0002's page: no row {row!r}")
        for bit, r in diff.get("bits", {}).items():
            if r["set"] or r["cleared"]:
                row = f"<tr><td>{bit}</td>" + "".join(f"<td>{r[k]}</td>" for k in
                                                       ("set", "set_distinct", "cleared", "cleared_distinct"))
                c.expect(row in page, f"v0002's page: no per-bit row {row!r}")
        c.only(fc.published(c), ["v0001", "v0002", "current", "history.zarr"])
        c.only(c.dir, ["TMP", "facility", "state", "masks", "nightly.yaml"])

    @case(SECTION, "COLUMNS=80: every line of `rmm show --files` (LAMBDA, its layer) and `rmm diff` within 80")
    def case_reports_80_columns(c):
        store = lambda_mask(c)
        for argv in (("show", store, "--files"), ("diff", c.shared.store, c.shared.store)):
            p = c.rmm(*argv, expect=0, env=c.env(COLUMNS=80))
            wide = [line for line in p.out.splitlines() if len(line) > 80]
            c.expect(not wide, f"`rmm {argv[0]}`: {len(wide)} lines over 80 columns: {wide[:2]}")
        p = c.rmm("show", store, expect=0, env=c.env(COLUMNS=80))
        for needle in ("made by rmm-dask", "parameters", "chips: chip rows", "layer manufacturer:", "rmm's verdict"):
            c.expect(needle in words(p.out), f"`rmm show` at 80 columns lost {needle!r}")
        c.only(c.dir, ["TMP", "lam", "l.zarr"])
