"""The ``rmm`` command line. Each command is ``main([...]) -> exit code``.

User errors (a missing run, a truncated file, runs that do not match, an existing
output) print one line naming the file and the problem and exit with 2; nothing
is written.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import logging
import math
import os
import sys
import time
from pathlib import Path

from . import __version__, interrupts, publish, tables
from .demo import DEMOS
from .errors import ClusterError, InputError, printable
from .job import write_error

GAIN_OPTIONS = ("high", "medium", "low")


def _setup_config(args, with_params: bool = True):
    """--config and --jobqueue set in dask.config for the command (``args.scope``, which
    :func:`main` closes); Params from it and the explicit options (:func:`_params`)."""
    from .config import check_effective, load_config, load_jobqueue_config, scoped

    sections = {}
    if getattr(args, "config", None):
        sections.update(load_config(args.config))
    jobqueue = getattr(args, "jobqueue", None) or os.environ.get("RMM_JOBQUEUE_CONFIG")
    if jobqueue:
        sections.update(load_jobqueue_config(jobqueue))
    if sections:
        args.scope.enter_context(scoped(sections))
    # what DASK_RMM_DASK__ variables and Dask's own YAML files set, checked as a file is (but what options replace)
    options = {"lambda": "lam", "method": "method", "chunking.cells-per-chunk": "cells_per_chunk",
               "cluster.n-workers": "workers"}
    check_effective(key for key, dest in options.items() if getattr(args, dest, None) is not None)
    return _params(args) if with_params else None


def _params(args):
    """Params from dask.config and the explicit options (loads the kernels: numba)."""
    from .config import params_from_config

    try:
        return params_from_config(lam=getattr(args, "lam", None), method=getattr(args, "method", None))
    except (ValueError, TypeError, KeyError) as err:
        raise InputError(getattr(args, "config", None) or "parameters", f"invalid parameters: {err}") from None


def _check_run_options(args):
    """What argparse cannot check: a dark run, a known detector, a flat stage with its dark."""
    given = [g for g in GAIN_OPTIONS if getattr(args, f"dark_{g}")]
    if not given:
        raise InputError("--dark-high", "at least one dark run is needed")
    _check_detector(args)
    if args.flat and args.flat_stage and args.flat_stage not in given:
        raise InputError("--flat-stage", f"the flat run is in {args.flat_stage} gain, but no --dark-{args.flat_stage} run is given")
    if args.cells_per_chunk is not None and args.cells_per_chunk < 1:
        raise InputError("--cells-per-chunk", "must be at least 1")
    _check_workers(args)
    if args.lam is not None and not (math.isfinite(args.lam) and args.lam > 0):
        raise InputError("--lambda", f"must be a finite number above 0, not {args.lam:g}")


def _check_detector(args):
    from .detectors import get_detector

    if args.detector is not None:
        try:
            get_detector(args.detector)
        except KeyError as err:
            raise InputError("--detector", err.args[0]) from None


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


def _say(console, lines: bool = False):
    """A function printing a line of text on ``console``: control characters escaped and no rich
    markup read, so that a path (a run directory named with a newline, a '[/]') can neither split
    the line, forge another, color the terminal nor raise a markup error; folded to the terminal's width
    with indented continuations (:func:`rmm_dask.tables.folded`). With
    ``lines``, a text's newlines stay (the job's messages: the dashboard's link, then how to reach
    it; rmm_dask.job escapes the paths it puts into them)."""
    def say(text) -> None:
        parts = str(text).split("\n") if lines else [str(text)]
        console.print("\n".join(tables.folded(printable(part), console.width) for part in parts), markup=False, soft_wrap=True)
    return say


def _mask(args) -> int:
    console = tables.console()
    say = _say(console)
    params, darks, flat, user_mask = _inputs(args)
    t0 = time.perf_counter()
    from .job import run_mask

    path = run_mask(
        darks, flat, args.out, params=params, detector=args.detector, cluster=args.cluster, n_workers=args.workers,
        report=args.report, overwrite=args.overwrite, echo=_say(console, lines=True), flat_stage=args.flat_stage,
        user_mask=user_mask, accept_flat=args.accept_flat, outcome=args.outcome,
    )
    say(f"mask store: {path}  ({time.perf_counter() - t0:.1f} s)")
    tables.print_counts(console, path, per_cell=False)
    if args.report:
        say(f"performance report: {Path(args.report).absolute()}")
    return 0


def _inputs(args):
    """What `rmm mask` and `rmm submit` start from, checked: params, dark runs, flat run (or None), user mask (or None)."""
    _check_run_options(args)
    _setup_config(args, with_params=False)
    if "://" in (getattr(args, "cluster", None) or ""):  # a scheduler rmm will not talk to: refused before reading
        from .security import attach_security

        attach_security(args.cluster)
    darks, flat = _open_runs(args, args.detector)  # a run that is not there fails before the kernels load
    return _params(args), darks, flat, _user_mask(args, darks)


def _user_mask(args, darks):
    """The --user-mask as uint8 (module, y, x) for the modules of the runs, or None."""
    if not args.user_mask:
        return None
    from .detectors import run_detector
    from .usermask import read_user_mask

    modules = next(iter(darks.values())).module.values
    detector = run_detector(darks, None, args.detector)  # as the runs were read: the modules' shape their files show
    return read_user_mask(args.user_mask, detector, modules, good_is_one=args.user_mask_good_is_one)


def _show(args) -> int:
    from .report_text import made_line
    from .store import open_store, open_tree
    from .summary import verdict_counts, write_figures

    console = tables.console()
    say = _say(console)
    root = open_store(args.store)
    if args.geometry and not os.path.isfile(args.geometry):
        raise InputError(args.geometry, "no such geometry file (--geometry)")
    for path, directory, what in ((args.png, True, "the figures"), (args.html, False, "the report")):
        if path:  # both outputs checked before anything is written
            args.outcome.expect(publish.prepare(path, overwrite=args.overwrite, directory=directory, what=what))
    tree = open_tree(root)
    say(f"{args.store}: {tree.attrs.get('detector')} mask")
    say(f"  {made_line(tree.attrs)}")
    tables.print_inputs(console, tree, files=args.files)
    tables.print_parameters(console, tree.attrs)
    for line in tables.detector_lines(root):
        say(f"  {line}")
    tables.print_counts(console, args.store, per_cell=args.cells, root=root)
    tables.print_verdict(console, verdict_counts(tree))
    if args.png:
        with publish.output(args.png, overwrite=args.overwrite, directory=True, what="the figures") as out:
            names = [p.name for p in write_figures(root, out.tmp, geometry=args.geometry)]
        for name in names:
            say(f"figure: {out.target / name}")
    if args.html:
        from .report import mask_report

        say(f"report: {mask_report(args.store, args.html, overwrite=args.overwrite, geometry=args.geometry)}")
    return 0


def _describe(args) -> int:
    import yaml

    from .detectors import detector_of, to_mapping
    from .io import open_run

    _check_detector(args)
    ds = open_run(_run_spec(args.paths), args.detector, dataset=args.dataset)
    det = detector_of(ds.attrs, ds.attrs.get("path"))
    lines = [f"# rmm describe: the detector {printable(ds.attrs.get('path'))} is read as; edit and give with --detector",
             f"# description: {printable(ds.attrs.get('detector_source'))}",
             *(f"#   {printable(note)}" for note in ds.attrs.get("detector_notes", [])),
             *(f"# {printable(note)}" for note in ds.attrs.get("notes", []))]
    if det.chips_from_mask:
        lines.append("# chips-from-pixel-mask: true reads the chips of each run from its pixel mask; "
                     "false keeps the chip-rows/chip-columns below")
    text = yaml.safe_dump(to_mapping(det), sort_keys=False, default_flow_style=None, width=100, allow_unicode=False)
    print("\n".join(lines) + "\n" + text, end="")
    return 0


def _export(args) -> int:
    from .exports import export
    from .frequency import check_export, export_frequency

    args.outcome.expect(args.out)
    check_export(args.store, args.to, args.last)  # a history exports only --to frequency, and only a history does
    if args.to == "frequency":
        paths = export_frequency(args.store, args.out, last=args.last, overwrite=args.overwrite, say=print)
    else:
        paths = export(args.store, args.to, args.out, overwrite=args.overwrite)
    for path in paths:
        print(printable(f"exported: {path}"))
    return 0


def _diff(args) -> int:
    import json

    from .diff import diff_masks

    console = tables.console()
    say = _say(console)
    if args.json:
        args.outcome.expect(publish.prepare(args.json, overwrite=args.overwrite, what="the JSON counts"))
    result = diff_masks(args.old, args.new)
    say(f"{args.old} -> {args.new}: {result['newly_bad']} pixel-planes newly bad ({result['newly_bad_distinct']} "
        f"distinct pixels), {result['recovered']} recovered ({result['recovered_distinct']} distinct pixels)")
    for table in tables.diff_tables(result, args.cells):
        console.print(table)
    if args.json:
        with publish.output(args.json, overwrite=args.overwrite, what="the JSON counts") as out:
            with open(out.tmp, "w", encoding="utf-8") as f:  # json.dump writes ASCII: any locale
                json.dump(result, f, indent=1)
        say(f"json: {out.target}")
    return 0


def _history(args) -> int:
    import json

    from .history_tables import history_tables
    from .nightly.history import report, update

    console = tables.console()
    say = _say(console)
    if args.last is not None and args.last < 1:
        raise InputError("--last", f"must be at least 1, not {args.last}")
    outputs = ((args.json, False, "the JSON history"), (args.png, True, "the history figures"),
               (args.html, False, "the history page"))
    for path, directory, what in outputs:
        if path:  # every output checked before anything is read or written
            args.outcome.expect(publish.prepare(path, overwrite=args.overwrite, directory=directory, what=what))
    root = Path(args.root)
    if args.rebuild:
        if not root.is_dir():
            raise InputError(root, "no such directory (give PUBLISH/NAME: the directory of one nightly detector's versions)")
        args.outcome.expect(root / "history.zarr")
        update(root, say, rebuild=True)
    result = report(root, args.last)
    say(f"{result['history']}: {result['nights']} night(s), the last {result['last']} counted;"
        f" {result['pixels']} pixels")
    for renderable in history_tables(result):
        console.print(renderable)
    if args.json:
        with publish.output(args.json, overwrite=args.overwrite, what="the JSON history") as out:
            with open(out.tmp, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=1)
        say(f"json: {out.target}")
    if args.png or args.html:
        from .history_figures import figures_png, write_figures
        from .history_page import write_page

        pngs = figures_png(result)  # drawn once for both
        if args.png:
            with publish.output(args.png, overwrite=args.overwrite, directory=True, what="the history figures") as out:
                names = [p.name for p in write_figures(pngs, out.tmp)]
            for name in names:
                say(f"figure: {out.target / name}")
        if args.html:
            say(f"page: {write_page(result, pngs, args.html, overwrite=args.overwrite)}")
    return 0


def _nightly(args) -> int:
    from .config import check_effective, check_sections, params_from_config, scoped
    from .nightly import read_settings, run_nightly

    decision = _decision_option(args)
    settings = read_settings(args.config)
    args.scope.enter_context(scoped(check_sections(settings.path, settings.sections)))
    check_effective()
    try:
        params_from_config()
    except (ValueError, TypeError, KeyError) as err:
        raise InputError(settings.path, f"invalid parameters under 'rmm-dask:': {err}") from None
    args.outcome.note = "versions published before stay published; the set in progress is resumed by the next pass"
    with _catalog_errors(settings):
        if decision is not None:
            from .nightly.decide import decide

            args.outcome.note = ("the version's summary, current and the catalog each change in one step; run the same"
                                 " command again to complete the decision")
            return decide(settings, decision, getattr(args, decision), args.reason, echo=_say(tables.console()))
        if args.status:
            tables.print_status(tables.console(), settings)
            return 0
        # plain lines with a time stamp each, flushed: the output goes to journald, cron mail or a log
        # control characters escaped (printable: idempotent, whatever the service escaped itself)
        return run_nightly(settings, once=args.once, dry_run=args.dry_run,
                           echo=lambda line: print(printable(line), flush=True))


def _decision_option(args) -> str | None:
    """'release' or 'hold' when the command is an operator's decision on a version, else None; InputError
    for options that do not go together."""
    given = [name for name in ("release", "hold") if getattr(args, name)]
    if len(given) > 1:
        raise InputError("--release", "give --release or --hold, not both; nothing was changed")
    if not given:
        if args.reason is not None:
            raise InputError("--reason", "goes with --release or --hold; nothing was changed")
        return None
    others = [f"--{o.replace('_', '-')}" for o in ("once", "dry_run", "status") if getattr(args, o)]
    if others:
        raise InputError(f"--{given[0]}", f"is a command of its own, not with {', '.join(others)}; nothing was changed")
    return given[0]


def _remove(args) -> int:
    from .remove import remove_outputs

    return remove_outputs(args.paths, echo=_say(tables.console()))


@contextlib.contextmanager
def _catalog_errors(settings):
    """SQLite's errors (only the catalog is a database) as one line naming the catalog file."""
    import sqlite3

    try:
        yield
    except sqlite3.DatabaseError as err:
        raise InputError(settings.state / "catalog.sqlite", f"not a usable catalog ({err})") from None


