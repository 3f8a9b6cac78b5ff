"""One gRPC call on the server: grpclib's request handler, with a fast path for unary replies.

grpclib 0.4.9 sends a unary reply as three separate trips through h2: the
reply headers, the message, the trailers, each through h2's connection and
stream state machines, header validation flags, frame objects and their
serialisation; about a fifth of the engine's CPU per call. Here the reply of a
unary method is held when the handler sends it (`ServerStream.send_message`)
and, when the handler returns without error, written with its headers and
trailers (`grpc-status: 0`) as three frames built here in one write
(`write_unary_reply`), advancing h2's records exactly as its own path would:
the stream ends closed by our END_STREAM with headers and trailers sent, and
both flow-control windows lose the message's length. The header blocks come
from the connection's own HPACK encoder, so its table stays in step.

Anything else takes grpclib's own path, unchanged: streaming replies, a reply
not held (initial metadata sent first, event listeners that may change what is
sent), a message larger than a window or a frame, a stream not half-closed by
the client, a connection closing or paused by back-pressure; and a handler that
raises or sends its trailers itself after its message first has the held
message sent the usual way.

`request_handler` is grpclib's, running calls with `ServerStream`, on request
headers h2 leaves undecoded: a client repeats a few header lists, so each
list's decoding and grpclib's checks of it are done once per connection
(`Requests`), and a call builds only its own deadline and metadata. Statuses,
deadlines, cancellation and metadata are handled as in grpclib (the typed
errors are mapped in `core.services.status`).

A call's protocol stream (`CallStream`, made by `core.connection`) is grpclib's
without its three asyncio Events until something waits on or sets one, over a
`RequestBuffer`: grpclib's Buffer on a deque rather than an asyncio.Queue, with
the same reads, acknowledgements (so the same WINDOW_UPDATEs) and errors.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property, partial
from itertools import chain
from types import TracebackType
from typing import Any

from grpclib import protocol as gproto
from grpclib import server as gserver
from grpclib.const import Status
from grpclib.encoding.base import GRPC_CONTENT_TYPE
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.metadata import Deadline, decode_metadata, decode_timeout
from grpclib.utils import DeadlineWrapper, Wrapper
from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from h2.stream import StreamClosedBy, StreamState
from multidict import MultiDict

from core.hpack_cache import CachedEncoder

log = logging.getLogger("grpclib.server")

_FRAME_HEADER = struct.Struct(">BHBBL")
_MESSAGE_PREFIX = struct.Struct(">BI")
_DATA, _HEADERS = 0x0, 0x1
_END_STREAM, _END_HEADERS = 0x1, 0x4
_TRAILERS_OK = ((b"grpc-status", b"0"),)
# A reply's headers by content type, as h2 would pass them to the encoder.
_REPLY_HEADERS: dict[str, tuple[tuple[bytes, bytes], ...]] = {}
# The grpclib events whose listeners may change a reply's metadata or message.
_SEND_EVENTS = frozenset(("send_initial_metadata", "send_message", "send_trailing_metadata"))


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    n = len(payload)
    return _FRAME_HEADER.pack(n >> 16, n & 0xFFFF, kind, flags, stream_id) + payload


def write_unary_reply(
    stream: gproto.Stream, headers: tuple[tuple[bytes, bytes], ...], data: bytes
) -> bool:
    """Send `headers`, the DATA `data` and OK trailers on `stream` in one write, if h2's
    own path would send them as they are; False (nothing done) otherwise."""
    conn = stream._h2_connection
    stream_id: int = stream.id  # type: ignore[assignment]
    h2_stream = conn.streams.get(stream_id)
    if h2_stream is None or not stream.connection.write_ready.is_set():
        return False
    machine = h2_stream.state_machine
    size = len(data)
    if (
        machine.state is not StreamState.HALF_CLOSED_REMOTE
        or machine.headers_sent
        or conn.state_machine.state is not ConnectionState.SERVER_OPEN
        or size > h2_stream.outbound_flow_control_window
        or size > conn.outbound_flow_control_window
        or size > conn.max_outbound_frame_size
        or stream._transport.is_closing()
    ):
        return False
    # Header blocks of a few dozen bytes: within the smallest frame size HTTP/2
    # allows (16 KiB), so never split into CONTINUATION frames.
    encoder: CachedEncoder = conn.encoder  # type: ignore[assignment]
    head = encoder.encode_tuples(headers)
    tail = encoder.encode_tuples(_TRAILERS_OK)
    frames = b"".join(
        (
            _frame(_HEADERS, _END_HEADERS, stream_id, head),
            _frame(_DATA, 0, stream_id, data),
            _frame(_HEADERS, _END_HEADERS | _END_STREAM, stream_id, tail),
        )
    )
    # What h2's send_headers, send_data and send_headers(end_stream=True) leave.
    machine.headers_sent = machine.trailers_sent = True
    machine.state = StreamState.CLOSED
    machine.stream_closed_by = StreamClosedBy.SEND_END_STREAM
    h2_stream.request_method = None
    h2_stream.outbound_flow_control_window -= size
    conn.outbound_flow_control_window -= size
    queued = conn.data_to_send()
    stream._transport.write(queued + frames if queued else frames)
    stream.data_sent += size
    stream.connection.data_sent += size
    stream.connection.headers_send_process()
    stream.connection.data_send_process()
    return True


class RequestBuffer(gproto.Buffer):
    """grpclib's Buffer of a stream's received data, over a deque instead of an
    asyncio.Queue: the same reads, acknowledgements and end, for a call whose data
    has mostly arrived before its handler reads it."""

    def __init__(self, ack_callback: Callable[[int], None]) -> None:
        self._ack_callback = ack_callback
        self._eof = False
        self._unacked: deque[gproto.UnackedData] = deque()  # type: ignore[assignment]
        self._acked: deque[gproto.AckedData] = deque()
        self._acked_size = 0
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def add(self, data: bytes, ack_size: int) -> None:
        self._unacked.append(gproto.UnackedData(data, len(data), ack_size))
        self._wake()

    def eof(self) -> None:
        self._unacked.append(gproto.UnackedData(b"", 0, 0))
        self._eof = True
        self._wake()

    async def _next(self) -> gproto.UnackedData:
        unacked: deque[gproto.UnackedData] = self._unacked  # type: ignore[assignment]
        while not unacked:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return unacked.popleft()

    async def read(self, size: int) -> bytes:
        """grpclib 0.4.9's `Buffer.read`, line for line, on the deque."""
        assert size >= 0, "Size can not be negative"
        if size == 0:
            return b""
        unacked: deque[gproto.UnackedData] = self._unacked  # type: ignore[assignment]
        if not self._eof or unacked:
            while self._acked_size < size:
                data, data_size, ack_size = unacked.popleft() if unacked else await self._next()
                if not ack_size:
                    break
                self._acked.append(gproto.AckedData(memoryview(data), data_size))
                self._acked_size += data_size
                self._ack_callback(ack_size)
        if self._eof and self._acked_size == 0:
            return b""
        if self._acked_size < size:
            raise AssertionError("Received less data than expected")
        chunks = []
        chunks_size = 0
        while chunks_size < size:
            next_chunk, next_chunk_size = self._acked[0]
            if chunks_size + next_chunk_size <= size:
                chunks.append(next_chunk)
                chunks_size += next_chunk_size
                self._acked.popleft()
            else:
                offset = size - chunks_size
                chunks.append(next_chunk[:offset])
                chunks_size += offset
                self._acked[0] = gproto.AckedData(
                    data=next_chunk[offset:], data_size=next_chunk_size - offset
                )
        self._acked_size -= size
        return b"".join(chunks)

    def unacked_size(self) -> int:
        unacked: deque[gproto.UnackedData] = self._unacked  # type: ignore[assignment]
        size = sum(item.ack_size for item in unacked)
        unacked.clear()
        return size


