"""Nobody but the job gets into its Dask processes: every port a job opens is tried from another process
(tests/attack.py: Dask's protocol without credentials, with a certificate of its own, a plain HTTP GET),
as the job's own user: the strongest stranger, whom no file permission stops.

Local jobs: threads open no port; worker processes listen on 127.0.0.1 only, over TLS with the
job's key. A Slurm job's scheduler binds one address, its dashboard loopback, and its worker job
script names credential files in a 0700 directory, never their contents (run for real on Slurm in
tests/test_slurm.py). Attaching to a scheduler: tls:// with the user's certificates, tcp:// refused.
"""

import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request

import dask
import dask.array
import dask.bag
import pytest

from rmm_dask import security
from rmm_dask.cli import main
from rmm_dask.cluster import dask_client, slurm_options
from rmm_dask.errors import ClusterError

from .cli_errors import one_line_error
from .conftest import mask_args, wait_until
from .ports import attack, connectable, intrusions, listening


def write_credentials(sec, directory) -> dict:
    """The job's in-memory credentials as files, for the control attack that must get in."""
    paths = {}
    for name, pem in (("ca", sec.tls_ca_file), ("cert", sec.tls_client_cert), ("key", sec.tls_client_key)):
        path = directory / f"{name}.pem"
        path.write_text(pem)
        path.chmod(0o600)
        paths[name] = str(path)
    return paths


def test_threads_in_this_process_open_no_port():
    lines = []
    before = listening(os.getpid())
    with dask_client("local", input_bytes=1, echo=lines.append) as client:
        assert client is None
        during = listening(os.getpid())
        assert dask.array.ones(100, chunks=10).sum().compute() == 100
    assert set(during) - set(before) == set(), during
    assert lines == ["dashboard: none  (2 worker thread(s) in this process, no port opened)"]


def test_threads_with_a_scheduler_for_the_report_listen_on_loopback_and_serve_nothing(tmp_path):
    """`--report` needs Dask's scheduler: threads of this process talk to it in memory (inproc); the HTTP servers
    Dask starts anyway listen on 127.0.0.1 and serve nothing (no logs, no metrics, no proxy)."""
    before = set(listening(os.getpid()))
    with dask_client("local", input_bytes=1, needs_scheduler=True, echo=lambda *_: None) as client:
        assert client.scheduler.address.startswith("inproc://")
        ports = [p for p in listening(os.getpid()) if p not in before]
        assert ports and {host for host, _ in ports} == {"127.0.0.1"}, ports
        results = attack([connectable(p) for p in ports], tmp_path / "marker")
        assert intrusions(results) == [] and all(r["http"] == "failed: HTTP 404" for r in results.values()), results
    assert not (tmp_path / "marker").exists()


def test_threads_job_stays_in_its_threads_beside_a_users_client():
    """A Client the user has open in the same process (a notebook's) does not take over a job of threads:
    rmm's compute runs on its own threads, never on a cluster it did not start."""
    import threading

    from distributed import Client

    from rmm_dask.cluster import compute

    def where(_):
        return threading.current_thread().name

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None):
        with dask_client("local", input_bytes=1, echo=lambda *_: None) as client:
            assert client is None
            (names,) = compute(dask.bag.from_sequence(range(4), npartitions=4).map(where), progress=False)
    assert names and all(name.startswith("rmm-worker") for name in names), names


