"""Fault campaign cases of issue 21: detectors described by their own files.

A high-Z LAMBDA 2M series (modules of 516 x 1554, two GaAs tiles and a gap, as
rmm_dask.synth.counting.LAMBDA_GAAS makes it) whose chip boundaries come from its pixel mask, masked
with and without ``--detector``; the same files with the marks cleared, or with modules that disagree,
refused with one line; HDF5 stacks of an integrating detector with ``cells: 2`` read as two memory
cells, refused when their frames or ``cell-ids`` do not make whole cycles; and ``rmm describe``'s YAML
taken back by ``--detector`` for the same mask bit for bit. Every case writes its own files in its
directory with rmm_dask.synth (in a subprocess, as the campaign's rmm is). Registered into
benchmarks/fault_campaign.py (``make campaign``) by :func:`register`.
"""

from __future__ import annotations

#: a LAMBDA GaAs series (argv[1]: its directory) of argv[2] modules, 10 dark frames each, gap columns 776-777;
#: argv[3:] "clear": the pixel masks without their virtual (31) and gap (0) bits; "moved": module m2's first
#: chip boundary of columns marked at 300 instead of 258 (its virtual columns moved)
LAMBDA_SNIPPET = """
import sys
import numpy as np
from rmm_dask.synth import SynthConfig, synthesize
from rmm_dask.synth.counting import LAMBDA_GAAS, LAMBDA_GAAS_GAP, NXMX_GAP, NXMX_VIRTUAL
from rmm_dask.synth.write_lambda import write_lambda_run
out, modules, how = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
calib = synthesize(SynthConfig(detector=LAMBDA_GAAS, modules=modules, cells=1, frames=10, flat_frames=10,
                               gap_columns=LAMBDA_GAAS_GAP))
mask = calib.model["pixel_mask"]
if "clear" in how:
    mask &= ~np.uint32(NXMX_VIRTUAL | NXMX_GAP)
if "moved" in how:
    mask[1, :, 255:261] &= ~np.uint32(NXMX_VIRTUAL)
    mask[1, :, 297:303] |= np.uint32(NXMX_VIRTUAL)
write_lambda_run(out, calib.dark["high"].analog[:, 0], LAMBDA_GAAS, pixel_mask=mask)
"""

#: an HDF5 stack (argv[2]) of the integrating detector argv[1] (a YAML file): 10 synthetic dark frames of each
#: of 2 memory cells interleaved (frame i is cell i mod 2) in /data, the first argv[3] of them; argv[4:]: /cellId
STACK_SNIPPET = """
import sys
import h5py
import numpy as np
from rmm_dask.detectors import get_detector
from rmm_dask.synth import SynthConfig, synthesize
description, out, n, ids = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
calib = synthesize(SynthConfig(detector=get_detector(description), modules=1, cells=2, frames=10, seed=21))
cells = calib.dark["high"].analog[0]  # (cell, frame, y, x)
raw = cells.transpose(1, 0, 2, 3).reshape(-1, *cells.shape[2:])[:n]
with h5py.File(out, "w") as f:
    f.create_dataset("data", data=raw, chunks=(1, *raw.shape[1:]))
    if ids:
        f["cellId"] = np.asarray([int(i) for i in ids], np.uint16)
"""

#: an integrating detector of two memory cells, small enough for the synthetic model's planted blocks
CELLS_YAML = """\
name: CELLS128
modules: 1
module-shape: [128, 128]
asic-shape: [64, 64]
gain-stages: [high]
gain: none
cells: 2
counting: false
dataset: /data
"""

