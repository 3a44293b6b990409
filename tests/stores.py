"""Comparing mask stores array by array (bit-identical results across chunkings and clusters)."""

import numpy as np
import zarr

from rmm_dask.store import walk_arrays


def store_arrays(path) -> dict:
    """Every array of a store, by its path, read whole."""
    return {name: arr[:] for name, arr in walk_arrays(zarr.open_group(path, mode="r"))}


def assert_same_store(a, b, skip: str = ""):
    """The stores hold the same arrays with equal values (paths starting with ``skip`` left out)."""
    sa, sb = store_arrays(a), store_arrays(b)
    if skip:
        sa = {k: v for k, v in sa.items() if not k.startswith(skip)}
        sb = {k: v for k, v in sb.items() if not k.startswith(skip)}
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
