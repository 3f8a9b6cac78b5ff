"""TLS benchmark: a unary call over the Unix socket, plaintext TCP and mutual TLS, both engine_proc.

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

from bench.stats import machine, summary, table
from core.api.containerd.services.version import v1 as version
from core.api.google.protobuf import Empty
from core.client import Client, ClientTLS
from tests import engine_proc
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


async def paired(
    engine: str, unix: str, tcp: str, tls: ClientTLS | None, calls: int
) -> tuple[dict[str, float], dict[str, float]]:
    """The same call over the Unix socket and over TCP, alternating, so both see the same load."""
    local = Client(unix, "default")
    remote = Client(tcp, "default", tls=tls)
    try:
        calls_of = (call_for(engine, local), call_for(engine, remote))
        for _ in range(100):
            for call in calls_of:
                await call()
        samples: tuple[list[float], list[float]] = ([], [])
        for _ in range(calls):
            for call, out in zip(calls_of, samples, strict=True):
                t = time.perf_counter()
                await call()
                out.append((time.perf_counter() - t) * 1000)
        return summary(samples[0]), summary(samples[1])
    finally:
        local.close()
        remote.close()


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
    engine: str, unix: str, tcp: str, tls: ClientTLS | None, calls: int
) -> dict[str, dict[str, float]]:
    via_unix, via_tcp = await paired(engine, unix, tcp, tls, calls)
    out = {"unix": via_unix, "tcp": via_tcp, "connect unix": await connects(engine, unix, None)}
    out["connect tcp"] = await connects(engine, tcp, tls)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        pki = make_pki(Path(tmp))
        tls = ClientTLS(ca=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key))
        results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
        cri_tcp = '[plugins."io.containerd.grpc.v1.cri"]\ndisable_tcp_service = false\n'
        for name in ("containerd", "ctrdeck"):
            for mode, use in (("plaintext", None), ("mtls", tls)):
                port = free_port()
                grpc = tcp_config(port, pki if use else None)
                if name == "containerd":
                    start = engine_proc.containerd(grpc + cri_tcp, cri=True)
                else:
                    start = engine_proc.ctrdeck(f"version = 2\n[grpc]\n{grpc}")
                with start as running:
                    address = f"tcp://127.0.0.1:{port}"
                    results.setdefault(name, {})[mode] = asyncio.run(
                        measure(name, str(running.address), address, use, args.calls)
                    )
    rows = []
    for mode, key, what in [
        ("mtls", "unix", "unary over the Unix socket"),
        ("plaintext", "tcp", "unary over plaintext TCP"),
        ("mtls", "tcp", "unary over mutual TLS"),
        ("mtls", "connect unix", "new connection + first call, Unix socket"),
        ("mtls", "connect tcp", "new connection + first call, mutual TLS"),
    ]:
        cd, cx = results["containerd"][mode][key], results["ctrdeck"][mode][key]
        for p in ("p50", "p99"):
            rows.append((f"{what}, {p}", cd[p], cx[p], "ms"))
    print(f"machine: {machine()}\n")
    print(table(rows))
    print("\nover TCP / over the Unix socket, p50, each pair timed alternately:")
    for name, r in results.items():
        plain = r["plaintext"]["tcp"]["p50"] / r["plaintext"]["unix"]["p50"]
        mtls = r["mtls"]["tcp"]["p50"] / r["mtls"]["unix"]["p50"]
        print(f"- {name}: plaintext TCP {plain:.2f}x, mutual TLS {mtls:.2f}x")


if __name__ == "__main__":
    main()