SECTION = "layouts-21"
GAAS_COLUMNS = "columns [0, 258, 518, 778, 1036, 1296, 1554]"  #: the chip boundaries LAMBDA_GAAS's pixel mask marks


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""
    import subprocess
    import sys

    import fault_campaign as fc

    def write(c, snippet, *argv):
        """Run a writer snippet of rmm_dask.synth with ``argv``; the campaign's error if it fails."""
        done = subprocess.run([sys.executable, "-c", snippet, *map(str, argv)], env=c.env(),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)

    def lambda_series(c, modules, *how):
        """A LAMBDA GaAs series in ``c.dir / "run"`` and its snapshot."""
        run = c.dir / "run"
        write(c, LAMBDA_SNIPPET, run, modules, *how)
        return run, fc.snapshot(run)

    def stack(c, frames, *ids, description=CELLS_YAML):
        """A stack of ``frames`` raw frames in ``c.dir / "run" / "stack.h5"``, its description, and their snapshot."""
        (c.dir / "run").mkdir()
        yaml = c.dir / "run" / "cells.yaml"
        yaml.write_text(description)
        path = c.dir / "run" / "stack.h5"
        write(c, STACK_SNIPPET, yaml, path, frames, *ids)
        return path, yaml, fc.snapshot(path.parent)

    def attrs(store):
        import zarr

        return dict(zarr.open_group(str(store), mode="r").attrs)

    def arrays(store) -> dict:
        """Every array of a store (groups walked), as numpy."""
        import zarr

        group = zarr.open_group(str(store), mode="r")
        return {name: obj[...] for name, obj in group.members(max_depth=None) if isinstance(obj, zarr.Array)}

    def refused(c, run, before, needles, *options):
        """`rmm mask --dark-high RUN` (with ``options``) exits 2 with one line; the case's run directory as it
        was (``before``: its snapshot), no store."""
        c.rmm("mask", "--dark-high", run, "--out", c.dir / "m.zarr", "--workers", 1, *options, expect=2,
              needles=needles)
        c.expect(not (c.dir / "m.zarr").exists(), "a store was published from a refused run")
        c.same(before, c.dir / "run", "the input run")

    @case(SECTION, "a LAMBDA 2M series of 516 x 1554 GaAs modules, with --detector LAMBDA2M and without")
    def case_lambda_gaas_series(c):
        run, before = lambda_series(c, 3)
        for name, options in (("named.zarr", ("--detector", "LAMBDA2M")), ("own.zarr", ())):
            store = c.dir / name
            p = c.rmm("mask", "--dark-high", run, "--out", store, "--workers", 1, *options, expect=0)
            if not c.expect(fc.is_store(store), f"no store {name} published"):
                continue
            fc.ro_published(c, store)
            a = attrs(store)
            described = a.get("detector_description") or {}
            c.expect(described.get("name") == "LAMBDA2M" and described.get("module_shape") == [516, 1554],
                     f"{name}: detector_description {described.get('name')} of {described.get('module_shape')}, "
                     "not LAMBDA2M of [516, 1554]")
            chips = str(a.get("chips"))
            c.expect(GAAS_COLUMNS in chips and "from the pixel mask" in chips,
                     f"{name}: chips {chips!r}, not the pixel mask's {GAAS_COLUMNS}")
            shape = arrays(store)["mask"].shape
            c.expect(shape == (3, 1, 1, 516, 1554), f"{name}: mask of shape {shape}, not 3 modules of 516 x 1554")
            c.expect(GAAS_COLUMNS in p.out, "rmm mask did not say where the chips came from")
        c.same(before, run, "the input run")
        c.only(c.dir, ["TMP", "run", "named.zarr", "own.zarr"])

    @case(SECTION, "the LAMBDA GaAs series with its pixel mask's virtual and gap marks cleared")
    def case_lambda_marks_cleared(c):
        run, before = lambda_series(c, 3, "clear")
        needles = ("_m1_part00000.nxs", "shape (10, 516, 1554)", "pixel mask marks no chip boundaries",
                   "chip-rows and chip-columns")
        refused(c, run, before, needles, "--detector", "LAMBDA2M")
        refused(c, run, before, needles)
        c.only(c.dir, ["TMP", "run"])

    @case(SECTION, "a LAMBDA GaAs series whose modules m1 and m2 mark different chip boundaries")
    def case_lambda_modules_disagree(c):
        run, before = lambda_series(c, 3, "moved")
        needles = ("_m2_part00000.nxs", "columns [0, 300, 518", "_m1_part00000.nxs", "not one detector's modules")
        refused(c, run, before, needles, "--detector", "LAMBDA2M")
        refused(c, run, before, needles)
        c.only(c.dir, ["TMP", "run"])

    @case(SECTION, "an HDF5 stack whose YAML description says cells: 2 (frame i is cell i mod 2)")
    def case_stack_two_cells(c):
        path, yaml, before = stack(c, 20)
        store = c.dir / "m.zarr"
        p = c.rmm("mask", "--dark-high", path, "--detector", yaml, "--out", store, "--workers", 1, expect=0)
        c.expect("frames read as 2 memory cells" in p.out, "rmm mask did not say the frames are read as 2 cells")
        if c.expect(fc.is_store(store), "no store published"):
            stored = arrays(store)
            c.expect(stored["mask"].shape == (1, 1, 2, 128, 128) and list(stored["cell"]) == [0, 1],
                     f"mask {stored['mask'].shape} of cells {list(stored['cell'])}, not 2 cells [0, 1]")
            frames = attrs(store)["inputs"]["dark-high"]["frames"]
            c.expect(frames == 10, f"{frames} frames per cell recorded, not 10")
        c.same(before, path.parent, "the input stack")
        c.only(c.dir, ["TMP", "run", "m.zarr"])

    @case(SECTION, "an HDF5 stack of 11 frames whose description says cells: 2")
    def case_stack_cells_not_divisible(c):
        path, yaml, before = stack(c, 11)
        refused(c, path, before, (str(path), "has 11 frames", "not a whole number of cycles"), "--detector", yaml)
        c.only(c.dir, ["TMP", "run"])

    @case(SECTION, "an HDF5 stack whose cell-ids: /cellId do not repeat one cycle")
    def case_stack_cell_ids_not_one_cycle(c):
        ids = [0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1]  # frame 4: cell 1 where the cycle has 0
        path, yaml, before = stack(c, 20, *ids, description=CELLS_YAML + "cell-ids: /cellId\n")
        refused(c, path, before, (str(path), "/cellId: frame 4 has cell 1", "not one repeating sequence"),
                "--detector", yaml)
        c.only(c.dir, ["TMP", "run"])

    @case(SECTION, "rmm describe of a LAMBDA GaAs series: YAML that --detector takes back, the same mask")
    def case_describe_lambda_round_trip(c):
        import numpy as np
        import yaml

        run, before = lambda_series(c, 1)
        p = c.rmm("describe", run, expect=0)
        try:
            described = yaml.safe_load(p.out)
        except yaml.YAMLError as err:
            return c.fail(f"rmm describe printed no YAML: {err}")
        c.expect(isinstance(described, dict) and described.get("module-shape") == [516, 1554]
                 and described.get("chip-columns") == [0, 258, 518, 778, 1036, 1296, 1554],
                 f"rmm describe printed {described!r}, not a 516 x 1554 module with the pixel mask's chip columns")
        (c.dir / "lambda.yaml").write_text(p.out)
        c.rmm("mask", "--dark-high", run, "--detector", c.dir / "lambda.yaml", "--out", c.dir / "given.zarr",
              "--workers", 1, expect=0)
        c.rmm("mask", "--dark-high", run, "--out", c.dir / "own.zarr", "--workers", 1, expect=0)
        if fc.is_store(c.dir / "given.zarr") and fc.is_store(c.dir / "own.zarr"):
            given, own = arrays(c.dir / "given.zarr"), arrays(c.dir / "own.zarr")
            differ = [name for name in sorted(set(given) | set(own)) if name not in given or name not in own
                      or not np.array_equal(given[name], own[name], equal_nan=given[name].dtype.kind == "f")]
            c.expect(not differ, f"the mask with the described YAML differs from the one without --detector: {differ}")
            a, b = attrs(c.dir / "given.zarr"), attrs(c.dir / "own.zarr")
            c.expect(a["detector_description"] == b["detector_description"], "the stores record other descriptions")
        else:
            c.fail("a mask of the described series was not published")
        c.same(before, run, "the input run")
        c.only(c.dir, ["TMP", "run", "lambda.yaml", "given.zarr", "own.zarr"])
