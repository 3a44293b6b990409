"""Fault campaign cases of issue 23 items 1 and 2: the pixel history a nightly pass keeps (history.zarr),
`rmm history` (its tables, --png and --html) and `rmm export HISTORY --to frequency`.

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

    def versions(c, n: int = 3):
        """``n`` published nightly versions of the shared store (each its own darks) under c.dir/masks/AGIPD, their
        history built by `rmm history --rebuild`: a history in seconds, without a nightly pass."""
        import json

        root = c.dir / "masks" / "AGIPD"
        for number in range(1, n + 1):
            version = root / f"v{number:04d}"
            version.mkdir(parents=True)
            fc.copy_store(c, "mask.zarr", version)
            runs = {f"dark-{g}": f"/raw/r{number:04d}-{g}" for g in ("high", "medium", "low")}
            started = f"2026-12-0{number}T01:00:00+00:00"
            summary = {"runs": runs, "status": "published", "inputs": {}, "started": started}
            (version / "summary.json").write_text(json.dumps(summary))
        c.rmm("history", root, "--rebuild", expect=0)
        c.planted.add("masks")
        return root

    def flip(chunk):
        data = chunk.read_bytes()
        chunk.chmod(0o644)
        chunk.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))

    @case(SECTION, "rmm history --png DIR where DIR is a planted symbolic link to another directory (with --json "
                   "and --html): one line, exit 2, the link's target untouched, neither JSON nor page written")
    def case_history_png_link(c):
        root = versions(c)
        fc.planted_link(c, ["history", root, "--png", c.dir / "png", "--json", c.dir / "h.json", "--html",
                            c.dir / "h.html"], "png", directory=True, needles=("is a symbolic link",
                                                                               "the history figures"))

    @case(SECTION, "rmm history --png DIR --html FILE: both published read-only (counts.png, frequency.png; one "
                   "page with both embedded); again without --overwrite: one line, exit 2, both as they were")
    def case_history_figures(c):
        root = versions(c)
        c.rmm("history", root, "--png", c.dir / "png", "--html", c.dir / "h.html", expect=0)
        names = sorted(os.listdir(c.dir / "png")) if (c.dir / "png").is_dir() else []
        c.expect(names == ["counts.png", "frequency.png"], f"the figures directory holds {names}")
        page = (c.dir / "h.html").read_text() if (c.dir / "h.html").exists() else ""
        c.expect(page.count("data:image/png;base64,") == 2 and "What this does not tell" in page,
                 "the page does not embed both figures and say what it does not tell")
        c.expect(not any(os.stat(p).st_mode & 0o222 for p in (c.dir / "png", c.dir / "h.html")),
                 "the figures or the page are writable")
        before = fc.snapshot(c.dir / "png")
        c.rmm("history", root, "--png", c.dir / "png", expect=2, needles=("exists already", "--overwrite"))
        c.same(before, c.dir / "png", "the figures published before")
        c.only(c.dir, ["TMP", "png", "h.html"])

    @case(SECTION, "rmm export PUBLISH/NAME --to frequency of a damaged history (one chunk of recent_seen flipped): "
                   "one line naming the chunk and how the history comes back, exit 2, nothing written")
    def case_frequency_damaged(c):
        root = versions(c)
        flip(root / "history.zarr" / "recent_seen" / "c.0.0.0.0.0")
        c.rmm("export", root, "--to", "frequency", "--out", c.dir / "f.h5", expect=2,
              needles=("damaged history: chunk recent_seen/c.0.0.0.0.0 does not match its checksum",
                       "the next nightly pass rebuilds it"))
        c.only(c.dir, ["TMP"])

    @case(SECTION, "rmm export --to frequency of a mask store, and of a history --to h5: one line each, exit 2, "
                   "nothing written; --to frequency of the history then writes /frequency, /seen, /bad")
    def case_frequency_wrong_input(c):
        root = versions(c)
        c.rmm("export", c.shared.store, "--to", "frequency", "--out", c.dir / "f.h5", expect=2,
              needles=("is a mask store, not a pixel history", "nothing was written"))
        c.rmm("export", root / "history.zarr", "--to", "h5", "--out", c.dir / "f.h5", expect=2,
              needles=("is a pixel history, not a mask store", "--to frequency"))
        c.only(c.dir, ["TMP"])
        c.rmm("export", root, "--to", "frequency", "--last", "2", "--out", c.dir / "f.h5", expect=0)
        import h5py

        with h5py.File(c.dir / "f.h5") as f:
            c.expect(sorted(f) == ["bad", "frequency", "seen"] and int(f.attrs["N"]) == 2,
                     f"the file holds {sorted(f)}, N = {f.attrs.get('N')}")
        c.only(c.dir, ["TMP", "f.h5"])

    @case(SECTION, "a history.zarr of an older rmm (format 1): rmm history refuses it in one line (exit 2) saying "
                   "the next pass rebuilds it; the next nightly pass does, and rmm history reads it")
    def case_history_older_format(c):
        import json

        cfg = night(c)
        c.rmm("nightly", "--config", cfg, "--once", expect=0)
        root = c.dir / "masks" / "AGIPD"
        meta = root / "history.zarr" / "zarr.json"
        doc = json.loads(meta.read_text())
        doc["attributes"]["format"] = "rmm-dask pixel history 1"
        os.chmod(meta.parent, 0o755)
        os.chmod(meta, 0o644)
        meta.write_text(json.dumps(doc))
        c.rmm("history", root, expect=2, needles=("a history of an older rmm", "the next nightly pass rebuilds it"))
        p = c.rmm("nightly", "--config", cfg, "--once", expect=0)
        c.expect("AGIPD history: rebuilt from 1 published version(s), as it was of an older rmm" in
                 " ".join(p.out.split()), f"the pass did not rebuild it: {p.out[-400:]!r}")
        c.rmm("history", root, expect=0)
        c.only(root, ["v0001", "current", "history.zarr"])
