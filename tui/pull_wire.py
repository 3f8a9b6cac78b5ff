"""`ctrdeck pull` on a local socket: one Images.Pull stream over a blocking HTTP/2 connection.

A pull from a shell is one server-streaming call, and the command's start is all a user
waits for before the engine begins: the generic client (asyncio, grpclib, betterproto2,
the generated stubs and their protobuf descriptors) was most of that start. So for a
socket path this module makes the call itself, with h2 over a blocking Unix socket, and
codes its two messages by hand: `PullImageRequest` out, `PullImageProgress` in (with
`LayerProgress`, `Image` and `Descriptor`, fields it does not know skipped as protobuf
skips them). `tests/unit/test_pull_wire.py` holds the codec to the generated classes. A
`tcp://` engine or TLS options take the generic client (`tui.image_commands.pull`).
What is shown, and the registry user sent, are `tui.progress`'s, as for `images push`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from tui import protowire

PATH = "/containerd.services.images.v1.Images/Pull"
NAMESPACE_HEADER = "containerd-namespace"
GRPC_STATUS_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
)  # fmt: skip
RECV_SIZE = 1 << 18


class PullError(Exception):
    """The call failed: the engine's gRPC status message, or what broke the stream."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# -- the messages ----------------------------------------------------------------------------


class Descriptor:
    __slots__ = ("digest", "media_type", "size")

    def __init__(self, data: bytes) -> None:
        self.media_type = self.digest = ""
        self.size = 0
        for number, value in _fields(data):
            if number == 1:
                self.media_type = _text(value)
            elif number == 2:
                self.digest = _text(value)
            elif number == 3:
                self.size = _int64(value)


class Image:
    __slots__ = ("name", "target")

    def __init__(self, data: bytes) -> None:
        self.name = ""
        self.target: Descriptor | None = None
        for number, value in _fields(data):
            if number == 1:
                self.name = _text(value)
            elif number == 3:
                self.target = Descriptor(_bytes(value))


class LayerProgress:
    __slots__ = ("applied", "digest", "media_type", "offset", "size", "state")

    def __init__(self, data: bytes) -> None:
        self.digest = self.media_type = self.state = ""
        self.size = self.offset = self.applied = 0
        for number, value in _fields(data):
            if number == 1:
                self.digest = _text(value)
            elif number == 2:
                self.media_type = _text(value)
            elif number == 3:
                self.size = _int64(value)
            elif number == 4:
                self.offset = _int64(value)
            elif number == 5:
                self.state = _text(value)
            elif number == 6:
                self.applied = _int64(value)


class PullImageProgress:
    __slots__ = ("image", "layers", "message", "phase")

    def __init__(self, data: bytes) -> None:
        self.phase = self.message = ""
        self.layers: list[LayerProgress] = []
        self.image: Image | None = None
        for number, value in _fields(data):
            if number == 1:
                self.phase = _text(value)
            elif number == 2:
                self.layers.append(LayerProgress(_bytes(value)))
            elif number == 3:
                self.image = Image(_bytes(value))
            elif number == 4:
                self.message = _text(value)


