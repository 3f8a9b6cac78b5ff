"""The HTTP/2 connections the engine accepts: limits, timeouts, stream bookkeeping.

grpclib 0.4.9 serves each connection with an `H2Protocol` and a `Handler`; this
module subclasses both (through `HardenedServer`) to bound what one client can
cost. It caps concurrent streams with SETTINGS_MAX_CONCURRENT_STREAMS; closes
a connection with GOAWAY(ENHANCE_YOUR_CALM) when the client resets streams
faster than `Limits.reset_rate` per second beyond a burst (the "rapid reset"
pattern); rejects a frame whose header announces more than the negotiated
maximum frame size as soon as the header arrives, instead of buffering it;
and closes connections whose handshake, or any frame once begun, does not
complete within `connection_timeout`, or that carry no stream and receive
nothing for `idle_timeout`.

Replies leave in one write per loop turn (`CoalescedTransport`), not one per
frame batch, and header blocks that repeat are coded once per state of the
HPACK tables (`core.hpack_cache`). Calls run through `core.calls` (the unary
reply fast path), on request headers h2 leaves undecoded; a read's plain
request frames, PINGs and connection WINDOW_UPDATEs are taken by `core.receive`
without h2's per-frame machinery and the rest fed to h2; received frames skip
h2's eager `repr` of each (`quiet_frames`), and frames of unknown types are
ignored as RFC 9113 asks.

It also works around a leak in grpclib 0.4.9. A stream reset before its
handler task first ran is cancelled before the task's `try/finally` is
entered, so grpclib's `release_stream` never runs and the connection's
`EventsProcessor.streams` dict keeps that stream forever; and finished or
cancelled tasks (holding their frames, the stream and that dict) stay in the
handler's `_tasks`/`_cancelled` until the next tenth request, and closed
handlers in the server until the next tenth connection. Here a done-callback
releases each stream exactly once and drops each task as it finishes, and
closed handlers are swept at every new connection. Without this, streams
reset at once cost about 8 KB each, kept as long as their handler is (the
engine went from 47 to 284 MiB RSS in five rounds of 10,000; see
bench/fault_server.py). h2's own record of closed streams is bounded (2**16
per connection) and goes with the connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grpclib import protocol as gproto
from grpclib import server as gserver
from h2.errors import ErrorCodes
from h2.events import StreamReset, UnknownFrameReceived
from h2.exceptions import ProtocolError
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes
from hyperframe.frame import FRAMES, ExtensionFrame, Frame

from core import calls
from core.hpack_cache import CachedDecoder, CachedEncoder
from core.receive import Receiver

log = logging.getLogger("ctrdeck.server")

PREFACE_LEN = 24
FRAME_HEADER_LEN = 9


@dataclass(frozen=True)
class Limits:
    """What one connection may cost; `0` turns a timeout off."""

    max_concurrent_streams: int = 100
    reset_burst: int = 200
    reset_rate: float = 50.0
    connection_timeout: float = 20.0
    idle_timeout: float = 300.0


class FrameTooLarge(Exception):
    pass


class FrameWatch:
    """Follows frame boundaries of the incoming byte stream, without parsing frames.

    `pending` is true while the preface or a frame is only partly received;
    `frames` counts whole frames after the preface.
    """

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self.preface_left = PREFACE_LEN
        self.header = bytearray()
        self.body_left = 0
        self.frames = 0

    @property
    def pending(self) -> bool:
        return bool(self.preface_left or self.header or self.body_left)

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        if self.preface_left:
            i = min(self.preface_left, n)
            self.preface_left -= i
        while i < n:
            if self.body_left:
                take = min(self.body_left, n - i)
                self.body_left -= take
                i += take
                if not self.body_left:
                    self.frames += 1
                continue
            if not self.header and n - i >= FRAME_HEADER_LEN:
                # A whole header in this chunk, the usual case: read it in place.
                length = data[i] << 16 | data[i + 1] << 8 | data[i + 2]
                i += FRAME_HEADER_LEN
            else:
                take = min(FRAME_HEADER_LEN - len(self.header), n - i)
                self.header += data[i : i + take]
                i += take
                if len(self.header) < FRAME_HEADER_LEN:
                    continue
                length = int.from_bytes(self.header[:3], "big")
                self.header.clear()
            if length > self.max_frame_size:
                raise FrameTooLarge(f"frame of {length} bytes, max {self.max_frame_size}")
            self.body_left = length
            if not length:
                self.frames += 1


def _quiet(cls: type[Frame]) -> type[Frame]:
    return type(cls.__name__, (cls,), {"__repr__": object.__repr__})


# h2 formats every frame it receives with `repr()` for its trace logger, which
# does nothing: ~5% of a unary call. The frames a connection receives take a
# subclass whose repr is object's (the class of a quiet frame is its own).
_QUIET = {cls: _quiet(cls) for cls in (*FRAMES.values(), ExtensionFrame)}
_QUIET.update({quiet: quiet for quiet in list(_QUIET.values())})


class _QuietFrameBuffer(FrameBuffer):
    """h2's frame buffer, yielding frames of `_QUIET` classes."""

    def __next__(self) -> Frame:
        frame = super().__next__()
        frame.__class__ = _QUIET[frame.__class__]
        return frame


