"""HTTP/1.1 on asyncio, framed by h11: the registry client's transport under httpx.

This module owns the registry client's connections. httpx keeps the request and response
model, redirects, cookies and what timeouts mean; h11 writes and parses every message (heads,
Content-Length, chunked and read-to-the-close bodies, interim answers) and says whether a
connection may serve another request. Here: kept-alive connections per scheme, host and port
(TLS with the caller's context and the host as server name; a context still to be built is
built in a worker thread on the first https request), each socket read by a buffered protocol
into one buffer of `READ_SIZE` bytes that h11 takes whole when it needs data (reading pauses
while the buffer is full), h11's body data handed on as it comes, a body read to its end giving
its connection back and one closed early closing it. Failures are httpx's own (`ConnectError`
caused by the `ssl.SSLError`, `ConnectTimeout`, `ReadError`, `ReadTimeout`, `WriteError`,
`RemoteProtocolError`), so the client's retries and TLS wording see what they saw with httpx's
default transport, whose httpcore and anyio cost a fresh engine's first pull ~90 ms of imports
and re-chunk every 64 KiB read. asyncio's streams would copy every byte twice more (into the
reader's buffer and out of it) in pieces of 256 KiB: ~40% of the transport's CPU for a blob.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable

import h11
import httpx

READ_SIZE = 1 << 20
"""Most bytes read (and so handed on) at once: a connection's receive buffer."""
_HEAD_LIMIT = 64 << 10

_Key = tuple[bytes, bytes, int]


class _Socket(asyncio.BufferedProtocol):
    """A connection's socket: reads land in one buffer, which h11 takes whole.

    The buffer exists while the connection is in use: an idle kept-alive connection holds
    none (`rest`), so a pool of them costs no more memory than their sockets.
    """

    def __init__(self) -> None:
        self._view: memoryview | None = None
        self._filled = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._writable: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._view is None:
            self._view = memoryview(bytearray(READ_SIZE))
        return self._view[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        if self._filled == READ_SIZE:
            assert self.transport is not None
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._error = self._error or exc
        self._wake()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def at_eof(self) -> bool:
        return self._eof and not self._filled

    def rest(self) -> None:
        """Let the buffer go while nothing is in it (it is made again on the next read)."""
        if not self._filled and self._view is not None:
            self._view.release()
            self._view = None

    async def drain(self) -> None:
        if self._writable is not None:
            await self._writable
        if self._error is not None:
            raise self._error
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the connection is closed")

    async def feed(self, http: h11.Connection) -> bool:
        """Give h11 what has arrived, waiting for something; False at the end of the stream."""
        while not self._filled and not self._eof:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._filled:
            assert self._view is not None
            http.receive_data(self._view[: self._filled])
            self._filled = 0
            if self._paused:
                assert self.transport is not None
                self._paused = False
                self.transport.resume_reading()
            return True
        if self._error is not None:
            raise self._error
        return False


class _Connection:
    """One socket and h11's view of the conversation on it."""

    def __init__(self, sock: _Socket) -> None:
        self.sock = sock
        assert sock.transport is not None
        self.transport = sock.transport
        self.http = h11.Connection(h11.CLIENT, max_incomplete_event_size=_HEAD_LIMIT)

    def usable(self) -> bool:
        return (
            self.http.our_state is h11.IDLE
            and self.http.their_state is h11.IDLE
            and not self.transport.is_closing()
            and not self.sock.at_eof()
        )

    def write(self, event: h11.Event) -> None:
        # Passthrough: a body part goes to the socket as it is, not joined to its framing.
        self.transport.writelines(self.http.send_with_data_passthrough(event) or ())

    async def next_event(self, request: httpx.Request, timeout: float | None) -> object:
        http = self.http
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc), request=request) from exc
            if event is not h11.NEED_DATA:
                return event
            try:
                async with asyncio.timeout(timeout):
                    more = await self.sock.feed(http)
            except TimeoutError as exc:
                raise httpx.ReadTimeout("reading the answer timed out", request=request) from exc
            except (OSError, ssl.SSLError) as exc:
                raise httpx.ReadError(str(exc) or repr(exc), request=request) from exc
            if not more:
                if http.their_state is h11.SEND_RESPONSE:
                    raise httpx.RemoteProtocolError(
                        "the server closed the connection without an answer", request=request
                    )
                http.receive_data(b"")  # the close, which h11 judges

    def close(self) -> None:
        self.transport.close()


