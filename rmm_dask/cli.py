"""The ``rmm`` command line. Each command is ``main([...]) -> exit code``.

User errors (a missing run, a truncated file, runs that do not match, an existing
output) print one line naming the file and the problem and exit with 2; nothing
is written.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from . import __version__, interrupts, publish
from .errors import ClusterError, InputError

GAIN_OPTIONS = ("high", "medium", "low")


def _console():
    from rich.console import Console

    # wide enough for the count tables when writing to a log rather than a terminal
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _setup_config(args):
    """Merge --config and --jobqueue into dask.config; Params from it and the explicit options."""
    from .config import load_config, load_jobqueue_config, params_from_config

    if getattr(args, "config", None):
        load_config(args.config)
    jobqueue = getattr(args, "jobqueue", None) or os.environ.get("RMM_JOBQUEUE_CONFIG")
    if jobqueue:
        load_jobqueue_config(jobqueue)
    try:
        return params_from_config(lam=getattr(args, "lam", None), method=getattr(args, "method", None))
    except (ValueError, TypeError, KeyError) as err:
        raise InputError(getattr(args, "config", None) or "parameters", f"invalid parameters: {err}") from None


def _check_run_options(args):
    """What argparse cannot check: a dark run, a known detector, a flat stage with its dark."""
    from .detectors import get_detector

    given = [g for g in GAIN_OPTIONS if getattr(args, f"dark_{g}")]
    if not given:
        raise InputError("--dark-high", "at least one dark run is needed")
    try:
        get_detector(args.detector)
    except KeyError as err:
        raise InputError("--detector", err.args[0]) from None
    if args.flat and args.flat_stage and args.flat_stage not in given:
        raise InputError("--flat-stage", f"the flat run is in {args.flat_stage} gain, but no --dark-{args.flat_stage} run is given")
    if args.cells_per_chunk is not None and args.cells_per_chunk < 1:
        raise InputError("--cells-per-chunk", "must be at least 1")
    _check_workers(args)
    if args.lam is not None and not (math.isfinite(args.lam) and args.lam > 0):
        raise InputError("--lambda", f"must be a finite number above 0, not {args.lam:g}")


def _check_workers(args):
    if getattr(args, "workers", None) is not None and args.workers < 1:
        raise InputError("--workers", f"must be at least 1, not {args.workers}")


def _cells_per_chunk(args) -> int:
    import dask.config

    if args.cells_per_chunk is not None:
        return args.cells_per_chunk
    return int(dask.config.get("rmm-dask.chunking.cells-per-chunk"))


def _run_spec(values):
    """A run option's value(s) as open_run takes them: one path or pattern, or a list of them."""
    return values[0] if isinstance(values, list) and len(values) == 1 else values


def _open_runs(args, detector):
    from .io import open_run

    cpc = _cells_per_chunk(args)
    darks = {}
    for g in GAIN_OPTIONS:
        path = getattr(args, f"dark_{g}")
        if path:
            darks[g] = open_run(_run_spec(path), detector, dataset=args.dataset, cells_per_chunk=cpc)
    flat = open_run(_run_spec(args.flat), detector, dataset=args.dataset, cells_per_chunk=cpc) if args.flat else None
    return darks, flat


def _mask(args) -> int:
    console = _console()
    _check_run_options(args)
    params = _setup_config(args)
    darks, flat = _open_runs(args, args.detector)
    user_mask = _user_mask(args, darks)
    t0 = time.perf_counter()
    from .job import run_mask

    path = run_mask(
        darks, flat, args.out, params=params, detector=args.detector, cluster=args.cluster, n_workers=args.workers,
        report=args.report, overwrite=args.overwrite, echo=console.print, flat_stage=args.flat_stage, user_mask=user_mask,
        accept_flat=args.accept_flat, outcome=args.outcome,
    )
    console.print(f"mask store: {path}  ({time.perf_counter() - t0:.1f} s)")
    _print_counts(console, path, per_cell=False)
    if args.report:
        console.print(f"performance report: {Path(args.report).absolute()}")
    return 0


