"""rmm-dask: the Robust Mask Maker (Sadri et al., J. Appl. Cryst. 2022) for X-ray pixel detectors."""

from importlib.metadata import PackageNotFoundError, version

from .numba_cache import choose as _choose_numba_cache

# numba loads its cache with pickle: only from a directory no one else can write (see numba_cache.py)
_choose_numba_cache()

try:
    __version__ = version("rmm-dask")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["BadPixel", "fit_gaussian", "robust_gaussian", "open_run", "__version__"]


def __getattr__(name):
    # only when asked for: the readers pull in xarray, dask and EXtra-data, the kernels numba;
    # `rmm` installs its Ctrl-C handler first (a Ctrl-C while numba loads would be a traceback)
    if name == "open_run":
        from .io import open_run

        return open_run
    if name == "BadPixel":
        from .codes import BadPixel

        return BadPixel
    if name in ("fit_gaussian", "robust_gaussian"):
        from . import robust

        return getattr(robust, name)
    raise AttributeError(f"module 'rmm_dask' has no attribute {name!r}")
