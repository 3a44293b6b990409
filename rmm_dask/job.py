"""One mask job: the graph of opened runs, computed on a cluster and published as a store."""

from __future__ import annotations

import contextlib


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


def run_mask(darks, flat, out, *, params, detector, cluster="local", n_workers=None, report=None, overwrite=False, echo=print,
             flat_stage=None, user_mask=None, accept_flat=False):
    """Build the mask graph of the opened runs, compute it on a cluster and publish the store.

    Before any cluster is started, the flat run is checked on a few frames
    (:func:`rmm_dask.flatcheck.check_flat`): a flat that is not lit, or not in its gain
    stage, raises :class:`InputError` unless ``accept_flat``; the evidence goes into the
    store's ``flat_check`` attribute either way.
    """
    from .cluster import dask_client
    from .flatcheck import check_flat
    from .pipeline import build_mask, check_runs
    from .store import remove_partial, write_store

    from . import publish

    publish.prepare(out, overwrite=overwrite, directory=True, what="the output store")  # before any cluster is started
    if report:
        publish.prepare(report, overwrite=overwrite, what="the performance report")
    for name, ds in list(darks.items()) + ([("flat", flat)] if flat is not None else []):
        for note in ds.attrs.get("notes", []):
            echo(f"{name} run {ds.attrs.get('path')}: {note}")
    checked = None
    if flat is not None:
        detector, _, flat_stage = check_runs(darks, flat, detector=detector, params=params, flat_stage=flat_stage)
        checked = check_flat(darks, flat, detector=detector, flat_stage=flat_stage, params=params, accept=accept_flat)
        if checked.get("accepted_by_option"):
            echo(f"flat run {flat.attrs.get('path')}: {checked['problem']}; used as flat because of --accept-flat")
    ds = build_mask(darks, flat, detector=detector, params=params, flat_stage=flat_stage, user_mask=user_mask, flat_check=checked)
    blocks = ds.mask.data.numblocks
    parallel = blocks[0] * blocks[2] * (len(darks) + (flat is not None))  # read and feature tasks at once
    partials = []
    try:
        with dask_client(cluster, n_workers=n_workers, max_workers=parallel, echo=echo), _report(report, overwrite):
            return write_store(ds, out, overwrite=overwrite, partials=partials)
    finally:
        for path in partials:  # again, now that no worker can still be writing into it
            remove_partial(path)
