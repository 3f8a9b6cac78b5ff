"""The engine's health at a glance, computed from the client side of the API.

`probe(address)` asks whatever answers on a socket (this engine or a real
containerd) for its version, server UUID and plugins, and returns an
`EngineStatus`: whether it answers (and if not, why, in words), version,
uptime, socket, root and state directories, and every plugin with containerd's
ok/skip/error status. Facts the protos carry no field for are read from the
Introspection exports this engine adds (`started_at`, `root`, `state` on the
`io.containerd.grpc.v1/introspection` plugin, and the listeners that are up
with how each is secured, read by `core.listeners`); a containerd's root is
inferred from its plugins' `root` exports, and what cannot be known is None,
shown as "unknown". It imports only `core.client`, the generated API and pure
helpers, so the console and `ctrdeck engine status` share it.
"""

from __future__ import annotations

import asyncio
import errno
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from grpclib import GRPCError
from grpclib.exceptions import StreamTerminatedError
from h2.exceptions import ProtocolError

from core.api.containerd.services.introspection import v1 as introspection
from core.api.google.protobuf import Empty
from core.client import Client
from core.listeners import Listener, from_exports
from core.tls import ClientTLS, ConnectFailed

PROBE_TIMEOUT = 3.0
ENGINE_PLUGIN = ("io.containerd.grpc.v1", "introspection")


@dataclass(frozen=True)
class PluginStatus:
    type: str
    id: str
    status: str
    error: str = ""
    exports: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "id": self.id,
            "status": self.status,
            "error": self.error,
            "exports": dict(self.exports),
        }


@dataclass(frozen=True)
class EngineStatus:
    """One look at an engine; every field but `address` and `answering` may be unknown."""

    address: str
    answering: bool
    checked_at: datetime
    problem: str = ""
    version: str = ""
    revision: str = ""
    uuid: str = ""
    started_at: datetime | None = None
    root: str | None = None
    state: str | None = None
    plugins: list[PluginStatus] = field(default_factory=list)
    listeners: list[Listener] = field(default_factory=list)

    @property
    def uptime(self) -> timedelta | None:
        if self.started_at is None:
            return None
        return max(self.checked_at - self.started_at, timedelta(0))

    def plugin_counts(self) -> dict[str, int]:
        counts = {"ok": 0, "skip": 0, "error": 0}
        for p in self.plugins:
            counts[p.status] = counts.get(p.status, 0) + 1
        return counts

    def headline(self) -> str:
        """One line for a console header: `engine 1.6.20 · up 3m 2s · 24/25 plugins ok`."""
        if not self.answering:
            return f"engine not answering: {self.problem}"
        counts = self.plugin_counts()
        return (
            f"engine {self.version or 'unknown'} · up {format_uptime(self.uptime)} · "
            f"{counts['ok']}/{len(self.plugins)} plugins ok"
        )

    def to_json(self) -> dict[str, Any]:
        uptime = self.uptime
        return {
            "address": self.address,
            "answering": self.answering,
            "problem": self.problem,
            "checked_at": _rfc3339(self.checked_at),
            "version": self.version,
            "revision": self.revision,
            "uuid": self.uuid,
            "started_at": _rfc3339(self.started_at) if self.started_at else None,
            "uptime_seconds": round(uptime.total_seconds(), 3) if uptime is not None else None,
            "root": self.root,
            "state": self.state,
            "listeners": [listener.to_json() for listener in self.listeners],
            "plugins": [p.to_json() for p in self.plugins],
        }


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_uptime(uptime: timedelta | None) -> str:
    """`2d 3h`, `3h 4m`, `4m 5s`, `5s`; "unknown" when the engine does not say."""
    if uptime is None:
        return "unknown"
    total = int(uptime.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{seconds}s"


def plugin_status(p: introspection.Plugin) -> PluginStatus:
    """containerd's STATUS column: ok without init_err, skip when it says so, else error."""
    if p.init_err is None:
        return PluginStatus(p.type, p.id, "ok", "", dict(p.exports))
    message = p.init_err.message
    status = "skip" if "skip plugin" in message else "error"
    return PluginStatus(p.type, p.id, status, message, dict(p.exports))


def _parse_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _inferred_root(plugins: list[PluginStatus]) -> str | None:
    # containerd puts each plugin's directory at <root>/<type>.<id> and
    # exports it as `root`; the parent of any such directory is the root.
    for p in plugins:
        exported = p.exports.get("root", "")
        path = PurePosixPath(exported)
        if exported and path.name == f"{p.type}.{p.id}":
            return str(path.parent)
    return None


def build(
    address: str,
    version: str,
    revision: str,
    uuid: str,
    plugins: list[introspection.Plugin],
    checked_at: datetime,
) -> EngineStatus:
    """The status of an engine that answered, from its API responses."""
    statuses = [plugin_status(p) for p in plugins]
    facts: dict[str, str] = {}
    for p in statuses:
        if (p.type, p.id) == ENGINE_PLUGIN:
            facts = p.exports
    started_at = _parse_time(facts["started_at"]) if "started_at" in facts else None
    return EngineStatus(
        address=address,
        answering=True,
        checked_at=checked_at,
        version=version,
        revision=revision,
        uuid=uuid,
        started_at=started_at,
        root=facts.get("root") or _inferred_root(statuses),
        state=facts.get("state") or None,
        plugins=statuses,
        listeners=from_exports(facts),
    )


async def from_client(client: Client) -> EngineStatus:
    """Ask the engine behind `client`; errors propagate (see `probe` for words)."""
    version = await client.server_version()
    server = await client.introspection.server(Empty())
    plugins = await client.introspection.plugins(introspection.PluginsRequest())
    return build(
        client.address,
        version.version,
        version.revision,
        server.uuid,
        list(plugins.plugins),
        datetime.now(UTC),
    )


def _problem(address: str, exc: BaseException, timeout: float) -> str:
    if isinstance(exc, ConnectFailed):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"no socket at {address}; is the engine running?"
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing is listening on {address} (connection refused); the engine has stopped"
    if isinstance(exc, PermissionError):
        return f"permission denied on {address}; run as a user allowed to use the socket"
    if isinstance(exc, TimeoutError):
        return f"the engine on {address} did not answer within {timeout:g}s"
    if isinstance(exc, GRPCError):
        return f"the engine on {address} answered with {exc.status.name}: {exc.message}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOTSOCK:
        return f"{address} is not a socket"
    if isinstance(exc, StreamTerminatedError | ProtocolError):
        return f"the connection to {address} was closed before an answer; is it a gRPC server?"
    return f"cannot reach {address}: {exc}"


async def probe(
    address: str, *, timeout: float = PROBE_TIMEOUT, tls: ClientTLS | None = None
) -> EngineStatus:
    """The status of whatever serves on `address`; never raises for an engine that is down."""
    client = Client(address, timeout=timeout, tls=tls)
    try:
        return await asyncio.wait_for(from_client(client), timeout)
    except (OSError, TimeoutError, GRPCError, StreamTerminatedError, ProtocolError) as exc:
        return EngineStatus(
            address=address,
            answering=False,
            checked_at=datetime.now(UTC),
            problem=_problem(address, exc, timeout),
        )
    finally:
        client.close()