def _user_mask(args, darks):
    """The --user-mask as uint8 (module, y, x) for the modules of the runs, or None."""
    if not args.user_mask:
        return None
    from .detectors import get_detector
    from .usermask import read_user_mask

    modules = next(iter(darks.values())).module.values
    return read_user_mask(args.user_mask, get_detector(args.detector), modules, good_is_one=args.user_mask_good_is_one)


#: column names of the per-module, gain and cell counts (at most 5 characters: 80-column terminals)
SHORT = {
    "OFFSET": "OFFS", "NOISE": "NOISE", "GAIN_SEPARATION": "GSEP", "GAIN_LEVEL": "GLVL",
    "FLAT_HIGH": "FHIGH", "FLAT_LOW": "FLOW", "ASIC_EDGE": "EDGE", "NO_DATA": "NODAT", "any": "any",
}


def compact(n: int) -> str:
    """A count in at most 5 characters: exact below 100000, else 123k, 1.2M, 12M, 1.2G."""
    if n < 100_000:
        return str(n)
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            v = n / scale
            return f"{v:.1f}{suffix}" if v < 9.95 else f"{v:.0f}{suffix}"
    return str(n)


def _table(title: str | None = None, caption: str | None = None):
    """A rich table without vertical rules, its cells never wrapped: as narrow as the content."""
    from rich import box
    from rich.table import Table

    return Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, title_justify="left", caption_justify="left")


def counts_tables(counts: dict, per_cell: bool) -> list:
    """The counts of ``summary.count_bits`` as two tables that fit 80 columns: per bit (exact,
    with the short names), and per module, gain stage (and cell) with the short names."""
    from .codes import BadPixel

    names = [b.name for b in BadPixel] + ["any"]
    per_plane = counts["pixels"]
    totals = _table()
    for col, justify in (("bit", "left"), ("column", "left"), ("pixel-planes", "right"), ("fraction", "right")):
        totals.add_column(col, justify=justify, no_wrap=True)
    for n in names:
        totals.add_row(n, SHORT[n], str(counts["total"][n]), f"{counts['total'][n] / per_plane:.2e}")
    breakdown = _table(caption="columns: the bits above; counts of 100000 and more rounded: k = 10^3, M = 10^6, G = 10^9")
    breakdown.add_column("", no_wrap=True)
    for n in names:
        breakdown.add_column(SHORT[n], justify="right", no_wrap=True)
    for axis in ("module", "gain") + (("cell",) if per_cell else ()):
        for key, row in counts[axis].items():
            breakdown.add_row(f"{axis} {key}", *(compact(row[n]) for n in names))
    return [totals, breakdown]


def _print_counts(console, store, per_cell: bool):
    from .store import open_store
    from .summary import count_bits

    counts = count_bits(open_store(store))
    console.print(f"masked pixel-planes in {store}:")
    for table in counts_tables(counts, per_cell):
        console.print(table)
    if not per_cell and len(counts["cell"]) > 1:
        any_bad = [row["any"] for row in counts["cell"].values()]
        console.print(f"per cell (any bit): min {min(any_bad)}, max {max(any_bad)} over {len(any_bad)} cells; --cells lists them")
    bits = counts.get("manufacturer_bits")
    for name, n in counts.get("layers", {}).items():
        if name == "manufacturer" and bits:  # gaps and virtual pixels are information, not defects
            per_bit = ", ".join(f"{bit} {k}" for bit, k in bits.items() if bit not in ("reject", "any"))
            console.print(f"layer manufacturer: {bits['reject']} pixels rejected (NeXus bits 0-15), {bits['any']} with any bit: {per_bit}")
        else:
            console.print(f"layer {name}: {n} pixels masked (kept apart from the bits above; exports combine them)")


