"""The engine's listeners: TCP addresses, the loopback rule, and how clients learn of them.

`parse_tcp` reads `[grpc] tcp_address` (`host:port`, `[v6]:port`; an empty
host is loopback, as it always was here). `is_loopback` decides whether a
plaintext listener is local enough to need no TLS: only loopback literals and
`localhost` are, since a name could resolve anywhere. The engine tells clients
which listeners are up, and how each is secured, through the Introspection
exports of its `io.containerd.grpc.v1/introspection` plugin (the protos have no
field for it; containerd's clients show exports and act on none):
`listen.grpc.unix`, `listen.grpc.tcp` with `listen.grpc.tcp.security`
(`plaintext`, `tls` or `mtls`), and `listen.metrics`. `from_exports` reads
them back for `core.status`. `bind_tcp` binds the listener's socket, so the
engine knows the port it got (for `:0`) and an address in use is an error that
names the setting.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass

from core.errors import FailedPrecondition, InvalidArgument

UNIX = "listen.grpc.unix"
TCP = "listen.grpc.tcp"
TCP_SECURITY = "listen.grpc.tcp.security"
METRICS = "listen.metrics"
PLAINTEXT = "plaintext"
TLS = "tls"
MTLS = "mtls"
SECURITY_NAMES = {PLAINTEXT: "plaintext", TLS: "TLS", MTLS: "mTLS"}


@dataclass(frozen=True)
class Listener:
    """One listener as a client shows it: `unix:///run/x.sock`, `tcp://127.0.0.1:10000`."""

    kind: str
    address: str
    security: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "address": self.address, "security": self.security}


def parse_tcp(address: str, key: str = "grpc.tcp_address") -> tuple[str, int]:
    """`host:port` as (host, port); an empty host means 127.0.0.1."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise InvalidArgument(f"{key} {address!r} must be host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def format_tcp(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def exports(unix: str, tcp: str = "", tcp_security: str = "", metrics: str = "") -> dict[str, str]:
    """The introspection exports for the listeners that are up (bound addresses)."""
    out = {UNIX: unix}
    if tcp:
        out[TCP] = tcp
        out[TCP_SECURITY] = tcp_security
    if metrics:
        out[METRICS] = metrics
    return out


def from_exports(facts: dict[str, str]) -> list[Listener]:
    """The listeners an engine exported; empty for an engine that exports none (containerd)."""
    found: list[Listener] = []
    if facts.get(UNIX):
        found.append(Listener("grpc", f"unix://{facts[UNIX]}", "plaintext"))
    if facts.get(TCP):
        security = facts.get(TCP_SECURITY, "")
        found.append(
            Listener("grpc", f"tcp://{facts[TCP]}", security if security in SECURITY_NAMES else "?")
        )
    if facts.get(METRICS):
        found.append(Listener("metrics", f"http://{facts[METRICS]}/metrics", "plaintext"))
    return found


def bind_tcp(address: str) -> socket.socket:
    """A bound TCP socket for `[grpc] tcp_address`; errors name the address."""
    host, port = parse_tcp(address)
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise InvalidArgument(f"grpc.tcp_address {address}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise FailedPrecondition(
                f"grpc.tcp_address {address} is already in use by another process"
            ) from None
        raise FailedPrecondition(
            f"cannot listen on grpc.tcp_address {address}: {exc.strerror or exc}"
        ) from None
    return sock


def bound_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return format_tcp(host, port)
