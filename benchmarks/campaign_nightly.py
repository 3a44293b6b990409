"""Fault campaign cases of issue 20: the nightly service: completeness from the run itself, changed runs
re-masked, publish outside the watched tree, paths escaped in its log and --status.

Registered into benchmarks/fault_campaign.py (``make campaign``) by :func:`register`.
"""

from __future__ import annotations

#: what the DAQ wrote two days ago (argv[1]): flat r0001, darks r0002-r0004, 18 trains each in S00000-S00002
DAQ_SNIPPET = """
import os, sys, time
from pathlib import Path
from rmm_dask.synth import SynthConfig, synthesize
from rmm_dask.synth.on_disk import RUN_TYPES
from rmm_dask.synth.write_euxfel import write_raw_run
out = Path(sys.argv[1])
calib = synthesize(SynthConfig(modules=1, cells=1, frames=18, flat_frames=18, seed=5))
runs = {"flat": calib.flat, **{f"dark-{g}": calib.dark[g] for g in ("high", "medium", "low")}}
for number, role in enumerate(("flat", "dark-high", "dark-medium", "dark-low"), 1):
    write_raw_run(out / f"r{number:04d}", runs[role].analog, runs[role].gain, run_number=number,
                  first_train_id=10000 + number * 100000, run_type=RUN_TYPES[role], trains_per_file=6)
old = time.time() - 2 * 86400
for f in out.rglob("*.h5"):
    os.utime(f, (old, old))
"""