def _show(args) -> int:
    from .store import open_store
    from .summary import write_figures

    console = _console()
    root = open_store(args.store)
    for path, directory, what in ((args.png, True, "the figures"), (args.html, False, "the report")):
        if path:  # both outputs checked before anything is written
            args.outcome.expect(publish.prepare(path, overwrite=args.overwrite, directory=directory, what=what))
    attrs = root.attrs
    console.print(f"{args.store}: {attrs.get('detector')} mask, {attrs.get('software')}, {attrs.get('start_time')} - {attrs.get('end_time')}")
    for name, info in attrs.get("inputs", {}).items():
        console.print(f"  {name}: {info.get('path')} ({info.get('frames')} frames per cell)")
    console.print(f"  parameters: {attrs.get('parameters')}")
    _print_counts(console, args.store, per_cell=args.cells)
    if args.png:
        with publish.output(args.png, overwrite=args.overwrite, directory=True, what="the figures") as out:
            names = [p.name for p in write_figures(root, out.tmp, geometry=args.geometry)]
        for name in names:
            console.print(f"figure: {out.target / name}")
    if args.html:
        from .report import mask_report

        console.print(f"report: {mask_report(args.store, args.html, overwrite=args.overwrite, geometry=args.geometry)}")
    return 0


def _export(args) -> int:
    from .exports import export

    args.outcome.expect(args.out)
    for path in export(args.store, args.to, args.out, overwrite=args.overwrite):
        print(f"exported: {path}")
    return 0


def _diff(args) -> int:
    import json

    from .diff import diff_masks

    console = _console()
    if args.json:
        args.outcome.expect(publish.prepare(args.json, overwrite=args.overwrite, what="the JSON counts"))
    result = diff_masks(args.old, args.new)
    console.print(f"{args.old} -> {args.new}: {result['newly_bad']} pixels newly bad, {result['recovered']} recovered")
    for table in diff_tables(result, args.cells):
        console.print(table)
    if args.json:
        with publish.output(args.json, overwrite=args.overwrite, what="the JSON counts") as out:
            with open(out.tmp, "w") as f:
                json.dump(result, f, indent=1)
        console.print(f"json: {out.target}")
    return 0


def diff_tables(result: dict, per_cell: bool) -> list:
    """``diff.diff_masks``'s counts as two narrow tables: per bit, and per module, gain (and cell)."""
    bits = _table("bits set and cleared (pixel-planes)")
    for col in ("bit", "set", "cleared"):
        bits.add_column(col, justify="left" if col == "bit" else "right", no_wrap=True)
    for name, row in result["bits"].items():
        bits.add_row(name, str(row["set"]), str(row["cleared"]))
    changes = _table("newly bad / recovered (pixel-planes)")
    for col in ("", "newly bad", "recovered"):
        changes.add_column(col, justify="left" if not col else "right", no_wrap=True)
    for axis in ("module", "gain") + (("cell",) if per_cell else ()):
        for key, row in result[axis].items():
            changes.add_row(f"{axis} {key}", str(row["newly_bad"]), str(row["recovered"]))
    return [bits, changes]


def _nightly(args) -> int:
    from .config import merge_sections, params_from_config
    from .nightly import read_settings, run_nightly

    settings = read_settings(args.config)
    merge_sections(settings.path, settings.sections)
    try:
        params_from_config()
    except (ValueError, TypeError, KeyError) as err:
        raise InputError(settings.path, f"invalid parameters under 'rmm-dask:': {err}") from None
    args.outcome.note = "versions published before stay published; the set in progress is resumed by the next pass"
    with _catalog_errors(settings):
        if args.status:
            _print_status(_console(), settings)
            return 0
        # plain lines with a time stamp each, flushed: the output goes to journald, cron mail or a log
        return run_nightly(settings, once=args.once, dry_run=args.dry_run, echo=lambda line: print(line, flush=True))


@contextlib.contextmanager
def _catalog_errors(settings):
    """SQLite's errors (only the catalog is a database) as one line naming the catalog file."""
    import sqlite3

    try:
        yield
    except sqlite3.DatabaseError as err:
        raise InputError(settings.state / "catalog.sqlite", f"not a usable catalog ({err})") from None


def _print_status(console, settings):
    from .nightly import status_rows

    rows, pointers = status_rows(settings)
    console.print(f"catalog {settings.state / 'catalog.sqlite'}: {len(rows)} set(s)")
    for renderable in status_table(rows):
        console.print(renderable)
    for name, version in pointers.items():
        console.print(f"{name}: current -> {'none' if version is None else f'v{version:04d}'}  ({settings.publish / name})")