def test_local_worker_processes_let_only_the_job_in(tmp_path):
    """Every port of a LocalCluster of worker processes (scheduler, nannies, workers, their HTTP servers and the
    dashboard) is on 127.0.0.1; a stranger's attempts all fail, the job's own key gets in (the control)."""
    marker = tmp_path / "marker"
    lines = []
    before = set(listening(os.getpid()))
    conf = {"rmm-dask.cluster.local-threads-below": 0, "rmm-dask.cluster.dashboard": True}
    with dask.config.set(conf), dask_client("local", n_workers=2, echo=lines.append) as client:
        ports = {p: pid for p, pid in listening(os.getpid()).items() if p not in before}
        assert {host for host, _ in ports} == {"127.0.0.1"}, ports
        # scheduler + dashboard here; per worker: its nanny here, the worker and its HTTP server in its process
        assert len(ports) >= 2 + 3 * 2, ports
        port = client.cluster.scheduler.http_server.port
        dashboard = f"127.0.0.1:{port}"
        assert f"http://localhost:{port}/status" in lines[0] and "ssh -L" in lines[0]
        addresses = [connectable(p) for p in ports]
        results = attack(addresses, marker)
        assert intrusions(results, http_allowed={dashboard}) == [], results
        assert all(results[a]["http"].startswith("failed") for a in addresses if a != dashboard)  # nothing served
        # the owner watches the job: the dashboard over loopback; Dask's proxy route is not served
        with urllib.request.urlopen(f"http://{dashboard}/status", timeout=10) as page:
            assert page.status == 200
        scheduler_port = client.scheduler.address.rsplit(":", 1)[1]
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://{dashboard}/proxy/{scheduler_port}/127.0.0.1/", timeout=10)
        with pytest.raises(urllib.error.HTTPError, match="404"):  # the page that has every worker benchmark itself
            urllib.request.urlopen(f"http://{dashboard}/hardware", timeout=10)
        # its websockets take pages of localhost:<port> only, not any web site the user's browser has open
        allowed = dask.config.get("distributed.scheduler.dashboard.bokeh-application.allow_websocket_origin")
        assert allowed == [] and client.cluster.scheduler.services["dashboard"] is not None
        # the control: with the job's credentials the same attempts get in, so the failures above mean something
        control = attack([connectable(p) for p, pid in ports.items() if f"127.0.0.1:{p[1]}" != dashboard], tmp_path / "control",
                         credentials=write_credentials(client.security, tmp_path))
        assert sum(o["tls-job-cert"].startswith("answered") for o in control.values()) >= 5, control
        assert (tmp_path / "control").exists(), control
        assert (tmp_path / "control").read_text() == "got in"
        assert client.submit(sum, [1, 2]).result() == 3
    assert not marker.exists()


def attack_while_it_runs(argv, tmp_path, workers: int, cwd=None) -> subprocess.CompletedProcess:
    """Run ``python -m rmm_dask *argv`` (a job on ``workers`` local worker processes) and attack it as it runs.

    Nothing of it may listen beyond loopback, and no attempt on the scheduler, the nannies and the dashboard
    of its main process may get in. The worker processes are stopped (SIGSTOP) for the attack, so that a small
    job cannot end before it (they are attacked running in test_local_worker_processes_let_only_the_job_in),
    then let go on (SIGCONT). The finished process, its output captured."""
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "rmm_dask", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cwd)
    stopped = set()
    expected = 2 + 3 * workers  # scheduler and dashboard; per worker its nanny here, the worker and its HTTP server
    try:
        assert wait_until(lambda: len(listening(proc.pid)) >= expected or proc.poll() is not None, timeout=120, interval=0.02)
        ports = listening(proc.pid)
        stopped = {pid for pid in ports.values() if pid != proc.pid}
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        ports = listening(proc.pid)
        assert len(stopped) == workers and proc.poll() is None, ports
        assert {host for host, _ in ports} == {"127.0.0.1"}, ports
        results = attack([connectable(p) for p, pid in ports.items() if pid == proc.pid], tmp_path / "marker")
        dashboards = {a for a, kinds in results.items() if kinds["http"] == "answered: HTTP 200"}
        assert len(results) == 2 + workers and len(dashboards) == 1, results
        assert intrusions(results, http_allowed=dashboards) == [], results
        assert proc.poll() is None
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=300)
    assert not (tmp_path / "marker").exists()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


PROCESSES = "rmm-dask:\n  cluster:\n    local-threads-below: 0\n    dashboard: true\n"  # small jobs on worker processes


