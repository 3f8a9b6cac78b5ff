"""Event-loop stalls while the engine collects garbage and serves a scrape.

Builds an engine in this process (its own root and state under /tmp) holding
`--blobs` committed blobs that nothing references, then, with a loop-lag probe
running (a task that sleeps 1 ms and records how late it wakes), measures the
longest stall of the engine's event loop during: a Prometheus scrape of the
engine's metrics, one garbage collection that removes every blob, building
the TLS settings for an HTTPS registry (with its own CA bundle), and, for
scale, nothing at all (what the host's load alone costs). A stall is time
during which no request on the engine's loop could have been served.

    .venv/bin/python -m bench.bench_gc [--blobs 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.stats import pct
from core.config import from_dict
from core.engine import Engine
from core.errors import Unavailable
from core.images.hosts import Hosts
from core.images.registry import RegistryClient, RetryPolicy
from core.server import engine_metrics

NAMESPACE = "bench-gc"
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LagProbe:
    """Wakes every millisecond on the loop and records how late each wake-up was."""

    def __init__(self, period: float = 0.001) -> None:
        self.period = period
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.period)
            self.lags.append(time.perf_counter() - start - self.period)

    def __enter__(self) -> LagProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def populate(engine: Engine, count: int) -> None:
    """`count` small committed blobs owned by the namespace, referenced by nothing."""
    with engine.metadata.db.tx():
        for i in range(count):
            data = f"bench blob {i}\n".encode() * 16
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            writer = engine.content.open_writer(f"bench-{i}", len(data), digest)
            writer.write(data)
            writer.commit(len(data), digest)
            engine.metadata.content.add(NAMESPACE, digest, len(data), {}, None)


async def stalled(action: Callable[[], Awaitable[Any]]) -> tuple[float, float, float]:
    """(longest stall, p99 stall, duration) in ms while `action` runs on the loop."""
    with LagProbe() as probe:
        await asyncio.sleep(0.01)
        probe.lags.clear()
        started = time.perf_counter()
        await action()
        took = time.perf_counter() - started
        await asyncio.sleep(0.01)
    lags = probe.lags or [0.0]
    return max(lags) * 1000, pct(lags, 99) * 1000, took * 1000


async def main(blobs: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="ctrdeck-bench-gc-", dir="/tmp"))
    config = from_dict({"version": 2, "root": str(base / "root"), "state": str(base / "state")})
    engine = Engine(config)
    try:
        await engine.start()
        populate(engine, blobs)
        metrics = engine_metrics(engine)

        async def scrape() -> None:
            metrics.exposition()

        async def collect() -> None:
            result = await engine.gc.collect(wait=True)
            assert result is not None and len(result.content_removed) == blobs

        idle_for = [1.0]

        async def idle() -> None:
            await asyncio.sleep(idle_for[0])

        async def tls() -> None:
            # An HTTPS registry with its own CA (the system bundle, as big as they come),
            # on a port nobody listens on: the resolve builds the TLS settings, then fails.
            port = free_port()
            certs = base / "certs.d" / f"127.0.0.1:{port}"
            certs.mkdir(parents=True, exist_ok=True)
            (certs / "hosts.toml").write_text(
                f'server = "https://127.0.0.1:{port}"\n'
                f'[host."https://127.0.0.1:{port}"]\nca = "{SYSTEM_CA}"\n'
            )
            hosts = Hosts(config_path=str(base / "certs.d"))
            async with RegistryClient(hosts, retry=RetryPolicy(attempts=1)) as client:
                with contextlib.suppress(Unavailable):
                    await client.resolve(f"127.0.0.1:{port}/app:v1")

        # The first request of a process imports httpx's connection machinery; not
        # what is measured here.
        await tls()
        rows = [
            (f"metrics scrape ({blobs} blobs)", await stalled(scrape)),
            (f"garbage collection of {blobs} blobs", await stalled(collect)),
            ("TLS settings for an HTTPS registry", await stalled(tls)),
        ]
        # As long as the collection took, so both had the same chance to meet the
        # host's worst moment.
        idle_for[0] = rows[1][1][2] / 1000
        rows.append(("nothing, as long as the collection (for scale)", await stalled(idle)))
        print("| while | longest loop stall | p99 stall | took |")
        print("|---|---|---|---|")
        for what, (worst, p99, took) in rows:
            print(f"| {what} | {worst:.1f} ms | {p99:.2f} ms | {took:.0f} ms |")
        leftover = sum(1 for _ in engine.content.walk())
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"\nblobs left on disk after the collection: {leftover}; host load {load}")
    finally:
        await engine.stop()
        engine.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=5000)
    asyncio.run(main(parser.parse_args().blobs))
