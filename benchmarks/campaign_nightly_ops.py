"""Fault campaign cases of issue 22 item 5: a flat taken after its darks (flat-window), an operator's release
of a held nightly version, and `rmm remove` of a read-only store.

Registered into benchmarks/fault_campaign.py (``make campaign``) by :func:`register`.
"""

from __future__ import annotations

#: a night's runs as the DAQ wrote them a day ago (argv[1]): darks r0002-r0004, then a flat r0005 20 min later
RUNS_SNIPPET = """
import os, sys, time
from pathlib import Path
from rmm_dask.synth import SynthConfig, synthesize
from rmm_dask.synth.on_disk import write_synthetic
tree = Path(sys.argv[1])
calib = synthesize(SynthConfig(modules=1, cells=1, frames=16, flat_frames=16, seed=5))
write_synthetic(calib, tree, run_numbers={"dark-high": 2, "dark-medium": 3, "dark-low": 4, "flat": 5}, truth=None)
t0 = time.time() - 86400
for number, t in ((2, t0), (3, t0 + 60), (4, t0 + 120), (5, t0 + 1320)):
    for f in (tree / "raw" / f"r{number:04d}").iterdir():
        os.utime(f, (t, t))
"""

SECTION = "nightly-22"


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""
    import json
    import os
    import subprocess
    import sys

    import fault_campaign as fc
    import yaml

    def night(c):
        """The runs in the case's facility tree; their snapshot."""
        tree = c.dir / "facility" / "p700000"
        done = subprocess.run([sys.executable, "-c", RUNS_SNIPPET, str(tree)], env=c.env(), capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        return tree, fc.snapshot(tree)

    def config(c, **nightly):
        cfg = {"nightly": {"state": "state", "publish": "masks", "settle": 0, "workers": 1,
                           "sanity": {"bad-fraction": [0.0, 0.2], "max-change": 0.5},
                           "detectors": [{"name": "AGIPD", "detector": "AGIPD1M",
                                          "trees": [str(c.dir / "facility/p*/raw")]}], **nightly}}
        path = c.dir / "nightly.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def summary(c, version):
        path = fc.published(c) / version / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @case(SECTION, "a flat taken 20 min after its darks, flat-window 2h: the set takes it and the log says so")
    def case_nightly_flat_after_darks(c):
        tree, before = night(c)
        cfg = config(c, **{"flat-window": "2h"})
        p = c.rmm("nightly", "--config", cfg, "--once", expect=0)
        c.expect("flat r0005, 20 min after its darks: the nearest within flat-window 2 h" in p.out,
                 f"the log does not say which flat was taken: {p.out[-400:]!r}")
        runs = summary(c, "v0001").get("runs", {})
        c.expect(fc.versions(c) == ["v0001"] and fc.current(c) == "v0001" and runs.get("flat", "").endswith("r0005"),
                 f"versions {fc.versions(c)}, current {fc.current(c)}, runs of v0001 {runs}")
        c.same(before, tree, "the watched tree")
        c.only(fc.published(c), ["v0001", "current", "history.zarr"])

    @case(SECTION, "a held version released: without --reason refused in one line; with it current -> v0001, "
                   "the summary republished read-only with who, when and why")
    def case_nightly_release_held(c):
        tree, before = night(c)
        cfg = config(c, sanity={"bad-fraction": [0.0, 0.001]})
        c.rmm("nightly", "--config", cfg, "--once", expect=0)
        v1 = fc.published(c) / "v0001"
        c.expect(summary(c, "v0001").get("status") == "held" and fc.current(c) is None,
                 f"not held: {summary(c, 'v0001').get('status')}, current {fc.current(c)}")
        held = fc.snapshot(fc.published(c))
        c.rmm("nightly", "--config", cfg, "--release", "AGIPD/v0001", expect=2,
              needles=("--reason", "needs a reason", "nothing was changed"))
        c.same(held, fc.published(c), "the published versions (release without a reason)")
        c.rmm("nightly", "--config", cfg, "--release", "AGIPD/v0007", "--reason", "checked", expect=2,
              needles=("v0007", "no such version", "nothing was changed"))
        p = c.rmm("nightly", "--config", cfg, "--release", "AGIPD/v0001", "--reason", "checked by hand", expect=0)
        c.expect("released by" in p.out and "current -> v0001" in p.out, f"no release line: {p.out[-300:]!r}")
        s = summary(c, "v0001")
        decisions = s.get("decisions") or [{}]
        c.expect(fc.current(c) == "v0001" and s.get("status") == "published"
                 and decisions[-1].get("reason") == "checked by hand",
                 f"current {fc.current(c)}, status {s.get('status')}, decisions {decisions}")
        c.expect(not (v1 / "summary.json").stat().st_mode & 0o222 and not v1.stat().st_mode & 0o222,
                 "the version is writable after the release")
        status = c.rmm("nightly", "--config", cfg, "--status", expect=0)
        c.expect("checked by hand" in " ".join(status.out.split()), "--status does not show the reason")
        c.same(before, tree, "the watched tree")
        c.only(fc.published(c), ["v0001", "current", "history.zarr"])
        c.only(v1, ["figures", "mask.zarr", "summary.html", "summary.json"])

    @case(SECTION, "rmm remove: a directory that is not an rmm store refused (nothing removed), then a read-only "
                   "store and a symbolic link to it")
    def case_remove_read_only_store(c):
        store = fc.copy_store(c)
        other = c.dir / "notes"
        other.mkdir()
        (other / "a.txt").write_text("mine\n")
        os.symlink(store, c.dir / "link.zarr")
        c.planted.update({"notes", "link.zarr"})
        before = fc.snapshot(c.dir)
        c.rmm("remove", store, other, expect=2, needles=("notes", "is not an output of rmm", "chmod -R u+w"))
        c.same(before, c.dir, "the case's directory (a refused removal)")
        c.rmm("remove", c.dir / "link.zarr", expect=2, needles=("link.zarr", "symbolic link"))
        c.same(before, c.dir, "the case's directory (a link)")
        p = c.rmm("remove", store, expect=0)
        c.expect(not os.path.lexists(store) and "removed the mask store" in p.out,
                 f"the store is still there or the line is missing: {p.out!r}")
        c.only(c.dir, ["TMP", "notes", "link.zarr"])
        c.expect((other / "a.txt").read_text() == "mine\n", "a file beside the store changed")
