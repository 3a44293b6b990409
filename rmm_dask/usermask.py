"""User-drawn masks (beamstop, shadows, regions to ignore) from NumPy, TIFF, CBF or HDF5 files.

A user mask is its own layer: the store keeps it apart from the mask maker's bits
(``layers/user``) and the exports combine it as their formats allow. Its array may be
per module ``(module, y, x)`` (all of the detector's modules, or those of the run), a
full frame ``(Y, X)`` of a detector whose modules tile one, or ``(y, x)`` for a
one-module detector. By default a non-zero value means masked; ``good_is_one`` reads
masks where non-zero means good (Cheetah, OM, many CrystFEL masks).
"""

from __future__ import annotations

import os

import numpy as np

from .detectors import Detector
from .errors import InputError

__all__ = ["read_user_mask"]

#: datasets tried, in order, in an HDF5 mask file given without one
HDF5_CANDIDATES = ("/mask", "/data/data", "/entry/instrument/detector/pixel_mask", "/entry_1/data_1/mask")


def _load(spec: str) -> tuple[str, np.ndarray]:
    path, _, dataset = spec.partition(":") if not os.path.exists(spec) else (spec, "", "")
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise InputError(path, "no such user mask file")
    lower = path.lower()
    try:
        if lower.endswith(".npy"):
            return path, np.load(path, allow_pickle=False)
        if lower.endswith((".tif", ".tiff")):
            import tifffile

            return path, tifffile.imread(path)
        if lower.endswith(".cbf"):
            import fabio

            return path, fabio.open(path).data
    except (OSError, ValueError, RuntimeError) as err:
        raise InputError(path, f"cannot read the user mask: {err}") from None
    from .io.hdf5 import open_hdf5

    with open_hdf5(path) as f:
        names = [dataset] if dataset else [n for n in HDF5_CANDIDATES if n in f]
        if not names or names[0] not in f:
            raise InputError(path, f"no dataset {dataset or ' or '.join(HDF5_CANDIDATES)}: give FILE:DATASET")
        return path, np.asarray(f[names[0]][()])


def read_user_mask(spec: str, detector: Detector, modules, *, good_is_one: bool = False) -> np.ndarray:
    """The user mask ``spec`` (``FILE.npy|.tif|.cbf`` or ``FILE.h5:DATASET``) as uint8 ``(module, y, x)``, 1 = masked.

    ``modules`` are the module numbers of the run, in order.
    """
    path, data = _load(spec)
    modules = [int(m) for m in modules]
    ny, nx = detector.module_shape
    if data.dtype.kind not in "biuf":
        raise InputError(path, f"the user mask holds {data.dtype} values, expected numbers or booleans")
    data = detector.module_stack(data)
    if data.ndim != 3 or data.shape[1:] != (ny, nx):
        expected = [f"(module, {ny}, {nx})"] + ([f"{detector.frame_shape}"] if detector.frame_shape else [])
        raise InputError(path, f"the user mask has shape {data.shape}; {detector.name} masks are {' or '.join(expected)}")
    if data.shape[0] == detector.n_modules:
        data = data[modules]
    elif data.shape[0] != len(modules):
        raise InputError(path, f"the user mask has {data.shape[0]} modules; the run has {len(modules)} and {detector.name} {detector.n_modules}")
    masked = (data == 0) if good_is_one else (data != 0)
    return masked.astype(np.uint8)
