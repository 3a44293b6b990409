"""Run by DIALS' own Python (not rmm's): panels from stdin (``numpy.savez``: ``panel0``, ``panel1``,
... bool, True = good) -> ``sys.argv[1]``, the pickled tuple of one ``flex.bool`` per panel that
``dials.import ... mask=FILE`` reads (dials/command_line/dials_import.py: ``lookup.mask``).

It imports nothing of rmm-dask, which DIALS' Python does not have: :mod:`rmm_dask.dials_mask`
runs this file by its path and publishes what it writes.
"""

import io
import pickle
import sys

import numpy as np
from dxtbx import flumpy  # DIALS' numpy bridge, as dxtbx builds its own static masks (dxtbx/nexus)


def main(out: str) -> None:
    """Read the panels from stdin and write them to ``out`` as DIALS' mask pickle."""
    arrays = np.load(io.BytesIO(sys.stdin.buffer.read()))
    # flex.bool of (slow, fast) each, the panel's image_size reversed: what dials.import checks
    panels = [flumpy.from_numpy(np.ascontiguousarray(arrays[f"panel{i}"], dtype=bool))
              for i in range(len(arrays.files))]
    with open(out, "wb") as f:
        pickle.dump(tuple(panels), f, protocol=pickle.HIGHEST_PROTOCOL)


if __name__ == "__main__":
    main(sys.argv[1])
