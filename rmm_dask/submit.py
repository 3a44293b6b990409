"""`rmm submit`: the whole mask job as one Slurm batch job, for users who log off.

The batch job runs ``python -m rmm_dask mask ... --cluster slurm``: the Dask scheduler
and client live in that job and spawn the worker jobs of configs/jobqueue.yaml. The
script comes from ``deploy/slurm/rmm-mask.sbatch`` (shipped as
``rmm_dask/templates/rmm-mask.sbatch``).
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
import subprocess
import sys
from pathlib import Path
from string import Template

import dask.config
from dask.utils import parse_bytes

from . import __version__
from . import config as _config  # the defaults in dask.config
from .errors import ClusterError

TEMPLATE = Path(__file__).parent / "templates" / "rmm-mask.sbatch"


def job_script(mask_args: list[str], out: Path, *, log_dir: Path | None = None) -> tuple[str, Path]:
    """The batch script for ``rmm mask <mask_args>`` and the path of its log (``%j`` = job id)."""
    _config.register_jobqueue_defaults()
    conf = dask.config.get("rmm-dask.submit")
    slurm = dask.config.get("jobqueue.slurm")
    log_dir = Path(log_dir or conf.get("log-directory") or out.parent).absolute()
    name = re.sub(r"[^A-Za-z0-9._-]", "_", out.name)  # a job name and file names without spaces or quotes
    log = log_dir / f"rmm-mask-{name}-%j.log"
    directives = []
    if slurm.get("queue"):
        directives.append(f"#SBATCH --partition={slurm['queue']}")
    if slurm.get("account"):
        directives.append(f"#SBATCH --account={slurm['account']}")
    directives += [f"#SBATCH {d}" for d in slurm.get("job-extra-directives") or []]
    command = [sys.executable, "-m", "rmm_dask", "mask", *mask_args, "--cluster", "slurm"]
    script = Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        job_name=f"rmm-mask-{name}",
        log=log,
        walltime=conf["walltime"],
        cpus=int(conf["cpus"]),
        memory_mb=parse_bytes(str(conf["memory"])) // 2**20,
        directives="\n".join(directives),
        version=__version__,
        prologue="\n".join(slurm.get("job-script-prologue") or []),
        command=shlex.join(command),
    )
    return script, log


def submit(mask_args: list[str], out: Path, *, log_dir: Path | None = None) -> tuple[str, Path, Path]:
    """Write the script beside its log and sbatch it: (job id, log path, script path).

    The script is published as every output is (:func:`rmm_dask.publish.output`): its name can be
    predicted, so a link or a file planted there is refused in one line, never written through."""
    from . import publish

    script, log = job_script(mask_args, out, log_dir=log_dir)
    log.parent.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = log.parent / (log.name.replace("-%j.log", "") + f"-{stamp}.sbatch")
    with publish.output(path, what="the batch script") as tmp:
        # UTF-8 in any locale; a path's undecodable bytes (read as lone surrogates under LC_ALL=C) as they were
        tmp.tmp.write_text(script, encoding="utf-8", errors="surrogateescape")
    try:
        proc = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ClusterError("sbatch not found: rmm submit needs the Slurm client commands on this host") from None
    except subprocess.TimeoutExpired:
        raise ClusterError("sbatch did not answer within 60 s: is slurmctld reachable?") from None
    if proc.returncode != 0:
        raise ClusterError(f"sbatch refused the job ({' '.join(proc.stderr.split())}); script: {path}")
    job_id = proc.stdout.strip().split(";")[0]
    return job_id, Path(str(log).replace("%j", job_id)), path
