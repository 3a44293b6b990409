"""The ``rmm`` command line. Each command is ``main([...]) -> exit code``."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import __version__


class UserError(Exception):
    """A problem with what the user asked for: printed as one line, exit code 2."""


def _demo(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .mask import Params, module_mask
    from .synth import GAINS, SynthConfig, score, synthesize

    console = Console()
    cfg = SynthConfig(modules=args.modules, cells=args.cells, frames=args.frames, flat_frames=args.frames, seed=args.seed)
    t0 = time.perf_counter()
    with console.status("synthesising an AGIPD-like calibration set with planted defects"):
        calib = synthesize(cfg)
    console.print(
        f"synthetic AGIPD-like set: {cfg.modules} module(s) x {cfg.cells} cells x {cfg.frames} frames, "
        f"dark runs for {', '.join(GAINS)} + a flat run ({time.perf_counter() - t0:.1f} s)"
    )
    results = {}
    for method in args.methods:
        params = Params(method=method)
        t0 = time.perf_counter()
        masks, rejected = [], 0
        for m in range(cfg.modules):
            dark = [(calib.dark[g].analog[m], calib.dark[g].gain[m]) for g in GAINS]
            with console.status(f"{method}: module {m + 1}/{cfg.modules}"):
                res = module_mask(dark, calib.flat.analog[m], cfg.detector, params)
            masks.append(res.mask)
            rejected += int(res.rejected_frames.sum())
        results[method] = score(np.stack(masks), calib.truth)
        console.print(f"{method}: masked in {time.perf_counter() - t0:.1f} s, {rejected} frames rejected by F1")

    planted = sum(int(calib.truth.outlier_frames[g].sum()) for g in GAINS)
    table = Table(title=f"Score against the planted truth (lambda = {Params().lam:g})")
    table.add_column("defect kind")
    table.add_column("planted", justify="right")
    for method in args.methods:
        table.add_column(f"recall {method}", justify="right")
    for kind, (_, n) in results[args.methods[0]]["recall"].items():
        row = [kind, str(n)]
        for method in args.methods:
            found, _ = results[method]["recall"][kind]
            row.append(f"{100 * found / n:.1f}%")
        table.add_row(*row)
    table.add_row(
        "clean pixels flagged",
        str(results[args.methods[0]]["clean"]),
        *(f"{r['false_positive_fraction']:.2e}" for r in results.values()),
    )
    console.print(table)
    console.print(f"outlying frames planted: {planted}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmm", description="Robust Mask Maker: bad-pixel masks for X-ray detectors.")
    parser.add_argument("--version", action="version", version=f"rmm-dask {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="synthetic detector with planted defects -> mask -> score table")
    demo.add_argument("--modules", type=int, default=1)
    demo.add_argument("--cells", type=int, default=2)
    demo.add_argument("--frames", type=int, default=100, help="frames per cell in each run")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--methods",
        nargs="+",
        default=["rmm", "mad", "nonrobust"],
        choices=["rmm", "mad", "nonrobust"],
        help="statistics of the normal-pixel model to compare",
    )
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as err:
        print(f"rmm {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rmm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