def status_table(rows: list[dict]) -> list:
    """The catalog's sets in 80 columns: a table per detector, one row per set (finished to the
    minute, seconds, flagged fraction, newly bad/recovered), then each set's runs and message
    on lines of their own."""
    import json

    from rich.text import Text

    out = []
    for detector in dict.fromkeys(r["detector"] for r in rows):
        table = _table(title=detector)
        for col, justify in (("id", "right"), ("version", "left"), ("status", "left"), ("tries", "right"),
                             ("finished (UTC)", "left"), ("s", "right"), ("flagged", "right"), ("new/rec", "right")):
            table.add_column(col, justify=justify, no_wrap=True)
        notes = []
        for r in (r for r in rows if r["detector"] == detector):
            fraction = "" if r["bad_fraction"] is None else f"{r['bad_fraction']:.1e}"
            changes = "" if r["newly_bad"] is None else f"{compact(r['newly_bad'])}/{compact(r['recovered'] or 0)}"
            table.add_row(
                str(r["id"]), f"v{r['version']:04d}", r["status"], str(r["attempts"]), (r["finished"] or "")[:16].replace("T", " "),
                "" if r["seconds"] is None else compact(round(r["seconds"])), fraction, changes,
            )
            runs = json.loads(r["runs"])
            where = Path(next(iter(runs.values()), "")).parent
            names = ", ".join(f"{role} {Path(p).name}" for role, p in runs.items())
            notes.append(Text(f"{r['id']}: {names} in {where}" + (f"; {r['message']}" if r["message"] else "")))
        out += [table, *notes]
    if rows:
        out.append(Text("flagged: fraction of pixel-planes; new/rec: pixel-planes newly bad / recovered against the previous current"))
    return out


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


def _synth_config(args):
    from .detectors import get_detector
    from .synth import SynthConfig

    size = {k: getattr(args, k, None) if getattr(args, k, None) is not None else v for k, v in DEMOS[args.detector].items()}
    flat_frames = getattr(args, "flat_frames", None) or size["frames"]
    try:
        return SynthConfig(**size, flat_frames=flat_frames, seed=args.seed, detector=get_detector(args.detector))
    except ValueError as err:
        raise InputError("--detector", str(err)) from None


def _synth(args) -> int:
    from .synth.on_disk import write_synthetic
    from .synth import synthesize

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise InputError(out, "exists and is not empty")
    paths = write_synthetic(synthesize(_synth_config(args)), out, compression=args.compression)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _demo(args) -> int:
    console = _console()
    _check_workers(args)
    if args.out:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise InputError(out, "exists and is not empty")
    cfg = _synth_config(args)  # (checked before anything is written)
    if not args.out:
        out = Path(tempfile.mkdtemp(prefix="rmm-demo-"))
    keep = bool(args.out or args.keep)
    console.print(f"writing to {out}" + ("" if keep else " (removed at the end; --keep or --out DIR keeps it)"))
    if keep:
        args.outcome.note = f"what was written so far is in {out.absolute()}"
    try:
        _demo_in(args, console, cfg, out, keep)
    finally:
        if not keep:
            publish.remove(out, what="the demo's directory")
            console.print(f"removed {out}")
    return 0


