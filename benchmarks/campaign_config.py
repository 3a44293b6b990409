"""Fault campaign cases of issue 20: YAML bombs, huge descriptions, config keys checked like options, any locale, escaped paths.

Registered into benchmarks/fault_campaign.py (``make campaign``) by :func:`register`.
"""

from __future__ import annotations

import json
import os
import shutil


def bomb(indent: str = "") -> str:
    """'Billion laughs': 9 nested aliases of 9 lists each, a few hundred bytes that stand for 9^9 values."""
    lines = [f"{indent}l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""
    import fault_campaign as fc

    def refused_at_once(c, what: str) -> None:
        """The bomb was refused in well under a second of work (before: a MemoryError after 35-40 s)."""
        c.expect(c.procs[-1].seconds < 10, f"the {what} bomb took {c.procs[-1].seconds:.0f} s to be refused")

    needles = ("c.yaml", "YAML anchors and aliases (&l0", "are not accepted")

    @case("config-20", "a YAML alias bomb in --config")
    def case_yaml_bomb_config(c):
        (c.dir / "c.yaml").write_text("rmm-dask:\n  f1:\n" + bomb("    ") + "  window: *l9\n")
        c.rmm(*c.shared.mask_args(c.dir / "m.zarr"), "--config", c.dir / "c.yaml", expect=2, needles=needles)
        refused_at_once(c, "--config")
        c.only(c.dir, ["TMP", "c.yaml"])

    @case("config-20", "a YAML alias bomb in --jobqueue")
    def case_yaml_bomb_jobqueue(c):
        (c.dir / "c.yaml").write_text("jobqueue:\n  slurm:\n" + bomb("    ") + "    job-extra-directives: *l9\n")
        c.rmm(*c.shared.mask_args(c.dir / "m.zarr"), "--jobqueue", c.dir / "c.yaml", expect=2, needles=needles)
        refused_at_once(c, "--jobqueue")
        c.only(c.dir, ["TMP", "c.yaml"])

    @case("config-20", "a YAML alias bomb in a detector description")
    def case_yaml_bomb_detector(c):
        (c.dir / "c.yaml").write_text("name: BOMB\nmodules: 1\nasic-shape: [32, 32]\n" + bomb() + "module-shape: *l9\n")
        c.rmm("mask", "--detector", c.dir / "c.yaml", "--dark-high", c.shared.base / "stacks" / "dark.h5",
              "--out", c.dir / "m.zarr", "--workers", 1, expect=2, needles=("--detector", *needles))
        refused_at_once(c, "detector description")
        c.only(c.dir, ["TMP", "c.yaml"])

    @case("config-20", "a YAML alias bomb in the nightly configuration")
    def case_yaml_bomb_nightly(c):
        (c.dir / "c.yaml").write_text("nightly:\n  state: state\n  publish: masks\n  detectors:\n    - name: A\n"
                                      "      detector: AGIPD1M\n      trees: [t]\nrmm-dask:\n  f1:\n" + bomb("    ")
                                      + "  window: *l9\n")
        c.rmm("nightly", "--config", c.dir / "c.yaml", "--once", "--dry-run", expect=2, needles=needles)
        refused_at_once(c, "nightly")
        c.only(c.dir, ["TMP", "c.yaml"])

    @case("config-20", "a detector with 10^9 cells; a store whose description says 10^9 modules")
    def case_detector_billion_cells(c):
        (c.dir / "det.yaml").write_text(fc.SMALL_YAML.replace("cells: 1", "cells: 1000000000"))
        c.rmm("mask", "--detector", c.dir / "det.yaml", "--dark-high", c.shared.base / "stacks" / "dark.h5",
              "--out", c.dir / "m.zarr", "--workers", 1, expect=2,
              needles=("det.yaml", "cells 1000000000 is more than any detector has"))
        store = fc.copy_store(c, "edited.zarr")
        fc.chmod_writable(store)
        meta = store / "zarr.json"
        os.chmod(meta, 0o644)
        doc = json.loads(meta.read_text())
        doc["attributes"]["detector_description"]["n_modules"] = 10**9
        meta.write_text(json.dumps(doc))
        before = fc.snapshot(store)
        for args in (("show", store, "--png", c.dir / "png"),
                     ("export", store, "--to", "nexus", "--out", c.dir / "x.h5")):
            c.rmm(*args, expect=2, needles=("edited.zarr", "detector_description", "modules 1000000000"))
        c.same(before, store, "the edited store")
        c.only(c.dir, ["TMP", "det.yaml", "edited.zarr"])

    @case("config-20", "chunking: cells-per-chunk: 0 in --config")
    def case_config_cells_per_chunk_zero(c):
        (c.dir / "c.yaml").write_text("rmm-dask:\n  chunking:\n    cells-per-chunk: 0\n")
        c.rmm(*c.shared.mask_args(c.dir / "m.zarr"), "--config", c.dir / "c.yaml", expect=2,
              needles=("c.yaml", "chunking.cells-per-chunk must be an integer of at least 1, not 0"))
        c.only(c.dir, ["TMP", "c.yaml"])

    @case("config-20", "rmm show under LC_ALL=C of a store made from non-ASCII paths")
    def case_show_lc_all_c_non_ascii(c):
        probe = c.dir / "Probe_Ü_α"
        shutil.copytree(c.shared.s / "raw", probe / "raw")
        c.rmm(*c.shared.mask_args(probe / "m.zarr", runs=probe), expect=0)
        env = {k: v for k, v in c.env().items() if k not in ("PYTHONIOENCODING", "LANG", "LANGUAGE")}
        env.update(LC_ALL="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
        shown = c.rmm("show", probe / "m.zarr", expect=0, env=env)
        escaped = str(probe).replace("Ü", "\\xdc").replace("α", "\\u03b1")
        c.expect(f"  dark-high: {escaped}/raw/r0001 (" in shown.out and "any " in shown.out,
                 f"`rmm show` under LC_ALL=C did not print the inputs and counts: {shown.out[:300]!r}")
        c.rmm("show", probe / "missing.zarr", expect=2, env=env, needles=("missing.zarr", "no such mask store"))
        c.only(probe, ["raw", "m.zarr"])

    @case("config-20", "a run directory whose name holds a newline")
    def case_newline_in_path(c):
        c.rmm(*c.shared.mask_args(c.dir / "m.zarr", high=c.dir / "gone\nrmm mask: forged line"), expect=2,
              needles=("gone\\nrmm mask: forged line", "no such file"))
        run = c.dir / "r\n0001"
        shutil.copytree(c.shared.raw(1), run)
        done = c.rmm(*c.shared.mask_args(c.dir / "m.zarr", high=run), expect=0)
        lines = done.out.splitlines()
        c.expect(any(line.startswith(f"high run {c.dir}/r\\n0001: ") for line in lines),
                 f"the note of the run is not one escaped line: {done.out[:300]!r}")
        c.expect(not any(line.startswith("0001") for line in lines), "a path's newline split an output line")
        c.expect(fc.is_store(c.dir / "m.zarr"), "the store of the run with a newline was not published")
        c.only(c.dir, ["TMP", "r\n0001", "m.zarr"])