SECTION = "nightly-20"
SEQ = [f"RAW-R0004-AGIPD00-S{i:05d}.h5" for i in range(3)]


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    import time

    import fault_campaign as fc
    import yaml

    def daq(c):
        """The runs as the DAQ wrote them, in the case's directory (old modification times)."""
        src = c.dir / "daq"
        done = subprocess.run(
            [sys.executable, "-c", DAQ_SNIPPET, str(src)], env=c.env(), capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        return src

    def arrive(src, tree, run, names=None):
        """Copy a run's files as rsync -a does: a hidden temporary, the source's mtime, renamed into place."""
        (tree / run).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / run).glob("*.h5")):
            if names is None or f.name in names:
                tmp = tree / run / f".{f.name}.Xa12b"
                shutil.copy2(f, tmp)
                os.rename(tmp, tree / run / f.name)

    def config(c, tree_glob="facility/p*/raw", **nightly):
        cfg = {
            "nightly": {
                "state": "state",
                "publish": "masks",
                "settle": 2,
                "workers": 1,
                "max-attempts": 3,
                "sanity": {"bad-fraction": [0.0, 0.2], "max-change": 0.5},
                "detectors": [{"name": "AGIPD", "detector": "AGIPD1M", "trees": [str(c.dir / tree_glob)]}],
                **nightly,
            }
        }
        path = c.dir / "nightly.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def settled():
        time.sleep(2.1)  # settle: 2 from the last arrival (ctimes cannot be set back)

    def summary(c, version):
        path = fc.published(c) / version / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def file_names(records):
        return [os.path.basename(r["path"]) for r in records]

    @case(SECTION, "a run copied in by rsync -a (old mtimes), 1 of 3 sequence files: not masked until complete")
    def case_nightly_rsync_partial_run(c):
        src = daq(c)
        tree = c.dir / "facility" / "p700000" / "raw"
        for run in ("r0001", "r0002", "r0003"):
            arrive(src, tree, run)
        arrive(src, tree, "r0004", SEQ[:1])
        cfg = config(c, settle=600)  # the default; the pass starts a second or two after the copy
        before = fc.snapshot(tree)
        p = c.rmm("nightly", "--config", cfg, "--once", expect=0)
        c.expect(
            "0 set(s) processed" in p.out and "less than settle = 600 s" in p.out,
            f"the partial run was not held back: {p.out[-400:]!r}",
        )
        c.expect(fc.versions(c) == [], f"published from the partial run: {fc.versions(c)}")
        c.same(before, tree, "the watched tree")
        arrive(src, tree, "r0004", SEQ[1:])
        cfg = config(c)  # settle: 2, not to wait 10 minutes here
        settled()
        before = fc.snapshot(tree)
        c.rmm("nightly", "--config", cfg, "--once", expect=0)
        c.expect(
            fc.versions(c) == ["v0001"] and fc.current(c) == "v0001",
            f"versions {fc.versions(c)}, current {fc.current(c)}",
        )
        listed = file_names(summary(c, "v0001").get("inputs", {}).get(str(tree / "r0004"), []))
        c.expect(listed == SEQ, f"v0001's provenance lists {listed} of r0004, not all of {SEQ}")
        c.same(before, tree, "the watched tree")
        c.only(fc.published(c), ["v0001", "current", "history.zarr"])
        c.only(c.dir, ["TMP", "daq", "facility", "state", "masks", "nightly.yaml"])

    @case(
        SECTION,
        "a sequence file arrives after its run's set was published: masked again as v0002 (after settle), the log"
        " says why",
    )
    def case_nightly_run_changed_remasked(c):
        src = daq(c)
        tree = c.dir / "facility" / "p700000" / "raw"
        for run in ("r0001", "r0002", "r0003"):
            arrive(src, tree, run)
        arrive(src, tree, "r0004", SEQ[:2])  # S00000-S00001: nothing tells that S00002 is still to come
        cfg = config(c)
        settled()
        c.rmm("nightly", "--config", cfg, "--once", expect=0)
        c.expect(fc.versions(c) == ["v0001"], f"versions after the first pass {fc.versions(c)}")
        v1 = fc.snapshot(fc.published(c) / "v0001")
        arrive(src, tree, "r0004", SEQ[2:])
        settled()
        # the pass that sees the run's files differ from what the previous pass saw waits settle from then
        p = c.rmm("nightly", "--config", cfg, "--once", expect=0)
        c.expect(
            "r0004: its files differ from those the previous pass saw" in p.out and fc.versions(c) == ["v0001"],
            f"the changed run was used at once: {p.out[-300:]!r}",
        )
        settled()
        p = c.rmm("nightly", "--config", cfg, "--once", expect=0)
        why = f"AGIPD: run r0004 changed since v0001 (published): 1 file added ({SEQ[2]}); masking the set again"
        c.expect(why in p.out, f"the log does not say why it masks again: {p.out[-400:]!r}")
        c.expect(
            fc.versions(c) == ["v0001", "v0002"] and fc.current(c) == "v0002",
            f"versions {fc.versions(c)}, current {fc.current(c)}",
        )
        s2 = summary(c, "v0002")
        listed = file_names(s2.get("inputs", {}).get(str(tree / "r0004"), []))
        c.expect(
            s2.get("replaces") == "v0001" and listed == SEQ,
            f"v0002's summary: replaces {s2.get('replaces')}, inputs of r0004 {listed}",
        )
        c.same(v1, fc.published(c) / "v0001", "the published v0001")
        p = c.rmm("nightly", "--config", cfg, "--once", expect=0)
        c.expect("0 set(s) processed" in p.out and fc.versions(c) == ["v0001", "v0002"], "a third pass masked again")
        c.only(fc.published(c), ["v0001", "v0002", "current", "history.zarr"])

    @case(
        SECTION,
        "publish: inside a watched tree (a run directory): refused in one line, nothing written into the inputs",
    )
    def case_nightly_publish_inside_watched_tree(c):
        tree = c.dir / "facility" / "p700000" / "raw"
        shutil.copytree(c.shared.facility / "raw", tree)
        before = fc.snapshot(c.dir / "facility")
        cfg = config(c, publish=str(tree / "r0002"))
        c.rmm(
            "nightly",
            "--config",
            cfg,
            "--once",
            expect=2,
            needles=(
                "nightly.yaml",
                f"publish: {tree / 'r0002'} is inside the watched tree",
                str(c.dir / "facility/p*/raw"),
            ),
        )
        (c.dir / "link").symlink_to(tree)
        c.plant(c.dir / "link")
        cfg = config(c, publish=str(c.dir / "link" / "masks"))
        c.rmm("nightly", "--config", cfg, "--once", expect=2, needles=("nightly.yaml", "once links are resolved"))
        c.same(before, c.dir / "facility", "the watched tree")
        c.only(c.dir, ["TMP", "facility", "nightly.yaml"])

    @case(SECTION, "a newline in a proposal directory's name: the log and --status stay one line per entry")
    def case_nightly_newline_in_proposal_path(c):
        forged = "[2026-01-01T00:00:00+00:00] AGIPD current is v0042, 0 failed"
        tree = c.dir / "facility" / f"p700000\n{forged}" / "raw"
        shutil.copytree(c.shared.facility / "raw", tree)
        cfg = config(c, settle=0)
        p = c.rmm("nightly", "--config", cfg, "--once", expect=0)
        lines = p.out.splitlines()
        bad = [line for line in lines if line.startswith(forged) or not line.startswith("[20")]
        c.expect(
            bool(lines) and not bad,
            f"a log line that is not one entry: {bad[:2]}",
        )
        c.expect(fc.versions(c) == ["v0001"], f"versions {fc.versions(c)}")
        p = c.rmm("nightly", "--config", cfg, "--status", expect=0)
        rows = p.out.splitlines()
        c.expect(
            not any(line.startswith(forged[:12]) for line in rows), f"--status printed a forged row: {p.out[-400:]!r}"
        )
        c.expect(
            "1:dark-high" in p.out.replace("\n    ", "").replace(" ", "")  # rows fold with indented continuations
            and "p700000\\n[2026" in p.out.replace("\n    ", "").replace(" ", ""),
            f"--status does not show the set's runs in one row, escaped: {p.out[-400:]!r}",
        )
