"""Many nodes at once: each with its own connection, `NodeState`, `Syncer`, heartbeat and backoff.

A `Node` is supervised by its own task: it reaches the engine (through its SSH
tunnel for an ssh:// node), asks `Version` within a deadline, then runs a
`Syncer` beside a heartbeat: a `Version` call every second that must answer
within `DEADLINE`. An engine that hangs (SIGSTOP), a link that went dead (a
cut cable answers nothing, so only a deadline notices) or a stream that
dropped marks the node unreachable within about three seconds; its syncer is
cancelled, its channel closed, and it tries again after a backoff that doubles
up to `BACKOFF_MAX`, which the Nodes pane counts down. Nothing one node does
waits on another node or on the screen: the fleet only calls `on_change` and
`on_log`. A node whose spec has a `problem` (a malformed URL, a name used
twice) never connects; its row says why.

`probe` is the same reach-and-count without a syncer, for `ctrdeck nodes`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from grpclib.exceptions import GRPCError, StreamTerminatedError

from core.api.containerd.services.containers import v1 as containers_api
from core.api.containerd.services.tasks import v1 as tasks_api
from core.api.containerd.v1.types import Status as TaskStatus
from core.client import Client
from core.errors import CtrdeckError
from tui import nodes as node_specs
from tui.nodes import NodeSpec
from tui.state import LogLine, NodeState, utc_now
from tui.syncer import Syncer
from tui.tunnel import Tunnel, TunnelError, Tunnels, runtime_dir

HEARTBEAT = 1.0
# A call that has not answered in this long means the node is unreachable.
DEADLINE = 2.0
# Reaching a node the first time may include an SSH handshake and a remote command.
CONNECT_DEADLINE = 20.0
# A listing of a busy namespace takes longer than a Version call.
LIST_DEADLINE = 10.0
# Long enough for a new event stream to be open on the engine's side.
STREAM_SETTLE = 1.0
BACKOFF_START = 0.5
BACKOFF_MAX = 5.0

CONNECTING, UP, UNREACHABLE, RECONNECTING, INVALID = (
    "connecting",
    "up",
    "unreachable",
    "reconnecting",
    "invalid",
)

FAILURES = (
    OSError,
    TimeoutError,
    GRPCError,
    StreamTerminatedError,
    TunnelError,
    CtrdeckError,
    ConnectionError,
)


def engine_name(version: str) -> str:
    return "ctrdeck" if "ctrdeck" in version else "containerd" if version else ""


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {DEADLINE:.0f}s"
    if isinstance(exc, GRPCError):
        return exc.message or exc.status.name
    if isinstance(exc, CtrdeckError):
        return exc.message
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, FileNotFoundError):
        return f"no socket at {exc.filename}" if exc.filename else "no socket"
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class NodeStatus:
    """One row of the Nodes pane, and of `ctrdeck nodes`."""

    name: str
    where: str
    phase: str = CONNECTING
    reason: str = ""
    version: str = ""
    rtt: float | None = None
    running: int | None = None
    total: int | None = None
    namespace: str = ""
    # When the next attempt starts (time.monotonic()), while the node waits to reconnect.
    retry_at: float | None = None

    @property
    def engine(self) -> str:
        return engine_name(self.version)

    def state_text(self, now: float | None = None) -> str:
        if self.phase == RECONNECTING and self.retry_at is not None:
            left = max(0, round(self.retry_at - (time.monotonic() if now is None else now)))
            return f"reconnecting in {left}s"
        return self.phase

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.where,
            "state": self.phase,
            "reason": self.reason,
            "engine": self.engine,
            "version": self.version,
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 2),
            "namespace": self.namespace,
            "running": self.running,
            "total": self.total,
        }


class Node:
    """One engine of the fleet: its spec, model, connection and supervisor."""

    def __init__(
        self,
        spec: NodeSpec,
        namespace: str,
        tunnels: Tunnels,
        *,
        on_change: Callable[[Node], None],
        on_log: Callable[[LogLine], None],
    ) -> None:
        self.spec = spec
        self.name = spec.name
        # The top bar and the banner name the node by this.
        self.state = NodeState(spec.namespace or namespace, f"{spec.name} ({spec.where})")
        self.tunnel: Tunnel | None = tunnels.tunnel(spec) if spec.kind == node_specs.SSH else None
        self.client: Client | None = None
        self.syncer: Syncer | None = None
        self.on_change = on_change
        self.on_log = on_log
        phase = INVALID if spec.problem else CONNECTING
        self.status = NodeStatus(
            spec.name, spec.where, phase, spec.problem, namespace=self.state.namespace
        )

    def _set(self, **changes: Any) -> None:
        self.status = replace(self.status, **changes)
        self.on_change(self)

    def teach_prefix(self) -> str:
        """What precedes a `ctr` line for this node: `ssh HOST` for a remote one."""
        return self.tunnel.teach_prefix() if self.tunnel is not None else ""

    async def reach(self) -> tuple[Client, str, float]:
        """A client to the engine and its version and round trip, or an error saying why not."""
        address = await self.tunnel.open() if self.tunnel is not None else self.spec.address
        if self.spec.kind == node_specs.UNIX and not Path(address).exists():
            raise FileNotFoundError(2, "no socket", address)
        client = Client(address, self.state.namespace, tls=self.spec.tls)
        try:
            started = time.monotonic()
            resp = await asyncio.wait_for(client.server_version(), DEADLINE)
        except BaseException:
            client.close()
            raise
        return client, resp.version, time.monotonic() - started

    async def run(self) -> None:
        """Connect, sync and watch; on a failure say why and try again after a backoff."""
        if self.spec.problem:
            return
        delay = BACKOFF_START
        while True:
            try:
                client, version, rtt = await asyncio.wait_for(self.reach(), CONNECT_DEADLINE)
            except asyncio.CancelledError:
                raise
            except FAILURES as exc:
                self._down(describe(exc))
                await self._wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_START
            self.client = client
            self.state.version = version
            # Up once the syncer's first resync is in: until then the rows would be stale.
            self._set(phase=CONNECTING, reason="", version=version, rtt=rtt, retry_at=None)
            try:
                reason = await self._watch(client)
            finally:
                self.state.connected = False
                self.client = None
                self.syncer = None
                client.close()
            self._down(reason)
            await self._wait(delay)

    def _down(self, reason: str) -> None:
        if self.status.phase == UP:
            self._note(f"unreachable: {reason}")
        self._set(phase=UNREACHABLE, reason=reason, rtt=None)

    async def _wait(self, delay: float) -> None:
        self._set(phase=RECONNECTING, retry_at=time.monotonic() + delay)
        await asyncio.sleep(delay)

    async def _watch(self, client: Client) -> str:
        """Sync until the heartbeat misses; the reason it missed."""
        self.syncer = Syncer(
            client, self.state, on_log=self.on_log, on_connection=self._syncer_connection
        )
        sync = asyncio.ensure_future(self.syncer.run())
        try:
            while True:
                await asyncio.sleep(HEARTBEAT)
                if sync.done():
                    exc = sync.exception()
                    return describe(exc) if exc else "the sync stopped"
                started = time.monotonic()
                try:
                    await asyncio.wait_for(client.server_version(), DEADLINE)
                except FAILURES as exc:
                    return describe(exc)
                self._count(rtt=time.monotonic() - started)
        finally:
            sync.cancel()
            # Waits for the syncer to end; a cancel of this node's own task still goes through.
            await asyncio.gather(sync, return_exceptions=True)

    def _syncer_connection(self, up: bool, detail: str) -> None:
        if up:
            self._count(phase=UP, reason="")
            # The syncer resyncs, then subscribes: a change between the two would
            # wait for the slow resync, so one more follows once the stream is up.
            syncer = self.syncer
            if syncer is not None:
                asyncio.get_running_loop().call_later(STREAM_SETTLE, syncer.request_resync)
            self._note(f"connected ({detail})")
        else:
            self._set(phase=UNREACHABLE, reason=detail)

    def _note(self, text: str) -> None:
        self.on_log(LogLine(utc_now(), self.state.namespace, "", text, "note"))

    def _count(self, **changes: Any) -> None:
        containers = self.state.containers
        running = sum(1 for c in containers.values() if c.status == "RUNNING")
        status = replace(self.status, running=running, total=len(containers), **changes)
        if status != self.status:
            self.status = status
            self.on_change(self)

    def close(self) -> None:
        # Its forward goes with the master when the fleet closes the tunnels.
        if self.client is not None:
            self.client.close()


class Fleet:
    """Every node, each supervised by its own task; the order is the operator's."""

    def __init__(
        self,
        specs: list[NodeSpec],
        namespace: str,
        *,
        ssh_config: Path | None = None,
        on_change: Callable[[Node], None] = lambda node: None,
        on_log: Callable[[str, LogLine], None] = lambda name, line: None,
    ) -> None:
        self.tunnels = Tunnels(runtime_dir(), ssh_config)
        self.on_change = on_change
        self.nodes: dict[str, Node] = {}
        for spec in node_specs.unique(specs):
            self.nodes[spec.name] = Node(
                spec,
                namespace,
                self.tunnels,
                on_change=lambda node: self.on_change(node),
                on_log=lambda line, name=spec.name: on_log(name, line),
            )
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(node.run()) for node in self.nodes.values()]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for node in self.nodes.values():
            node.close()
        await self.tunnels.close()

    def statuses(self) -> list[NodeStatus]:
        return [node.status for node in self.nodes.values()]


