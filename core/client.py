"""The typed async client for the engine, or any containerd, on a Unix socket or TCP.

`Client` owns one HTTP/2 channel and hands out the generated stubs with the
namespace (and, inside `lease()`, the lease) already set as containerd's
headers. An address is a socket path (`unix://` optional) or `tcp://host:port`;
over TCP, `tls` (a `core.tls.ClientTLS`) asks for TLS with the server's
certificate verified, and without it the connection is plaintext. Tests and
the console use it; it imports nothing of the engine.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any

from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Status

from core.errors import InvalidArgument
from core.tls import ClientTLS, TCPChannel

if TYPE_CHECKING:
    from core.api.containerd.services.containers import v1 as containers
    from core.api.containerd.services.content import v1 as content
    from core.api.containerd.services.diff import v1 as diff
    from core.api.containerd.services.events import v1 as events
    from core.api.containerd.services.images import v1 as images
    from core.api.containerd.services.introspection import v1 as introspection
    from core.api.containerd.services.leases import v1 as leases
    from core.api.containerd.services.namespaces import v1 as namespaces
    from core.api.containerd.services.snapshots import v1 as snapshots
    from core.api.containerd.services.tasks import v1 as tasks
    from core.api.containerd.services.version import v1 as version
    from core.api.ctrdeck.services.tasks import v1 as task_details
    from core.api.runtime import v1 as cri

# The generated stubs, by the name the client hands them out under. Each is imported the
# first time it is used: all of them together take a quarter of a second to import, and a
# command such as `ctrdeck pull` speaks to one service.
_SERVICES = {
    "containers": "core.api.containerd.services.containers.v1",
    "content": "core.api.containerd.services.content.v1",
    "diff": "core.api.containerd.services.diff.v1",
    "events": "core.api.containerd.services.events.v1",
    "images": "core.api.containerd.services.images.v1",
    "introspection": "core.api.containerd.services.introspection.v1",
    "leases": "core.api.containerd.services.leases.v1",
    "namespaces": "core.api.containerd.services.namespaces.v1",
    "snapshots": "core.api.containerd.services.snapshots.v1",
    "tasks": "core.api.containerd.services.tasks.v1",
    "version": "core.api.containerd.services.version.v1",
    "task_details": "core.api.ctrdeck.services.tasks.v1",
    "cri": "core.api.runtime.v1",
    "protobuf": "core.api.google.protobuf",
}
_LOADED: dict[str, ModuleType] = {}

NAMESPACE_HEADER = "containerd-namespace"
LEASE_HEADER = "containerd-lease"
DEFAULT_NAMESPACE = "default"
TCP_SCHEME = "tcp://"
UNIX_SCHEME = "unix://"


def default_namespace() -> str:
    return os.environ.get("CONTAINERD_NAMESPACE") or DEFAULT_NAMESPACE


def is_tcp(address: str) -> bool:
    return address.startswith(TCP_SCHEME)


def tcp_host_port(address: str) -> tuple[str, int]:
    """`tcp://host:port` (or `tcp://[v6]:port`) as (host, port)."""
    rest = address.removeprefix(TCP_SCHEME)
    host, sep, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"address {address!r} must be tcp://host:port")
    return host, int(port)


def open_channel(address: str, tls: ClientTLS | None = None) -> Channel:
    """A channel to a socket path or a `tcp://` address; TLS options only make sense on TCP."""
    if is_tcp(address):
        host, port = tcp_host_port(address)
        return TCPChannel(host, port, tls)
    if tls is not None:
        raise InvalidArgument(f"TLS options apply to tcp:// addresses; {address} is a local socket")
    if "://" in address and not address.startswith(UNIX_SCHEME):
        raise InvalidArgument(f"address {address!r}: use a socket path, unix:// or tcp://")
    return Channel(path=address.removeprefix(UNIX_SCHEME))


def _api(service: str) -> Any:
    module = _LOADED.get(service)
    if module is None:
        module = _LOADED[service] = importlib.import_module(_SERVICES[service])
    return module


class Client:
    """A connection to one engine socket, speaking in one namespace."""

    def __init__(
        self,
        address: str,
        namespace: str | None = None,
        *,
        timeout: float | None = None,
        channel: Channel | None = None,
        lease: str | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        self.address = address
        self.namespace = namespace or default_namespace()
        self.timeout = timeout
        self.tls = tls
        self._owns_channel = channel is None
        self.channel = channel or open_channel(address, tls)
        self.lease_id = lease

    @property
    def metadata(self) -> dict[str, str]:
        md = {NAMESPACE_HEADER: self.namespace}
        if self.lease_id:
            md[LEASE_HEADER] = self.lease_id
        return md

    def _stub(self, service: str, name: str) -> Any:
        cls = getattr(_api(service), name)
        return cls(self.channel, timeout=self.timeout, metadata=self.metadata)

    def with_namespace(self, namespace: str) -> Client:
        """Another view of the same connection, in another namespace."""
        return Client(
            self.address,
            namespace,
            timeout=self.timeout,
            channel=self.channel,
            lease=self.lease_id,
            tls=self.tls,
        )

    @property
    def cri_runtime(self) -> cri.RuntimeServiceStub:
        """Kubernetes' CRI RuntimeService (ours, or a containerd's on its main socket)."""
        return self._stub("cri", "RuntimeServiceStub")

    @property
    def cri_images(self) -> cri.ImageServiceStub:
        return self._stub("cri", "ImageServiceStub")

    @property
    def version(self) -> version.VersionStub:
        return self._stub("version", "VersionStub")

    @property
    def introspection(self) -> introspection.IntrospectionStub:
        return self._stub("introspection", "IntrospectionStub")

    @property
    def namespaces(self) -> namespaces.NamespacesStub:
        return self._stub("namespaces", "NamespacesStub")

    @property
    def images(self) -> images.ImagesStub:
        return self._stub("images", "ImagesStub")

    @property
    def content(self) -> content.ContentStub:
        return self._stub("content", "ContentStub")

    @property
    def containers(self) -> containers.ContainersStub:
        return self._stub("containers", "ContainersStub")

    @property
    def leases(self) -> leases.LeasesStub:
        return self._stub("leases", "LeasesStub")

    @property
    def events(self) -> events.EventsStub:
        return self._stub("events", "EventsStub")

    @property
    def snapshots(self) -> snapshots.SnapshotsStub:
        return self._stub("snapshots", "SnapshotsStub")

    @property
    def diff(self) -> diff.DiffStub:
        return self._stub("diff", "DiffStub")

    @property
    def tasks(self) -> tasks.TasksStub:
        return self._stub("tasks", "TasksStub")

    @property
    def task_details(self) -> task_details.TaskDetailsStub:
        """ctrdeck's extension: a task's log and start; a containerd answers UNIMPLEMENTED."""
        return self._stub("task_details", "TaskDetailsStub")

    async def task_log(
        self,
        container_id: str,
        *,
        exec_id: str = "",
        offset: int = 0,
        tail_lines: int = 0,
        follow: bool = False,
        file: str = "",
    ) -> AsyncIterator[task_details.LogChunk]:
        """A process's output log from `offset` or its last `tail_lines` lines.

        With `follow`, new output keeps coming until the process has exited;
        stopping the iteration cancels the call. `file` (a chunk's) says which
        file `offset` counts in, to resume across the engine's log rotation.
        """
        request = _api("task_details").LogRequest(
            container_id=container_id,
            exec_id=exec_id,
            offset=offset,
            tail_lines=tail_lines,
            follow=follow,
            file=file,
        )
        async for chunk in self.task_details.log(request):
            yield chunk

    async def task_starts(self) -> dict[str, datetime]:
        """When each running task of the namespace started, by container id."""
        resp = await self.task_details.started(_api("task_details").StartedRequest())
        return {t.container_id: t.started_at for t in resp.tasks if t.started_at is not None}

    async def task_processes(self, container_id: str) -> list[task_details.TaskProcess]:
        """The task's processes with their user, command, state, CPU time and memory."""
        request = _api("task_details").ProcessesRequest(container_id=container_id)
        return list((await self.task_details.processes(request)).processes)

    @contextlib.asynccontextmanager
    async def lease(
        self, expire: timedelta = timedelta(hours=24), *, sync_delete: bool = False
    ) -> AsyncIterator[Client]:
        """Hold a lease for a block of work, as ctr does; yields a client that sends it."""
        until = (datetime.now(UTC) + expire).strftime("%Y-%m-%dT%H:%M:%SZ")
        resp = await self.leases.create(
            _api("leases").CreateRequest(labels={"containerd.io/gc.expire": until})
        )
        assert resp.lease is not None
        leased = Client(
            self.address,
            self.namespace,
            timeout=self.timeout,
            channel=self.channel,
            lease=resp.lease.id,
            tls=self.tls,
        )
        try:
            yield leased
        finally:
            await self.leases.delete(
                _api("leases").DeleteRequest(id=resp.lease.id, sync=sync_delete)
            )

    async def write_content(
        self,
        ref: str,
        data: bytes,
        expected: str = "",
        labels: dict[str, str] | None = None,
        chunk: int = 1 << 20,
    ) -> str:
        """Write a blob through Content.Write as ctr does; return its digest.

        A blob the namespace already has counts as written, as it does for ctr.
        """
        api = _api("content")
        wa = api.WriteAction

        def requests() -> Iterator[content.WriteContentRequest]:
            yield api.WriteContentRequest(
                action=wa.STAT, ref=ref, total=len(data), expected=expected
            )
            for offset in range(0, len(data), chunk):
                yield api.WriteContentRequest(
                    action=wa.WRITE, ref=ref, offset=offset, data=data[offset : offset + chunk]
                )
            yield api.WriteContentRequest(
                action=wa.COMMIT,
                ref=ref,
                total=len(data),
                expected=expected,
                offset=len(data),
                labels=labels or {},
            )

        digest = expected
        try:
            async for resp in self.content.write(requests()):
                if resp.action == wa.COMMIT:
                    digest = resp.digest
        except GRPCError as exc:
            if exc.status != Status.ALREADY_EXISTS:
                raise
        return digest

    async def server_version(self) -> version.VersionResponse:
        return await self.version.version(_api("protobuf").Empty())

    def close(self) -> None:
        if self._owns_channel:
            self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
