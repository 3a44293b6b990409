"""One mask job: the graph of opened runs, computed on a cluster and published as a store."""

from __future__ import annotations

import contextlib
import errno

from .errors import ClusterError, InputError, printable

#: OSErrors that writing the output causes: about the output, whatever file the message names
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}

#: a store needs at least this fraction of its uncompressed size: the float32 features and
#: SNRs, most of a store, compress by about a quarter (the mask itself by 50x)
LEAST_COMPRESSED = 0.5


def write_error(err: OSError) -> str | None:
    """A failed write as 'FILE: problem' (no space, quota, read-only, permission), None for other OSErrors."""
    if err.errno not in WRITE_ERRNOS:
        return None
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}"


@contextlib.contextmanager
def _report(path, overwrite=False):
    """Dask's performance report of the block, published like every output (rmm_dask.publish)."""
    if not path:
        yield
        return
    from distributed import performance_report

    from . import publish

    with publish.output(path, overwrite=overwrite, what="the performance report") as out:
        with performance_report(filename=str(out.tmp), mode="inline"):  # bokeh inline: the page works offline
            yield


def store_nbytes(ds) -> int:
    """Uncompressed bytes of the arrays a store of the lazy mask ``ds`` holds (from the graph, reads nothing)."""
    return int(sum(var.nbytes for var in ds.data_vars.values()) + sum(c.nbytes for c in ds.coords.values()))


def input_nbytes(darks: dict, flat=None) -> int:
    """Bytes of the runs' data variables as opened (lazy: read from their metadata, reads no pixel)."""
    runs = list(darks.values()) + ([flat] if flat is not None else [])
    return int(sum(var.nbytes for ds in runs for var in ds.data_vars.values()))


def _mb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def check_room(target, nbytes: int, what: str = "the output store") -> None:
    """Refuse, before any cluster starts, a filesystem with clearly too little room for ``nbytes``
    (the store's uncompressed size, :func:`store_nbytes`): less than :data:`LEAST_COMPRESSED` of it free."""
    import os

    parent = os.path.dirname(os.fspath(target))
    st = os.statvfs(parent)
    free = st.f_bavail * st.f_frsize
    if free < LEAST_COMPRESSED * nbytes:
        raise InputError(
            target, f"no space left on device: {what} needs about {_mb(LEAST_COMPRESSED * nbytes)} to {_mb(nbytes)}, "
            f"{parent} has {_mb(free)} free; nothing was published"
        )


def _start_zarr_loop() -> None:
    """Have zarr make its IO event loop now, whole. zarr makes it in the thread that first writes,
    here the main thread as the store is created: a Ctrl-C right then (as the store's temporary
    appears) interrupted the loop's constructor, and the half-made loop printed an "Exception
    ignored in BaseEventLoop.__del__" traceback as it was freed."""
    import zarr

    from . import interrupts

    with interrupts.held():
        zarr.open_group(zarr.storage.MemoryStore(), mode="w")


def run_mask(darks, flat, out, *, params, detector, cluster="local", n_workers=None, report=None, overwrite=False, echo=print,
             flat_stage=None, user_mask=None, accept_flat=False, outcome=None, history=None):
    """Build the mask graph of the opened runs, compute it on a cluster and publish the store.

    Before any cluster is started, the output is checked (:func:`rmm_dask.publish.prepare`: not a
    link, a writable directory; :func:`check_room`: room for the store as estimated from the graph) and the flat run
    is checked on a few frames (:func:`rmm_dask.flatcheck.check_flat`): a flat that is not
    lit, or not in its gain stage, raises :class:`InputError` unless ``accept_flat``; the
    evidence goes into the store's ``flat_check`` attribute either way.

    A write that fails on the output's filesystem (no space, quota, read-only, too large)
    raises :class:`InputError` naming the store; a worker that dies again and again (out of
    memory) raises :class:`ClusterError`. ``outcome`` (:class:`rmm_dask.outcome.Outcome`), if
    given, follows the stages and the outputs, for an honest line when the job is interrupted.
    ``history``: the layer of a mask that remembers (:func:`rmm_dask.pipeline.build_mask`), or None.
    """
    from . import publish
    from .cluster import compute, dask_client
    from .flatcheck import check_flat
    from .io.fingerprint import check_unchanged
    from .numba_cache import compile_notice
    from .outcome import Outcome
    from .pipeline import build_mask, check_runs
    from .signalcheck import check_signal
    from .store import remove_partial, write_store

    outcome = outcome if outcome is not None else Outcome()
    outcome.enter("building")
    # cheap checks before any run is read: not a link, not there (or --overwrite), a writable directory
    target = publish.prepare(out, overwrite=overwrite, directory=True, what="the output store")
    if report:
        outcome.expect(publish.prepare(report, overwrite=overwrite, what="the performance report"))
    # held from now on: a second job on the same output is refused at once, not after computing everything
    with publish.hold(target, overwrite=overwrite, directory=True, what="the output store"):
        for name, ds in list(darks.items()) + ([("flat", flat)] if flat is not None else []):
            for note in ds.attrs.get("notes", []):
                echo(printable(f"{name} run {ds.attrs.get('path')}: {note}"))  # a path's newline cannot split it
        check_signal(darks, flat, detector=detector)  # detector off: refused before the flat check it would mislead
        checked = None
        if flat is not None:
            detector, _, flat_stage = check_runs(darks, flat, detector=detector, params=params, flat_stage=flat_stage)
            checked = check_flat(darks, flat, detector=detector, flat_stage=flat_stage, params=params, accept=accept_flat)
            if checked.get("accepted_by_option"):
                echo(printable(f"flat run {flat.attrs.get('path')}: {checked['problem']}; used as flat because of --accept-flat"))
        ds = build_mask(darks, flat, detector=detector, params=params, flat_stage=flat_stage, user_mask=user_mask,
                        flat_check=checked, history=history)
        check_room(target, store_nbytes(ds))  # before any cluster is started
        outcome.expect(target)
        notice = compile_notice()  # the first run after an install or upgrade: numba compiles, once
        if notice:
            echo(notice)
        blocks = ds.mask.data.numblocks
        parallel = blocks[0] * blocks[2] * (len(darks) + (flat is not None))  # read and feature tasks at once
        _start_zarr_loop()
        partials = []
        try:
            outcome.enter("computing")
            with dask_client(cluster, n_workers=n_workers, max_workers=parallel, input_bytes=input_nbytes(darks, flat),
                             needs_scheduler=bool(report), echo=echo), \
                    _report(report, overwrite):
                path = write_store(ds, out, overwrite=overwrite, compute=compute, partials=partials,
                                   verify=lambda: check_unchanged(ds.attrs["inputs"]))
            outcome.enter("published")
            return path
        except OSError as err:
            if err.errno in WRITE_ERRNOS:
                raise InputError(target, f"cannot write the store: {err.strerror or err}; nothing was published") from None
            raise
        except Exception as err:
            if type(err).__name__ == "KilledWorker":  # distributed.KilledWorker, without importing distributed here
                raise ClusterError(
                    f"a worker died again and again running {getattr(err, 'task', None) or 'a task'} (out of memory? "
                    f"see rmm-dask.cluster.memory-limit and --cells-per-chunk); nothing was published"
                ) from None
            raise
        finally:
            for path in partials:  # again, now that no worker can still be writing into it
                remove_partial(path)