def test_rmm_mask_on_worker_processes_keeps_a_stranger_out(runs, tmp_path):
    cfg = tmp_path / "rmm.yaml"
    cfg.write_text(PROCESSES)
    out = tmp_path / "m.zarr"
    argv = [a if a != "1" else "2" for a in mask_args(runs, out, "--config", str(cfg))]  # two worker processes
    done = attack_while_it_runs(argv, tmp_path, workers=2)
    assert done.returncode == 0, done.stderr
    assert out.is_dir()


def test_a_nightly_pass_keeps_a_stranger_out(tmp_path):
    import yaml

    from .test_nightly import night_runs, write_config

    night_runs(tmp_path / "facility" / "p700000", 1, flat=True)
    config = write_config(tmp_path)
    settings = yaml.safe_load(config.read_text())
    settings["rmm-dask"]["cluster"] = yaml.safe_load(PROCESSES)["rmm-dask"]["cluster"]
    config.write_text(yaml.safe_dump(settings))
    done = attack_while_it_runs(["nightly", "--config", str(config), "--once"], tmp_path, workers=1)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "masks" / "AGIPD" / "current").is_symlink(), done.stdout


def test_tcp_scheduler_refused_unless_allowed_and_tls_needs_certificates(runs, tmp_path, capsys):
    out = tmp_path / "m.zarr"
    assert main(mask_args(runs, out, "--cluster", "tcp://127.0.0.1:8786")) == 3
    one_line_error(capsys, "tcp://127.0.0.1:8786: refusing an unencrypted, unauthenticated scheduler", "allow-insecure")
    assert main(mask_args(runs, out, "--cluster", "tls://127.0.0.1:8786")) == 3
    one_line_error(capsys, "tls://127.0.0.1:8786: attaching over TLS needs your certificates", "distributed.comm.tls.ca-file")
    assert list(tmp_path.iterdir()) == []


def test_attach_over_tls_with_the_users_certificates(runs, tmp_path, capsys):
    """A scheduler the user runs with their own certificates: `--cluster tls://...` attaches with the keys of
    Dask's configuration and publishes the store."""
    from distributed import LocalCluster

    made = security.job_security()
    files = write_credentials(made, tmp_path)
    keys = {"distributed.comm.tls.ca-file": files["ca"], "distributed.comm.tls.client.cert": files["cert"],
            "distributed.comm.tls.client.key": files["key"]}
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, security=made, protocol="tls", host="127.0.0.1",
                      dashboard_address=None) as user_cluster, dask.config.set(keys):
        address = user_cluster.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        assert main(mask_args(runs, tmp_path / "m.zarr", "--cluster", address)) == 0
    assert f"(scheduler {address})" in capsys.readouterr().out and (tmp_path / "m.zarr").is_dir()


def test_credentials_on_disk_are_private_and_removed(tmp_path):
    base = tmp_path / "creds"
    with security.credentials_on_disk(base) as sec:
        directory = os.path.dirname(sec.tls_ca_file)
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700 and stat.S_IMODE(os.stat(base).st_mode) == 0o700
        for path in {sec.tls_ca_file, sec.tls_worker_key, sec.tls_scheduler_cert}:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and os.path.dirname(path) == directory
        assert "PRIVATE KEY" in open(sec.tls_worker_key).read() and sec.require_encryption
    assert os.listdir(base) == []
    # a killed job's directory is removed by the next job; another live process's is kept
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = base / f"{security.CREDENTIALS_PREFIX}{security.HOST}-{gone.pid}-abc"
    live = base / f"{security.CREDENTIALS_PREFIX}{security.HOST}-{os.getppid()}-def"
    dead.mkdir()
    live.mkdir()
    with security.credentials_on_disk(base):
        assert not dead.exists() and live.exists()