MASK_DESCRIPTION = (
    "Make a bad-pixel mask with the Robust Mask Maker (Sadri et al. 2022): features of every pixel from the dark runs "
    "(one per gain stage) and an optional flat run, a robust Gaussian model of the normal pixels of each ASIC, and a "
    "pixel is bad where a feature lies more than --lambda robust sigmas from it. Runs are opened lazily, the mask is "
    "computed on a Dask cluster and published as a Zarr store only when complete. Bad input: one line and exit 2; "
    "a cluster that cannot run the job: exit 3; Ctrl-C or SIGTERM: exit 130."
)


def _add_mask_arguments(p) -> list[argparse.Action]:
    """The options of `rmm mask` that `rmm submit` takes too and passes on (:func:`_mask_argv`); those naming files have ``path`` set."""
    def add(*flags, path=False, **kwargs):
        action = p.add_argument(*flags, **kwargs)
        action.path = path
        return action

    run = "a directory, a glob pattern (quoted: expanded by rmm, in name order) or several files of one acquisition"
    return [
        *(add(f"--dark-{g}", path=True, metavar="RUN", nargs="+", help=f"dark run in {g} gain: {run}") for g in GAIN_OPTIONS),
        add("--flat", path=True, metavar="RUN", nargs="+", help=f"flat-field run: {run}"),
        add("--flat-stage", choices=GAIN_OPTIONS, help="gain stage of the flat run (default: the first dark given)"),
        add("--out", path=True, required=True, metavar="STORE", help="the Zarr store to publish"),
        add("--detector", metavar="NAME|FILE.yaml", help=DETECTOR_HELP),
        add("--dataset", metavar="PATH", help="dataset path inside HDF5 stack files"),
        add("--config", path=True, metavar="FILE", help="YAML with parameters under 'rmm-dask:' (see configs/rmm.yaml)"),
        add("--lambda", dest="lam", type=float, metavar="L", help="outlier threshold in robust sigmas (default 8)"),
        add("--method", choices=["rmm", "mad", "nonrobust"], help="statistics of the normal-pixel model"),
        add("--cells-per-chunk", type=int, metavar="N", help="memory cells per task (default: rmm-dask.chunking.cells-per-chunk of the configuration)"),
        add("--workers", type=int, metavar="N", help="local workers (threads of one process for small jobs, else processes; see rmm-dask.cluster) or a fixed number of worker jobs (slurm)"),
        add("--jobqueue", path=True, metavar="FILE", help="dask-jobqueue YAML for Slurm (default: configs/jobqueue.yaml, or $RMM_JOBQUEUE_CONFIG)"),
        add("--user-mask", path=True, metavar="FILE[:DATASET]", help="a user-drawn mask (.npy, .tif, .cbf, HDF5 FILE:DATASET), kept as its own layer"),
        add("--user-mask-good-is-one", action="store_true", help="the user mask marks good pixels with non-zero (Cheetah, OM)"),
        add("--accept-flat", action="store_true", help="use a flat run the check doubts (not lit, or in another gain stage); the store records it"),
        add("--overwrite", action="store_true", help="replace an existing store (and --report) in one atomic swap, once the new one is complete"),
    ]


