"""How registry failures are told: the status, the registry's own words, and who said it.

Every HTTP answer a registry (or its token server, or the storage it redirects to) gives that
the client cannot use becomes one typed error here, naming the status, the message from the
distribution-spec error body (else the HTTP reason) and the host that answered. Transport
failures are reduced to their most specific cause ("Connection refused"), and TLS failures are
told apart from the rest so they are never retried.
"""

from __future__ import annotations

import json
import os
import ssl

import httpx

from core.errors import (
    CtrdeckError,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)


def registry_message(response: httpx.Response, body: bytes) -> str:
    """The first message of a distribution-spec error body, else the HTTP reason."""
    try:
        errors = json.loads(body).get("errors") or []
        first = errors[0]
        return str(first.get("message") or first.get("code") or response.reason_phrase)
    except (ValueError, AttributeError, IndexError, TypeError):
        return response.reason_phrase or f"HTTP {response.status_code}"


def answered_by(response: httpx.Response) -> str:
    """The `host[:port]` that gave `response` (after redirects, the last one)."""
    return response.url.netloc.decode("ascii", "replace")


def status_error(host: str, what: str, response: httpx.Response, body: bytes) -> CtrdeckError:
    """The typed error for an HTTP status a request for `what` could not use."""
    status = response.status_code
    detail = registry_message(response, body)
    said = answered_by(response)
    if said != host:
        # A redirect took the request elsewhere (object storage): say who refused it.
        detail = f"{detail}; answered by {said}"
    if status == 404:
        return NotFound(f"{what} on {host}: {detail}")
    if status == 401:
        return Unauthenticated(
            f"unauthorized: registry {host} did not accept our credentials for {what} ({detail})"
        )
    if status == 403:
        return PermissionDenied(f"denied: registry {host} refused access to {what} ({detail})")
    if status >= 500 or status == 429:
        return Unavailable(f"registry {host} failed on {what}: HTTP {status} {detail}")
    return FailedPrecondition(f"registry {host} refused {what}: HTTP {status} {detail}")


def transport_reason(exc: BaseException) -> str:
    """The most specific cause of a transport error ("Connection refused", not "All ...")."""
    cur: BaseException | None = exc
    seen: set[int] = set()
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno:
            return os.strerror(cur.errno)
        cur = cur.__cause__ or cur.__context__
    return str(exc) or type(exc).__name__


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a transport error, if that is what it was."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def tls_error(host: str, exc: BaseException) -> FailedPrecondition | None:
    """A clear error for a failed TLS handshake with `host`, or None for other failures."""
    tls = tls_failure(exc)
    if tls is None:
        return None
    if isinstance(tls, ssl.SSLCertVerificationError):
        return FailedPrecondition(
            f"TLS certificate of registry {host} not trusted: {tls.verify_message or tls}; "
            "add its CA with `ca` in hosts.toml (or `skip_verify = true`)"
        )
    if "CERTIFICATE" in (tls.reason or ""):
        return FailedPrecondition(
            f"TLS handshake with registry {host} failed: it refused our client certificate "
            f"or the lack of one ({tls.reason}); set `client` in hosts.toml"
        )
    return FailedPrecondition(
        f"TLS handshake with registry {host} failed: {tls}; if it serves plain HTTP, "
        "configure an http:// URL in hosts.toml or ask for plain HTTP"
    )
