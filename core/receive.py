"""The receive side of a unary call: a client's request opened without h2's per-frame machinery.

A client's unary call is two frames: HEADERS (END_HEADERS) opening a new stream
and one DATA (END_STREAM) holding the request. h2 takes each through its frame
buffer, hyperframe's parsing, the connection's and the stream's state machines
(each transition a dict lookup keyed by enums), header decoding, normalisation
and validation, content-length tracking and both inbound windows: about two
fifths of the engine's CPU per call. `Receiver.parts` splits what the socket
delivers at frame boundaries and takes such frames itself, leaving h2's records
exactly as h2 would (the new stream open, then half-closed by the client, its
window and the connection's less the request, the highest inbound stream id,
closed streams pruned by the same open-stream count) and giving the same events
(RequestReceived; DataReceived, StreamEnded), which grpclib processes after the
whole read as before, so the call runs from there as it did: grpclib's Stream
acknowledges the data as it reads it, and h2 sends the WINDOW_UPDATEs.

Only what h2 would take without a word is taken here. A HEADERS frame: a new
odd stream id above the highest, within the concurrent stream limit; END_HEADERS,
no padding, priority or END_STREAM; the connection open (or idle: a first request
opens it); a header block whose header list `core.calls.Requests` holds as plain
(not refused, no content-length or cookie: the only inputs h2's body checks or
normalisation act on). A block the connection's `CachedDecoder` has decoded
before with the table as it is now is not decoded again; any other (a client's
new path or metadata, inserted into the table, or a known list coded anew after
the table moved) is decoded here by h2's own decoder with h2's own error mapping,
and its list processed as h2 would process it (grpclib configures h2 to neither
normalise nor validate); if that fails or the list is not plain, the decoder's
table is put back as it was and the frame is h2's, which decodes it from the same
table and acts as it always did (the same GOAWAY for a bad or oversized block).
A DATA frame: unpadded, on a stream open on both sides that the client opened
without content-length, within both inbound windows. A PING (8 bytes, stream 0),
its ACK queued as h2 queues it, and a WINDOW_UPDATE of the connection's window
within h2's bounds: grpc-go sends both after each reply, ahead of the next
request in the same write. Everything else (the
preface, but not the frames after it in its read; any other frame, a frame
split across reads, a header block in CONTINUATION frames and whatever follows
it in the read) is fed to h2 as it arrives, in order, so it sees it as it
always did.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from h2.connection import AllowedStreamIDs, ConnectionInputs, ConnectionState, _decode_headers
from h2.events import (
    DataReceived,
    Event,
    PingAckReceived,
    PingReceived,
    RequestReceived,
    StreamEnded,
    WindowUpdated,
)
from h2.stream import StreamState
from h2.utilities import (
    HeaderValidationFlags,
    is_informational_response,
    normalize_inbound_headers,
    validate_headers,
)

from core.calls import Requests
from core.hpack_cache import CachedDecoder

_HEAD = struct.Struct(">BHBBL")
_HEAD_LEN = 9
_DATA, _HEADERS, _PING, _WINDOW_UPDATE = 0x0, 0x1, 0x6, 0x8
_TAKEN = frozenset((_DATA, _HEADERS, _PING, _WINDOW_UPDATE))
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
_PING_ACK = _HEAD.pack(0, 8, _PING, _ACK, 0)
_LARGEST_WINDOW = 2**31 - 1
# How h2 checks the header list of a request a server receives.
_REQUEST = HeaderValidationFlags(
    is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
)
# The flags hyperframe reads on each type; others it ignores, and so does this.
_HEADERS_FLAGS = _END_STREAM | _END_HEADERS | _PADDED | _PRIORITY


class Receiver:
    """Takes a connection's plain request frames itself; hands every other byte to h2."""

    def __init__(self, h2_conn: Any, requests: Requests) -> None:
        self.conn = h2_conn
        self.buffer = h2_conn.incoming_buffer
        self.requests = requests

    def parts(self, data: bytes) -> Iterator[bytes | list[Event]]:
        """`data` in order, as bytes to feed to h2 and as the events of frames taken
        here. Feed each part before asking for the next: a frame is judged on h2's
        records after everything before it."""
        buffer = self.buffer
        n = len(data)
        # The client's preface (h2 checks it) may come in one read with its first frames.
        i = start = buffer._preamble_len
        if buffer._data or buffer._headers_buffer or n < i:
            yield data
            return
        if i:
            yield data[:i]
        unpack = _HEAD.unpack_from
        while n - i >= _HEAD_LEN:
            high, low, kind, flags, sid = unpack(data, i)
            body = i + _HEAD_LEN
            end = body + (high << 16 | low)
            if end > n:
                break
            sid &= 0x7FFFFFFF
            if kind == _HEADERS:
                if flags & _HEADERS_FLAGS != _END_HEADERS:
                    if not flags & _END_HEADERS:
                        # A header block continued: h2 holds it until it ends.
                        break
                    i = end
                    continue
            elif (
                (kind == _DATA and flags & _PADDED)
                or (kind == _PING and (sid or end - body != 8))
                or (kind == _WINDOW_UPDATE and (sid or end - body != 4))
                or kind not in _TAKEN
            ):
                i = end
                continue
            if start < i:
                yield data[start:i]
                start = i
            if kind == _HEADERS:
                events = self.open(sid, data[body:end])
            elif kind == _DATA:
                events = self.receive(sid, data[body:end], flags & _END_STREAM)
            elif kind == _PING:
                events = self.ping(data[body:end], flags & _ACK)
            else:
                events = self.window_update(int.from_bytes(data[body:end], "big"))
            if events is not None:
                start = end
                yield events
            i = end
        if start < n:
            yield data[start:] if start else data

    def open(self, sid: int, block: bytes) -> list[Event] | None:
        """The events h2 would give for HEADERS `block` (END_HEADERS) on stream `sid`,
        with its records advanced as its own; None (nothing done) if h2 might do
        anything else."""
        conn = self.conn
        state = conn.state_machine.state
        if (
            (state is not ConnectionState.SERVER_OPEN and state is not ConnectionState.IDLE)
            or not sid & 1
            or sid <= conn.highest_inbound_stream_id
        ):
            return None
        # Counted before anything is decoded, as h2 does; the count also forgets
        # closed streams, as h2's does on a new stream.
        if conn.open_inbound_streams + 1 > conn.local_settings.max_concurrent_streams:
            return None
        decoder: CachedDecoder = conn.decoder
        headers = decoder.remembered(block)
        request = None if headers is None else self.requests.known.get(tuple(headers))
        if request is None:
            headers = self.decode(block)
            if headers is None:
                return None
        elif not request.plain:
            return None
        if state is ConnectionState.IDLE:
            # A connection's first request opens it (h2's own machine: no events).
            conn.state_machine.process_input(ConnectionInputs.RECV_HEADERS)
        machine = conn._begin_new_stream(sid, AllowedStreamIDs.ODD).state_machine
        machine.state = StreamState.OPEN
        machine.client = False
        machine.headers_received = True
        opened = RequestReceived(stream_id=sid)
        opened.headers = list(headers)
        return [opened]

    def decode(self, block: bytes) -> list[Any] | None:
        """The header list h2 would give for request `block`, decoded by h2's own
        decoder and checked by h2's own functions, if it is a plain request; else
        None, with the decoder's table put back as it was, so h2 decodes the block
        itself from the same table and refuses it (or not) as it always did."""
        config = self.conn.config
        if config.header_encoding:
            return None
        decoder: CachedDecoder = self.conn.decoder
        mark = decoder.mark()
        try:
            headers: Any = _decode_headers(decoder, block)
            if not is_informational_response(headers):
                # h2's `H2Stream._process_received_headers`, as configured (grpclib
                # turns both steps off).
                if config.normalize_inbound_headers:
                    headers = normalize_inbound_headers(headers, _REQUEST)
                if config.validate_inbound_headers:
                    headers = validate_headers(headers, _REQUEST)
                checked = list(headers)
                if self.requests.get(checked).plain:
                    return checked
        except Exception:
            # Whatever h2 makes of this block (an undecodable or oversized block, a
            # field it refuses, a header list grpclib cannot read) it makes itself.
            pass
        decoder.undo(mark)
        return None

    def ping(self, opaque: bytes, ack: int) -> list[Event] | None:
        """The events h2 would give for a PING (stream 0, 8 bytes), with its ACK
        queued as h2 queues it; None (nothing done) if the connection is not open."""
        conn = self.conn
        if conn.state_machine.state is not ConnectionState.SERVER_OPEN:
            return None
        if ack:
            return [PingAckReceived(ping_data=opaque)]
        conn._data_to_send += _PING_ACK + opaque
        return [PingReceived(ping_data=opaque)]

    def window_update(self, increment: int) -> list[Event] | None:
        """The events h2 would give for a WINDOW_UPDATE of the connection's window, the
        window grown as h2 grows it; None (nothing done) for an increment h2 refuses
        (zero, the reserved bit set, past the largest window) or a connection not open."""
        conn = self.conn
        window = conn.outbound_flow_control_window + increment
        if (
            conn.state_machine.state is not ConnectionState.SERVER_OPEN
            or not 1 <= increment <= _LARGEST_WINDOW
            or window > _LARGEST_WINDOW
        ):
            return None
        conn.outbound_flow_control_window = window
        return [WindowUpdated(stream_id=0, delta=increment)]

    def receive(self, sid: int, message: bytes, end_stream: int) -> list[Event] | None:
        """The events h2 would give for DATA `message` on stream `sid`, with its records
        advanced as its own, if the stream is one the client has opened with no
        content-length; None (nothing done) otherwise."""
        conn = self.conn
        stream = conn.streams.get(sid)
        if stream is None or conn.state_machine.state is not ConnectionState.SERVER_OPEN:
            return None
        machine = stream.state_machine
        size = len(message)
        connection_window = conn._inbound_flow_control_window_manager
        stream_window = stream._inbound_window_manager
        if (
            machine.state is not StreamState.OPEN
            or stream._expected_content_length is not None
            or size > connection_window.current_window_size
            or size > stream_window.current_window_size
        ):
            return None
        connection_window.current_window_size -= size
        stream_window.current_window_size -= size
        stream._actual_content_length += size
        received = DataReceived(stream_id=sid)
        received.data = message
        received.flow_controlled_length = size
        if not end_stream:
            return [received]
        machine.state = StreamState.HALF_CLOSED_REMOTE
        ended = received.stream_ended = StreamEnded(stream_id=sid)
        return [received, ended]
