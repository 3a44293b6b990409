"""The nightly service's deploy files: what they run parses as `rmm nightly --once`, and the
schedulers accept them (systemd-analyze verify; sbatch --test-only for the scrontab options)."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rmm_dask.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RMM = "/opt/rmm-dask/.venv/bin/rmm"  #: the install path the files assume
CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


def assert_nightly_once(command: list[str]) -> None:
    assert command[0] == RMM
    args = build_parser().parse_args(command[1:])
    assert args.command == "nightly" and args.once and not args.dry_run
    assert args.config == "/etc/rmm/nightly.yaml"


def cron_line(text: str) -> tuple[list[str], str]:
    """The schedule fields and the rest of the one job line of a crontab-style file."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(lines) == 1, lines
    fields = lines[0].split(None, 5)
    assert all(CRON_FIELD.match(f) for f in fields[:5]), fields
    return fields[:5], fields[5]


def test_systemd_units(tmp_path):
    service = (DEPLOY / "systemd" / "rmm-nightly.service").read_text()
    (exec_start,) = [line.removeprefix("ExecStart=") for line in service.splitlines() if line.startswith("ExecStart=")]
    assert_nightly_once(shlex.split(exec_start))
    timer = (DEPLOY / "systemd" / "rmm-nightly.timer").read_text()
    assert "Unit=rmm-nightly.service" in timer and "Persistent=true" in timer
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed: the units were parsed, not verified")
    # systemd checks that the command exists; its arguments were checked above
    (tmp_path / "rmm-nightly.service").write_text(service.replace(RMM, sys.executable))
    (tmp_path / "rmm-nightly.timer").write_text(timer)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "rmm-nightly.service"), str(tmp_path / "rmm-nightly.timer")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_cron_line():
    fields, rest = cron_line((DEPLOY / "cron" / "rmm-nightly.cron").read_text())
    user, command = rest.split(None, 1)
    assert user == "rmm"
    command, redirect = command.split(">>")
    assert_nightly_once(shlex.split(command))
    assert redirect.split() == ["/var/log/rmm/nightly.log", "2>&1"]


def scrontab() -> tuple[list[str], list[str]]:
    text = (DEPLOY / "slurm" / "rmm-nightly.scrontab").read_text()
    options = [line.removeprefix("#SCRON").strip() for line in text.splitlines() if line.startswith("#SCRON")]
    _fields, command = cron_line(text)
    return options, shlex.split(command)


def test_scrontab_entry():
    options, command = scrontab()
    assert_nightly_once(command)
    assert "--job-name=rmm-nightly" in options


@pytest.mark.slurm
def test_scrontab_options_accepted_by_slurm(slurm):
    """Debian's slurm-client has no scrontab command: sbatch checks the same #SCRON options."""
    options, command = scrontab()
    options = [o for o in options if not o.startswith("--output")] + ["--output=/dev/null"]
    proc = subprocess.run(["sbatch", "--test-only", *options, "--wrap", shlex.join(command)], capture_output=True, text=True)
    assert proc.returncode == 0 and "to start at" in proc.stderr, proc.stderr


def unit_settings(text: str) -> dict[str, list[str]]:
    settings = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_private_directories_only():
    """numba loads its cache with pickle: every deploy file keeps it (and the state) in directories
    of the service user alone, never a fixed name in a shared temporary directory."""
    import yaml

    texts = {p.name: p.read_text() for p in DEPLOY.glob("*/rmm-nightly*")}
    assert set(texts) == {"rmm-nightly.service", "rmm-nightly.timer", "rmm-nightly.cron", "rmm-nightly.scrontab"}
    for name, text in texts.items():
        body = "\n".join(line for line in text.splitlines() if not line.startswith("# "))
        assert "/tmp" not in body and "/var/tmp" not in body and "NUMBA_CACHE_DIR" not in body, name
    unit = unit_settings(texts["rmm-nightly.service"])
    assert unit["StateDirectory"] == ["rmm-nightly"] and unit["StateDirectoryMode"] == ["0700"]
    assert unit["CacheDirectory"] == ["rmm-nightly"] and unit["CacheDirectoryMode"] == ["0700"]
    assert unit["Environment"] == ["XDG_CACHE_HOME=%C/rmm-nightly"]  # %C: /var/cache for a system unit
    state = yaml.safe_load((DEPLOY.parent / "configs" / "nightly.yaml").read_text())["nightly"]["state"]
    assert state == "/var/lib/" + unit["StateDirectory"][0]  # the configuration uses the private state directory
    cron = [line for line in texts["rmm-nightly.cron"].splitlines() if line.startswith("XDG_CACHE_HOME=")]
    assert cron == ["XDG_CACHE_HOME=/var/cache/rmm-nightly"]
    assert "install -d -o rmm -g rmm -m 0700 /var/cache/rmm-nightly /var/lib/rmm-nightly" in texts["rmm-nightly.cron"]
