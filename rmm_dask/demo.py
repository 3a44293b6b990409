"""`rmm demo` and `rmm synth`: a synthetic calibration set with planted defects, masked, exported
and scored against its truth. Light to import (the parser takes :data:`DEMOS` from here); the
workflow's modules load when it runs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from . import publish
from .errors import InputError

#: `rmm demo --detector` and `rmm synth --detector`: the set's default size per detector alias
#: (the alias names the detector, see rmm_dask.detectors.ALIASES); LAMBDA: 3 modules x 5 parts
#: of 12 frames, darks at 0.004 counts/frame as real LAMBDA darks
DEMOS = {
    "agipd": dict(modules=2, cells=2, frames=100),
    "jungfrau": dict(modules=2, cells=1, frames=64),
    "cspad": dict(modules=32, cells=1, frames=64),
    "pilatus": dict(modules=3, cells=1, frames=100),
    "eiger": dict(modules=2, cells=1, frames=64),
    "lambda": dict(modules=3, cells=1, frames=60, dark_rate=0.004),
}

#: the file name suffix of each export format
SUFFIX = {"crystfel": "crystfel.h5", "nexus": "nxs", "euxfel": "euxfel.h5", "cheetah": "cheetah.h5", "h5": "h5"}


def synth_config(detector: str, *, seed: int = 0, modules=None, cells=None, frames=None, flat_frames=None):
    """The SynthConfig of a demo set: the detector alias's default size (:data:`DEMOS`), the sizes given (not None) instead."""
    from .detectors import get_detector
    from .synth import SynthConfig
    from .synth.on_disk import layout_problem

    given = dict(modules=modules, cells=cells, frames=frames)
    size = {k: v if given.get(k) is None else given[k] for k, v in DEMOS[detector].items()}
    try:
        cfg = SynthConfig(**size, flat_frames=flat_frames or size["frames"], seed=seed, detector=get_detector(detector))
    except ValueError as err:
        raise InputError("--detector", str(err)) from None
    problem = layout_problem(cfg.detector, cfg.modules)
    if problem:
        raise InputError("--modules", problem)
    return cfg


def write_set(cfg, out: Path, compression=None) -> dict:
    """Write the synthetic set of ``cfg`` under ``out`` (an empty or new directory): {role: path}."""
    from .synth import synthesize
    from .synth.on_disk import write_synthetic

    if out.exists() and any(out.iterdir()):
        raise InputError(out, "exists and is not empty")
    return write_synthetic(synthesize(cfg), out, compression=compression)


def run_demo(cfg, out: Path | None, *, keep: bool, workers: int | None, console, outcome) -> None:
    """Synthesise, mask, export and score in ``out`` (None: a new temporary directory, removed at the
    end unless ``keep``); ``outcome`` (:class:`rmm_dask.outcome.Outcome`) learns where things are."""
    if out is not None and out.exists() and any(out.iterdir()):
        raise InputError(out, "exists and is not empty")
    keep = keep or out is not None
    out = out if out is not None else Path(tempfile.mkdtemp(prefix="rmm-demo-"))
    console.print(f"writing to {out}" + ("" if keep else " (removed at the end; --keep or --out DIR keeps it)"))
    if keep:
        outcome.note = f"what was written so far is in {out.absolute()}"
    try:
        _demo_in(cfg, out, keep=keep, workers=workers, console=console)
    finally:
        if not keep:
            publish.remove(out, what="the demo's directory")
            console.print(f"removed {out}")


def _demo_in(cfg, out: Path, *, keep: bool, workers: int | None, console) -> None:
    import dask.config

    from .config import params_from_config
    from .exports import FORMATS, export
    from .io import open_run
    from .job import run_mask
    from .store import open_store
    from .synth import synthesize
    from .synth.on_disk import layout_of, read_truth, write_synthetic

    det = cfg.detector
    t0 = time.perf_counter()
    with console.status(f"synthesising a {det.name}-like calibration set with planted defects"):
        calib = synthesize(cfg)
        runs = write_synthetic(calib, out)
    console.print(
        f"synthetic {det.name}-like set: {cfg.modules} modules x {cfg.cells} cells x {cfg.frames} frames, {layout_of(det)} runs "
        f"({len(calib.dark)} dark gain stage(s) + flat) in {out / 'raw'} ({time.perf_counter() - t0:.1f} s)"
    )
    darks = {g: open_run(runs[f"dark-{g}"], det) for g in det.gain_stages}
    flat = open_run(runs["flat"], det)
    params = params_from_config()
    t0 = time.perf_counter()
    with dask.config.set({"rmm-dask.cluster.dashboard": True}):  # a demo shows it, small as it is
        store = run_mask(darks, flat, out / "mask.zarr", params=params, detector=det, n_workers=workers, echo=console.print)
    console.print(f"masked in {time.perf_counter() - t0:.1f} s")
    exported = [p for fmt in FORMATS for p in export(store, fmt, out / f"mask.{SUFFIX[fmt]}")]
    _print_scores(console, open_store(store), read_truth(runs["truth"]), det, params.lam)
    if keep:
        console.print(f"Zarr store: {store}")
        for path in exported:
            console.print(f"export: {path}")


def _print_scores(console, root, truth, det, lam: float) -> None:
    """Recall per planted defect kind, false positives, and the outlying frames F1 rejected."""
    from .synth import score
    from .tables import table

    scores = score(root["mask"][:], truth)
    t = table(f"RMM mask against the planted truth (lambda = {lam:g})")
    for col in ("defect kind", "planted", "found", "recall"):
        t.add_column(col, justify="left" if col == "defect kind" else "right", no_wrap=True)
    for kind, (found, n) in scores["recall"].items():
        t.add_row(kind, str(n), str(found), f"{100 * found / n:.1f}%")
    t.add_row("clean pixels flagged", str(scores["clean"]), str(scores["false_positives"]), f"{scores['false_positive_fraction']:.1e}")
    console.print(t)
    planted = sum(int(v.sum()) for v in truth.outlier_frames.values())
    rejected = sum(int(root["rejected_frames"][g][:].sum()) for g in det.gain_stages)
    console.print(f"outlying dark frames: {planted} planted, {rejected} rejected by F1")