class CallStream(gproto.Stream):
    """grpclib's protocol Stream for a call the client opened: a `RequestBuffer`, and
    its three events made only when something waits on or sets one (a unary call
    usually never does)."""

    def __init__(
        self,
        connection: gproto.Connection,
        h2_connection: Any,
        transport: Any,
        *,
        stream_id: int | None = None,
        wrapper: Wrapper | None = None,
    ) -> None:
        self.connection = connection
        self._h2_connection = h2_connection
        self._transport = transport
        self.wrapper = wrapper
        self.headers = self.trailers = None
        if stream_id is not None:
            self.init_stream(stream_id, connection)

    def init_stream(self, stream_id: int, connection: gproto.Connection) -> None:
        self.id = stream_id
        self.buffer = RequestBuffer(partial(connection.ack, stream_id))
        connection.streams_started += 1
        self.created = connection.last_stream_created = time.monotonic()

    @cached_property
    def window_updated(self) -> asyncio.Event:  # type: ignore[override]
        return asyncio.Event()

    @cached_property
    def headers_received(self) -> asyncio.Event:  # type: ignore[override]
        return asyncio.Event()

    @cached_property
    def trailers_received(self) -> asyncio.Event:  # type: ignore[override]
        return asyncio.Event()


class ServerStream(gserver.Stream):  # type: ignore[type-arg]
    """grpclib's server stream, holding a unary reply until the handler returns."""

    _held: bytes | None = None

    async def send_message(self, message: Any) -> None:
        if (
            self._cardinality.server_streaming
            or self._send_initial_metadata_done
            or self._send_message_done
            or not self._dispatch.__dict__.keys() >= _SEND_EVENTS
        ):
            await super().send_message(message)
            return
        body = self._codec.encode(message, self._send_type)
        self._held = _MESSAGE_PREFIX.pack(0, len(body)) + body
        self._send_message_done = True
        self._messages_sent += 1
        connection = self._stream.connection
        connection.messages_sent += 1
        connection.last_message_sent = time.monotonic()

    async def _send_held(self) -> None:
        """The held message, with its headers, the usual way."""
        held, self._held = self._held, None
        if held is not None:
            await super().send_initial_metadata()
            await self._stream.send_data(held)

    async def send_trailing_metadata(self, **kwargs: Any) -> None:
        await self._send_held()
        await super().send_trailing_metadata(**kwargs)

    async def cancel(self) -> None:
        self._held = None
        await super().cancel()

    def _headers(self) -> tuple[tuple[bytes, bytes], ...]:
        content_type = self._content_type
        headers = _REPLY_HEADERS.get(content_type)
        if headers is None:
            headers = ((b":status", b"200"), (b"content-type", content_type.encode()))
            _REPLY_HEADERS[content_type] = headers
        return headers

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        held = self._held
        if (
            held is not None
            and exc_val is None
            and not self._send_trailing_metadata_done
            and not self._cancel_done
            and write_unary_reply(self._stream, self._headers(), held)
        ):
            self._held = None
            self._send_initial_metadata_done = self._send_trailing_metadata_done = True
            return True
        if exc_val is not None and not isinstance(exc_val, Exception):
            # Cancelled: the stream is reset, nothing more is sent.
            self._held = None
        return await super().__aexit__(exc_type, exc_val, exc_tb)


