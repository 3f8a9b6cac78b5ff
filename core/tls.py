"""TLS for the engine's TCP listener and for clients of a `tcp://` engine, in one place.

`server_context` builds what `[grpc] tcp_tls_cert`, `tcp_tls_key` and
`tcp_tls_ca` ask for: TLS 1.2 or newer with HTTP/2 agreed by ALPN, and with a
CA, client certificates required and verified against that CA alone (never the
system's roots). `ClientTLS` is what a client is told (`--tls-ca`,
`--tls-cert`, `--tls-key`): the server's certificate is always verified, against
the given CA or the system's roots, and its name must match the host dialled.
`TCPChannel` is grpclib's channel that waits for the server's first HTTP/2
bytes after connecting, so a refused handshake or a refused client certificate
(which TLS 1.3 reports only after the client has finished) becomes one
`ConnectFailed` whose message names the host and what to do, not a
"connection lost" at the first call. Bad files are `InvalidArgument` naming the
setting or flag and the file.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from dataclasses import dataclass

from grpclib.client import Channel, Handler
from grpclib.config import Configuration
from grpclib.protocol import H2Protocol
from h2.config import H2Configuration

from core import listeners
from core.errors import InvalidArgument

ALPN = "h2"
# Time for the TLS handshake and the server's first HTTP/2 frame on a new connection.
HANDSHAKE_TIMEOUT = 10.0
# HTTP/2 forbids TLS 1.2's non-AEAD ciphers (RFC 9113, 9.2.2); TLS 1.3's are all fine.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class ConnectFailed(ConnectionError):
    """A TCP connection to an engine could not be set up safely; the message says why."""


def listener_security(cert: str, ca: str) -> str:
    """`plaintext`, `tls` or `mtls`: what a listener with these settings serves."""
    if not cert:
        return listeners.PLAINTEXT
    return listeners.MTLS if ca else listeners.TLS


def _base(purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.set_alpn_protocols([ALPN])
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


def _readable(path: str, name: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise InvalidArgument(f"{name} {path}: no such file") from None
    except IsADirectoryError:
        raise InvalidArgument(f"{name} {path}: is a directory, not a PEM file") from None
    except OSError as exc:
        raise InvalidArgument(f"{name} {path}: cannot read it ({exc.strerror})") from None


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str, names: tuple[str, str]) -> None:
    cert_name, key_name = names
    _readable(cert, cert_name)
    if key:
        _readable(key, key_name)
    try:
        ctx.load_cert_chain(cert, key or None)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise InvalidArgument(
                f"{key_name} {key or cert} is not the private key of {cert_name} {cert}"
            ) from None
        raise InvalidArgument(
            f"{cert_name} {cert} with {key_name} {key or cert}: not a PEM certificate "
            f"and its private key ({exc.reason or exc})"
        ) from None


def _load_ca(ctx: ssl.SSLContext, ca: str, name: str) -> None:
    _readable(ca, name)
    try:
        ctx.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        raise InvalidArgument(
            f"{name} {ca}: not a PEM CA certificate ({exc.reason or exc})"
        ) from None


def server_context(cert: str, key: str, ca: str = "") -> ssl.SSLContext:
    """The TCP listener's context: its certificate, and with `ca` mutual TLS."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER)
    _load_chain(ctx, cert, key, ("grpc.tcp_tls_cert", "grpc.tcp_tls_key"))
    if ca:
        # Only this CA: the system's roots would admit anyone with a public certificate.
        _load_ca(ctx, ca, "grpc.tcp_tls_ca")
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@dataclass(frozen=True)
class ClientTLS:
    """How a client verifies a `tcp://` engine and proves who it is.

    An empty `ca` trusts the system's roots; `cert` may hold the key too, when
    `key` is empty. A node list (`nodes.toml`) fills the same three fields.
    """

    ca: str = ""
    cert: str = ""
    key: str = ""

    def context(self) -> ssl.SSLContext:
        if self.key and not self.cert:
            raise InvalidArgument(f"--tls-key {self.key} needs --tls-cert, the certificate")
        ctx = _base(ssl.PROTOCOL_TLS_CLIENT)
        if self.ca:
            _load_ca(ctx, self.ca, "--tls-ca")
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if self.cert:
            _load_chain(ctx, self.cert, self.key, ("--tls-cert", "--tls-key"))
        return ctx


# OpenSSL's X509_V_ERR_* numbers that get their own words.
_EXPIRED = 10
_UNTRUSTED = (2, 18, 19, 20, 21)
_NAME_MISMATCH = (62, 64)