DETECTOR_HELP = (
    "detector description: a name (AGIPD1M, JUNGFRAU1M, JUNGFRAU4M, CSPAD, PILATUS300K, PILATUS6M, EIGER1M, EIGER16M, "
    "LAMBDA750K, LAMBDA2M) or a YAML file (default: from the files: NeXus/NXmx and LAMBDA files describe themselves "
    "(rmm describe RUN prints it); AGIPD1M for EuXFEL runs)")


def _mask_argv(args) -> list[str]:
    """The options of ``rmm mask`` that repeat ``args`` in a batch job, as the parser defines them:
    paths absolute, a run's several paths or quoted glob pattern kept as given (the job expands
    the pattern, as here)."""
    argv = []
    for action in _add_mask_arguments(argparse.ArgumentParser(add_help=False)):
        value, flag = getattr(args, action.dest), action.option_strings[0]
        if action.nargs == 0:  # a switch
            argv += [flag] if value else []
        elif value is not None:
            is_path = action.path or (action.dest == "detector" and str(value).endswith((".yaml", ".yml")))
            values = value if isinstance(value, list) else [value]  # a run may be several paths
            argv += [flag, *(str(Path(v).absolute()) if is_path else str(v) for v in values)]
    return argv


def _submit(args) -> int:
    from .flatcheck import check_flat
    from .pipeline import build_mask
    from .submit import submit

    params, darks, flat, user_mask = _inputs(args)  # metadata only: bad input fails here, not in the queue
    build_mask(darks, flat, detector=args.detector, params=params, flat_stage=args.flat_stage, user_mask=user_mask, flat_check={})  # the graph's checks
    if flat is not None:  # a few frames: a dark given as flat is refused here, not in the queue
        checked = check_flat(darks, flat, detector=args.detector, flat_stage=args.flat_stage, params=params, accept=args.accept_flat)
        if checked.get("accepted_by_option"):
            print(printable(f"flat run {flat.attrs.get('path')}: {checked['problem']}; "
                            "used as flat because of --accept-flat"))
    out = publish.prepare(args.out, overwrite=args.overwrite, directory=True, what="the output store")
    if args.jobqueue is None and os.environ.get("RMM_JOBQUEUE_CONFIG"):
        args.jobqueue = os.environ["RMM_JOBQUEUE_CONFIG"]
    mask_args = _mask_argv(args)
    job_id, log, script = submit(mask_args, out, log_dir=args.log_dir)
    for line in (f"submitted batch job {job_id}", f"log: {log}", f"script: {script}",
                 f"result: {out} (published when the job succeeds)"):
        print(printable(line))
    return 0


