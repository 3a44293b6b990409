"""What a stranger on the same host tries against a job's ports; run as a separate process by tests/test_security.py.

    python tests/attack.py HOST:PORT [HOST:PORT ...] --marker FILE [--ca CA --cert CERT --key KEY]

For every address: Dask's own protocol over plain TCP (an ``identity`` call, then a function
that writes ``FILE``, as the scheduler, a worker or a nanny would run it), the same over TLS
with a self-signed certificate of the attacker's own, and a plain HTTP GET of ``/``. Prints
one JSON object: {address: {"tcp": outcome, "tls-own-cert": outcome, "http": outcome}},
where an outcome is "answered: ..." (got in) or "failed: ..." (kept out). With the job's
own credentials (``--ca/--cert/--key``) it tries TLS with them instead, as the control that
shows the attempts could succeed at all.
"""

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request

import dask
from distributed.core import rpc
from distributed.protocol.pickle import dumps
from distributed.security import Security


def write_marker(path):
    with open(path, "w") as f:
        f.write("got in")
    return "wrote"


async def dask_call(address: str, security: Security, marker: str) -> str:
    try:
        async with rpc(address, connection_args=security.get_connection_args("client")) as r:
            who = await asyncio.wait_for(r.identity(), 5)
            ran = None
            try:  # the scheduler runs it as run_function, a worker or nanny as run
                ran = await asyncio.wait_for(r.run_function(function=dumps(write_marker), args=dumps((marker,))), 5)
            except Exception:
                try:
                    ran = await asyncio.wait_for(r.run(function=dumps(write_marker), args=dumps((marker,))), 5)
                except Exception as err:
                    ran = f"run refused ({type(err).__name__})"
            return f"answered: {who.get('type', who)}; {ran}"
    except Exception as err:
        return f"failed: {type(err).__name__}: {str(err)[:120]}"


def http_get(address: str) -> str:
    try:
        with urllib.request.urlopen(f"http://{address}/", timeout=5) as response:
            return f"answered: HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return f"failed: HTTP {err.code}"
    except Exception as err:
        return f"failed: {type(err).__name__}: {str(err)[:120]}"


async def attack(addresses, marker, own):
    stranger = Security.temporary()  # a certificate and key of the attacker's own
    plain = Security()
    loop = asyncio.get_running_loop()

    async def one(address):
        if own is not None:
            return {"tls-job-cert": await dask_call(f"tls://{address}", own, marker)}
        tcp, tls, http = await asyncio.gather(
            dask_call(f"tcp://{address}", plain, marker),
            dask_call(f"tls://{address}", stranger, marker),
            loop.run_in_executor(None, http_get, address),
        )
        return {"tcp": tcp, "tls-own-cert": tls, "http": http}

    outcomes = await asyncio.gather(*(one(a) for a in addresses))  # all at once: a round takes one timeout
    return dict(zip(addresses, outcomes))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("addresses", nargs="+")
    p.add_argument("--marker", required=True)
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    args = p.parse_args()
    own = None
    if args.ca:
        own = Security(tls_ca_file=args.ca, tls_client_cert=args.cert, tls_client_key=args.key, require_encryption=True)
    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        results = asyncio.run(attack(args.addresses, args.marker, own))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
