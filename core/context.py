"""The request context: which namespace and which lease a call works in.

containerd carries both in gRPC headers (`containerd-namespace`,
`containerd-lease`); the server sets them here once per call and every concept
reads them from here, so no concept needs to know about gRPC metadata.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from core import identifiers
from core.errors import FailedPrecondition, InvalidArgument

NAMESPACE_HEADER = "containerd-namespace"
LEASE_HEADER = "containerd-lease"

_namespace: ContextVar[str | None] = ContextVar("namespace", default=None)
_lease: ContextVar[str | None] = ContextVar("lease", default=None)
# Names already found valid: nearly every call validates its namespace, and a
# node has few. Bounded, because the header is whatever a client sends.
_valid: set[str] = set()
_VALID_LIMIT = 1024


def namespace() -> str:
    """The call's namespace; containerd refuses namespaced calls without one."""
    ns = _namespace.get()
    if ns in _valid:
        return ns
    if not ns:
        raise FailedPrecondition("namespace is required")
    try:
        identifiers.validate(ns)
    except InvalidArgument as exc:
        raise InvalidArgument(f"namespace validation: {exc.message}") from None
    if len(_valid) >= _VALID_LIMIT:
        _valid.clear()
    _valid.add(ns)
    return ns


def namespace_or_none() -> str | None:
    return _namespace.get() or None


def lease() -> str | None:
    return _lease.get() or None


@contextlib.contextmanager
def scope(namespace: str | None = None, lease: str | None = None) -> Iterator[None]:
    """Run a block as if it were a call with these headers (tests, the pull pipeline)."""
    t1 = _namespace.set(namespace)
    t2 = _lease.set(lease)
    try:
        yield
    finally:
        _namespace.reset(t1)
        _lease.reset(t2)


def set_from_headers(namespace: str | None, lease: str | None) -> None:
    """Bind the headers for the rest of the current task (one gRPC call)."""
    _namespace.set(namespace)
    _lease.set(lease)
