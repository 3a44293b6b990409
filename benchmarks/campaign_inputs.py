"""Fault campaign cases of issue 20: runs proven complete and consistent before any worker starts, detector off refused.

Registered into benchmarks/fault_campaign.py (``make campaign``) by :func:`register`.
"""

from __future__ import annotations

#: a EuXFEL RAW run (argv[1]: its directory) of one AGIPD module, 1 cell, 30 trains in sequence files S00000-S00002
SEQUENCES_SNIPPET = """
import sys
import numpy as np
from rmm_dask.synth.write_euxfel import write_raw_run
rng = np.random.default_rng(20)
data = (1000 + 5 * rng.standard_normal((1, 1, 30, 512, 128))).round().astype(np.uint16)
write_raw_run(sys.argv[1], data, data, run_number=2, trains_per_file=10)
"""

SECTION = "inputs-20"


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""
    import shutil
    import subprocess
    import sys

    import fault_campaign as fc

    def refused(c, run, needles, *extra):
        """`rmm mask --dark-high RUN` exits 2 with one line naming the file; the run is as it was, no store."""
        before = fc.snapshot(run)
        c.rmm("mask", "--dark-high", run, "--out", c.dir / "m.zarr", "--workers", 1, *extra, expect=2, needles=needles)
        c.same(before, run, "the input run")
        c.expect(not (c.dir / "m.zarr").exists(), "a store was published from a bad run")

    @case(SECTION, "a sequence file missing from the middle of a EuXFEL run (S00001 of S00000-S00002)")
    def case_sequence_missing_middle(c):
        run = c.dir / "r0002"
        done = subprocess.run([sys.executable, "-c", SEQUENCES_SNIPPET, str(run)], env=c.env(),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        (run / "RAW-R0002-AGIPD00-S00001.h5").unlink()
        refused(c, run, ("r0002", "RAW-R0002-AGIPD00-S00001.h5 missing", "S00000, S00002"))
        c.only(c.dir, ["TMP", "r0002"])

    @case(SECTION, "a sequence file of another run (another gain) copied into a run directory")
    def case_foreign_sequence_file(c):
        run = c.dir / "r0001"
        shutil.copytree(c.shared.raw(1), run)
        foreign = run / "RAW-R0001-AGIPD00-S00001.h5"  # the medium dark's file, named as the high dark's next sequence
        shutil.copy(c.shared.raw(2) / "RAW-R0002-AGIPD00-S00000.h5", foreign)
        refused(c, run, (str(foreign), "is a file of run 2", "not of run 1"))
        c.only(c.dir, ["TMP", "r0001"])

    @case(SECTION, "a virtual dataset whose source file exists but lacks the mapped dataset")
    def case_vds_source_lacks_dataset(c):
        import h5py
        import numpy as np

        run = c.dir / "run"
        run.mkdir()
        rng = np.random.default_rng(3)
        frames = (1000 + 5 * rng.standard_normal((20, 64, 64))).round().astype(np.uint16)
        with h5py.File(run / "a.h5", "w") as f:
            f["data"] = frames
        with h5py.File(run / "b.h5", "w") as f:
            f["other"] = frames  # not /data: HDF5 reads the VDS's fill value for its half
        layout = h5py.VirtualLayout(shape=(40, 64, 64), dtype=np.uint16)
        layout[0:20] = h5py.VirtualSource("a.h5", "data", shape=(20, 64, 64))
        layout[20:40] = h5py.VirtualSource("b.h5", "data", shape=(20, 64, 64))
        with h5py.File(run / "dark.h5", "w") as f:
            f.create_virtual_dataset("data", layout, fillvalue=0)
        refused(c, run / "dark.h5", ("dark.h5", "data in b.h5", "lacks"), "--detector", c.shared.small)
        c.only(c.dir, ["TMP", "run"])

    @case(SECTION, "a dark run taken with the detector off (all zeros), darks only")
    def case_dark_detector_off(c):
        import h5py

        run = c.dir / "r0001"
        shutil.copytree(c.shared.raw(1), run)
        name = next(run.glob("*.h5"))
        with h5py.File(name, "r+") as f:
            f["INSTRUMENT/SPB_DET_AGIPD1M-1/DET/0CH0:xtdf/image/data"][...] = 0
        refused(c, run, ("r0001", "no signal", "100% of pixels of module 0", "detector off", "nothing was published"))
        c.only(c.dir, ["TMP", "r0001"])