def quiet_frames(h2_conn: Any) -> None:
    """Make `h2_conn` receive frames of `_QUIET` classes, dispatched as their bases."""
    h2_conn.incoming_buffer.__class__ = _QuietFrameBuffer
    table = h2_conn._frame_dispatch_table
    table.update({_QUIET[cls]: handle for cls, handle in list(table.items())})


def _ignore(event: Any) -> None:
    pass


class _Connection(gproto.Connection):
    """grpclib's connection, making each call's stream a `core.calls.CallStream`."""

    def create_stream(self, *, stream_id: int | None = None, wrapper: Any = None) -> gproto.Stream:
        return calls.CallStream(
            self, self._connection, self._transport, stream_id=stream_id, wrapper=wrapper
        )


class _Handler(gserver.Handler):
    """grpclib's per-connection handler, running calls with `core.calls.request_handler`
    and releasing every stream and task once done."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.requests = calls.Requests(self.mapping, self.codec)

    def accept(
        self,
        stream: gproto.Stream,
        headers: Any,
        release_stream: Callable[[], Any],
    ) -> None:
        released = False

        def release_once() -> None:
            nonlocal released
            if not released:
                released = True
                release_stream()

        self.__gc_step__()
        task = self._tasks[stream] = self.loop.create_task(
            calls.request_handler(
                self.requests,
                stream,
                headers,
                self.codec,
                self.status_details_codec,
                self.dispatch,
                release_once,
            )
        )

        def done(t: asyncio.Task[None]) -> None:
            # A task cancelled before its first step never ran request_handler's
            # `finally`, so its stream would stay registered forever.
            release_once()
            if self._tasks.get(stream) is t:
                del self._tasks[stream]

        task.add_done_callback(done)

    def cancel(self, stream: gproto.Stream) -> None:
        task = self._tasks.pop(stream, None)
        if task is None:
            return
        task.cancel()
        self._cancelled.add(task)
        task.add_done_callback(self._cancelled.discard)

    def close(self) -> None:
        super().close()
        for task in self._cancelled:
            task.add_done_callback(self._cancelled.discard)
        self._tasks.clear()


class CoalescedTransport:
    """A transport whose writes within one turn of the event loop leave in one `send`.

    grpclib writes each frame batch as soon as h2 makes it: a unary reply is
    three writes (headers, message, trailers), so three syscalls here and up
    to three wake-ups of the client. Handed to grpclib in place of the socket's
    transport, this joins them; the bytes go out, in order, at the end of the
    loop turn, and before the transport closes. Back-pressure is the real
    transport's: it pauses the protocol when its own buffer fills.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending.append(data)

    def flush(self) -> None:
        if self.pending:
            data = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)
            self.pending.clear()
            # A connection lost before the turn ended takes nothing more.
            if not self.transport.is_closing():
                self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self.pending.clear()
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)