def _synth(args) -> int:
    from .demo import synth_config, write_set

    cfg = synth_config(args.detector, seed=args.seed, modules=args.modules, cells=args.cells, frames=args.frames, flat_frames=args.flat_frames)
    for name, path in write_set(cfg, Path(args.out), compression=args.compression).items():
        print(printable(f"{name}: {path}"))
    return 0


def _demo(args) -> int:
    from .demo import run_demo, synth_config

    _check_workers(args)
    cfg = synth_config(args.detector, seed=args.seed, modules=args.modules, cells=args.cells, frames=args.frames)  # checked before anything is written
    out = Path(args.out) if args.out else None
    run_demo(cfg, out, keep=args.keep, workers=args.workers, console=tables.console(), outcome=args.outcome)
    return 0


class _Formats:
    """The export formats as the choices of ``--to``: rmm_dask.exports (h5py, zarr, xarray) is
    imported only when a value is checked or the choices are listed, not to build the parser."""

    def __contains__(self, value) -> bool:
        return value in iter(self)

    def __iter__(self):
        from .exports import FORMATS

        return iter((*FORMATS, "frequency"))  # frequency: of a pixel history (rmm_dask.frequency)


def _add_overwrite(p, what: str) -> None:
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} in one atomic swap, once the new one is complete")


