"""Services whose modules are imported on their first call: grpclib's health and reflection.

grpclib needs every method's path and cardinality when the server starts, but a
method's handler and message types only when a call arrives. A `Deferred`
service gives grpclib stand-in handlers for the paths and cardinalities it is
told; the first call builds the real service (`load`), and every call hands its
stream to the real handler once the stream's message types are the real ones
(the stream is made with the stand-in's; nothing is read or sent before).
Health and reflection speak protobuf's own messages, and protobuf's runtime is
about 3 MiB of an engine that nobody has probed or asked for its descriptors.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from grpclib.const import Cardinality, Handler

from core.api.google.protobuf import Empty

HEALTH_METHODS = {
    "/grpc.health.v1.Health/Check": Cardinality.UNARY_UNARY,
    "/grpc.health.v1.Health/Watch": Cardinality.UNARY_STREAM,
}
REFLECTION_METHODS = {
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Cardinality.STREAM_STREAM,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Cardinality.STREAM_STREAM,
}
"""The methods of grpclib's services, as grpclib defines them (a test pins both tables)."""


class Deferred:
    """A service as grpclib sees it, its real handlers built on the first call."""

    def __init__(
        self, methods: Mapping[str, Cardinality], load: Callable[[], Mapping[str, Handler]]
    ) -> None:
        self.methods = dict(methods)
        self._load = load
        self._handlers: Mapping[str, Handler] | None = None

    def handlers(self) -> Mapping[str, Handler]:
        if self._handlers is None:
            self._handlers = self._load()
        return self._handlers

    def __mapping__(self) -> dict[str, Handler]:
        return {
            path: Handler(self._stand_in(path), cardinality, Empty, Empty)
            for path, cardinality in self.methods.items()
        }

    def _stand_in(self, path: str) -> Callable[[Any], Any]:
        async def call(stream: Any) -> None:
            handler = self.handlers()[path]
            stream._recv_type = handler.request_type
            stream._send_type = handler.reply_type
            await handler.func(stream)

        return call


def health() -> Deferred:
    """grpclib's `Health()`: every service SERVING."""

    def load() -> Mapping[str, Handler]:
        from grpclib.health.service import Health

        return Health().__mapping__()

    return Deferred(HEALTH_METHODS, load)


def with_reflection(services: Collection[Any], pool: Any) -> list[Any]:
    """`ServerReflection.extend(services, pool=pool)`: the services, and reflection v1 and
    v1alpha answering from `pool`."""

    def load() -> Mapping[str, Handler]:
        from grpclib.reflection.service import ServerReflection

        handlers: dict[str, Handler] = {}
        for service in ServerReflection.extend(services, pool=pool)[len(services) :]:
            handlers.update(service.__mapping__())
        return handlers

    return [*services, Deferred(REFLECTION_METHODS, load)]