class _Protocol(gproto.H2Protocol):
    def __init__(self, handler: _Handler, config: Any, h2_config: Any, limits: Limits) -> None:
        super().__init__(handler, config, h2_config)
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.tokens = float(limits.reset_burst)
        self.refilled = time.monotonic()
        self.last_activity = self.loop.time()
        self.watch: FrameWatch | None = None
        self.receiver: Receiver | None = None
        self.stall_timer: asyncio.TimerHandle | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(CoalescedTransport(transport, self.loop))
        self.connection.__class__ = _Connection
        h2_conn = self.connection._connection
        # Before any header block: the caches must see the tables from their start.
        h2_conn.encoder = CachedEncoder.replacing(h2_conn.encoder)
        h2_conn.decoder = CachedDecoder.replacing(h2_conn.decoder)
        quiet_frames(h2_conn)
        self.receiver = Receiver(h2_conn, self.handler.requests)
        if self.limits.max_concurrent_streams != h2_conn.local_settings.max_concurrent_streams:
            h2_conn.update_settings(
                {SettingCodes.MAX_CONCURRENT_STREAMS: self.limits.max_concurrent_streams}
            )
            self.connection.flush()
        self.watch = FrameWatch(h2_conn.max_inbound_frame_size)
        processors = self.processor.processors
        on_reset = processors[StreamReset]

        def counted_reset(event: StreamReset) -> None:
            on_reset(event)
            if event.remote_reset:
                self._count_reset()

        processors[StreamReset] = counted_reset
        # Frames of unknown types are to be ignored (RFC 9113 4.1); grpclib has no
        # processor for h2's event and raised from data_received, dropping the connection.
        processors[UnknownFrameReceived] = _ignore
        self._arm_stall()
        self._arm_idle(self.limits.idle_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_activity = self.loop.time()
        assert self.watch is not None
        try:
            self.watch.feed(data)
        except FrameTooLarge as exc:
            self._goaway(ErrorCodes.FRAME_SIZE_ERROR, str(exc))
            return
        assert self.receiver is not None
        events: list[Any] = []
        try:
            for part in self.receiver.parts(data):
                if isinstance(part, list):
                    events += part
                else:
                    events += self.connection.feed(part)
        except ProtocolError:
            # grpclib's own handling, but the GOAWAY h2 queued (PROTOCOL_ERROR for
            # an undecodable header block, FRAME_SIZE_ERROR...) leaves first: the
            # client learns why it was dropped. As ever, nothing of the read is processed.
            log.debug("HTTP/2 protocol error", exc_info=True)
            self.connection.flush()
            self.processor.close("Protocol error")
            return
        # What h2 queued for this read (a PING's ACK, a WINDOW_UPDATE) is flushed after
        # the events: the calls they start are scheduled first, so a reply written in
        # its task's first step leaves in the same write (`CoalescedTransport`). The
        # one event that closes the connection here, the client's GOAWAY, finds h2's
        # queue emptied by h2 itself, as before.
        for event in events:
            self.processor.process(event)
        self.connection.flush()
        if self.closed:
            return
        if self.watch.pending or not self.watch.frames:
            self._arm_stall()
        elif self.stall_timer is not None:
            self.stall_timer.cancel()
            self.stall_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self._cancel_timers()
        super().connection_lost(exc)

    def _count_reset(self) -> None:
        now = time.monotonic()
        self.tokens = min(
            float(self.limits.reset_burst),
            self.tokens + (now - self.refilled) * self.limits.reset_rate,
        )
        self.refilled = now
        self.tokens -= 1
        if self.tokens < 0 and not self.closed:
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, "too many stream resets")

    def _arm_stall(self) -> None:
        if self.stall_timer is None and self.limits.connection_timeout > 0:
            self.stall_timer = self.loop.call_later(self.limits.connection_timeout, self._stalled)

    def _stalled(self) -> None:
        self.stall_timer = None
        assert self.watch is not None
        if self.watch.preface_left or not self.watch.frames:
            self._drop("HTTP/2 handshake not completed in time")
        else:
            self._goaway(ErrorCodes.PROTOCOL_ERROR, "frame not completed in time")

    def _arm_idle(self, delay: float) -> None:
        if self.limits.idle_timeout > 0:
            self.idle_timer = self.loop.call_later(delay, self._idle_check)

    def _idle_check(self) -> None:
        self.idle_timer = None
        if self.closed:
            return
        now = self.loop.time()
        if self.processor.streams:
            # Calls in flight count as activity: a long Events.Subscribe that
            # receives nothing is not idle, and the clock restarts when it ends.
            self.last_activity = now
            self._arm_idle(self.limits.idle_timeout / 4)
            return
        quiet = now - self.last_activity
        if quiet >= self.limits.idle_timeout:
            self._goaway(ErrorCodes.NO_ERROR, "idle connection")
        else:
            self._arm_idle(self.limits.idle_timeout - quiet)

    def _goaway(self, code: ErrorCodes, reason: str) -> None:
        """Tell the client why with GOAWAY, then close."""
        try:
            self.connection._connection.close_connection(
                error_code=code, additional_data=reason.encode()
            )
            self.connection.flush()
        except Exception:  # the connection may be half-dead already
            log.debug("GOAWAY not sent", exc_info=True)
        self._drop(reason)

    def _drop(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_timers()
        log.info("closing client connection", extra={"reason": reason})
        self.processor.close(reason)

    def _cancel_timers(self) -> None:
        for timer in (self.stall_timer, self.idle_timer):
            if timer is not None:
                timer.cancel()
        self.stall_timer = self.idle_timer = None


class HardenedServer(gserver.Server):
    """grpclib's server with `Limits` applied to every connection it accepts."""

    # Closed handlers are swept at every new connection rather than every tenth.
    __gc_interval__ = 1

    def __init__(self, handlers: Any, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(handlers, **kwargs)
        self.limits = limits
        # Request headers reach `core.calls` undecoded: it decodes each distinct
        # list once per connection, not every field of every call.
        self._h2_config.header_encoding = None

    def _protocol_factory(self) -> gproto.H2Protocol:
        self.__gc_step__()
        handler = _Handler(
            self._mapping, self._codec, self._status_details_codec, self.__dispatch__
        )
        self._handlers.add(handler)
        return _Protocol(handler, self._config, self._h2_config, self.limits)