def encode_request(
    ref: str,
    *,
    snapshotter: str = "",
    platform: str = "",
    skip_unpack: bool = False,
    plain_http: bool = False,
    user: str = "",
    all_platforms: bool = False,
) -> bytes:
    """A `PullImageRequest`, fields in number order and defaults left out, as protobuf does."""
    out = bytearray()
    for number, value in (
        (1, ref),
        (2, snapshotter),
        (3, platform),
        (4, skip_unpack),
        (6, plain_http),
        (7, user),
        (8, all_platforms),
    ):
        if isinstance(value, bool):
            if value:
                out += _varint(number << 3) + b"\x01"
        elif value:
            raw = value.encode()
            out += _varint(number << 3 | 2) + _varint(len(raw)) + raw
    return bytes(out)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Each field of a message as (number, value): an int for a varint, bytes otherwise."""
    try:
        for number, kind, _, value, end in protowire.fields(data):
            yield (
                number,
                protowire.read_varint(data, value)[0]
                if kind == protowire.VARINT
                else data[value:end],
            )
    except ValueError as e:
        raise PullError(f"a malformed message from the engine ({e})") from None


def _text(value: int | bytes) -> str:
    return _bytes(value).decode("utf-8", "replace")


def _bytes(value: int | bytes) -> bytes:
    if isinstance(value, int):
        raise PullError("a malformed message from the engine (a number for bytes)")
    return value


def _int64(value: int | bytes) -> int:
    if not isinstance(value, int):
        raise PullError("a malformed message from the engine (bytes for a number)")
    return value - (1 << 64) if value >= 1 << 63 else value


# -- the call --------------------------------------------------------------------------------


def stream(address: str, namespace: str, request: bytes) -> Iterator[PullImageProgress]:
    """Call Images.Pull on the socket `address` and yield each progress message as it comes.

    Raises `PullError` for a gRPC status other than OK or a broken HTTP/2 stream, and
    `OSError` when the socket cannot be reached.
    """
    import socket

    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.events import (
        ConnectionTerminated,
        DataReceived,
        ResponseReceived,
        StreamEnded,
        StreamReset,
        TrailersReceived,
    )
    from h2.exceptions import H2Error

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(address)
        conn = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(
            stream_id,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", PATH),
                (":authority", "localhost"),
                ("te", "trailers"),
                ("content-type", "application/grpc"),
                ("user-agent", "ctrdeck"),
                (NAMESPACE_HEADER, namespace),
            ],
        )
        conn.send_data(stream_id, b"\0" + len(request).to_bytes(4, "big") + request, True)
        sock.sendall(conn.data_to_send())
        pending = bytearray()
        headers: dict[str, str] = {}
        while True:
            data = sock.recv(RECV_SIZE)
            if not data:
                raise PullError("the engine closed the connection during the pull", 14)
            try:
                events = conn.receive_data(data)
            except H2Error as exc:
                raise PullError(f"HTTP/2 error from the engine: {exc}", 13) from None
            for event in events:
                if isinstance(event, ResponseReceived | TrailersReceived):
                    headers.update(event.headers)
                elif isinstance(event, DataReceived):
                    pending += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                    yield from _messages(pending)
                elif isinstance(event, StreamEnded):
                    _check_status(headers)
                    if pending:
                        raise PullError("the engine's last message was cut short", 13)
                    return
                elif isinstance(event, StreamReset):
                    raise PullError(f"the engine reset the call (code {event.error_code})", 13)
                elif isinstance(event, ConnectionTerminated):
                    raise PullError("the engine closed the connection during the pull", 14)
            if out := conn.data_to_send():
                sock.sendall(out)
    finally:
        sock.close()


def _messages(pending: bytearray) -> Iterator[PullImageProgress]:
    """The whole length-prefixed gRPC messages at the front of `pending`, taken off it."""
    while len(pending) >= 5:
        size = int.from_bytes(pending[1:5], "big")
        if len(pending) < 5 + size:
            return
        if pending[0]:
            raise PullError("a compressed message from the engine, which was not asked for", 13)
        message = bytes(pending[5 : 5 + size])
        del pending[: 5 + size]
        yield PullImageProgress(message)


def _check_status(headers: dict[str, str]) -> None:
    """Raise the call's error from its trailers (or a trailers-only response's headers)."""
    from urllib.parse import unquote

    if headers.get(":status") != "200":
        raise PullError(f"the engine answered HTTP status {headers.get(':status')}")
    status = headers.get("grpc-status")
    if status is None or not status.isdigit():
        raise PullError("the engine's answer has no gRPC status")
    code = int(status)
    if code:
        name = GRPC_STATUS_NAMES[code] if code < len(GRPC_STATUS_NAMES) else status
        message = headers.get("grpc-message")
        text = unquote(message, errors="replace") if message is not None else name
        raise PullError(text, code)


# -- the command -----------------------------------------------------------------------------


def local_address(args: argparse.Namespace) -> str | None:
    """The socket path `ctrdeck pull` talks to, or None when it takes the generic client."""
    tls = any(getattr(args, o, None) for o in ("tls_ca", "tls_cert", "tls_key", "plaintext"))
    address = args.address
    if not address:
        from tui.launcher import resolve_address

        address = resolve_address(None)
    if tls or address.startswith("tcp://") or "://" in address.removeprefix("unix://"):
        return None
    return address.removeprefix("unix://")


def pull(args: argparse.Namespace) -> int:
    """`ctrdeck pull`: the progress, then `NAME: DIGEST`; 1 with a message when it fails."""
    from core.errors import CtrdeckError
    from tui import progress

    address = local_address(args)
    if address is None:
        from tui import image_commands

        return image_commands.pull(args)
    try:
        request = encode_request(
            args.ref,
            snapshotter=args.snapshotter or "",
            platform=args.platform or "",
            skip_unpack=args.skip_unpack,
            plain_http=args.plain_http,
            user=progress.registry_user(args.ref, args.user),
            all_platforms=args.all_platforms,
        )
        image = progress.follow(stream(address, args.namespace, request))
    except (PullError, OSError, CtrdeckError) as exc:
        message = exc.message if isinstance(exc, PullError) else str(exc) or type(exc).__name__
        print(f"ctrdeck pull: {progress.shown(message)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if image is not None and image.target is not None:
        print(f"{image.name}: {image.target.digest}")
    return 0
