"""rmm-dask: the Robust Mask Maker (Sadri et al., J. Appl. Cryst. 2022) for X-ray pixel detectors.

The public API, imported when first used (``import rmm_dask`` loads neither numba nor
dask nor distributed):

- :func:`open_run` (:mod:`rmm_dask.io`): a run on disk as a lazy ``xarray.Dataset``;
- :func:`build_mask` (:mod:`rmm_dask.pipeline`): the lazy mask of dark runs and a flat run;
- :func:`write_store` (:mod:`rmm_dask.store`): compute it into a Zarr store, published atomically;
- :func:`open_mask`, :func:`bad_pixels` (:mod:`rmm_dask.apply`): a published store as a lazy
  Dataset, and a boolean bad-pixel array for a group of bits, labelled to go with the data;
- :func:`export` (:mod:`rmm_dask.exports`): a store in the formats downstream programs read;
- :func:`count_bits`, :func:`figures_png` (:mod:`rmm_dask.summary`): what ``rmm show`` counts
  and draws of a store (pixels per bit, module, gain stage and cell; the figures as PNG bytes);
- :class:`BadPixel`, :func:`robust_gaussian`, :func:`fit_gaussian`: the bit codes and the estimator.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from .numba_cache import choose as _choose_numba_cache

# numba loads its cache with pickle: only from a directory no one else can write (see numba_cache.py)
_choose_numba_cache()

try:
    __version__ = version("rmm-dask")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

#: public name -> the module that holds it; imported only when asked for: the readers pull in
#: xarray, dask and EXtra-data, the kernels numba; `rmm` installs its Ctrl-C handler first
#: (a Ctrl-C while numba loads would be a traceback)
_API = {
    "open_run": ".io",
    "build_mask": ".pipeline",
    "write_store": ".store",
    "open_mask": ".apply",
    "bad_pixels": ".apply",
    "export": ".exports",
    "count_bits": ".summary",
    "figures_png": ".summary",
    "BadPixel": ".codes",
    "fit_gaussian": ".robust",
    "robust_gaussian": ".robust",
}

__all__ = [*_API, "__version__"]


def __getattr__(name):
    if name in _API:
        return getattr(import_module(_API[name], __name__), name)
    raise AttributeError(f"module 'rmm_dask' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
