"""The receive side of a unary call: a client's request opened without h2's per-frame machinery.

A client's unary call is two frames: HEADERS (END_HEADERS) opening a new stream
and one DATA (END_STREAM) holding the request. h2 takes each through its frame
buffer, hyperframe's parsing, the connection's and the stream's state machines
(each transition a dict lookup keyed by enums), header decoding, normalisation
and validation, content-length tracking and both inbound windows: about two
fifths of the engine's CPU per call. `Receiver.parts` splits what the socket
delivers at frame boundaries and opens such a pair itself, leaving h2's records
exactly as h2 would (the new stream half-closed by the client with its windows
less the request, the connection's window less the request, the highest
inbound stream id, closed streams pruned by the same open-stream count) and
giving grpclib the same three events (RequestReceived, DataReceived,
StreamEnded), so the call runs from there as before: grpclib's Stream
acknowledges the data as it reads it, and h2 sends the WINDOW_UPDATEs.

Only a pair h2 would take without a word is opened here: a header block that the
connection's `CachedDecoder` has decoded before with the table as it is now
(decoding it again changes nothing), to a header list that h2 has already
validated on this connection and that `core.calls.Requests` holds as fit
(no content-length, no cookie: the only inputs h2's normalisation or body
checks act on); a new odd stream id above the highest, within the concurrent
stream limit; neither frame padded, the HEADERS without priority or
END_STREAM; the request within both inbound windows; the connection open.
Everything else (the preface, any other frame, a frame split across reads;
a header block in CONTINUATION frames, an RST_STREAM or a GOAWAY, and whatever
follows them in the read) is fed to h2 as it arrives, in order, so it sees it
as it always did.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from h2.connection import AllowedStreamIDs, ConnectionState
from h2.events import DataReceived, Event, RequestReceived, StreamEnded
from h2.stream import StreamState

from core.calls import Requests
from core.hpack_cache import CachedDecoder, _same

_HEAD = struct.Struct(">BHBBL")
_HEAD_LEN = 9
_DATA, _HEADERS, _RST_STREAM, _GOAWAY = 0x0, 0x1, 0x3, 0x7
_END_STREAM, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x4, 0x8, 0x20
# The flags hyperframe reads on each type; others it ignores, and so does this.
_HEADERS_FLAGS = _END_STREAM | _END_HEADERS | _PADDED | _PRIORITY
_DATA_FLAGS = _END_STREAM | _PADDED


class Receiver:
    """Opens a connection's plain unary requests; hands every other byte to h2."""

    def __init__(self, h2_conn: Any, requests: Requests) -> None:
        self.conn = h2_conn
        self.buffer = h2_conn.incoming_buffer
        self.requests = requests
        self.opened = 0

    def parts(self, data: bytes) -> Iterator[bytes | list[Event]]:
        """`data` in order, as bytes to feed to h2 and as the events of requests
        opened here. Take each part before asking for the next: a request is
        judged on h2's state after everything before it."""
        buffer = self.buffer
        if buffer._data or buffer._preamble_len or buffer._headers_buffer:
            yield data
            return
        n = len(data)
        i = start = 0
        unpack = _HEAD.unpack_from
        while n - i >= _HEAD_LEN:
            high, low, kind, flags, sid = unpack(data, i)
            body = i + _HEAD_LEN
            end = body + (high << 16 | low)
            if end > n:
                break
            if kind != _HEADERS:
                if kind in (_RST_STREAM, _GOAWAY):
                    # What grpclib does on these may close the connection: h2 takes
                    # the rest of the read at once, as it always did.
                    break
                i = end
                continue
            if flags & _HEADERS_FLAGS != _END_HEADERS:
                if not flags & _END_HEADERS:
                    # A header block continued: h2 holds it until it ends.
                    break
                i = end
                continue
            if n - end < _HEAD_LEN:
                break
            high, low, dkind, dflags, dsid = unpack(data, end)
            dbody = end + _HEAD_LEN
            dend = dbody + (high << 16 | low)
            if dkind != _DATA or dsid != sid or dflags & _DATA_FLAGS != _END_STREAM or dend > n:
                i = end
                continue
            if start < i:
                yield data[start:i]
            events = self.open(sid & 0x7FFFFFFF, data[body:end], data[dbody:dend])
            if events is None:
                start = i
            else:
                start = dend
                yield events
            i = dend
        if start < n:
            yield data[start:] if start else data

    def open(self, sid: int, block: bytes, message: bytes) -> list[Event] | None:
        """The events h2 would give for HEADERS `block` and DATA `message` (END_STREAM)
        on stream `sid`, with its records advanced as its own; None (nothing done)
        if h2 might do anything else."""
        conn = self.conn
        if (
            conn.state_machine.state is not ConnectionState.SERVER_OPEN
            or not sid & 1
            or sid <= conn.highest_inbound_stream_id
        ):
            return None
        decoder: CachedDecoder = conn.decoder
        if not _same(decoder.state, decoder._state()):
            return None
        headers = decoder.headers.get(block)
        if headers is None:
            return None
        request = self.requests.known.get(tuple(headers))
        if request is None or not request.plain:
            return None
        size = len(message)
        settings = conn.local_settings
        connection_window = conn._inbound_flow_control_window_manager
        if size > connection_window.current_window_size or size > settings.initial_window_size:
            return None
        # Counting open streams also forgets closed ones, as h2 does on a new stream.
        if conn.open_inbound_streams + 1 > settings.max_concurrent_streams:
            return None
        stream = conn._begin_new_stream(sid, AllowedStreamIDs.ODD)
        machine = stream.state_machine
        machine.state = StreamState.HALF_CLOSED_REMOTE
        machine.client = False
        machine.headers_received = True
        stream._inbound_window_manager.current_window_size -= size
        stream._actual_content_length = size
        connection_window.current_window_size -= size
        opened = RequestReceived(stream_id=sid)
        opened.headers = list(headers)
        received = DataReceived(stream_id=sid)
        received.data = message
        received.flow_controlled_length = size
        ended = received.stream_ended = StreamEnded(stream_id=sid)
        self.opened += 1
        return [opened, received, ended]
