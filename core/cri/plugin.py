"""The CRI plugin as the server wires it: both runtime.v1 services, loaded on their first call.

The CRI's generated messages (runtime.v1, about 5 MiB of classes and descriptors)
and its parts (pods, containers, the image puller with its registry client and
TLS) are more than the rest of an idle engine's services together, and most
engines never serve a kubelet. So the server registers the two services by their
method names only (`METHODS`), each method a stand-in that, on the first CRI call,
imports `core.cri.service`, builds the CRI over the engine and hands the call to
the real handler, setting the stream's message types to the real ones before
anything is read (the stream was made with stand-in types: grpclib needs a
handler for every method when the server starts). What must happen at start
still does: a bad CRI config refuses the start, and an engine whose CRI
containers a previous run started loads the CRI at once to watch them again.
Reflection finds runtime.v1 through `Pool`, which loads the messages when asked.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from grpclib.const import Cardinality, Handler

from core.api.google.protobuf import Empty
from core.cri import PLUGIN_ROOT
from core.cri import config as cri_config

if TYPE_CHECKING:
    from core.cri.service import Cri
    from core.engine import Engine

PACKAGE = "runtime.v1"
METHODS: dict[str, tuple[str, ...]] = {
    "runtime.v1.RuntimeService": (
        "Version", "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus",
        "ListPodSandbox", "CreateContainer", "StartContainer", "StopContainer",
        "RemoveContainer", "ListContainers", "ContainerStatus", "UpdateContainerResources",
        "ReopenContainerLog", "ExecSync", "Exec", "Attach", "PortForward", "ContainerStats",
        "ListContainerStats", "PodSandboxStats", "ListPodSandboxStats", "UpdateRuntimeConfig",
        "Status",
    ),
    "runtime.v1.ImageService": (
        "ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo",
    ),
}  # fmt: skip
"""Every unary method of the two services, as `core.api.runtime.v1` generates them (a
test pins this to the generated `__mapping__`s)."""


class CriPlugin:
    """The CRI's two services for the server, and the CRI itself once a call needs it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Checked now, so a bad [plugins."io.containerd.grpc.v1.cri"] table refuses the start.
        cri_config.from_config(engine.config)
        self.services = [_Service(self, name) for name in METHODS]
        self.cri: Cri | None = None
        self._handlers: dict[str, Handler] = {}

    def load(self) -> dict[str, Handler]:
        """The real handlers, by method path; the CRI is built on the first call."""
        if self.cri is None:
            from core.cri.service import Cri, ImageService, RuntimeService  # see the docstring

            cri = Cri(self.engine)
            for service in (RuntimeService(cri), ImageService(cri)):
                self._handlers.update(service.__mapping__())
            self.cri = cri
        return self._handlers

    async def start(self) -> None:
        """Once the tasks are restored: watch again the CRI containers a previous run started."""
        if _has_records(self.engine.root / PLUGIN_ROOT / "containers"):
            await self._ready()

    async def close(self) -> None:
        if self.cri is not None:
            await self.cri.close()

    async def _ready(self) -> dict[str, Handler]:
        handlers = self.load()
        assert self.cri is not None
        # Watches the containers of a previous run, once.
        await self.cri.start()
        return handlers

    def _stand_in(self, path: str) -> Callable[[Any], Awaitable[None]]:
        async def call(stream: Any) -> None:
            handler = (await self._ready())[path]
            # grpclib made the stream with the stand-in's types; nothing is read or
            # sent yet, so the real ones take their place before the handler runs.
            stream._recv_type = handler.request_type
            stream._send_type = handler.reply_type
            await handler.func(stream)

        return call


class _Service:
    """One runtime.v1 service as grpclib sees it: its method table of stand-ins."""

    def __init__(self, plugin: CriPlugin, name: str) -> None:
        self.plugin = plugin
        self.name = name

    def __mapping__(self) -> dict[str, Handler]:
        paths = (f"/{self.name}/{method}" for method in METHODS[self.name])
        return {
            path: Handler(self.plugin._stand_in(path), Cardinality.UNARY_UNARY, Empty, Empty)
            for path in paths
        }


class Pool:
    """A descriptor pool for server reflection that loads runtime.v1 when it is asked for.

    Reflection answers from the pool the generated modules add their files to;
    runtime.v1's are added only when its module is imported.
    """

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._pool, name)

        def find(*args: Any) -> Any:
            try:
                return method(*args)
            except KeyError:
                if "core.api.runtime.v1" in sys.modules:
                    raise
                import core.api.runtime.v1  # noqa: F401  (adds its files to the pool)

                return method(*args)

        return find


def _has_records(directory: os.PathLike[str] | str) -> bool:
    try:
        with os.scandir(directory) as entries:
            return any(entry.name.endswith(".json") for entry in entries)
    except FileNotFoundError:
        return False
