"""Issue #23's facility tree of nights under the nightly service: one pass per night, the tree growing.

    .venv/bin/python benchmarks/bench_nights.py [--nights 10] [--seed 0] [--out DIR]

Writes the plan of :mod:`rmm_dask.synth.nights` (300 intermittent pixels bad on 30% of the nights,
100 bad from night 4 on, 100 healing after night 6, on top of the detector's own defects), then
night by night: writes that night's runs into the tree and runs ``rmm nightly --once`` as a new
process (as cron or a timer would). Per night it prints the time to write the runs and of the
pass, and what that night's published mask catches, from the truth: the pixels bad that night
(recall), the intermittent pixels (of all of them: a single night's mask sees ~30%), the onset
and healing ones, and the always-good pixels it flags. Then the sizes on disk.

The columns are :data:`COLUMNS`, one function of a night's :class:`Night` each: a remembering
mask's numbers (issue #23, part 3) are one more entry there. Without ``--out`` everything is
written to a temporary directory, named first and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from common import header

from rmm_dask import publish
from rmm_dask.synth.nights import (
    TRUTH_NAME,
    NightKind,
    NightsTruth,
    flagged_pixels,
    plan_nights,
    score_night,
    tree_of,
    write_night,
    write_nightly_config,
    write_truth_nights,
)

NAME = "AGIPD"  #: the publication directory's name in the nightly config


@dataclass
class Night:
    """What one night's pass left: its times, the version it published, and the mask's score."""

    night: int
    write_seconds: float
    pass_seconds: float
    version: Path  #: the version directory the pass published
    summary: dict  #: its summary.json
    flagged: np.ndarray  #: bool (module, y, x): pixels the version's mask flags (flagged_pixels)
    scores: dict  #: score_night of the mask
    truth: NightsTruth


def _share(found: int, of: int) -> str:
    return f"{found}/{of} {100.0 * found / of:.0f}%" if of else "-"


def _caught(night: Night, kind: NightKind) -> str:
    """Of all pixels of ``kind``, how many this night's mask flags."""
    of = night.truth.of_kind(kind)
    return _share(int(np.count_nonzero(night.flagged & of)), int(np.count_nonzero(of)))


#: (header, width, value of a Night): the table printed per night
COLUMNS = [
    ("night", 5, lambda n: str(n.night)),
    ("write s", 8, lambda n: f"{n.write_seconds:.1f}"),
    ("pass s", 7, lambda n: f"{n.pass_seconds:.1f}"),
    ("version", 8, lambda n: f"{n.version.name} {n.summary['status'][0]}"),
    ("recall", 7, lambda n: f"{100 * n.scores['recall']:.2f}%"),
    ("intermittent", 13, lambda n: _caught(n, NightKind.INTERMITTENT)),
    ("bad tonight", 13, lambda n: _share(*(n.scores["kinds"]["INTERMITTENT"][k] for k in ("found", "bad")))),
    ("onset", 9, lambda n: _caught(n, NightKind.ONSET)),
    ("healing", 9, lambda n: _caught(n, NightKind.HEALING)),
    ("good flagged", 12, lambda n: f"{n.scores['kinds']['ALWAYS_GOOD']['flagged']}"
                                   f" {n.scores['false_positive_fraction']:.0e}"),
]


def size(path: Path) -> int:
    """Bytes of the files under ``path`` (or of the file), links not followed."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def run_pass(config: Path, log: Path) -> float:
    """One `rmm nightly --once` pass as its own process, its output appended to ``log``; its seconds."""
    start = time.perf_counter()
    with open(log, "a") as out:
        rc = subprocess.run([sys.executable, "-m", "rmm_dask", "nightly", "--config", str(config), "--once"],
                            stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"rmm nightly --once exited {rc}; see {log}")
    return seconds


def one_night(work: Path, truth: NightsTruth, night: int, config: Path) -> Night:
    """Write night ``night``'s runs, run a pass, and score the version it published."""
    published = work / "masks" / NAME
    before = set(published.glob("v*")) if published.is_dir() else set()
    start = time.perf_counter()
    write_night(work / "facility", truth, night)
    write_seconds = time.perf_counter() - start
    pass_seconds = run_pass(config, work / "nightly.log")
    new = sorted(set(published.glob("v*")) - before)
    if len(new) != 1:
        log = work / "nightly.log"
        raise SystemExit(f"night {night}: the pass published {len(new)} versions, expected one; see {log}")
    summary = json.loads((new[0] / "summary.json").read_text())
    flagged = flagged_pixels(zarr.open_group(new[0] / "mask.zarr", mode="r")["mask"][()])
    scores = score_night(flagged, truth, night)
    return Night(night, write_seconds, pass_seconds, new[0], summary, flagged, scores, truth)


