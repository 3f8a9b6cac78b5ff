"""SPDY/3.1 framing: the codec kubelet's streaming protocol rides on, and a small session.

kubelet, crictl and kubectl speak remotecommand (exec, attach) and port-forward
over SPDY/3.1 after an HTTP Upgrade. No maintained SPDY library exists for
asyncio Python, so this module is our own, and only as much of SPDY as those
protocols use: the frames SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING,
GOAWAY, HEADERS, WINDOW_UPDATE and DATA, and header blocks compressed with one
zlib stream per direction primed with the SPDY/3 dictionary. `Session` runs
one connection over any byte transport: it answers PINGs, hands each stream the
peer opens to a callback, and queues frames for writing. Flow control is
advertised wide open (a large initial window in SETTINGS) rather than tracked,
as Go's spdystream client also sends WINDOW_UPDATEs it never waits on.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9
FLAG_FIN, FLAG_UNIDIRECTIONAL = 0x01, 0x02
SETTINGS_INITIAL_WINDOW_SIZE = 7
RST_PROTOCOL_ERROR, RST_INVALID_STREAM, RST_REFUSED_STREAM, RST_CANCEL = 1, 2, 3, 5
MAX_FRAME = 1 << 24
DATA_CHUNK = 32 * 1024

_WORDS = [
    *[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
    ],
    *("200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"),
]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
# The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): 1423 bytes.
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


class ProtocolError(Exception):
    """The peer sent something that is not SPDY/3.1."""


@dataclass
class Frame:
    """One decoded frame. `kind` is 0 for DATA, else the control frame type."""

    kind: int
    flags: int = 0
    stream_id: int = 0
    data: bytes = b""
    headers: dict[str, list[str]] = field(default_factory=dict)
    associated_id: int = 0
    priority: int = 0
    status: int = 0
    settings: dict[int, int] = field(default_factory=dict)
    delta: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


class HeaderCompressor:
    """One direction's header zlib stream: it lasts as long as the connection."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(zdict=DICTIONARY)

    def pack(self, headers: dict[str, list[str]] | dict[str, str]) -> bytes:
        raw = [struct.pack(">I", len(headers))]
        for name, value in headers.items():
            joined = value if isinstance(value, str) else "\0".join(value)
            for part in (name.lower().encode(), joined.encode()):
                raw += [struct.pack(">I", len(part)), part]
        return self._z.compress(b"".join(raw)) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    def __init__(self) -> None:
        self._z = zlib.decompressobj(zdict=DICTIONARY)

    def unpack(self, block: bytes) -> dict[str, list[str]]:
        try:
            raw = self._z.decompress(block)
        except zlib.error as exc:
            raise ProtocolError(f"bad header block: {exc}") from None
        pos = 0

        def take() -> bytes:
            nonlocal pos
            if pos + 4 > len(raw):
                raise ProtocolError("truncated header block")
            (n,) = struct.unpack_from(">I", raw, pos)
            if pos + 4 + n > len(raw):
                raise ProtocolError("truncated header block")
            pos += 4 + n
            return raw[pos - n : pos]

        if len(raw) < 4:
            raise ProtocolError("truncated header block")
        (count,) = struct.unpack_from(">I", raw)
        pos = 4
        headers: dict[str, list[str]] = {}
        for _ in range(count):
            name = take().decode(errors="replace").lower()
            headers.setdefault(name, []).extend(take().decode(errors="replace").split("\0"))
        return headers


def _control(kind: int, flags: int, payload: bytes) -> bytes:
    if len(payload) >= MAX_FRAME:
        raise ValueError("frame too large")
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, data: bytes, fin: bool = False) -> bytes:
    if len(data) >= MAX_FRAME:
        raise ValueError("frame too large")
    flags = FLAG_FIN if fin else 0
    return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(data)) + data


def syn_stream(
    z: HeaderCompressor,
    stream_id: int,
    headers: dict[str, str],
    *,
    associated_id: int = 0,
    priority: int = 0,
    fin: bool = False,
) -> bytes:
    head = struct.pack(">IIBB", stream_id, associated_id, (priority & 7) << 5, 0)
    return _control(SYN_STREAM, FLAG_FIN if fin else 0, head + z.pack(headers))