class AsyncHTTP11(httpx.AsyncBaseTransport):
    """httpx's transport for HTTP/1.1 registries; `tls` (or what it builds) serves https URLs."""

    def __init__(self, tls: ssl.SSLContext | Callable[[], ssl.SSLContext]) -> None:
        self._tls = tls
        self._idle: dict[_Key, list[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        key = (scheme, url.raw_host, url.port or (443 if scheme == b"https" else 80))
        timeouts = request.extensions.get("timeout", {})
        replayable = isinstance(request.stream, httpx.ByteStream)
        while True:
            conn, reused = self._take(key), True
            if conn is None:
                conn, reused = await self._connect(request, key, timeouts.get("connect")), False
            try:
                await self._send(conn, request, timeouts.get("write"))
                head = await self._head(conn, request, timeouts.get("read"))
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                conn.close()
                # A kept-alive connection the server has since closed: once more, afresh.
                if reused and replayable:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            break
        return httpx.Response(
            head.status_code,
            headers=head.headers.raw_items(),
            stream=_Body(self, key, conn, request, timeouts.get("read")),
            extensions={
                "http_version": b"HTTP/" + head.http_version,
                "reason_phrase": head.reason,
            },
        )

    def _take(self, key: _Key) -> _Connection | None:
        idle = self._idle.get(key, [])
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    def give_back(self, key: _Key, conn: _Connection) -> None:
        http = conn.http
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
        if conn.usable():
            conn.sock.rest()
            self._idle.setdefault(key, []).append(conn)
        else:
            conn.close()

    async def _connect(
        self, request: httpx.Request, key: _Key, timeout: float | None
    ) -> _Connection:
        scheme, host, port = key
        tls = None
        if scheme == b"https":
            if not isinstance(self._tls, ssl.SSLContext):
                self._tls = await asyncio.to_thread(self._tls)
            tls = self._tls
        name = host.decode("ascii")
        try:
            async with asyncio.timeout(timeout):
                _, sock = await asyncio.get_running_loop().create_connection(
                    _Socket, name, port, ssl=tls, server_hostname=name if tls else None
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(
                f"connect to {name}:{port} timed out", request=request
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or repr(exc), request=request) from exc
        return _Connection(sock)

    async def _send(self, conn: _Connection, request: httpx.Request, timeout: float | None) -> None:
        try:
            async with asyncio.timeout(timeout):
                conn.write(
                    h11.Request(
                        method=request.method,
                        target=request.url.raw_path,
                        headers=request.headers.raw,
                    )
                )
                assert isinstance(request.stream, httpx.AsyncByteStream)
                async for part in request.stream:
                    if part:
                        conn.write(h11.Data(data=part))
                        await conn.sock.drain()
                conn.write(h11.EndOfMessage())
                await conn.sock.drain()
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc), request=request) from exc
        except TimeoutError as exc:
            raise httpx.WriteTimeout("sending the request timed out", request=request) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.WriteError(str(exc) or repr(exc), request=request) from exc

    async def _head(
        self, conn: _Connection, request: httpx.Request, timeout: float | None
    ) -> h11.Response:
        while True:
            event = await conn.next_event(request, timeout)
            if isinstance(event, h11.Response):
                return event
            # Otherwise an interim (1xx) answer: the real one follows.

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


class _Body(httpx.AsyncByteStream):
    """One answer's body, read from its connection as it is iterated."""

    def __init__(
        self,
        pool: AsyncHTTP11,
        key: _Key,
        conn: _Connection,
        request: httpx.Request,
        timeout: float | None,
    ) -> None:
        self._pool = pool
        self._key = key
        self._conn: _Connection | None = conn
        self._request = request
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise httpx.StreamClosed()
        try:
            while type(event := await conn.next_event(self._request, self._timeout)) is h11.Data:
                yield event.data
        except BaseException:
            self._close()
            raise
        self._done()

    def _done(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.give_back(self._key, conn)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def aclose(self) -> None:
        conn = self._conn
        if conn is not None:
            # An empty body (HEAD, 204, 304, Content-Length: 0) ends without a read.
            try:
                ended = type(conn.http.next_event()) is h11.EndOfMessage
            except h11.RemoteProtocolError:
                ended = False
            if ended:
                self._done()
            else:
                self._close()