def print_row(values: list[str]) -> None:
    print("  ".join(f"{v:>{w}}" for v, (_, w, _) in zip(values, COLUMNS)), flush=True)


def bench(work: Path, nights: int, seed: int) -> list[Night]:
    header(f"{nights} nights of a 1-module AGIPD-like detector under `rmm nightly --once` ({work})")
    truth = plan_nights(nights, seed=seed)
    plan = truth.plan
    print(f"per night: a flat and 3 darks of {plan.cells} cell(s) x {plan.frames} frames; varying pixels:"
          f" {plan.intermittent} intermittent ({plan.fraction:.0%} of nights),"
          f" {plan.onset} from night {plan.onset_night},"
          f" {plan.healing} healing after night {plan.heal_after}; {int(truth.of_kind(NightKind.ALWAYS_BAD).sum())}"
          f" always bad, {int(truth.of_kind(NightKind.ALWAYS_GOOD).sum())} always good")
    (work / "facility").mkdir()
    write_truth_nights(truth, work / "facility" / TRUTH_NAME)
    config = write_nightly_config(work / "nightly.yaml", work / "facility", state=work / "state",
                                  publish_dir=work / "masks", name=NAME)
    print("columns: seconds to write the runs and of the pass; the version (p: published, h: held); the pixels"
          " bad tonight it flags; of each varying kind, the pixels it flags; the always-good pixels it flags")
    print_row([h for h, _, _ in COLUMNS])
    done = []
    for night in range(1, nights + 1):
        done.append(one_night(work, truth, night, config))
        print_row([f(done[-1]) for _, _, f in COLUMNS])
    passes = [n.pass_seconds for n in done]
    print(f"passes: median {np.median(passes):.1f} s, first {passes[0]:.1f} s, last {passes[-1]:.1f} s")
    caught = [int(np.count_nonzero(n.flagged & truth.of_kind(NightKind.INTERMITTENT))) for n in done]
    print(f"a single night's mask catches {np.mean(caught) / plan.intermittent:.0%} of the intermittent pixels"
          " on average"
          f" (min {min(caught)}, max {max(caught)} of {plan.intermittent})")
    published = work / "masks" / NAME
    versions = sorted(published.glob("v*"))
    tree = size(tree_of(work / "facility"))
    history = published / "history.zarr"
    truth_size = size(work / "facility" / TRUTH_NAME)
    print(f"on disk: tree {mib(tree)} ({mib(tree // nights)} a night), truth {mib(truth_size)},"
          f" {len(versions)} versions {mib(sum(size(v) for v in versions))}"
          f" (mask.zarr {mib(size(versions[-1] / 'mask.zarr'))} each),"
          f" history.zarr {mib(size(history)) if history.exists() else 'absent'}, state {mib(size(work / 'state'))}")
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="work in DIR (new or empty) and keep everything there")
    args = parser.parse_args(argv)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        if any(args.out.iterdir()):
            raise SystemExit(f"{args.out}: not empty")
        work = args.out
    else:
        work = Path(tempfile.mkdtemp(prefix="rmm-bench-nights-"))
    print(f"working in {work}")
    start = time.perf_counter()
    try:
        bench(work, args.nights, args.seed)
    finally:
        if not args.out:
            publish.remove(work, what="the benchmark's directory")  # (published versions are read-only trees)
            print(f"removed {work}")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
