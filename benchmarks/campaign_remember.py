"""Fault campaign cases of issue 23 items 3 and 4: a mask that remembers (``history: {min-fraction, last}`` in
nightly.yaml: each version's layer ``layers/history`` from the pixel history of the nights before it).

Registered into benchmarks/fault_campaign.py (``make campaign``) by :func:`register`.
"""

from __future__ import annotations

SECTION = "remember-23"

#: write nights argv[2:] of the small 3-night plan (1 module, 1 cell) into the facility tree argv[1]
NIGHTS_SNIPPET = """
import sys
from rmm_dask.synth.nights import plan_nights, write_night
truth = plan_nights(3, seed=3, onset_night=2, heal_after=2)
for night in sys.argv[2:]:
    write_night(sys.argv[1], truth, int(night))
"""
RULE = {"min-fraction": 0.2, "last": 20}


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    import fault_campaign as fc
    import yaml

    def nights(c, *which):
        """Nights ``which`` of the small plan written into the case's facility tree."""
        done = subprocess.run([sys.executable, "-c", NIGHTS_SNIPPET, str(c.dir / "facility"), *map(str, which)],
                              env=c.env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)

    def config(c, history=RULE):
        cfg = {"nightly": {"state": "state", "publish": "masks", "settle": 0, "workers": 1, "flat-window": "2h",
                           "sanity": {"bad-fraction": [0.0, 0.1], "max-change": 0.02}, "history": history,
                           "detectors": [{"name": "AGIPD", "detector": "AGIPD1M",
                                          "trees": [str(c.dir / "facility/p*/raw")]}]}}
        path = c.dir / "nightly.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def det(c):
        return c.dir / "masks" / "AGIPD"

    def layer(c, version):
        """The version's layers/history (zarr metadata), or None."""
        meta = det(c) / version / "mask.zarr" / "layers" / "history" / "zarr.json"
        return json.loads(meta.read_text()) if meta.is_file() else None

    def summary(c, version):
        return json.loads((det(c) / version / "summary.json").read_text())

    def history_nights(c):
        from rmm_dask.nightly.history import open_history

        return [n["version"] for n in open_history(det(c) / "history.zarr").attrs["nights"]]

    @case(SECTION, "a history: setting out of range (min-fraction 1.5): one line naming the file and the key, exit 2,"
                   " no state or publish directory made")
    def case_remember_bad_setting(c):
        nights(c, 1)
        cfg = config(c, {"min-fraction": 1.5, "last": 20})
        c.rmm("nightly", "--config", cfg, "--once", expect=2,
              needles=(str(cfg), "history: min-fraction must be a number in (0, 1]", "not 1.5"))
        c.only(c.dir, ["facility", "nightly.yaml", "TMP"])

    @case(SECTION, "a pass SIGKILLed while night 2's remembering mask is written: no version, the history of night 1"
                   " as it was; the next pass publishes night 2 with its layer, nothing left behind")
    def case_remember_killed_pass(c):
        nights(c, 1)
        cfg = config(c)
        c.rmm("nightly", "--config", cfg, "--once", expect=0)
        nights(c, 2)
        before = fc.snapshot(det(c) / "history.zarr")
        live = c.spawn("nightly", "--config", cfg, "--once")
        writing = live.until(lambda: any(det(c).glob(".v0002.partial-*/.mask.zarr.partial-*/layers")))
        live.signal_group(fc.signal.SIGKILL)
        c.judge(live.finish(), expect=None)
        c.expect(writing, "the pass ended before its mask's layers were written: not killed midway")
        c.expect(not (det(c) / "v0002").exists() and os.readlink(det(c) / "current") == "v0001",
                 "a killed pass left a version or moved current")
        c.same(before, det(c) / "history.zarr", "the pixel history")
        c.rmm("nightly", "--config", cfg, "--once", expect=0)
        meta = layer(c, "v0002")
        c.expect(meta is not None and meta["attributes"].get("versions") == ["v0001"],
                 f"night 2 published without its layer over night 1: {meta and meta['attributes']}")
        c.expect(history_nights(c) == ["v0001", "v0002"], "the history does not hold nights 1 and 2")
        c.only(det(c), ["v0001", "v0002", "current", "history.zarr"])

    @case(SECTION, "a symbolic link planted at history.zarr before night 2: night 2 is published without its layer and"
                   " held (its reason says why), current stays, exit 1, nothing written through the link")
    def case_remember_link_at_history(c):
        nights(c, 1)
        cfg = config(c)
        c.rmm("nightly", "--config", cfg, "--once", expect=0)
        target = c.plant(c.dir / "elsewhere.zarr")
        shutil.move(det(c) / "history.zarr", target)
        os.symlink(target, c.plant(det(c) / "history.zarr"))
        before = fc.snapshot(target)
        nights(c, 2)
        proc = c.rmm("nightly", "--config", cfg, "--once", expect=None)  # exit 1, its reasons in the log (stdout)
        c.expect(proc.code == 1 and not proc.err.strip(), f"exit {proc.code} (1 expected), stderr {proc.err[-200:]!r}")
        s = summary(c, "v0002")
        c.expect(s["status"] == "held" and any("no history layer" in r and "symbolic link" in r for r in s["reasons"]),
                 f"night 2 not held for its missing layer: {s['status']} {s['reasons']}")
        c.expect(layer(c, "v0002") is None and os.readlink(det(c) / "current") == "v0001",
                 "night 2 has a layer or became current")
        c.expect("history: not updated" in proc.out, "the log does not say the history was not updated")
        c.same(before, target, "the link's target")

    @case(SECTION, "a chunk of history.zarr damaged before night 2: the history is rebuilt from the published"
                   " versions first (one log line), night 2 gets its layer, exit 0")
    def case_remember_damaged_history(c):
        nights(c, 1)
        cfg = config(c)
        c.rmm("nightly", "--config", cfg, "--once", expect=0)
        chunk = next((det(c) / "history.zarr" / "recent").glob("c.*"))
        os.chmod(chunk, 0o644)
        chunk.write_bytes(chunk.read_bytes()[:-4] + b"\0\0\0\0")
        nights(c, 2)
        proc = c.rmm("nightly", "--config", cfg, "--once", expect=0)
        c.expect("history: rebuilt from 1 published version(s), as it was damaged" in proc.out,
                 "the log does not say the damaged history was rebuilt")
        meta = layer(c, "v0002")
        c.expect(meta is not None and summary(c, "v0002")["status"] == "published", "night 2 without its layer")
        c.only(det(c), ["v0001", "v0002", "current", "history.zarr"])

    @case(SECTION, "three nights in one pass with history: (item 4): every version after the first has its layer over"
                   " the nights before it, the exports carry its bit, rmm diff and rmm show name it; an export over an"
                   " existing file is refused and changes nothing")
    def case_remember_three_nights(c):
        nights(c, 1, 2, 3)
        cfg = config(c)
        c.rmm("nightly", "--config", cfg, "--once", expect=0)
        got = [None if layer(c, v) is None else layer(c, v)["attributes"]["versions"] for v in ("v0001", "v0002", "v0003")]
        c.expect(got == [None, ["v0001"], ["v0001", "v0002"]], f"the versions' layers: {got}")
        store = det(c) / "v0003" / "mask.zarr"
        show = c.rmm("show", store, expect=0)
        c.expect("kept by the history:" in " ".join(show.out.split()), "rmm show does not count the layer apart")
        diff = c.rmm("diff", det(c) / "v0002" / "mask.zarr", store, expect=0)
        c.expect("newly remembered" in " ".join(diff.out.split()), "rmm diff does not report the layer's changes")
        c.rmm("export", store, "--to", "euxfel", "--out", c.dir / "m.h5", expect=0)
        import h5py

        with h5py.File(c.dir / "m.h5") as f:
            c.expect("history_mask" in f and int(f["history_mask"][()].max()) == 1 << 30,
                     "the EuXFEL export has no /history_mask of USER1")
        before = fc.snapshot(c.dir / "m.h5")
        c.rmm("export", store, "--to", "euxfel", "--out", c.dir / "m.h5", expect=2, needles=("m.h5", "exists"))
        c.same(before, c.dir / "m.h5", "the existing export")
