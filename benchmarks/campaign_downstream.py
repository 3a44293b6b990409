"""Fault campaign cases of issue 22, item 6: downstream programs (the DIALS mask, CrystFEL's geometry lines).

Registered into benchmarks/fault_campaign.py (``make campaign``) by :func:`register`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def _dials_mask(c, *args, expect: int, needles=()):
    """``python -m rmm_dask.dials_mask ARGS`` as a user runs it, judged as the campaign judges `rmm`."""
    import fault_campaign as fc

    argv = [sys.executable, "-m", "rmm_dask.dials_mask", *map(str, args)]
    t0 = time.monotonic()
    done = subprocess.run(argv, env=c.env(), cwd=c.dir, capture_output=True, text=True, timeout=120)
    return c.judge(fc.Proc(argv, done.returncode, done.stdout, done.stderr, time.monotonic() - t0), expect, needles)


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""
    import h5py

    from rmm_dask.exports import parse_geometry

    @case("downstream-22", "dials mask: experiments whose panels do not match the export")
    def case_dials_mask_wrong_panels(c):
        """An AGIPD export (16 modules of 512 x 128) against a PILATUS 300K import (one 619 x 487 panel): one line
        naming both layouts, exit 2, no pickle; the same with a module that is not there."""
        c.rmm("export", c.shared.store, "--to", "nexus", "--out", c.dir / "m.nxs", expect=0)
        expt = c.dir / "imported.expt"
        expt.write_text(json.dumps({"__id__": "ExperimentList", "detector": [{"panels": [{"image_size": [487, 619]}]}]}))
        _dials_mask(c, c.dir / "m.nxs", expt, "--out", c.dir / "mask.pickle", expect=2,
                    needles=("imported.expt", "1 panel of 619 x 487", "16 modules of 512 x 128", "nothing was published"))
        _dials_mask(c, c.dir / "m.nxs", expt, "--out", c.dir / "mask.pickle", "--module", 16, expect=2,
                    needles=("m.nxs", "has no module 16", "--module 0-15", "nothing was published"))
        c.only(c.dir, ["TMP", "m.nxs", "imported.expt"])

    @case("downstream-22", "crystfel export of a one-module stack: panel lines that cover the mask")
    def case_crystfel_panels_of_a_stack(c):
        """A stack of the SMALL64 detector (one module, no EuXFEL layout) exported for CrystFEL: the .geom names
        the mask dataset, lays it out as the (frame, y, x) data less the frame axis, one panel covering it."""
        c.rmm("mask", "--detector", c.shared.small, "--dark-high", c.shared.base / "stacks" / "dark.h5",
              "--out", c.dir / "m.zarr", "--workers", 1, expect=0)
        c.rmm("export", c.dir / "m.zarr", "--to", "crystfel", "--out", c.dir / "m.h5", expect=0)
        if not (c.dir / "m.geom").is_file():
            c.fail("no m.geom beside m.h5")
            return
        top, panels = parse_geometry((c.dir / "m.geom").read_text())
        with h5py.File(top.get("mask0_file", c.dir / "m.h5")) as f:
            shape = f[top["mask0_data"]].shape if top.get("mask0_data") in f else None
        c.expect(shape == (64, 64), f"the mask dataset {top.get('mask0_data')} is {shape}, not the module's (64, 64)")
        c.expect([top.get(f"dim{i}") for i in range(3)] == ["%", "ss", "fs"], f"dims {top} are not %, ss, fs")
        ranges = {p: tuple(v.get(k) for k in ("min_fs", "max_fs", "min_ss", "max_ss")) for p, v in panels.items()}
        c.expect(ranges == {"m0": ("0", "63", "0", "63")}, f"panels {ranges} do not cover the 64 x 64 mask once")
        c.only(c.dir, ["TMP", "m.zarr", "m.h5", "m.geom"])