def _demo_in(args, console, cfg, out: Path, keep: bool) -> None:
    from .config import params_from_config
    from .exports import FORMATS, export
    from .io import open_run
    from .synth.on_disk import layout_of, read_truth, write_synthetic
    from .job import run_mask
    from .store import open_store
    from .synth import score, synthesize

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
    store = run_mask(darks, flat, out / "mask.zarr", params=params, detector=det, n_workers=args.workers, echo=console.print)
    console.print(f"masked in {time.perf_counter() - t0:.1f} s on a LocalCluster")
    suffix = {"crystfel": "crystfel.h5", "nexus": "nxs", "euxfel": "euxfel.h5", "cheetah": "cheetah.h5", "h5": "h5"}
    exported = [p for fmt in FORMATS for p in export(store, fmt, out / f"mask.{suffix[fmt]}")]

    truth = read_truth(runs["truth"])
    root = open_store(store)
    scores = score(root["mask"][:], truth)
    table = _table(f"RMM mask against the planted truth (lambda = {params.lam:g})")
    for col in ("defect kind", "planted", "found", "recall"):
        table.add_column(col, justify="left" if col == "defect kind" else "right", no_wrap=True)
    for kind, (found, n) in scores["recall"].items():
        table.add_row(kind, str(n), str(found), f"{100 * found / n:.1f}%")
    table.add_row("clean pixels flagged", str(scores["clean"]), str(scores["false_positives"]), f"{scores['false_positive_fraction']:.1e}")
    console.print(table)
    planted = sum(int(v.sum()) for v in truth.outlier_frames.values())
    rejected = sum(int(root["rejected_frames"][g][:].sum()) for g in det.gain_stages)
    console.print(f"outlying dark frames: {planted} planted, {rejected} rejected by F1")
    if keep:
        console.print(f"Zarr store: {store}")
        for path in exported:
            console.print(f"export: {path}")


#: options of `rmm mask` that `rmm submit` passes on: (dest, flag, is a path)
_MASK_OPTIONS = (
    *((f"dark_{g}", f"--dark-{g}", True) for g in GAIN_OPTIONS),
    ("flat", "--flat", True),
    ("flat_stage", "--flat-stage", False),
    ("out", "--out", True),
    ("detector", "--detector", False),
    ("dataset", "--dataset", False),
    ("config", "--config", True),
    ("lam", "--lambda", False),
    ("method", "--method", False),
    ("cells_per_chunk", "--cells-per-chunk", False),
    ("workers", "--workers", False),
    ("jobqueue", "--jobqueue", True),
    ("user_mask", "--user-mask", True),
)


MASK_DESCRIPTION = (
    "Make a bad-pixel mask with the Robust Mask Maker (Sadri et al. 2022): features of every pixel from the dark runs "
    "(one per gain stage) and an optional flat run, a robust Gaussian model of the normal pixels of each ASIC, and a "
    "pixel is bad where a feature lies more than --lambda robust sigmas from it. Runs are opened lazily, the mask is "
    "computed on a Dask cluster and published as a Zarr store only when complete. Bad input: one line and exit 2; "
    "a cluster that cannot run the job: exit 3; Ctrl-C or SIGTERM: exit 130."
)


def _add_mask_arguments(p):
    run = "a directory, a glob pattern (quoted: expanded by rmm, in name order) or several files of one acquisition"
    for g in GAIN_OPTIONS:
        p.add_argument(f"--dark-{g}", metavar="RUN", nargs="+", help=f"dark run in {g} gain: {run}")
    p.add_argument("--flat", metavar="RUN", nargs="+", help=f"flat-field run: {run}")
    p.add_argument("--flat-stage", choices=GAIN_OPTIONS, help="gain stage of the flat run (default: the first dark given)")
    p.add_argument("--out", required=True, metavar="STORE", help="the Zarr store to publish")
    p.add_argument("--detector", default="AGIPD1M", metavar="NAME|FILE.yaml", help="detector description: a name (AGIPD1M, JUNGFRAU1M, JUNGFRAU4M, CSPAD, PILATUS300K, PILATUS6M, EIGER1M, EIGER16M, LAMBDA750K, LAMBDA2M) or a YAML file (default: AGIPD1M)")
    p.add_argument("--dataset", metavar="PATH", help="dataset path inside HDF5 stack files")
    p.add_argument("--config", metavar="FILE", help="YAML with parameters under 'rmm-dask:' (see configs/rmm.yaml)")
    p.add_argument("--lambda", dest="lam", type=float, metavar="L", help="outlier threshold in robust sigmas (default 8)")
    p.add_argument("--method", choices=["rmm", "mad", "nonrobust"], help="statistics of the normal-pixel model")
    p.add_argument("--cells-per-chunk", type=int, metavar="N", help="memory cells per task (default: rmm-dask.chunking.cells-per-chunk of the configuration)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (local) or a fixed number of worker jobs (slurm)")
    p.add_argument("--jobqueue", metavar="FILE", help="dask-jobqueue YAML for Slurm (default: configs/jobqueue.yaml, or $RMM_JOBQUEUE_CONFIG)")
    p.add_argument("--user-mask", metavar="FILE[:DATASET]", help="a user-drawn mask (.npy, .tif, .cbf, HDF5 FILE:DATASET), kept as its own layer")
    p.add_argument("--user-mask-good-is-one", action="store_true", help="the user mask marks good pixels with non-zero (Cheetah, OM)")
    p.add_argument("--accept-flat", action="store_true", help="use a flat run the check doubts (not lit, or in another gain stage); the store records it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store (and --report) in one atomic swap, once the new one is complete")


