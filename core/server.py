"""The engine process: sockets, services, reflection, signals.

`run(config)` builds the engine, registers every gRPC service with grpclib on
the Unix socket (0660, in a 0711 directory), adds the standard health service
and server reflection so grpcurl can list and call methods, and optionally
listens on a TCP address when `[grpc] tcp_address` asks for it: TLS (and
mutual TLS) from `core.tls` when `tcp_tls_cert` is set, plaintext otherwise
(which the config allows off loopback only with `tcp_insecure`). The listeners
that came up, and how each is secured, are exported through Introspection
(`core.listeners`) for `ctrdeck engine status`. A live engine on the socket is
never displaced; a stale socket file is replaced.
SIGTERM and SIGINT close the listeners, let calls in flight end, and close the
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import socket
import ssl
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpclib.server import Server

from core import listeners, memory, tls
from core.api.google_proto_descriptor_pool import default_google_proto_descriptor_pool
from core.config import Config
from core.connection import HardenedServer, Limits
from core.cri import PARTS as CRI_PARTS
from core.cri.plugin import CriPlugin, Pool
from core.engine import Engine
from core.errors import FailedPrecondition, InvalidArgument
from core.plugins import Plugin
from core.services import deferred, messages, status
from core.services.codec import Codec
from core.services.containers import ContainersService
from core.services.content import ContentService
from core.services.diff import DiffService
from core.services.events import EventsService
from core.services.images import ImagesService
from core.services.introspection import IntrospectionService
from core.services.leases import LeasesService
from core.services.namespaces import NamespacesService
from core.services.snapshots import SnapshotsService
from core.services.task_details import TaskDetailsService
from core.services.tasks import TasksService
from core.services.version import VersionService

if TYPE_CHECKING:
    from core import metrics

log = logging.getLogger("ctrdeck.server")

GRPC_PLUGIN = "io.containerd.grpc.v1"


def build_services(engine: Engine) -> tuple[list[Any], CriPlugin]:
    """Every gRPC service over `engine`, each recorded as a plugin requiring the parts it
    uses, and the CRI plugin (which the server starts and closes)."""
    services: dict[str, Any] = {
        "version": VersionService(),
        "introspection": IntrospectionService(engine),
        "namespaces": NamespacesService(engine),
        "images": ImagesService(engine),
        "content": ContentService(engine),
        "diff": DiffService(engine),
        "containers": ContainersService(engine),
        "leases": LeasesService(engine),
        "events": EventsService(engine),
        "snapshots": SnapshotsService(engine),
        "tasks": TasksService(engine),
        "task-details": TaskDetailsService(engine),
        "healthcheck": deferred.health(),
    }
    for name, service in sorted(services.items()):
        # grpclib's Health uses none of the engine's parts.
        requires = engine.requires(getattr(service, "PARTS", ()))
        exports = engine.facts() if name == "introspection" else {}
        engine.plugins.add(Plugin(GRPC_PLUGIN, name, requires=requires, exports=exports), service)
    # Kubernetes' CRI: one plugin, as containerd lists it, serving both runtime.v1 services.
    cri = CriPlugin(engine)
    engine.plugins.add(
        Plugin(GRPC_PLUGIN, "cri", requires=engine.requires(CRI_PARTS)), *cri.services
    )
    reflected = deferred.with_reflection(
        [*services.values(), *cri.services], pool=Pool(default_google_proto_descriptor_pool)
    )
    return reflected, cri


def socket_is_live(path: Path) -> bool:
    """True when something accepts connections on the Unix socket at `path`."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
    except OSError:
        return False
    else:
        return True
    finally:
        s.close()


def prepare_socket(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o711)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise InvalidArgument(f"{path} exists and is not a socket; refusing to replace it")
        if socket_is_live(path):
            raise FailedPrecondition(
                f"an engine is already serving on {path}; stop it first (ctrdeck engine stop)"
            )
        log.info("replacing stale socket %s", path)
        path.unlink()


def engine_metrics(engine: Engine) -> metrics.EngineMetrics:
    """The engine's metrics, reading the parts they report on."""
    from core import metrics  # only with a [metrics] address: prometheus_client is not small

    return metrics.EngineMetrics(
        metrics.Sources(
            events=engine.events,
            gc=engine.gc,
            content=engine.content,
            snapshotters=engine.snapshotters,
            snapshot_records=engine.snapshot_records,
            tasks=engine.tasks,
        )
    )


