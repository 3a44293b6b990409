"""rmm-dask: the Robust Mask Maker (Sadri et al., J. Appl. Cryst. 2022) for X-ray pixel detectors."""

import os
import tempfile
from importlib.metadata import PackageNotFoundError, version


def _numba_cache() -> None:
    """Numba caches compiled kernels beside the package or under the user's home; a service user
    with neither writable (a root-owned venv, no home) would fail at import: use a temporary one."""
    if "NUMBA_CACHE_DIR" in os.environ or os.access(os.path.dirname(__file__), os.W_OK):
        return
    home = os.path.expanduser("~")
    if os.path.isdir(home) and os.access(home, os.W_OK):
        return
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"rmm-dask-numba-{os.getuid()}")


_numba_cache()

try:
    __version__ = version("rmm-dask")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

from .codes import BadPixel
from .robust import fit_gaussian, robust_gaussian

__all__ = ["BadPixel", "fit_gaussian", "robust_gaussian", "open_run", "__version__"]


def __getattr__(name):
    # the readers pull in xarray, dask and EXtra-data: only when asked for
    if name == "open_run":
        from .io import open_run

        return open_run
    raise AttributeError(f"module 'rmm_dask' has no attribute {name!r}")