def describe(where: str, exc: BaseException) -> str:
    """What went wrong setting up TLS to `where` (host:port), and what to do."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code in _NAME_MISMATCH:
            return (
                f"the certificate of {where} is not issued for that name "
                f"({exc.verify_message}); dial a name or address the certificate lists"
            )
        if code in _UNTRUSTED:
            return (
                f"the certificate of {where} is signed by a CA this client does not trust "
                f"({exc.verify_message}); pass the engine's CA with --tls-ca"
            )
        if code == _EXPIRED:
            return f"the certificate of {where} has expired"
        return f"the certificate of {where} cannot be verified: {exc.verify_message}"
    reason = getattr(exc, "reason", None) or ""
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return (
            f"{where} does not speak TLS; if it is a plaintext listener on loopback, "
            "connect with --plaintext"
        )
    if "ALERT" in reason:
        return (
            f"{where} ended the TLS handshake ({reason.lower()}); it may require a client "
            "certificate (--tls-cert, --tls-key) signed by the CA its grpc.tcp_tls_ca names"
        )
    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake with {where} failed: {reason.lower() or exc}"
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"cannot connect to {where}: {detail}"


class _FirstBytes(H2Protocol):
    """grpclib's protocol, noting whether the server said anything before the connection ended."""

    def __init__(self, handler: Handler, config: Configuration, h2_config: H2Configuration) -> None:
        super().__init__(handler, config, h2_config)
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if not self.answered.done():
            self.answered.set_result(None)
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.answered.done():
            self.answered.set_exception(exc or ConnectionResetError("closed without answering"))
        super().connection_lost(exc)


class TCPChannel(Channel):
    """A channel to `host:port`, plaintext or verified TLS, that fails in words.

    It overrides grpclib 0.4.9's `_protocol_factory` and `_create_connection`
    (pinned in pyproject.toml): the connection counts as made only once the
    server's HTTP/2 settings arrived, which is when a TLS server has accepted
    the client's certificate.
    """

    def __init__(self, host: str, port: int, tls: ClientTLS | None) -> None:
        self.tls = tls
        super().__init__(host, port, ssl=_shared_context(tls) if tls is not None else None)
        self.where = self._authority

    def _protocol_factory(self) -> H2Protocol:
        return _FirstBytes(Handler(), self._config, self._h2_config)

    async def _create_connection(self) -> H2Protocol:
        transport: asyncio.BaseTransport | None = None
        protocol: _FirstBytes | None = None
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                transport, made = await self._loop.create_connection(
                    self._protocol_factory, self._host, self._port, ssl=self._ssl
                )
                assert isinstance(made, _FirstBytes)
                protocol = made
                ssl_object = transport.get_extra_info("ssl_object")
                if ssl_object is not None and ssl_object.selected_alpn_protocol() != ALPN:
                    raise ConnectFailed(
                        f"{self.where} did not agree to HTTP/2 in the TLS handshake (ALPN); "
                        "is it a gRPC server?"
                    )
                await protocol.answered
            return protocol
        except BaseException as exc:
            if protocol is not None:
                # Nobody waits for the answer any more; the abort below must not set it.
                protocol.answered.cancel()
            if transport is not None:
                transport.abort()
            raise self._failure(exc, connected=transport is not None) from None

    def _failure(self, exc: BaseException, *, connected: bool) -> BaseException:
        if isinstance(exc, ConnectFailed) or not isinstance(exc, OSError | TimeoutError):
            return exc
        if isinstance(exc, TimeoutError):
            return ConnectFailed(
                f"{self.where} did not finish connecting within {HANDSHAKE_TIMEOUT:g}s"
            )
        if isinstance(exc, ConnectionRefusedError):
            return ConnectFailed(f"nothing is listening on {self.where} (connection refused)")
        if connected and not isinstance(exc, ssl.SSLError):
            return ConnectFailed(self._closed_early())
        return ConnectFailed(describe(self.where, exc))

    def _closed_early(self) -> str:
        # A TLS server that refuses the client's certificate closes the
        # connection right after the handshake, often without an alert, so
        # what the client sent is the best clue to why.
        if self._ssl is None:
            return (
                f"{self.where} closed the connection before answering; if it serves TLS, "
                "connect with --tls-ca (and --tls-cert, --tls-key) instead of --plaintext"
            )
        if self.tls is None or not self.tls.cert:
            return (
                f"{self.where} closed the connection after the TLS handshake: it requires a "
                "client certificate; pass --tls-cert and --tls-key (signed by the CA the "
                "engine's grpc.tcp_tls_ca names)"
            )
        return (
            f"{self.where} refused this client's certificate (it closed the connection after "
            "the TLS handshake); the certificate must be signed by the CA the engine's "
            "grpc.tcp_tls_ca names, be valid now, and allow client authentication"
        )


@functools.lru_cache(maxsize=16)
def _shared_context(tls: ClientTLS) -> ssl.SSLContext:
    # A console reconnects and probes often; reading and parsing the PEM files
    # each time costs about a millisecond. A file replaced on disk is read
    # again by the next process.
    return tls.context()