def syn_reply(
    z: HeaderCompressor, stream_id: int, headers: dict[str, str], fin: bool = False
) -> bytes:
    return _control(
        SYN_REPLY, FLAG_FIN if fin else 0, struct.pack(">I", stream_id) + z.pack(headers)
    )


def rst_stream(stream_id: int, status: int) -> bytes:
    return _control(RST_STREAM, 0, struct.pack(">II", stream_id, status))


def settings(values: dict[int, int]) -> bytes:
    body = b"".join(struct.pack(">II", key & 0xFFFFFF, v) for key, v in values.items())
    return _control(SETTINGS, 0, struct.pack(">I", len(values)) + body)


def ping(ping_id: int) -> bytes:
    return _control(PING, 0, struct.pack(">I", ping_id))


def goaway(last_stream_id: int, status: int = 0) -> bytes:
    return _control(GOAWAY, 0, struct.pack(">II", last_stream_id, status))


def window_update(stream_id: int, delta: int) -> bytes:
    return _control(WINDOW_UPDATE, 0, struct.pack(">II", stream_id, delta))


class FrameReader:
    """Turns the bytes of one direction into frames; feed it whatever arrives."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.headers = HeaderDecompressor()

    def feed(self, data: bytes) -> list[Frame]:
        self.buffer += data
        frames = []
        while len(self.buffer) >= 8:
            first, word = struct.unpack_from(">II", self.buffer)
            length = word & 0xFFFFFF
            if len(self.buffer) < 8 + length:
                break
            payload = bytes(self.buffer[8 : 8 + length])
            del self.buffer[: 8 + length]
            flags = word >> 24
            if first & 0x80000000:
                frame = self._control(first, flags, payload)
                if frame is not None:
                    frames.append(frame)
            else:
                frames.append(Frame(0, flags, first & 0x7FFFFFFF, payload))
        return frames

    def _control(self, first: int, flags: int, p: bytes) -> Frame | None:
        version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version} is not spoken, only 3")
        need = {SYN_STREAM: 10, SYN_REPLY: 4, RST_STREAM: 8, SETTINGS: 4, PING: 4}
        need |= {GOAWAY: 4, HEADERS: 4, WINDOW_UPDATE: 8}
        if kind not in need:
            return None  # unknown control frames are ignored, as the spec says
        if len(p) < need[kind]:
            raise ProtocolError(f"control frame {kind} is too short")
        (word,) = struct.unpack_from(">I", p)
        sid = word & 0x7FFFFFFF
        if kind == SYN_STREAM:
            assoc = struct.unpack_from(">I", p, 4)[0] & 0x7FFFFFFF
            block = self.headers.unpack(p[10:])
            return Frame(kind, flags, sid, headers=block, associated_id=assoc, priority=p[8] >> 5)
        if kind in (SYN_REPLY, HEADERS):
            return Frame(kind, flags, sid, headers=self.headers.unpack(p[4:]))
        if kind == RST_STREAM:
            return Frame(kind, flags, sid, status=struct.unpack_from(">I", p, 4)[0])
        if kind == SETTINGS:
            values = {}
            for i in range(min(word, (len(p) - 4) // 8)):
                key, value = struct.unpack_from(">II", p, 4 + 8 * i)
                values[key & 0xFFFFFF] = value
            return Frame(kind, flags, settings=values)
        if kind == PING:
            return Frame(kind, flags, data=p[:4], stream_id=word)
        if kind == GOAWAY:
            status = struct.unpack_from(">I", p, 4)[0] if len(p) >= 8 else 0
            return Frame(kind, flags, sid, status=status)
        delta = struct.unpack_from(">I", p, 4)[0] & 0x7FFFFFFF
        return Frame(kind, flags, sid, delta=delta)


class Stream:
    """One SPDY stream, as the handler of a session sees it."""

    def __init__(self, session: Session, stream_id: int, headers: dict[str, list[str]]) -> None:
        self.session = session
        self.id = stream_id
        self.headers = headers
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.remote_closed = False
        self.local_closed = False
        self.reset = False

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower()) or [""]
        return values[0]

    async def read(self) -> bytes:
        """The next data, or b"" once the peer half-closed or reset the stream."""
        if self.remote_closed and self.incoming.empty():
            return b""
        return await self.incoming.get()

    def write(self, data: bytes) -> None:
        if self.local_closed or self.reset:
            return
        for i in range(0, len(data), DATA_CHUNK):
            self.session.send(data_frame(self.id, data[i : i + DATA_CHUNK]))

    def close(self) -> None:
        """Half-close our side (DATA with FIN)."""
        if not (self.local_closed or self.reset):
            self.local_closed = True
            self.session.send(data_frame(self.id, b"", fin=True))

    def _remote_end(self) -> None:
        if not self.remote_closed:
            self.remote_closed = True
            self.incoming.put_nowait(b"")


class Session:
    """One SPDY connection. `write` sends bytes to the peer; `feed` takes bytes from it."""

    def __init__(
        self,
        write: Callable[[bytes], None],
        on_stream: Callable[[Stream], Awaitable[None] | None],
        *,
        client: bool = False,
    ) -> None:
        self._write = write
        self.on_stream = on_stream
        self.reader = FrameReader()
        self.compressor = HeaderCompressor()
        self.streams: dict[int, Stream] = {}
        self.next_id = 1 if client else 2
        self.closed = asyncio.Event()
        self.replies: dict[int, asyncio.Future[dict[str, list[str]]]] = {}
        self.handlers: set[asyncio.Task[None]] = set()
        self.last_peer_id = 0
        self.on_pong: Callable[[], None] = lambda: None

    def start(self) -> None:
        """Say hello: the SETTINGS frame that opens our side of the connection."""
        self.send(settings({SETTINGS_INITIAL_WINDOW_SIZE: 1 << 30}))

    def send(self, frame: bytes) -> None:
        if not self.closed.is_set():
            self._write(frame)

    def feed(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except ProtocolError:
            self.send(goaway(self.last_peer_id, 1))
            self.close()
            return
        for frame in frames:
            self._dispatch(frame)

    def _dispatch(self, f: Frame) -> None:
        stream = self.streams.get(f.stream_id)
        if f.kind == 0:
            if stream is None:
                self.send(rst_stream(f.stream_id, RST_INVALID_STREAM))
                return
            if f.data:
                stream.incoming.put_nowait(f.data)
                # Keep the peer's window open: we buffer, we never push back.
                self.send(window_update(f.stream_id, len(f.data)))
            if f.fin:
                stream._remote_end()
        elif f.kind == SYN_STREAM:
            self.last_peer_id = max(self.last_peer_id, f.stream_id)
            stream = Stream(self, f.stream_id, f.headers)
            self.streams[f.stream_id] = stream
            if f.fin:
                stream._remote_end()
            result = self.on_stream(stream)
            if asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result)
                self.handlers.add(task)
                task.add_done_callback(self.handlers.discard)
        elif f.kind == SYN_REPLY:
            waiter = self.replies.pop(f.stream_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(f.headers)
            if stream is not None and f.fin:
                stream._remote_end()
        elif f.kind == RST_STREAM and stream is not None:
            stream.reset = True
            stream._remote_end()
        elif f.kind == PING:
            if (f.stream_id % 2) != (self.next_id % 2):
                self.send(ping(f.stream_id))
            else:
                self.on_pong()
        elif f.kind == GOAWAY:
            for s in self.streams.values():
                s._remote_end()

    def reply(self, stream: Stream, headers: dict[str, str] | None = None) -> None:
        self.send(syn_reply(self.compressor, stream.id, headers or {}))

    async def open(self, headers: dict[str, str], timeout: float = 30.0) -> Stream:
        """Open a stream and wait for the peer's SYN_REPLY."""
        sid, self.next_id = self.next_id, self.next_id + 2
        stream = Stream(self, sid, {k.lower(): [v] for k, v in headers.items()})
        self.streams[sid] = stream
        waiter = asyncio.get_running_loop().create_future()
        self.replies[sid] = waiter
        self.send(syn_stream(self.compressor, sid, headers))
        await asyncio.wait_for(waiter, timeout)
        return stream

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            for stream in self.streams.values():
                stream._remote_end()
            for waiter in self.replies.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("SPDY connection closed"))
