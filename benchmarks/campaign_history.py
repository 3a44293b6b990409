"""Fault campaign cases of issue 23 items 1 and 2: the pixel history a nightly pass keeps (history.zarr) and
`rmm history`.

Registered into benchmarks/fault_campaign.py (``make campaign``) by :func:`register`.
"""

from __future__ import annotations

SECTION = "history-23"


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""
    import os
    import subprocess
    import sys

    import campaign_nightly_ops
    import fault_campaign as fc
    import yaml

    def night(c):
        """One night's runs (darks and a flat of a day ago) in the case's facility tree, a config, and a first pass."""
        tree = c.dir / "facility" / "p700000"
        done = subprocess.run([sys.executable, "-c", campaign_nightly_ops.RUNS_SNIPPET, str(tree)], env=c.env(),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        cfg = {"nightly": {"state": "state", "publish": "masks", "settle": 0, "workers": 1,
                           "sanity": {"bad-fraction": [0.0, 0.2], "max-change": 0.5}, "flat-window": "2h",
                           "detectors": [{"name": "AGIPD", "detector": "AGIPD1M",
                                          "trees": [str(c.dir / "facility/p*/raw")]}]}}
        path = c.dir / "nightly.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    @case(SECTION, "a symbolic link planted at history.zarr: the pass publishes the version, says in one log line "
                   "that the history is not written through the link (exit 1), the link's target untouched; "
                   "the link removed, the next pass builds the history")
    def case_history_link_planted(c):
        cfg = night(c)
        masks = c.dir / "masks" / "AGIPD"
        masks.mkdir(parents=True)
        target = c.dir / "elsewhere"
        target.mkdir()
        (target / "keep.txt").write_text("mine\n")
        os.symlink(target, masks / "history.zarr")
        c.planted.update({"elsewhere"})
        before = fc.snapshot(target)
        p = c.rmm("nightly", "--config", cfg, "--once", expect=None)  # exit 1, its reason in the log (stdout)
        c.expect(p.code == 1 and not p.err.strip(), f"exit {p.code} (1 expected), stderr {p.err[-200:]!r}")
        c.expect("AGIPD history: not updated:" in p.out and "is a symbolic link" in " ".join(p.out.split()),
                 f"no log line about the link: {p.out[-400:]!r}")
        c.same(before, target, "the link's target")
        c.expect(fc.current(c) == "v0001", f"current {fc.current(c)}: the version was not published")
        os.unlink(masks / "history.zarr")
        p = c.rmm("nightly", "--config", cfg, "--once", expect=0)
        c.expect("AGIPD history: rebuilt from 1 published version(s), as it was missing" in " ".join(p.out.split()),
                 f"the history was not built: {p.out[-400:]!r}")
        c.only(masks, ["v0001", "current", "history.zarr"])

    @case(SECTION, "rmm history on a damaged history.zarr (one chunk flipped): one line naming the chunk and how it "
                   "is rebuilt, exit 2, no JSON; --rebuild then prints the tables within 80 columns")
    def case_history_damaged(c):
        cfg = night(c)
        c.rmm("nightly", "--config", cfg, "--once", expect=0)
        root = c.dir / "masks" / "AGIPD"
        chunk = root / "history.zarr" / "bad" / "c.0.0.0.0.0"
        data = chunk.read_bytes()
        chunk.chmod(0o644)
        chunk.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        c.rmm("history", root, "--json", c.dir / "h.json", expect=2,
              needles=("damaged history: chunk bad/c.0.0.0.0.0 does not match its checksum", "--rebuild"))
        c.expect(not (c.dir / "h.json").exists(), "a JSON file was written for a damaged history")
        p = c.rmm("history", root, "--rebuild", expect=0, env=c.env(COLUMNS="80"))
        c.expect(max(len(line) for line in p.out.splitlines()) <= 80 and "pixels bad in k of the last 1" in p.out,
                 f"not the tables within 80 columns: {p.out[:400]!r}")
        c.only(root, ["v0001", "current", "history.zarr"])
