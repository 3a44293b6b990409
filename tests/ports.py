"""The ports a job's processes listen on (read from /proc, so also inside other network namespaces) and the
attack of tests/attack.py on them, from another process."""

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil

ATTACK = Path(__file__).with_name("attack.py")


def _address(hex_address: str) -> tuple[str, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = ipaddress.IPv4Address(raw[::-1])
    else:  # four 32-bit words, each in host (little-endian) order
        ip = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def listening(pid: int) -> dict[tuple[str, int], int]:
    """{(bind address, port): pid} of the TCP sockets that ``pid`` and its descendants listen on."""
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    found = {}
    for proc in procs:
        try:
            inodes = set()
            for fd in os.listdir(f"/proc/{proc.pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
                except FileNotFoundError:  # closed meanwhile
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
            for table in ("tcp", "tcp6"):
                with open(f"/proc/{proc.pid}/net/{table}") as f:  # the table of the process's own network namespace
                    for line in f.readlines()[1:]:
                        fields = line.split()
                        if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                            found[_address(fields[1])] = proc.pid
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # the process ended meanwhile
    return found


def connectable(bound: tuple[str, int]) -> str:
    """host:port to connect to a socket bound to ``bound`` (an all-interfaces bind is tried on loopback)."""
    host, port = bound
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def attack(addresses, marker, *, credentials=None) -> dict:
    """Run tests/attack.py in a new process against ``addresses``; its results."""
    extra = []
    if credentials:
        extra = ["--ca", credentials["ca"], "--cert", credentials["cert"], "--key", credentials["key"]]
    proc = subprocess.run([sys.executable, str(ATTACK), *addresses, "--marker", str(marker), *extra], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def intrusions(results: dict, *, http_allowed=()) -> list[str]:
    """The attempts that got in (empty when every one failed); a GET of an address in ``http_allowed`` may answer."""
    return [
        f"{address} {kind}: {outcome}"
        for address, kinds in results.items()
        for kind, outcome in kinds.items()
        if not outcome.startswith("failed") and not (kind == "http" and address in http_allowed)
    ]