def _add_cells(p) -> None:
    p.add_argument("--cells", action="store_true", help="list the counts of every memory cell")


def _add_set_arguments(p) -> None:
    """The synthetic set's options, shared by `rmm synth` and `rmm demo`."""
    p.add_argument("--detector", type=str.lower, choices=sorted(DEMOS), default="agipd", help="agipd, jungfrau (EuXFEL RAW), cspad (CXI), pilatus (CBF), eiger (NXmx), lambda (LAMBDA 2M: a file per module and part)")
    p.add_argument("--modules", type=int, help="modules (default per detector: agipd 2, jungfrau 2, cspad 32, pilatus 3, eiger 2, lambda 3)")
    p.add_argument("--cells", type=int, help="memory cells (default: agipd 2, others 1)")
    p.add_argument("--frames", type=int, help="dark frames per cell (default: 100 or 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic set (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmm", description="Robust Mask Maker: bad-pixel masks for X-ray detectors.")
    parser.add_argument("--version", action="version", version=f"rmm-dask {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("mask", help="make a mask from dark runs (one per gain stage) and an optional flat run", description=MASK_DESCRIPTION)
    _add_mask_arguments(p)
    p.add_argument("--cluster", default="local", metavar="local|slurm|ADDRESS", help="'local', 'slurm' (dask-jobqueue) or a scheduler address tls://host:port (your certificates: README 'Security')")
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
    _add_set_arguments(p)
    p.add_argument("--flat-frames", type=int, help="flat frames per cell (default: --frames)")
    p.add_argument("--compression", choices=["gzip"], help="compress the image data as the facility may")
    p.set_defaults(run=_synth)

    p = sub.add_parser("export", help="export a mask store to another format", description=(
        "Write the mask of a store in the format analysis software reads; the user's and the manufacturer's layers are combined into it. "
        "--to frequency exports a pixel history instead (PUBLISH/NAME or its history.zarr): per pixel-plane the "
        "fraction of the nights it was bad."))
    p.add_argument("store", help="the mask store (Zarr) to export; for --to frequency: PUBLISH/NAME or its "
                   "history.zarr")
    p.add_argument("--to", required=True, choices=_Formats(), metavar="FORMAT", help="h5: the store's layout; crystfel: "
                   "mask file + geometry lines; nexus: NXmx pixel_mask; euxfel: BadPixels; cheetah: 0/1 good map; "
                   "frequency (of a pixel history): nights bad / nights seen")
    p.add_argument("--last", type=int, metavar="N", help="--to frequency: over the last N nights (1 to 64; default: "
                   "all, up to 64)")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    _add_overwrite(p, "an existing export")
    p.set_defaults(run=_export)

    p = sub.add_parser("diff", help="pixels newly bad and recovered between two masks, per bit, module, gain and cell", description=(
        "Compare two mask stores of the same detector: pixel-planes newly bad and recovered, bits set and cleared, "
        "per module, gain stage (and cell); --json also lists the pixels."))
    p.add_argument("old", help="the earlier mask store")
    p.add_argument("new", help="the later mask store")
    _add_cells(p)
    p.add_argument("--json", metavar="FILE", help="also write the counts as JSON")
    _add_overwrite(p, "an existing --json file")
    p.set_defaults(run=_diff)

    p = sub.add_parser("nightly", help="re-mask new calibration runs of facility trees and publish versioned masks", description=(
        "The unattended re-masking service: find complete calibration sets in the configured trees, mask each new one, "
        "publish it as <publish>/<name>/vNNNN and move <name>/current to it when it passes the sanity bounds "
        "(see README, 'Nightly re-masking')."))
    p.add_argument("--config", required=True, metavar="FILE", help="the service's YAML (see configs/nightly.yaml)")
    p.add_argument("--once", action="store_true", help="one pass, then exit (for timers, cron and scrontab)")
    p.add_argument("--dry-run", action="store_true", help="show what a pass would do; change nothing")
    p.add_argument("--status", action="store_true", help="print the catalog and the current versions")
    p.add_argument("--release", metavar="NAME/vNNNN", help="make a held version current (the previous current stays "
                   "published, in the history); needs --reason")
    p.add_argument("--hold", metavar="NAME/vNNNN", help="hold a published version: if it is current, the previous "
                   "published one becomes current again (or none); needs --reason")
    p.add_argument("--reason", metavar="TEXT", help="why: recorded with your user name and the time in the catalog "
                   "and the version's summary")
    p.set_defaults(run=_nightly)

    p = sub.add_parser("history", help="pixels bad in k of the last N nights, newly bad and healed per night, the "
                       "pixels that changed state most often", description=(
        "Read the pixel history the nightly service keeps in PUBLISH/NAME/history.zarr (see README, 'Pixel history'): "
        "distinct pixels bad in k of the last N nights, per night the pixel-planes flagged, newly bad and healed, and "
        "the pixel-planes that changed state most often; --png and --html draw them."))
    p.add_argument("root", metavar="PUBLISH/NAME", help="the directory of one nightly detector's versions")
    p.add_argument("--last", type=int, metavar="N", help="count over the last N nights (1 to 64; default: all, up to 64)")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    p.add_argument("--png", metavar="DIR", help="write the figures here: counts.png (per night flagged, newly bad, "
                   "healed; per bit; per module) and frequency.png (per module, the fraction of the nights each pixel "
                   "was bad)")
    p.add_argument("--html", metavar="FILE.html", help="write one self-contained HTML page: the tables and the figures")
    p.add_argument("--rebuild", action="store_true", help="first rebuild history.zarr from the published versions")
    _add_overwrite(p, "an existing --json file, --png directory or --html page")
    p.set_defaults(run=_history)

    p = sub.add_parser("remove", help="delete rmm outputs (stores, nightly versions, exports, reports, figures), "
                       "which are published read-only", description=(
        "Delete outputs of rmm, which are published read-only (directories too, so rm -rf fails for their owner): each "
        "PATH is checked to be a mask store, a nightly version that is not current, an export, a report, the JSON of "
        "rmm diff or a figures directory of rmm show --png, then renamed away in one step and removed, never following a "
        "link. Anything else is refused and nothing is removed (see README, 'Stores')."))
    p.add_argument("paths", nargs="+", metavar="PATH", help="an rmm output to delete")
    p.set_defaults(run=_remove)

    p = sub.add_parser("describe", help="print the detector description a run is read with, as YAML to keep and edit", description=(
        "Open a run (metadata only) and print, as a YAML detector description (see README, 'Detectors and formats'), "
        "what rmm reads it as: built from the files' NeXus/NXmx metadata without --detector (or the built-in LAMBDA "
        "adapted to the files: module shape, chips from the pixel mask), or the description given, adapted to the files. "
        "Save it (rmm describe RUN > my-detector.yaml), edit it and give it with --detector."))
    p.add_argument("paths", nargs="+", metavar="RUN", help="a run: a directory, a glob pattern or the files of one acquisition")
    p.add_argument("--detector", metavar="NAME|FILE.yaml", help=DETECTOR_HELP)
    p.add_argument("--dataset", metavar="PATH", help="dataset path inside HDF5 stack files")
    p.set_defaults(run=_describe)

    p = sub.add_parser("show", help="counts per bit, module, gain and cell; --png for figures, --html for a report", description=(
        "Print a mask store's inputs, parameters and counts per bit, module, gain stage (and cell), and its layers; "
        "write figures (--png) or one self-contained HTML page (--html)."))
    p.add_argument("store", help="the mask store (Zarr) to show")
    _add_cells(p)
    p.add_argument("--files", action="store_true", help="list every input file of every run (size, modification time)")
    p.add_argument("--png", metavar="DIR", help="write per-module mask images, the assembled detector and SNR histograms here")
    p.add_argument("--geometry", metavar="FILE.geom", help="CrystFEL geometry for the assembled image of EuXFEL detectors (default: EXtra-geom's example)")
    p.add_argument("--html", metavar="FILE.html", help="write a self-contained HTML report (figures embedded)")
    _add_overwrite(p, "an existing --png directory or --html report")
    p.set_defaults(run=_show)

    p = sub.add_parser("demo", help="synthetic runs with planted defects -> mask on a LocalCluster -> exports -> score", description=(
        "Synthesise a calibration set with planted defects, mask it on a LocalCluster, export it to every format and score "
        "the mask against the truth. Without --out it works in a temporary directory that it names first and removes at the end."))
    p.add_argument("--out", metavar="DIR", help="where to write, and keep, the runs, the store and the exports (default: a new temporary directory, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (its path is printed first)")
    _add_set_arguments(p)
    p.add_argument("--workers", type=int, default=2, help="local workers (default 2; threads of one process for a set of this size, see rmm-dask.cluster)")
    p.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code: 0 done, 2 a user error (one line on stderr, nothing
    written), 3 the cluster could not run the job, 130 interrupted (Ctrl-C, SIGTERM): one
    line saying what was published, if anything.

    As the program (``argv`` None: the ``rmm`` script, ``python -m rmm_dask``), an interrupted
    command ignores SIGINT and SIGTERM from its return on: Python's shutdown takes a moment
    (threads, exit handlers), and a second Ctrl-C then would end it by SIGINT, not with 130
    (Python resets its handlers to the default while it shuts down; an ignored signal stays ignored).
    """
    _never_fail_on_encoding()
    code = _main(argv)
    if code == 130 and argv is None:
        import signal

        for sig in interrupts.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    return code


def _escape_unencodable(err: UnicodeError):
    """The error handler of the output streams: a file name's undecodable bytes (Python reads them
    as lone surrogates under a non-UTF-8 locale) are written back as they were, any other character
    the stream's encoding lacks as an escape (``\\xdc``, ``\\u03b1``)."""
    if isinstance(err, UnicodeEncodeError):
        try:
            return codecs.lookup_error("surrogateescape")(err)
        except UnicodeError:
            pass
    return codecs.backslashreplace_errors(err)


codecs.register_error("rmm-escape", _escape_unencodable)


def _never_fail_on_encoding() -> None:
    """Output never fails on its encoding: under ``LC_ALL=C`` (ASCII, ``PYTHONUTF8=0``), a store
    made from a run directory named "Probe_Ü_α" would end `rmm show` with a UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):  # a closed or detached stream: nothing to set
                reconfigure(errors="rmm-escape")


def _fail(command: str, text: str) -> None:
    """The one error line, its control characters escaped: a path with a newline cannot split it."""
    print(printable(f"rmm {command}: {text}"), file=sys.stderr)


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
            with contextlib.ExitStack() as args.scope:  # what the command sets in dask.config (_setup_config)
                return args.run(args)
        except InputError as err:
            _fail(args.command, str(err))
            return 2
        except ClusterError as err:
            _fail(args.command, str(err))
            return 3
        except KeyboardInterrupt as err:
            _drop_frames(err)
            _fail(args.command, f"interrupted; {args.outcome.summary()}")
            return 130
        except OSError as err:
            line = write_error(err)
            if line is None:
                raise
            _fail(args.command, f"{line}; {args.outcome.summary()}")
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


if __name__ == "__main__":
    sys.exit(main())
