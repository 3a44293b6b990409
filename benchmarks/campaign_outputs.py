"""Fault campaign cases of issue 20: outputs: inputs unchanged until the end, one job per output, long names, scratch space.

Registered into benchmarks/fault_campaign.py (``make campaign``) by :func:`register`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

#: the line `rmm mask` prints as its cluster is up, just before it computes
STARTED = "dashboard:"


def _stopped_mid_job(c, live) -> bool:
    """Wait until the job computes, then stop its process group (SIGSTOP); False if it ended first."""
    if not live.until(lambda: live.said(STARTED), timeout=120) or live.proc.poll() is not None:
        c.fail(f"`rmm mask` ended (exit {live.proc.poll()}) before it could be stopped mid-job")
        return False
    live.signal_group(signal.SIGSTOP)
    return True


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)
    return condition()


def _slurm_problem() -> str | None:
    if not shutil.which("sinfo"):
        return "no Slurm client commands"
    done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=15)
    if done.returncode != 0 or not any(s in ("idle", "mix", "alloc") for s in done.stdout.split()):
        return "no Slurm reachable (deploy/slurm-local/start.sh starts one)"
    return None


def register(case) -> None:
    """Add this area's cases with the campaign's ``@case(section, title)`` decorator."""
    import fault_campaign as fc

    @case("outputs-20", "an input file replaced while the job computes")
    def case_input_replaced_during_job(c):
        runs = c.dir / "s"
        shutil.copytree(c.shared.s, runs)
        victim = next((runs / "raw" / "r0002").glob("*.h5"))
        live = c.spawn(*c.shared.mask_args(c.dir / "m.zarr", runs=runs))
        if _stopped_mid_job(c, live):
            copy = victim.with_name("copy.h5")
            shutil.copy2(victim, copy)  # same name, size and mtime: only the inode tells
            os.replace(copy, victim)
            live.signal_group(signal.SIGCONT)
        c.judge(live.finish(), 2, needles=(victim.name, "replaced", "nothing was published"))
        c.only(c.dir, ["TMP", "s"])

    @case("outputs-20", "a second job on the same --out while the first computes")
    def case_second_job_same_out(c):
        out = c.dir / "m.zarr"
        first = c.spawn(*c.shared.mask_args(out))
        if _stopped_mid_job(c, first):
            second = c.rmm(*c.shared.mask_args(out), expect=2, needles=("m.zarr", "another rmm job"), timeout=60)
            c.expect(second.seconds < 15, f"the second job took {second.seconds:.0f} s to be refused")
            first.signal_group(signal.SIGCONT)
        c.judge(first.finish(), 0)
        c.expect(fc.is_store(out), "the first job's store was not published")
        c.only(c.dir, ["TMP", "m.zarr"])

    @case("outputs-20", "an output name of 240 characters (NAME_MAX is 255)")
    def case_long_output_name(c):
        out = c.dir / ("m" * 235 + ".zarr")
        c.rmm(*c.shared.mask_args(out), expect=0)
        c.expect(fc.is_store(out), "the store with a 240-character name was not published")
        h5 = c.dir / ("e" * 237 + ".h5")
        c.rmm("export", out, "--to", "h5", "--out", h5, expect=0)
        c.expect(fc.is_h5(h5), "the export with a 240-character name was not published")
        c.only(c.dir, ["TMP", out.name, h5.name])

    @case("outputs-20", "unauthenticated HTTP GETs of the dashboard while a job runs on worker processes")
    def case_dashboard_strangers_get(c):
        import urllib.error
        import urllib.request

        (c.dir / "c.yaml").write_text("rmm-dask:\n  cluster:\n    local-threads-below: 0\n    dashboard: true\n")
        args = c.shared.mask_args(c.dir / "m.zarr")
        args[args.index("--workers") + 1] = 2
        live = c.spawn(*args, "--config", c.dir / "c.yaml")
        found = live.until(lambda: any(re.search(r"dashboard: http://localhost:(\d+)/", x) for x in live.lines), timeout=120)
        answers = []
        if found:
            port = next(m[1] for x in live.lines if (m := re.search(r"dashboard: http://localhost:(\d+)/", x)))
            for path in ("/json/identity.json", "/json/counts.json", "/hardware", "/info/main/workers.html",
                         "/proxy/8786/127.0.0.1/status", "/statics/../../../../etc/passwd", "/status"):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                        answers.append(f"{path} {r.status}")
                except urllib.error.HTTPError as err:
                    answers.append(f"{path} {err.code}")
                except OSError as err:
                    answers.append(f"{path} {type(err).__name__}")
        c.judge(live.finish(), 0)  # and no traceback, no tornado or Dask log line in its output (judge)
        c.notes.append("dashboard answers: " + (", ".join(answers) if answers else "the job ended before a GET"))
        c.expect(fc.is_store(c.dir / "m.zarr"), "no store published")
        c.only(c.dir, ["TMP", "m.zarr", "c.yaml"])

    @case("outputs-20", "--cluster slurm leaves nothing in TMPDIR (no dask-scratch-space)")
    def case_slurm_scratch_space(c):
        problem = _slurm_problem()
        if problem:
            c.skipped = problem
            return
        netns = os.path.exists("/run/rmm-slurm-local/mode") and open("/run/rmm-slurm-local/mode").read().strip() == "netns"
        jobqueue = c.dir / "jobqueue.yaml"
        jobqueue.write_text("jobqueue:\n  slurm:\n    memory: 2GiB\n    walltime: '00:10:00'\n"
                            f"    log-directory: {c.dir / 'logs'}\n" + ("    interface: rmm0\n" if netns else ""))
        args = c.shared.mask_args(c.dir / "m.zarr")
        args[args.index("--workers") + 1] = 1
        c.rmm(*args, "--cluster", "slurm", "--jobqueue", jobqueue, expect=0)
        c.expect(fc.is_store(c.dir / "m.zarr"), "no store published")
        _wait_for(lambda: not os.listdir(c.tmp), 15)  # a worker job removes its scratch space as it ends
        c.only(c.dir, ["TMP", "m.zarr", "jobqueue.yaml", "logs"])
