"""Fault campaign against the server layer (issue 10, items 1 to 4).

Starts the engine of this checkout (tests/engine_proc.py, default config)
and attacks it with the clients of tests/h2attack.py, printing one figure per
line:

1. stream-reset floods: RSS before and after each round of 10,000 streams
   opened and reset at once on one connection, whether the engine said
   GOAWAY, and whether `ctr version` still answers;
2. oversized messages: a 20 MiB and a 64 MiB Containers.Create, the status,
   how much of the body the engine let in, its RSS, and whether
   `ctr containers ls` still works;
3. malformed protobuf: the status and message for each payload, and the
   tracebacks the engine logged;
4. half-open connections: seconds until the engine closed a connection
   holding a truncated preface, or a frame header promising 16 MiB.

    .venv/bin/python -m bench.fault_server [--rounds 5] [--hold 25]

To measure a tree without the fixes, copy this file and tests/h2attack.py
into it and run the same command there.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from core.api.containerd.services.containers import v1 as containers
from core.api.google.protobuf import Any
from tests import h2attack
from tests.engine_proc import EngineProcess

CREATE = "/containerd.services.containers.v1.Containers/Create"
GET = "/containerd.services.containers.v1.Containers/Get"
MALFORMED = [
    ("id as varint", GET, b"\x08\x05"),
    ("container as varint", CREATE, b"\x08\x05"),
    ("id not UTF-8", GET, b"\x0a\x02\xff\xfe"),
    ("wire type 7", GET, b"\x0f"),
    ("truncated id", GET, b"\x0a\x10abc"),
]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def ctr_ok(address: Path, *args: str) -> bool:
    proc = subprocess.run(
        ["ctr", "--address", str(address), *args], capture_output=True, text=True, timeout=60
    )
    return proc.returncode == 0


def create(cid: str, spec: bytes = b"{}", labels: dict[str, str] | None = None) -> bytes:
    message = containers.CreateContainerRequest(
        container=containers.Container(
            id=cid,
            runtime=containers.ContainerRuntime(name="io.containerd.runc.v2"),
            spec=Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=spec),
            labels=labels or {},
        )
    )
    return h2attack.grpc_frame(bytes(message))


def resets(engine: EngineProcess, pid: int, rounds: int) -> None:
    print(f"1. reset floods: start RSS {rss_mib(pid)} MiB")
    for i in range(rounds):
        result = h2attack.reset_flood(engine.address, 10_000)
        time.sleep(0.3)
        print(
            f"   round {i + 1}: {result['sent']} streams sent, goaway={bool(result['goaway'])},"
            f" RSS {rss_mib(pid)} MiB, ctr version ok={ctr_ok(engine.address, 'version')}"
        )


def sizes(engine: EngineProcess, pid: int) -> None:
    print(f"2. oversized messages: start RSS {rss_mib(pid)} MiB")
    for name, body in [
        ("20 MiB spec", create("big-spec", spec=b'"' + b"x" * (20 << 20) + b'"')),
        ("64 MiB label", create("big-label", labels={"l": "x" * (64 << 20)})),
    ]:
        status, message, sent = h2attack.unary(engine.address, CREATE, body, timeout=120)
        print(
            f"   {name}: status={status} {message[:70]!r}, {sent >> 20} of {len(body) >> 20} MiB"
            f" let in, RSS {rss_mib(pid)} MiB,"
            f" ctr containers ls ok={ctr_ok(engine.address, 'containers', 'ls')}"
        )


def malformed(engine: EngineProcess) -> None:
    print("3. malformed protobuf:")
    for name, path, payload in MALFORMED:
        status, message, _ = h2attack.unary(engine.address, path, h2attack.grpc_frame(payload))
        print(f"   {name}: status={status} {message[:90]!r}")
    print(f"   tracebacks logged: {engine.log.read_text().count('Traceback')}")


def half_open(engine: EngineProcess, hold: float) -> None:
    print(f"4. half-open connections (waiting up to {hold} s each):")
    for name, payload in [
        ("truncated preface", h2attack.PREFACE[:10]),
        ("16 MiB frame header", h2attack.promised_frame((1 << 24) - 1)),
    ]:
        took = h2attack.held_open(engine.address, payload, hold)
        shown = "still open" if took is None else f"closed after {took:.1f} s"
        print(f"   {name}: {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hold", type=float, default=25.0)
    args = parser.parse_args()
    engine = EngineProcess().start()
    try:
        assert engine.proc is not None
        pid = engine.proc.pid
        resets(engine, pid, args.rounds)
        sizes(engine, pid)
        malformed(engine)
        half_open(engine, args.hold)
    finally:
        engine.stop(cleanup=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