async def _abort(
    h2_stream: gproto.Stream,
    h2_status: int,
    grpc_status: Status | None = None,
    grpc_message: str | None = None,
) -> None:
    headers = [(":status", str(h2_status))]
    if grpc_status is not None:
        headers.append(("grpc-status", str(grpc_status.value)))
    if grpc_message is not None:
        headers.append(("grpc-message", grpc_message))
    await h2_stream.send_headers(headers, end_stream=True)
    if h2_stream.closable:
        h2_stream.reset_nowait()


@dataclass(slots=True)
class Request:
    """What one header list asks of the server, worked out once per connection and list.

    `abort` is the HTTP status, gRPC status and message of a request refused
    before any handler runs; otherwise the method, its caller's metadata and
    the grpc-timeout in seconds (a deadline is a clock reading: per call).
    `plain` says a request with this list may be opened by `core.receive`: it
    is not refused, and has none of the fields h2 acts on beyond validating
    them (content-length, cookie).
    """

    headers: list[tuple[str, str]]
    abort: tuple[int, Status | None, str | None] | None = None
    method_name: str = ""
    method: Any = None
    content_type: str = ""
    user_agent: str | None = None
    timeout: float | None = None
    metadata: list[tuple[str, str | bytes]] = field(default_factory=list)
    plain: bool = False


def prepare(mapping: dict[str, Any], codec: Any, raw: list[tuple[bytes, bytes]]) -> Request:
    """grpclib's checks of a request's headers, in its order; ValueError for a header
    that is not ASCII (what h2 decodes with grpclib's `header_encoding`)."""
    try:
        headers = [(k.decode("ascii"), v.decode("ascii")) for k, v in raw]
    except UnicodeDecodeError as exc:
        raise ValueError("request header is not ASCII") from exc
    request = Request(headers)
    headers_map = dict(headers)
    if headers_map[":method"] != "POST":
        request.abort = (405, None, None)
        return request
    content_type = headers_map.get("content-type")
    if content_type is None:
        request.abort = (415, Status.UNKNOWN, "Missing content-type header")
        return request
    base_content_type, _, sub_type = content_type.partition("+")
    sub_type = sub_type or ProtoCodec.__content_subtype__
    if base_content_type != GRPC_CONTENT_TYPE or sub_type != codec.__content_subtype__:
        request.abort = (415, Status.UNKNOWN, "Unacceptable content-type header")
        return request
    if headers_map.get("te") != "trailers":
        request.abort = (400, Status.UNKNOWN, 'Required "te: trailers" header is missing')
        return request
    method_name = headers_map[":path"]
    method = mapping.get(method_name)
    if method is None:
        request.abort = (200, Status.UNIMPLEMENTED, "Method not found")
        return request
    try:
        request.timeout = min(
            map(decode_timeout, (v for k, v in headers if k == "grpc-timeout")), default=None
        )
    except ValueError:
        request.abort = (200, Status.UNKNOWN, "Invalid grpc-timeout header")
        return request
    request.method_name, request.method = method_name, method
    request.content_type = content_type
    request.user_agent = headers_map.get("user-agent")
    request.metadata = list(decode_metadata(headers).items())
    request.plain = "content-length" not in headers_map and "cookie" not in headers_map
    return request