async def probe(node: Node) -> NodeStatus:
    """Reach `node` once and count its containers in its namespace: `ctrdeck nodes`."""
    if node.spec.problem:
        return node.status
    try:
        client, version, rtt = await asyncio.wait_for(node.reach(), CONNECT_DEADLINE)
    except FAILURES as exc:
        return replace(node.status, phase=UNREACHABLE, reason=describe(exc))
    try:
        listing = await asyncio.wait_for(
            client.containers.list(containers_api.ListContainersRequest()), LIST_DEADLINE
        )
        tasks = await asyncio.wait_for(
            client.tasks.list(tasks_api.ListTasksRequest()), LIST_DEADLINE
        )
    except FAILURES as exc:
        return replace(node.status, phase=UNREACHABLE, reason=describe(exc), version=version)
    finally:
        client.close()
    running = sum(1 for p in tasks.tasks if TaskStatus(p.status) == TaskStatus.RUNNING)
    return replace(
        node.status,
        phase=UP,
        version=version,
        rtt=rtt,
        running=running,
        total=len(listing.containers),
    )


async def probe_all(fleet: Fleet) -> list[NodeStatus]:
    try:
        return list(await asyncio.gather(*(probe(node) for node in fleet.nodes.values())))
    finally:
        await fleet.close()