def _mask_argv(args) -> list[str]:
    """The options of ``rmm mask`` that repeat ``args`` in a batch job: paths absolute, a run's
    several paths or quoted glob pattern kept as given (the job expands the pattern, as here)."""
    argv = []
    for dest, flag, is_path in _MASK_OPTIONS:
        value = getattr(args, dest)
        if value is not None:
            is_path = is_path or (dest == "detector" and str(value).endswith((".yaml", ".yml")))
            values = value if isinstance(value, list) else [value]  # a run may be several paths
            argv += [flag, *(str(Path(v).absolute()) if is_path else str(v) for v in values)]
    if args.overwrite:
        argv.append("--overwrite")
    if args.user_mask_good_is_one:
        argv.append("--user-mask-good-is-one")
    if args.accept_flat:
        argv.append("--accept-flat")
    return argv


def _submit(args) -> int:
    from .submit import submit

    from .flatcheck import check_flat
    from .pipeline import build_mask

    _check_run_options(args)
    params = _setup_config(args)
    darks, flat = _open_runs(args, args.detector)  # metadata only: bad input fails here, not in the queue
    user_mask = _user_mask(args, darks)
    build_mask(darks, flat, detector=args.detector, params=params, flat_stage=args.flat_stage, user_mask=user_mask, flat_check={})  # the graph's checks
    if flat is not None:  # a few frames: a dark given as flat is refused here, not in the queue
        checked = check_flat(darks, flat, detector=args.detector, flat_stage=args.flat_stage, params=params, accept=args.accept_flat)
        if checked.get("accepted_by_option"):
            print(f"flat run {flat.attrs.get('path')}: {checked['problem']}; used as flat because of --accept-flat")
    out = publish.prepare(args.out, overwrite=args.overwrite, directory=True, what="the output store")
    if args.jobqueue is None and os.environ.get("RMM_JOBQUEUE_CONFIG"):
        args.jobqueue = os.environ["RMM_JOBQUEUE_CONFIG"]
    mask_args = _mask_argv(args)
    job_id, log, script = submit(mask_args, out, log_dir=args.log_dir)
    print(f"submitted batch job {job_id}")
    print(f"log: {log}")
    print(f"script: {script}")
    print(f"result: {out} (published when the job succeeds)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .exports import FORMATS

    parser = argparse.ArgumentParser(prog="rmm", description="Robust Mask Maker: bad-pixel masks for X-ray detectors.")
    parser.add_argument("--version", action="version", version=f"rmm-dask {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("mask", help="make a mask from dark runs (one per gain stage) and an optional flat run", description=MASK_DESCRIPTION)
    _add_mask_arguments(p)
    p.add_argument("--cluster", default="local", metavar="local|slurm|ADDRESS", help="'local', 'slurm' (dask-jobqueue) or a scheduler address tcp://host:port")
    p.add_argument("--report", metavar="FILE.html", help="save Dask's performance report (task stream, worker profiles; one HTML file; an existing one only with --overwrite)")
    p.set_defaults(run=_mask)

    p = sub.add_parser("submit", help="run `rmm mask --cluster slurm` as one Slurm batch job and return at once", description=(
        "Check the runs and options as `rmm mask` would (metadata and a few frames of the flat), write a batch script "
        "that runs `rmm mask --cluster slurm` with them, submit it with sbatch and print the job id, log and result path."))
    _add_mask_arguments(p)
    p.add_argument("--log-dir", metavar="DIR", help="where the batch script and its log go (default: beside --out)")
    p.set_defaults(run=_submit)

    p = sub.add_parser("synth", help="write a synthetic calibration set as the detector's raw runs, with its truth", description=(
        "Write dark runs (one per gain stage) and a flat run with planted defects of every kind, in the detector's real "
        "file layout, under DIR/raw, and the planted truth in DIR/truth.h5."))
    p.add_argument("--out", required=True, metavar="DIR", help="an empty or new directory to write into")
    p.add_argument("--detector", type=str.lower, choices=sorted(DEMOS), default="agipd", help="agipd, jungfrau (EuXFEL RAW), cspad (CXI), pilatus (CBF), eiger (NXmx), lambda (LAMBDA 2M: a file per module and part)")
    p.add_argument("--modules", type=int, help="modules (default per detector: agipd 2, jungfrau 2, cspad 32, pilatus 3, eiger 2, lambda 3)")
    p.add_argument("--cells", type=int, help="memory cells (default: agipd 2, others 1)")
    p.add_argument("--frames", type=int, help="dark frames per cell (default: 100 or 64)")
    p.add_argument("--flat-frames", type=int, help="flat frames per cell (default: --frames)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic set (default 0)")
    p.add_argument("--compression", choices=["gzip"], help="compress the image data as the facility may")
    p.set_defaults(run=_synth)

    p = sub.add_parser("export", help="export a mask store to another format", description=(
        "Write the mask of a store in the format analysis software reads; the user's and the manufacturer's layers are combined into it."))
    p.add_argument("store", help="the mask store (Zarr) to export")
    p.add_argument("--to", required=True, choices=FORMATS, help="h5: the store's layout; crystfel: mask file + geometry lines; nexus: NXmx pixel_mask; euxfel: BadPixels; cheetah: 0/1 good map")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export in one atomic swap, once the new one is complete")
    p.set_defaults(run=_export)

    p = sub.add_parser("diff", help="pixels newly bad and recovered between two masks, per bit, module, gain and cell", description=(
        "Compare two mask stores of the same detector: pixel-planes newly bad and recovered, bits set and cleared, "
        "per module, gain stage (and cell); --json also lists the pixels."))
    p.add_argument("old", help="the earlier mask store")
    p.add_argument("new", help="the later mask store")
    p.add_argument("--cells", action="store_true", help="list every memory cell")
    p.add_argument("--json", metavar="FILE", help="also write the counts as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file in one atomic swap")
    p.set_defaults(run=_diff)

    p = sub.add_parser("nightly", help="re-mask new calibration runs of facility trees and publish versioned masks", description=(
        "The unattended re-masking service: find complete calibration sets in the configured trees, mask each new one, "
        "publish it as <publish>/<name>/vNNNN and move <name>/current to it when it passes the sanity bounds "
        "(see README, 'Nightly re-masking')."))
    p.add_argument("--config", required=True, metavar="FILE", help="the service's YAML (see configs/nightly.yaml)")
    p.add_argument("--once", action="store_true", help="one pass, then exit (for timers, cron and scrontab)")
    p.add_argument("--dry-run", action="store_true", help="show what a pass would do; change nothing")
    p.add_argument("--status", action="store_true", help="print the catalog and the current versions")
    p.set_defaults(run=_nightly)

    p = sub.add_parser("show", help="counts per bit, module, gain and cell; --png for figures, --html for a report", description=(
        "Print a mask store's inputs, parameters and counts per bit, module, gain stage (and cell), and its layers; "
        "write figures (--png) or one self-contained HTML page (--html)."))
    p.add_argument("store", help="the mask store (Zarr) to show")
    p.add_argument("--cells", action="store_true", help="list the counts of every memory cell")
    p.add_argument("--png", metavar="DIR", help="write per-module mask images, the assembled detector and SNR histograms here")
    p.add_argument("--geometry", metavar="FILE.geom", help="CrystFEL geometry for the assembled image of EuXFEL detectors (default: EXtra-geom's example)")
    p.add_argument("--html", metavar="FILE.html", help="write a self-contained HTML report (figures embedded)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --png directory or --html report in one atomic swap")
    p.set_defaults(run=_show)

    p = sub.add_parser("demo", help="synthetic runs with planted defects -> mask on a LocalCluster -> exports -> score", description=(
        "Synthesise a calibration set with planted defects, mask it on a LocalCluster, export it to every format and score "
        "the mask against the truth. Without --out it works in a temporary directory that it names first and removes at the end."))
    p.add_argument("--out", metavar="DIR", help="where to write, and keep, the runs, the store and the exports (default: a new temporary directory, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (its path is printed first)")
    p.add_argument("--detector", type=str.lower, choices=sorted(DEMOS), default="agipd", help="agipd (AGIPD-1M), jungfrau (JUNGFRAU 1M), cspad, pilatus (300K), eiger (1M), lambda (LAMBDA 2M)")
    p.add_argument("--modules", type=int, help="modules (default per detector, see rmm synth)")
    p.add_argument("--cells", type=int, help="memory cells (default per detector, see rmm synth)")
    p.add_argument("--frames", type=int, help="frames per cell in each run")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic set (default 0)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    p.set_defaults(run=_demo)
    return parser


def _write_error(err: OSError) -> str | None:
    """A failed write as 'FILE: problem' (no space, quota, read-only, permission), None for other OSErrors."""
    from .job import WRITE_ERRNOS

    if err.errno not in WRITE_ERRNOS:
        return None
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}"


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code: 0 done, 2 a user error (one line on stderr, nothing
    written), 3 the cluster could not run the job, 130 interrupted (Ctrl-C, SIGTERM): one
    line saying what was published, if anything.

    As the program (``argv`` None: the ``rmm`` script, ``python -m rmm_dask``), an interrupted
    command ignores SIGINT and SIGTERM from its return on: Python's shutdown takes a moment
    (threads, exit handlers), and a second Ctrl-C then would end it by SIGINT, not with 130
    (Python resets its handlers to the default while it shuts down; an ignored signal stays ignored).
    """
    code = _main(argv)
    if code == 130 and argv is None:
        import signal

        for sig in interrupts.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    return code


def _main(argv: list[str] | None) -> int:
    from .outcome import Outcome

    # from the start: a Ctrl-C while the commands' modules load is an interruption too (the
    # SIGINT handler stays ours when dask-jobqueue is imported: rmm_dask.config keeps it)
    with interrupts.handled():
        try:
            args = build_parser().parse_args(argv)
        except KeyboardInterrupt:
            print("rmm: interrupted; nothing was published", file=sys.stderr)
            return 130
        args.outcome = Outcome()
        # the scheduler runs in this process: its routine messages (and the tracebacks it logs
        # at INFO level when worker jobs are cancelled at the end) are not for the user
        logging.getLogger("distributed").setLevel(logging.WARNING)
        try:
            with _config_scope():
                return args.run(args)
        except InputError as err:
            print(f"rmm {args.command}: {err}", file=sys.stderr)
            return 2
        except ClusterError as err:
            print(f"rmm {args.command}: {err}", file=sys.stderr)
            return 3
        except KeyboardInterrupt as err:
            _drop_frames(err)
            print(f"rmm {args.command}: interrupted; {args.outcome.summary()}", file=sys.stderr)
            return 130
        except OSError as err:
            line = _write_error(err)
            if line is None:
                raise
            print(f"rmm {args.command}: {line}; {args.outcome.summary()}", file=sys.stderr)
            return 2


def _drop_frames(err: BaseException) -> None:
    """Free, now and quietly, what the frames an interrupt ended still hold: a coroutine that a
    library (zarr) had made but not yet awaited when the signal came would print "RuntimeWarning:
    coroutine ... was never awaited" as it is freed."""
    import traceback
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited", category=RuntimeWarning)
        traceback.clear_frames(err.__traceback__)


@contextlib.contextmanager
def _config_scope():
    """--config and --jobqueue change dask.config for one command, not for the process."""
    import copy

    import dask.config

    from . import config as _defaults  # noqa: F401  (merged before the snapshot, so they stay)

    saved = copy.deepcopy(dask.config.config)
    try:
        yield
    finally:
        dask.config.config.clear()
        dask.config.config.update(saved)


if __name__ == "__main__":
    sys.exit(main())
