"""The engine's Prometheus metrics and the HTTP listener that serves them.

`EngineMetrics` owns one private `CollectorRegistry` per engine: counters the
gRPC observer and the pull pipeline feed as calls happen, and a collector that
reads the rest at scrape time from the engine's parts it is given (`Sources`:
events, garbage collection, content store, snapshot records, tasks; the server
wires them) and from the tasks' cgroups,
through the same shared samples as `Tasks.Metrics` (`core/runtime/sampler.py`).
`MetricsListener` answers `GET /metrics` and `GET /v1/metrics` from the
engine's own event loop, so every collector runs on the loop thread that owns
the metadata database. The listener exists only when `[metrics] address` asks
for it; an address that cannot be bound stops the engine with `AddressInUse`
or `FailedPrecondition` naming the address.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from grpclib.const import Status
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from core.errors import CtrdeckError, FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    from core.content.store import ContentStore
    from core.events.exchange import Exchange
    from core.gc import GarbageCollector
    from core.metadata.snapshots import SnapshotStore
    from core.runtime.tasks import TaskManager
    from core.snapshots import Snapshotter

log = logging.getLogger("ctrdeck.metrics")

PATHS = frozenset({"/metrics", "/v1/metrics"})
PULL_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
MAX_REQUEST_HEAD = 16 * 1024
REQUEST_TIMEOUT = 10.0


class AddressInUse(FailedPrecondition):
    """Another process already listens on the configured metrics address."""


def operation_name(method: str) -> str:
    """`/containerd.services.images.v1.Images/Create` -> `images.Create`."""
    service, _, name = method.lstrip("/").rpartition("/")
    short = service.rpartition(".")[2].lower()
    return f"{short}.{name}" if short else name


@dataclass(frozen=True)
class Sources:
    """The engine's parts the metrics read at scrape time (the server wires them)."""

    events: Exchange
    gc: GarbageCollector
    content: ContentStore
    snapshotters: Mapping[str, Snapshotter]
    snapshot_records: SnapshotStore
    tasks: TaskManager


class EngineMetrics:
    """Every metric one engine exposes, on a registry of its own."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.registry = CollectorRegistry()
        self.operations = Counter(
            "container_runtime_operations",
            "Container runtime operations by operation (gRPC service.Method) and namespace.",
            ["operation", "namespace"],
            registry=self.registry,
        )
        self.operation_errors = Counter(
            "container_runtime_operations_errors",
            "Container runtime operations that ended with an error, by operation and namespace.",
            ["operation", "namespace"],
            registry=self.registry,
        )
        self.pull_duration = Histogram(
            "container_image_pull_duration_seconds",
            "Time taken by image pulls, from the first registry request to the stored image.",
            ["namespace"],
            buckets=PULL_BUCKETS,
            registry=self.registry,
        )
        self.grpc_requests = Counter(
            "ctrdeck_grpc_requests",
            "gRPC requests served, by full method name and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.grpc_duration = Histogram(
            "ctrdeck_grpc_request_duration_seconds",
            "Time from receiving a gRPC request to its status, by full method name.",
            ["method"],
            registry=self.registry,
        )
        self._grpc_children: dict[
            tuple[str, str | None, Status], tuple[tuple[Counter, ...], Histogram]
        ] = {}
        self.collector = _EngineCollector(sources)
        self.registry.register(self.collector)

    def observe_grpc(
        self, method: str, namespace: str | None, code: Status, seconds: float
    ) -> None:
        """An `EngineServer.observers` entry: one finished gRPC call."""
        key = (method, namespace, code)
        children = self._grpc_children.get(key)
        if children is None:
            children = self._grpc_children[key] = self._children_of(method, namespace, code)
        for counter in children[0]:
            counter.inc()
        children[1].observe(seconds)

    def _children_of(
        self, method: str, namespace: str | None, code: Status
    ) -> tuple[tuple[Counter, ...], Histogram]:
        # `labels()` takes a lock and builds its key on every use; a call's
        # metrics are looked up once per (method, namespace, code) instead.
        operation = operation_name(method)
        ns = namespace or ""
        counters = [
            self.operations.labels(operation, ns),
            self.grpc_requests.labels(method, code.name),
        ]
        if code is not Status.OK:
            counters.append(self.operation_errors.labels(operation, ns))
        return tuple(counters), self.grpc_duration.labels(method)

    def observe_pull(self, namespace: str, seconds: float) -> None:
        """A `Puller` observer: one image pull that stored its image."""
        self.pull_duration.labels(namespace).observe(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric, collected now."""
        return generate_latest(self.registry)

    async def scrape(self) -> bytes:
        """`exposition`, with every task's cgroup sampled in a worker first.

        Reading them is file I/O per task, which must not stall the engine's
        loop at each scrape; the rest of a collection reads memory only. The
        samples are the ones `Tasks.Metrics` shares (`core/runtime/sampler.py`),
        so a scrape next to a console's poll reads nothing twice.
        """
        try:
            found = await self.sources.tasks.samples(self.sources.tasks.list())
        except CtrdeckError:
            found = []  # a host without cgroups: no per-task gauges
        self.collector.usage = {(t.namespace, t.id): (s.memory, s.cpu_ns / 1e9) for t, s in found}
        try:
            return self.exposition()
        finally:
            self.collector.usage = {}