@pytest.mark.parametrize("problem", ["group-writable", "link"])
def test_credentials_refused_in_a_directory_others_can_change(tmp_path, problem):
    base = tmp_path / "creds"
    if problem == "link":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        base.symlink_to(tmp_path / "elsewhere")
    else:
        base.mkdir()
        base.chmod(0o770)
    with pytest.raises(ClusterError, match="nobody else can write"):
        with security.credentials_on_disk(base):
            pass
    assert list((tmp_path / "elsewhere").iterdir() if problem == "link" else base.iterdir()) == []


def test_slurm_scheduler_binds_narrowly_and_its_job_script_holds_no_secret(tmp_path):
    """A SLURMCluster as rmm makes it (no job submitted: Slurm is not needed): scheduler on one address, dashboard on
    loopback, the worker job script names the credential files only; a stranger's attempts on its ports fail."""
    from rmm_dask import config

    config.register_jobqueue_defaults()
    from dask_jobqueue import SLURMCluster

    before = set(listening(os.getpid()))
    with dask.config.set({"rmm-dask.cluster.credentials-directory": str(tmp_path / "creds"), **security.http_config()}):
        with security.credentials_on_disk() as sec, SLURMCluster(**slurm_options(sec)) as slurm:
            script = slurm.job_script()
            ports = [p for p in listening(os.getpid()) if p not in before]
            assert {host for host, _ in ports} <= {"127.0.0.1", security.scheduler_host()} and "0.0.0.0" not in script
            assert slurm.scheduler.address.startswith("tls://") and slurm.scheduler.http_server.address == "127.0.0.1"
            for path in (sec.tls_ca_file, sec.tls_worker_cert, sec.tls_worker_key):
                assert f" {path}" in script
            assert "PRIVATE KEY" not in script and "CERTIFICATE" not in script
            assert "--no-dashboard" in script and "DASK_DISTRIBUTED__WORKER__HTTP__ROUTES='[]'" in script
            assert '--host "$RMM_WORKER_HOST"' in script
            dashboard = f"127.0.0.1:{slurm.scheduler.http_server.port}"
            results = attack([connectable(p) for p in ports], tmp_path / "marker")
            assert intrusions(results, http_allowed={dashboard}) == [], results
    assert not (tmp_path / "marker").exists() and os.listdir(tmp_path / "creds") == []


def test_nightly_config_refuses_an_insecure_scheduler(tmp_path):
    from rmm_dask.errors import InputError
    from rmm_dask.nightly.settings import read_settings

    cfg = tmp_path / "nightly.yaml"
    cfg.write_text(
        f"nightly:\n  state: {tmp_path / 'state'}\n  publish: {tmp_path / 'pub'}\n  cluster: tcp://login1:8786\n"
        f"  detectors:\n    - {{name: A, detector: AGIPD1M, trees: [{tmp_path}]}}\n"
    )
    with pytest.raises(InputError, match="cluster: tcp://login1:8786: refusing an unencrypted, unauthenticated scheduler"):
        read_settings(cfg)


def test_rmm_submit_never_writes_its_script_through_a_planted_link(tmp_path, monkeypatch):
    """The batch script's name can be predicted (out name and time): a link planted there by someone else is
    refused in one line, its target untouched, and nothing is submitted."""
    import datetime as dt

    from rmm_dask import submit
    from rmm_dask.errors import InputError

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 12, 7, 1, 2, 3)

    monkeypatch.setattr(submit.dt, "datetime", Frozen)
    monkeypatch.setattr(submit.subprocess, "run", lambda *a, **k: pytest.fail("sbatch was called"))
    victim = tmp_path / "victim"
    victim.write_text("keep")
    planted = tmp_path / "rmm-mask-m.zarr-20261207-010203.sbatch"
    planted.symlink_to(victim)
    with pytest.raises(InputError, match="link") as err:
        submit.submit(["--dark-high", "x"], tmp_path / "m.zarr", log_dir=tmp_path)
    assert str(planted) in str(err.value) and "\n" not in str(err.value)
    assert victim.read_text() == "keep" and planted.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([victim.name, planted.name])
