"""Fault campaign cases of issue 21: NXmx master files that cannot describe their detector.

Each case writes a synthetic EIGER 1M master (Dectris' layout: rmm_dask.synth.write_nxmx) with its data
files, takes away a key the description needs, and expects ``rmm describe MASTER`` (and ``rmm mask``
without ``--detector``) to exit 2 with one line naming the file and the key, leaving the run as it was
and publishing nothing. Registered into benchmarks/fault_campaign.py (``make campaign``) by :func:`register`.
"""

from __future__ import annotations

#: an EIGER 1M master (argv[1]) with its data files, 3 frames of counts, then a key deleted (argv[2:])
MASTER_SNIPPET = """
import sys
import h5py
import numpy as np
from rmm_dask.synth.write_nxmx import EIGER_1M, write_eiger_nxmx
frames = np.random.default_rng(21).poisson(2.0, (3, *EIGER_1M.frame_shape))
master = write_eiger_nxmx(sys.argv[1], frames, frames_per_file=2)
with h5py.File(master, "r+") as f:
    for key in sys.argv[2:]:
        del f[key]
"""

SECTION = "describe-21"
DET = "/entry/instrument/detector"


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""
    import subprocess
    import sys

    import fault_campaign as fc

    def master_without(c, *keys):
        """A run directory with an EIGER master lacking ``keys``, and its snapshot."""
        master = c.dir / "run" / "r0001_master.h5"
        done = subprocess.run([sys.executable, "-c", MASTER_SNIPPET, str(master), *keys], env=c.env(),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        return master, fc.snapshot(master.parent)

    @case(SECTION, "an NXmx master whose module lacks data_size: rmm describe names the key")
    def case_describe_module_without_size(c):
        master, before = master_without(c, f"{DET}/module_1/data_size")
        c.rmm("describe", master, expect=2, needles=(str(master), f"{DET}/module_1/data_size is missing",
                                                      "give --detector FILE.yaml"))
        c.same(before, master.parent, "the NXmx run")
        c.only(c.dir, ["TMP", "run"])

    @case(SECTION, "an NXmx master with no type and no description: describe and mask cannot tell counting")
    def case_describe_cannot_tell_counting(c):
        master, before = master_without(c, f"{DET}/type", f"{DET}/description")
        needles = (str(master), f"{DET}/type is missing and it has no description",
                   "cannot tell whether it counts photons")
        c.rmm("describe", master, expect=2, needles=needles)
        c.rmm("mask", "--dark-high", master, "--out", c.dir / "m.zarr", "--workers", 1, expect=2, needles=needles)
        c.expect(not (c.dir / "m.zarr").exists(), "a store was published from an undescribed NXmx run")
        c.same(before, master.parent, "the NXmx run")
        c.only(c.dir, ["TMP", "run"])