class Requests:
    """A connection's prepared requests by header list: a client repeats a few lists.

    Bounded like `core.hpack_cache`: at most MAX_REQUESTS lists of at most
    MAX_REQUEST_BYTES each, all forgotten when full.
    """

    MAX_REQUESTS = 32
    MAX_REQUEST_BYTES = 1024

    def __init__(self, mapping: dict[str, Any], codec: Any) -> None:
        self.mapping = mapping
        self.codec = codec
        self.known: dict[tuple[tuple[bytes, bytes], ...], Request] = {}

    def get(self, raw: list[tuple[bytes, bytes]]) -> Request:
        key = tuple(raw)
        request = self.known.get(key)
        if request is None:
            request = prepare(self.mapping, self.codec, raw)
            if sum(map(len, chain.from_iterable(key))) <= self.MAX_REQUEST_BYTES:
                if len(self.known) >= self.MAX_REQUESTS:
                    self.known.clear()
                self.known[key] = request
        return request


async def request_handler(
    requests: Requests,
    _stream: gproto.Stream,
    raw_headers: list[tuple[bytes, bytes]],
    codec: Any,
    status_details_codec: Any,
    dispatch: Any,
    release_stream: Callable[[], Any],
) -> None:
    """grpclib 0.4.9's `request_handler` on undecoded headers, with `ServerStream`."""
    try:
        try:
            request = requests.get(raw_headers)
        except ValueError:
            # A stream error, as grpc-go answers a malformed field.
            await _stream.reset(ErrorCodes.PROTOCOL_ERROR)
            return
        if request.abort is not None:
            await _abort(_stream, *request.abort)
            return
        timeout = request.timeout
        deadline = None if timeout is None else Deadline.from_timeout(timeout)
        method = request.method
        metadata = MultiDict(request.metadata)

        async with ServerStream(
            _stream,
            request.method_name,
            method.cardinality,
            method.request_type,
            method.reply_type,
            codec=codec,
            status_details_codec=status_details_codec,
            dispatch=dispatch,
            deadline=deadline,
            user_agent=request.user_agent,
        ) as stream:
            wrapper: Wrapper
            deadline_wrapper: Any
            if deadline is None:
                wrapper = _stream.wrapper = Wrapper()
                deadline_wrapper = nullcontext()
            else:
                wrapper = _stream.wrapper = DeadlineWrapper()
                deadline_wrapper = wrapper.start(deadline)  # type: ignore[attr-defined]
            try:
                with deadline_wrapper, wrapper:
                    stream.metadata, method_func = await dispatch.recv_request(
                        metadata,
                        method.func,
                        method_name=request.method_name,
                        deadline=deadline,
                        content_type=request.content_type,
                        user_agent=request.user_agent,
                        peer=stream.peer,
                    )
                    await method_func(stream)
            except GRPCError:
                raise
            except TimeoutError:
                if wrapper.cancel_failed:
                    log.exception("Failed to handle cancellation")
                    raise GRPCError(Status.DEADLINE_EXCEEDED) from None
                elif wrapper.cancelled:
                    log.info("Deadline exceeded")
                    raise GRPCError(Status.DEADLINE_EXCEEDED) from None
                else:
                    log.exception("Timeout occurred")
                    raise
            except StreamTerminatedError as err:
                if wrapper.cancel_failed:
                    log.exception("Failed to handle cancellation")
                    raise
                else:
                    assert wrapper.cancelled
                    log.info("Request was cancelled: %s", err)
                    raise
            except Exception:
                log.exception("Application error")
                raise
    except ProtocolError:
        log.exception("Application error")
    except Exception:
        log.exception("Server error")
    finally:
        release_stream()
