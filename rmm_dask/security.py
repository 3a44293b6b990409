"""Who may talk to a job's Dask processes: per-job TLS credentials, scheduler addresses checked, ports bound narrowly.

Dask's TCP comms are unauthenticated: whoever reaches a scheduler's or worker's port can run
code in it. Every cluster rmm starts therefore speaks mutual TLS with credentials made for
that job alone (:func:`job_security`: a self-signed certificate and key, Dask's
``Security.temporary``) and listens no wider than it must: a local cluster on 127.0.0.1, a
Slurm scheduler on one address (its ``interface``, else the host's own), every dashboard
and worker HTTP server on 127.0.0.1. A client without this job's key, or with a certificate
of its own, is refused in the TLS handshake.

Local worker processes receive the key through the pipe that starts them, never in a file
others can read (Dask's TLS loads it through a private 0700 temporary directory). Slurm worker
jobs read it from files in a directory only the user can read (:func:`credentials_on_disk`:
mode 0700, under ``rmm-dask.cluster.credentials-directory``, by default
``~/.cache/rmm-dask/credentials``), removed when the job ends; the worker job
script names the files, never their contents. An existing scheduler is attached to over
``tls://`` with the user's own certificates (:func:`attach_security`, Dask's
``distributed.comm.tls.*`` keys); ``tcp://`` only with ``rmm-dask.cluster.allow-insecure``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import dask.config

from .errors import ClusterError
from .processes import HOST, alive

#: the HTTP routes of a scheduler rmm starts with a dashboard: Dask's, but the proxy (with jupyter-server-proxy
#: installed it forwards requests to other hosts and ports): the dashboard's pages, their data, metrics, health
DASHBOARD_ROUTES = [
    "distributed.http.scheduler.prometheus",
    "distributed.http.scheduler.info",
    "distributed.http.scheduler.json",
    "distributed.http.health",
    "distributed.http.statics",
]

#: dashboard pages that act rather than show: /hardware has every worker benchmark its disk, memory and network
#: (files of 100 MiB in its directory, seconds of its threads) for whoever asks for the page
ACTING_PAGES = ("/hardware",)


CREDENTIALS_PREFIX = "rmm-job-"


def job_security():
    """New TLS credentials for one job (``distributed.security.Security.temporary``: in memory, encryption required)."""
    from distributed.security import Security

    return Security.temporary()


def http_config(dashboard: bool = True) -> dict:
    """dask.config for the HTTP servers of a job's processes. Dask starts one in the scheduler and one in each
    worker whether or not a dashboard is wanted: they serve the dashboard's routes (:data:`DASHBOARD_ROUTES`)
    on the scheduler with a dashboard, else nothing (not the scheduler's logs and metrics to whoever asks).

    The dashboard's websockets answer pages of ``localhost:<its port>`` only (Dask's default is any origin:
    any web site open in the user's browser, once the ssh tunnel is up, could read the job), unless the
    user has set ``distributed.scheduler.dashboard.bokeh-application.allow_websocket_origin`` (under
    JupyterHub: the hub's host)."""
    routes = DASHBOARD_ROUTES if dashboard else []
    config = {"distributed.scheduler.http.routes": routes, "distributed.worker.http.routes": []}
    origin = "distributed.scheduler.dashboard.bokeh-application.allow_websocket_origin"
    if dashboard and dask.config.get(origin, ["*"]) == ["*"]:
        config[origin] = []  # bokeh: then localhost:<the port the dashboard got>
    return config


def drop_acting_pages() -> None:
    """Take :data:`ACTING_PAGES` out of the pages the schedulers of this process serve (Dask has no setting for it;
    its dashboard's page table is read when a scheduler starts, and every scheduler rmm starts runs here)."""
    from distributed.dashboard import scheduler as pages

    for path in ACTING_PAGES:
        pages.applications.pop(path, None)


def credentials_base() -> Path:
    """The directory under which Slurm jobs keep their credentials (``rmm-dask.cluster.credentials-directory``)."""
    configured = dask.config.get("rmm-dask.cluster.credentials-directory", None)
    if configured:
        return Path(os.path.expandvars(os.path.expanduser(str(configured))))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "rmm-dask" / "credentials"


def _checked_base(base: Path) -> Path:
    """``base``, made if needed (0700); refused unless it is a directory (no link) of this user that only it writes."""
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(base)
    except OSError as err:
        raise ClusterError(f"{base}: cannot make the directory for the job's credentials ({err.strerror})") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ClusterError(
            f"{base}: the job's credentials need a directory of your own that nobody else can write (not a link, "
            f"owner uid {os.getuid()}, no group or other write); see rmm-dask.cluster.credentials-directory"
        )
    return base


@contextlib.contextmanager
def credentials_on_disk(base: Path | None = None):
    """A ``Security`` whose key and certificates are files in a new directory of mode 0700, removed after the block.

    For worker jobs on other hosts: they read the files (``base`` must be on a filesystem they
    see, as the home directory is on clusters). The directory is ``<base>/rmm-job-<host>-<pid>-<random>``;
    those of killed jobs (this host, the process gone) are removed first.
    """
    from distributed.security import Security

    base = _checked_base(Path(base) if base else credentials_base())
    remove_dead(base, CREDENTIALS_PREFIX)
    directory = Path(tempfile.mkdtemp(prefix=f"{CREDENTIALS_PREFIX}{HOST}-{os.getpid()}-", dir=base))  # mode 0700
    try:
        made = job_security()
        files = {}
        for name, pem in (("ca.pem", made.tls_ca_file), ("key.pem", made.tls_worker_key)):
            path = directory / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(pem)
            files[name] = str(path)
        # one self-signed certificate is the CA and every role's certificate (as Security.temporary)
        cert, key = files["ca.pem"], files["key.pem"]
        yield Security(
            require_encryption=True, tls_ca_file=cert, tls_client_cert=cert, tls_client_key=key,
            tls_scheduler_cert=cert, tls_scheduler_key=key, tls_worker_cert=cert, tls_worker_key=key,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def address_problem(address: str, allow_insecure: bool | None = None) -> str | None:
    """Why rmm will not attach to the scheduler at ``address``, or None: ``tls://`` is fine; ``tcp://`` is
    unauthenticated and unencrypted, refused unless ``allow_insecure`` (default: rmm-dask.cluster.allow-insecure)."""
    scheme = address.split("://", 1)[0].lower()
    if scheme == "tls":
        return None
    if scheme == "tcp":
        if allow_insecure is None:
            allow_insecure = bool(dask.config.get("rmm-dask.cluster.allow-insecure", False))
        return None if allow_insecure else (
            "refusing an unencrypted, unauthenticated scheduler (anyone who reaches it can run code as you and "
            "change the masks); use tls:// or set rmm-dask.cluster.allow-insecure: true"
        )
    return "not a scheduler address rmm uses (tls://host:port; tcp:// with allow-insecure)"


def attach_security(address: str):
    """The ``Security`` to attach to an existing scheduler at ``address``; ClusterError for an address rmm will not use
    (:func:`address_problem`). ``tls://`` uses the user's own certificates from Dask's configuration
    (``distributed.comm.tls.ca-file``, ``distributed.comm.tls.client.cert`` and ``.key``)."""
    from distributed.security import Security

    problem = address_problem(address)
    if problem:
        raise ClusterError(f"{address}: {problem}")
    if address.split("://", 1)[0].lower() == "tcp":
        return Security()
    security = Security(require_encryption=True)
    if not (security.tls_ca_file and security.tls_client_cert):
        raise ClusterError(
            f"{address}: attaching over TLS needs your certificates in Dask's configuration "
            f"(distributed.comm.tls.ca-file, distributed.comm.tls.client.cert and .key); nothing was published"
        )
    return security


def remove_dead(base: str | os.PathLike, prefix: str) -> None:
    """Remove the directories ``<prefix><host>-<pid>-*`` in ``base`` that this user's killed processes on this host left
    (its scratch spaces, its credentials); those of live processes, of other hosts, and links are left alone."""
    name = re.compile(rf"^{re.escape(prefix)}{re.escape(HOST)}-(\d+)-[^/]+$")
    try:
        entries = list(os.scandir(base))
    except OSError:
        return
    for entry in entries:
        m = name.match(entry.name)
        try:
            mine = entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_uid == os.getuid()
            if not m or not mine:
                continue
        except OSError:
            continue
        if not alive(int(m[1])):
            shutil.rmtree(entry.path, ignore_errors=True)  # never follows links inside


def scheduler_host() -> str:
    """The one address a Slurm job's scheduler binds to when no ``interface`` is configured: the host's own
    (the address of its hostname, else the one its default route leaves from), never all interfaces.
    ClusterError when neither is found: the worker jobs could not reach the scheduler."""
    import warnings

    from distributed.utils import get_ip

    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        address = None
    if not address or address.startswith("127."):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Couldn't detect a suitable IP address": said below, once
                address = get_ip()
        except (OSError, ValueError):
            address = None
    if not address or address.startswith("127."):
        raise ClusterError(
            f"cannot tell at which address worker jobs reach {socket.gethostname()} (its name does not resolve and "
            "it has no default route); set interface: in the jobqueue configuration (e.g. ib0)"
        )
    return address


def dashboard_lines(url: str, what: str, host: str | None = None) -> str:
    """'dashboard: <url>  (<what>)', then how to open it from elsewhere when it listens on the loopback of ``host``:
    the ssh tunnel, and the path through jupyter-server-proxy under JupyterHub."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    lines = [f"dashboard: {url}  ({what})"]
    if parts.hostname in ("127.0.0.1", "localhost", "::1"):
        host = host or socket.gethostname()
        lines.append(f"  on {host} only; from elsewhere: ssh -L {parts.port}:127.0.0.1:{parts.port} {host}, "
                     f"then http://localhost:{parts.port}{parts.path}")
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if prefix:
        lines.append(f"  in JupyterHub: {prefix.rstrip('/')}/proxy/{parts.port}{parts.path}")
    return "\n".join(lines)
