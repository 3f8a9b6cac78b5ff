"""The one place where typed errors become gRPC statuses.

`install` wraps every handler of the server once, before it starts: it binds
the call's namespace and lease headers into `core.context`, runs the handler,
and turns a `CtrdeckError` into containerd's status code with the error's
message. A connection that failed or an operation that timed out underneath a
handler (a registry, a runtime, a socket) is UNAVAILABLE or DEADLINE_EXCEEDED,
as grpc-go reports them, not UNKNOWN. Anything else unexpected is logged once
with its method and namespace and reported as UNKNOWN with its text, so a
client never sees a bare "Internal Server Error".

grpclib 0.4.9 looks a method up before it dispatches any event and answers an
unknown one without a content-type; it has no public hook for that lookup, so
`install` wraps the server's method table (`_Methods`) to answer properly. The
same table is where the handlers are wrapped (`wrap_handlers`), rather than per
call through grpclib's RecvRequest event, whose dispatch builds an event and
closures for every request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from grpclib import GRPCError
from grpclib.const import Cardinality, Handler, Status

from core import context, errors
from core.api.google.protobuf import Empty

log = logging.getLogger("ctrdeck.grpc")

CODES: dict[type[BaseException], Status] = {
    errors.InvalidArgument: Status.INVALID_ARGUMENT,
    errors.NotFound: Status.NOT_FOUND,
    errors.AlreadyExists: Status.ALREADY_EXISTS,
    errors.FailedPrecondition: Status.FAILED_PRECONDITION,
    errors.Unauthenticated: Status.UNAUTHENTICATED,
    errors.PermissionDenied: Status.PERMISSION_DENIED,
    errors.Unavailable: Status.UNAVAILABLE,
    errors.NotImplementedYet: Status.UNIMPLEMENTED,
    errors.OutOfRange: Status.OUT_OF_RANGE,
    errors.DataLoss: Status.DATA_LOSS,
    errors.DeadlineExceeded: Status.DEADLINE_EXCEEDED,
    errors.Canceled: Status.CANCELLED,
    errors.ResourceExhausted: Status.RESOURCE_EXHAUSTED,
    errors.Internal: Status.INTERNAL,
    ConnectionError: Status.UNAVAILABLE,
    TimeoutError: Status.DEADLINE_EXCEEDED,
}


def status_of(exc: BaseException) -> Status:
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    return Status.UNKNOWN


def _os_message(exc: OSError) -> str:
    """An OS-level failure in words ("connection refused"), not Python's repr of it."""
    reason = exc.strerror or str(exc) or ""
    if isinstance(exc, TimeoutError):
        return f"{reason or 'operation timed out'}: context deadline exceeded"
    return f"{reason or 'connection failed'}: unavailable"


Observer = Callable[[str, str | None, Status, float], None]


def _first(metadata: Any, key: str) -> str | None:
    value = metadata.get(key) if metadata is not None else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value


class _Methods(dict[str, Handler]):
    """The server's method table, answering unknown methods as real gRPC calls.

    grpclib rejects an unknown method without a content-type header, which Go
    clients such as ctr read as UNKNOWN; ctr needs a proper UNIMPLEMENTED to fall
    back (e.g. from Containers.ListStream to List). That answer passes through
    the same `wrappers` as every known method's.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.wrappers: list[Callable[[str, Any], Any]] = []

    def get(self, key: str, default: Any = None) -> Handler:  # type: ignore[override]
        handler = super().get(key)
        if handler is not None:
            return handler

        async def unimplemented(stream: Any) -> None:
            raise GRPCError(Status.UNIMPLEMENTED, f"unknown method {key}")

        func: Any = unimplemented
        for wrap in self.wrappers:
            func = wrap(key, func)
        return Handler(func, Cardinality.UNARY_UNARY, Empty, Empty)


def wrap_handlers(server: Any, wrap: Callable[[str, Any], Any]) -> None:
    """Replace every method's function `f` in the server's table by `wrap(name, f)`.

    Done once when the server is built, not per call: grpclib's RecvRequest
    event would build an event object and two closures for every request.
    Unknown methods get the same wrappers (`_Methods`).
    """
    mapping = server._mapping
    if not isinstance(mapping, _Methods):
        mapping = server._mapping = _Methods(mapping)
    for name, handler in list(mapping.items()):
        mapping[name] = handler._replace(func=wrap(name, handler.func))
    mapping.wrappers.append(wrap)


def install(server: Any, observers: list[Observer]) -> None:
    """Wrap every call the server receives; `observers` see (method, ns, status, seconds)."""
    wrap_handlers(server, lambda method, inner: _guard(method, inner, observers))


def _guard(method: str, inner: Any, observers: list[Observer]) -> Any:
    async def guarded(stream: Any) -> None:
        metadata = stream.metadata
        namespace = _first(metadata, context.NAMESPACE_HEADER)
        context.set_from_headers(namespace, _first(metadata, context.LEASE_HEADER))
        started = time.perf_counter()
        code = Status.OK
        try:
            await inner(stream)
        except (errors.CtrdeckError, ConnectionError, TimeoutError) as exc:
            code = status_of(exc)
            message = str(exc) if isinstance(exc, errors.CtrdeckError) else _os_message(exc)
            log.info(
                "request failed",
                extra={
                    "method": method,
                    "namespace": namespace,
                    "code": code.name,
                    "err": message,
                },
            )
            raise GRPCError(code, message) from None
        except GRPCError as exc:
            code = exc.status
            raise
        except Exception as exc:
            code = Status.UNKNOWN
            log.exception("request failed", extra={"method": method, "namespace": namespace})
            raise GRPCError(Status.UNKNOWN, f"{type(exc).__name__}: {exc}") from None
        finally:
            elapsed = time.perf_counter() - started
            for observe in observers:
                observe(method, namespace, code, elapsed)

    return guarded