class _EngineCollector(Collector):
    """Figures read from the engine's parts and the kernel at scrape time."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        # Each task's (memory, CPU) for the scrape under way, read off the loop by `scrape`.
        self.usage: dict[tuple[str, str], tuple[int | None, float | None]] = {}

    def describe(self) -> list[Metric]:
        # Declaring the families without reading anything keeps registration
        # (which calls describe) free of I/O.
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        yield from self._fill(families)

    def _families(self) -> dict[str, Metric]:
        return {
            "published": CounterMetricFamily(
                "ctrdeck_events_published", "Events published on the exchange since start."
            ),
            "subscribers": GaugeMetricFamily(
                "ctrdeck_event_subscribers", "Event subscribers connected now."
            ),
            "gc_runs": CounterMetricFamily(
                "ctrdeck_gc_runs", "Garbage collection passes since start."
            ),
            "gc_removed": CounterMetricFamily(
                "ctrdeck_gc_removed",
                "Resources garbage collection removed since start, by kind.",
                labels=["kind"],
            ),
            "content_bytes": GaugeMetricFamily(
                "ctrdeck_content_store_bytes", "Bytes of committed blobs in the content store."
            ),
            "snapshots": GaugeMetricFamily(
                "ctrdeck_snapshots", "Snapshots recorded, by snapshotter.", labels=["snapshotter"]
            ),
            "memory": GaugeMetricFamily(
                "container_memory_usage_bytes",
                "Memory used by a container's cgroup, by namespace and container.",
                labels=["namespace", "container"],
            ),
            "cpu": CounterMetricFamily(
                "container_cpu_usage_seconds",
                "CPU time consumed by a container's cgroup, by namespace and container.",
                labels=["namespace", "container"],
            ),
        }

    def _fill(self, f: dict[str, Metric]) -> Iterator[Metric]:
        parts = self.sources
        f["published"].add_metric([], parts.events.published)
        f["subscribers"].add_metric([], parts.events.subscriber_count)
        f["gc_runs"].add_metric([], parts.gc.runs)
        for kind, count in sorted(parts.gc.removed.items()):
            f["gc_removed"].add_metric([kind], count)
        f["content_bytes"].add_metric([], parts.content.total_bytes())
        for snapshotter, count in sorted(self._snapshot_counts().items()):
            f["snapshots"].add_metric([snapshotter], count)
        for (namespace, cid), (memory, cpu) in sorted(self.usage.items()):
            if memory is not None:
                f["memory"].add_metric([namespace, cid], memory)
            if cpu is not None:
                f["cpu"].add_metric([namespace, cid], cpu)
        yield from f.values()

    def _snapshot_counts(self) -> dict[str, int]:
        # A loaded snapshotter with no snapshots still reports its zero.
        parts = self.sources
        return dict.fromkeys(parts.snapshotters, 0) | parts.snapshot_records.counts()


# --- the HTTP listener -------------------------------------------------------


def parse_address(address: str) -> tuple[str | None, int]:
    """`host:port`, `[v6]:port` or `:port` (every interface, as containerd reads it)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"metrics.address {address!r} must be host:port")
    host = host.strip("[]")
    return (host or None), int(port)


class MetricsListener:
    """A minimal HTTP/1.1 responder for scrapes, running on the engine's loop."""

    def __init__(self, server: asyncio.Server, address: str) -> None:
        self.server = server
        self.address = address

    async def close(self) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), timeout=5)


async def serve(metrics: EngineMetrics, address: str) -> MetricsListener:
    """Listen on `address`; raises `AddressInUse` or `FailedPrecondition` naming it."""
    host, port = parse_address(address)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _answer(metrics, reader, writer)
        except (
            ConnectionError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    try:
        server = await asyncio.start_server(handle, host, port, limit=MAX_REQUEST_HEAD)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(
                f"metrics address {address} is already in use by another process; "
                "stop it or set another [metrics] address in config.toml"
            ) from None
        reason = exc.strerror or os.strerror(exc.errno or 0) or str(exc)
        raise FailedPrecondition(f"cannot listen on metrics address {address}: {reason}") from None
    listener = MetricsListener(server, address)
    log.info("serving metrics on http://%s/metrics", address)
    return listener


async def _answer(
    metrics: EngineMetrics, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        await _respond(writer, 400, b"bad request\n")
        return
    verb, target, _ = parts
    path = target.split("?", 1)[0]
    if path not in PATHS:
        await _respond(writer, 404, b"not found: metrics are at /metrics and /v1/metrics\n")
        return
    if verb not in ("GET", "HEAD"):
        await _respond(writer, 405, b"method not allowed\n", extra=[("Allow", "GET, HEAD")])
        return
    try:
        body = await metrics.scrape()
    except Exception as exc:
        # A broken collector must not take the listener down, and the
        # scraper should see why its target failed.
        log.exception("collecting metrics failed")
        await _respond(writer, 500, f"collecting metrics failed: {exc}\n".encode())
        return
    # The classic text format, declared as such: every name here is a legacy
    # name, and every scraper generation reads 0.0.4.
    await _respond(
        writer, 200, body, content_type=CONTENT_TYPE_PLAIN_0_0_4, head_only=verb == "HEAD"
    )


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


async def _respond(
    writer: asyncio.StreamWriter,
    code: int,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    head_only: bool = False,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        # One request per connection keeps the responder small; scrapers
        # reconnect cheaply at their interval.
        ("Connection", "close"),
        *(extra or []),
    ]
    lines = [f"HTTP/1.1 {code} {_REASONS[code]}", *(f"{k}: {v}" for k, v in headers)]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head_only:
        writer.write(body)
    await writer.drain()
