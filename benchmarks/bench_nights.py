"""Issue #23's facility tree of nights under the nightly service: one pass per night, the tree growing.

    .venv/bin/python benchmarks/bench_nights.py [--nights 10] [--seed 0] [--out DIR]

Writes the plan of :mod:`rmm_dask.synth.nights` (300 intermittent pixels bad on 30% of the nights,
100 bad from night 4 on, 100 healing after night 6, on top of the detector's own defects), then
night by night: writes that night's runs into the tree and runs ``rmm nightly --once`` as a new
process (as cron or a timer would). Per night it prints the time to write the runs and of the
pass, and what that night's published mask catches, from the truth: the pixels bad that night
(recall), the intermittent pixels (of all of them: a single night's mask sees ~30%), the onset
and healing ones, and the always-good pixels it flags; then the same for the remembering mask
(the nightly config has ``history: {min-fraction: 0.2, last: 20}``: the version's mask or its
layer ``layers/history``, issue #23 part 3). Then the sizes on disk, and the cost of appending
night 2 and night 10 to the pixel history of that run (the versions replayed one by one into a
directory of their own; best of 3: seconds and bytes read, ``rchar`` of /proc/self/io, and the
ratio night 10 / night 2, which the issue asks to stay <= 1.5).

The columns are :data:`COLUMNS`, one function of a night's :class:`Night` each. Without ``--out``
everything is written to a temporary directory, named first and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
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
REMEMBER = {"min-fraction": 0.2, "last": 20}  #: the config's ``history:``: a mask that remembers


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
    remembering: np.ndarray  #: bool (module, y, x): flagged, or in the version's history layer (any plane)


def _share(found: int, of: int) -> str:
    return f"{found}/{of} {100.0 * found / of:.0f}%" if of else "-"


def _caught(night: Night, kind: NightKind, remembering: bool = False) -> str:
    """Of all pixels of ``kind``, how many this night's mask flags (``remembering``: its mask or history layer)."""
    of = night.truth.of_kind(kind)
    flagged = night.remembering if remembering else night.flagged
    return _share(int(np.count_nonzero(flagged & of)), int(np.count_nonzero(of)))


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
    ("remembering", 13, lambda n: _caught(n, NightKind.INTERMITTENT, True)),
    ("heal. rem.", 10, lambda n: _caught(n, NightKind.HEALING, True)),
    ("good rem.", 9, lambda n: str(int(np.count_nonzero(n.remembering & n.truth.of_kind(NightKind.ALWAYS_GOOD))))),
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
    root = zarr.open_group(new[0] / "mask.zarr", mode="r")
    flagged = flagged_pixels(root["mask"][()])
    scores = score_night(flagged, truth, night)
    layers = root["layers"] if "layers" in root else {}
    remembering = flagged | (layers["history"][()].astype(bool).any(axis=(1, 2)) if "history" in layers else False)
    return Night(night, write_seconds, pass_seconds, new[0], summary, flagged, scores, truth, remembering)


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
                                  publish_dir=work / "masks", name=NAME, extra={"history": REMEMBER})
    print("columns: seconds to write the runs and of the pass; the version (p: published, h: held); the pixels"
          " bad tonight it flags; of each varying kind, the pixels it flags; the always-good pixels it flags;"
          f" then the remembering mask (mask or layers/history, history: {REMEMBER}): of all intermittent pixels,"
          " of the healing ones, and always-good pixels, what it flags")
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
    appends(published, work / "replay" / NAME, nights)
    return done


def rchar() -> int:
    """Bytes this process has read so far by read system calls (page cache or not): /proc/self/io."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def appends(published: Path, replay: Path, nights: int, repeat: int = 3) -> None:
    """The cost of appending night 2 and the last night to the pixel history: the run's versions copied into
    ``replay`` one at a time, the history brought up to date after each (as each pass does), and the appends of
    those two nights timed ``repeat`` times from the same history (the best kept), with the bytes read."""
    from rmm_dask.nightly.history import NAME as HISTORY
    from rmm_dask.nightly.history import update

    replay.mkdir(parents=True)
    results = {}
    for night in range(1, nights + 1):
        version = f"v{night:04d}"
        shutil.copytree(published / version, replay / version)
        if night not in (2, nights):
            update(replay, lambda line: None)
            continue
        history, keep = replay / HISTORY, replay.parent / "keep.zarr"
        best = None
        for attempt in range(repeat):
            if keep.exists():
                publish.remove(keep, what="a copy of the history")
            shutil.copytree(history, keep)
            r0, t0 = rchar(), time.perf_counter()
            done = update(replay, lambda line: None)
            took, read = time.perf_counter() - t0, rchar() - r0
            assert done is not None and done["kind"] == "append", done
            best = (took, read) if best is None or took < best[0] else best
            if attempt < repeat - 1:  # the history of the night before again
                publish.remove(history, what="the history")
                shutil.move(keep, history)
        results[night] = best
    (t2, r2), (tn, rn) = results[2], results[nights]
    print(f"appending to the pixel history (best of {repeat}): night 2 {t2 * 1e3:.0f} ms, {r2 / 2**20:.1f} MiB read;"
          f" night {nights} {tn * 1e3:.0f} ms, {rn / 2**20:.1f} MiB read; ratio night {nights} / night 2:"
          f" time {tn / t2:.2f}, bytes read {rn / r2:.2f} (asked: <= 1.5)")


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
