"""TLS benchmark: a unary call over the Unix socket, plaintext TCP and mutual TLS, both engines.

Both engines get a TCP listener on 127.0.0.1 with certificates made for the run
(`tests/tls_certs.py`: EC P-256, TLS 1.3): once plaintext, once with
`tcp_tls_cert`, `tcp_tls_key` and `tcp_tls_ca` (mutual TLS). containerd 1.6's
TCP listener serves only the services that register for it, which is CRI's
alone (with `disable_tcp_service = false`), so containerd's call is CRI's
`RuntimeService/Version` and ctrdeck's is `Version/Version`: both trivial
unary calls, each timed on all three transports of its own engine, so the
transport's cost is what differs down a column. Also timed: a fresh connection
with its handshake and first call. Prints a markdown table.

    .venv/bin/python -m bench.bench_tls [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from grpclib.const import Cardinality

from bench import engines
from bench.stats import summary, table
from core.api.containerd.services.version import v1 as version
from core.api.google.protobuf import Empty
from core.client import Client, ClientTLS
from tests.tls_certs import Pki, make_pki

CRI_VERSION = "/runtime.v1.RuntimeService/Version"
CONNECTS = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_config(port: int, pki: Pki | None) -> str:
    lines = [f'tcp_address = "127.0.0.1:{port}"']
    if pki is not None:
        lines += [
            f'tcp_tls_cert = "{pki.server_cert}"',
            f'tcp_tls_key = "{pki.server_key}"',
            f'tcp_tls_ca = "{pki.ca}"',
        ]
    return "\n".join(lines) + "\n"


def call_for(engine: str, client: Client) -> Callable[[], Awaitable[object]]:
    if engine == "ctrdeck":
        return client.server_version

    async def cri_version() -> object:
        # CRI's VersionResponse shares fields 1 and 2 (strings) with containerd's.
        async with client.channel.request(
            CRI_VERSION, Cardinality.UNARY_UNARY, Empty, version.VersionResponse
        ) as stream:
            await stream.send_message(Empty(), end=True)
            return await stream.recv_message()

    return cri_version


async def unary(engine: str, address: str, tls: ClientTLS | None, calls: int) -> dict[str, float]:
    client = Client(address, "default", tls=tls)
    try:
        call = call_for(engine, client)
        for _ in range(100):
            await call()
        samples = []
        for _ in range(calls):
            t = time.perf_counter()
            await call()
            samples.append((time.perf_counter() - t) * 1000)
        return summary(samples)
    finally:
        client.close()


async def connects(engine: str, address: str, tls: ClientTLS | None) -> dict[str, float]:
    samples = []
    for _ in range(CONNECTS):
        t = time.perf_counter()
        client = Client(address, "default", tls=tls)
        try:
            await call_for(engine, client)()
        finally:
            client.close()
        samples.append((time.perf_counter() - t) * 1000)
    return summary(samples)


async def measure(
    engine: str, unix: str, mtls: str, tls: ClientTLS, calls: int
) -> dict[str, dict[str, float]]:
    return {
        "unix": await unary(engine, unix, None, calls),
        "mtls": await unary(engine, mtls, tls, calls),
        "connect unix": await connects(engine, unix, None),
        "connect mtls": await connects(engine, mtls, tls),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        pki = make_pki(Path(tmp))
        tls = ClientTLS(ca=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key))
        results = {}
        cri_tcp = '[plugins."io.containerd.grpc.v1.cri"]\ndisable_tcp_service = false\n'
        for name in ("containerd", "ctrdeck"):
            for secure in (False, True):
                port = free_port()
                grpc = tcp_config(port, pki if secure else None)
                if name == "containerd":
                    start = engines.containerd(grpc + cri_tcp, cri=True)
                else:
                    start = engines.ctrdeck(f"version = 2\n[grpc]\n{grpc}")
                with start as running:
                    address = f"tcp://127.0.0.1:{port}"
                    if not secure:
                        plain = asyncio.run(unary(name, address, None, args.calls))
                        continue
                    found = asyncio.run(
                        measure(name, str(running.address), address, tls, args.calls)
                    )
                    found["tcp"] = plain
                    results[name] = found
    cd, cx = results["containerd"], results["ctrdeck"]
    rows = []
    for key, what in [
        ("unix", "unary over the Unix socket"),
        ("tcp", "unary over plaintext TCP"),
        ("mtls", "unary over mutual TLS"),
        ("connect unix", "new connection + first call, Unix socket"),
        ("connect mtls", "new connection + first call, mutual TLS"),
    ]:
        for p in ("p50", "p99"):
            rows.append((f"{what}, {p}", cd[key][p], cx[key][p], "ms"))
    print(f"machine: {engines.machine()}\n")
    print(table(rows))
    for name, r in (("containerd", cd), ("ctrdeck", cx)):
        print(
            f"\n{name}: mutual TLS / Unix socket, p50: {r['mtls']['p50'] / r['unix']['p50']:.2f}x"
            f"; plaintext TCP / Unix socket: {r['tcp']['p50'] / r['unix']['p50']:.2f}x"
        )


if __name__ == "__main__":
    main()