class EngineServer:
    """The running engine with its listeners."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.engine = Engine(config)
        self.services, self.cri = build_services(self.engine)
        self.servers: list[Server] = []
        self.observers: list[status.Observer] = []
        # Metrics are counted only when a listener can serve them.
        self.metrics: metrics.EngineMetrics | None = None
        if config.metrics.address:
            self.metrics = engine_metrics(self.engine)
            self.engine.pull_observers.append(self.metrics.observe_pull)
            self.observers.append(self.metrics.observe_grpc)
        self.socket_path = Path(config.grpc.address)
        self.metrics_listener: metrics.MetricsListener | None = None
        self.owns_socket = False
        self.tcp_socket: socket.socket | None = None

    def _new_server(self) -> Server:
        grpc = self.config.grpc
        server = HardenedServer(
            self.services,
            codec=Codec(max_send=grpc.max_send_message_size),
            limits=Limits(
                max_concurrent_streams=grpc.max_concurrent_streams,
                connection_timeout=grpc.connection_timeout,
                idle_timeout=grpc.idle_timeout,
            ),
        )
        status.install(server, self.observers)
        messages.install(server, grpc.max_recv_message_size)
        self.servers.append(server)
        return server

    def _tcp_tls(self) -> ssl.SSLContext | None:
        g = self.config.grpc
        if not (g.tcp_address and g.tcp_tls_cert):
            return None
        return tls.server_context(g.tcp_tls_cert, g.tcp_tls_key, g.tcp_tls_ca)

    async def _serve_tcp(
        self, sock: socket.socket, context: ssl.SSLContext | None
    ) -> tuple[str, str]:
        await self._new_server().start(sock=sock, ssl=context)
        g = self.config.grpc
        security = tls.listener_security(g.tcp_tls_cert, g.tcp_tls_ca)
        address = listeners.bound_address(sock)
        log.info("serving gRPC on tcp://%s (%s)", address, listeners.SECURITY_NAMES[security])
        if security == listeners.PLAINTEXT and not listeners.is_loopback(sock.getsockname()[0]):
            log.warning(
                "tcp://%s is plaintext off loopback (grpc.tcp_insecure = true): anyone who "
                "reaches it can drive this engine",
                address,
            )
        return address, security

    def _export_listeners(self, tcp: str, tcp_security: str) -> None:
        metrics_at = ""
        if self.metrics_listener is not None:
            metrics_at = listeners.bound_address(self.metrics_listener.server.sockets[0])
        facts = listeners.exports(str(self.socket_path), tcp, tcp_security, metrics_at)
        for plugin in self.engine.plugins.plugins:
            if (plugin.type, plugin.id) == (GRPC_PLUGIN, "introspection"):
                plugin.exports.update(facts)

    async def start(self) -> None:
        # Unreadable certificates or a taken TCP address refuse the start
        # before anything listens.
        tcp_context = self._tcp_tls()
        if self.config.grpc.tcp_address:
            self.tcp_socket = listeners.bind_tcp(self.config.grpc.tcp_address)
        # Metrics first: an address in use refuses the start before any
        # client could reach an engine that is about to exit.
        counting: asyncio.Task[int] | None = None
        if self.metrics is not None:
            from core import metrics  # see engine_metrics

            self.metrics_listener = await metrics.serve(self.metrics, self.config.metrics.address)
            # Counted once, off the loop, while the tasks are restored; the content-bytes
            # gauge reads the count after.
            counting = asyncio.create_task(asyncio.to_thread(self.engine.content.total_bytes))
        prepare_socket(self.socket_path)
        # Tasks of a previous run are known before the first call can ask.
        await self.engine.start()
        if counting is not None:
            await counting
        await self.cri.start()
        await self._new_server().start(sock=self._bind_unix())
        self.owns_socket = True
        log.info("serving containerd v1 API on unix://%s", self.socket_path)
        tcp, tcp_security = "", ""
        if self.tcp_socket is not None:
            tcp, tcp_security = await self._serve_tcp(self.tcp_socket, tcp_context)
        self._export_listeners(tcp, tcp_security)

    def _bind_unix(self) -> socket.socket:
        """The Unix socket, bound under a temporary name and renamed into place.

        A client can only reach the socket once its mode and owner are final:
        bound at its own path, it would be connectable with the umask's mode
        for a moment before the chmod.
        """
        staging = self.socket_path.with_name(f".{self.socket_path.name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(staging))
            os.chmod(staging, 0o660)
            if self.config.grpc.uid or self.config.grpc.gid:
                os.chown(staging, self.config.grpc.uid, self.config.grpc.gid)
            sock.listen(socket.SOMAXCONN)
            os.rename(staging, self.socket_path)
        except BaseException:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()
            raise
        return sock

    async def stop(self) -> None:
        if self.metrics_listener is not None:
            await self.metrics_listener.close()
        for server in self.servers:
            server.close()
        if self.tcp_socket is not None:
            self.tcp_socket.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=5)
        # A start refused early (another engine live on the socket, metrics
        # address taken) must not remove a socket some other engine serves.
        if self.owns_socket:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        await self.cri.close()
        await self.engine.stop()
        self.engine.close()
        log.info("engine stopped")


def raise_open_files_limit() -> None:
    """Lift the soft RLIMIT_NOFILE to the hard limit, as Go does for containerd.

    The engine holds descriptors per connection, per task's cgroup files and per
    monitor; a stock soft limit of 1,024 would cap those long before the hard
    limit does. Containers get their own limits from their spec, not this one.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(config: Config, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT."""
    raise_open_files_limit()
    server = EngineServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        # What start-up made (modules, API classes, the plugins) lives as long as
        # the engine: out of the cyclic GC's walks, a full collection under load
        # takes a few ms instead of ~40.
        gc.collect()
        gc.freeze()
        memory.trim()
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.stop()
