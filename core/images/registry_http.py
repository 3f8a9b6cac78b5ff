"""HTTP/1.1 over asyncio streams, framed by h11: the registry client's transport under httpx.

This module owns the registry client's connections. httpx keeps the request and response
model, redirects, cookies and what timeouts mean; h11 writes and parses every message (heads,
Content-Length, chunked and read-to-the-close bodies, interim answers) and says whether a
connection may serve another request. Here: kept-alive connections per scheme, host and port
on asyncio streams (TLS with the caller's context and the host as server name; a context still
to be built is built in a worker thread on the first https request), h11 fed reads of up to
`READ_SIZE` bytes and its body data handed on as it comes, a body read to its end giving its
connection back and one closed early closing it. Failures are httpx's own (`ConnectError`
caused by the `ssl.SSLError`, `ConnectTimeout`, `ReadError`, `ReadTimeout`, `WriteError`,
`RemoteProtocolError`), so the client's retries and TLS wording see what they saw with httpx's
default transport, whose httpcore and anyio cost a fresh engine's first pull ~90 ms of imports
and re-chunk every 64 KiB read.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable

import h11
import httpx

READ_SIZE = 1 << 20
"""Most bytes read (and so handed on) at once; also the stream's buffer limit."""
_HEAD_LIMIT = 64 << 10

_Key = tuple[bytes, bytes, int]


class _Connection:
    """One socket and h11's view of the conversation on it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(h11.CLIENT, max_incomplete_event_size=_HEAD_LIMIT)

    def usable(self) -> bool:
        return (
            self.http.our_state is h11.IDLE
            and self.http.their_state is h11.IDLE
            and not self.writer.is_closing()
            and not self.reader.at_eof()
        )

    def write(self, event: h11.Event) -> None:
        # Passthrough: a body part goes to the socket as it is, not joined to its framing.
        self.writer.writelines(self.http.send_with_data_passthrough(event) or ())

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
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError as exc:
                raise httpx.ReadTimeout("reading the answer timed out", request=request) from exc
            except (OSError, ssl.SSLError) as exc:
                raise httpx.ReadError(str(exc) or repr(exc), request=request) from exc
            if not data and http.their_state is h11.SEND_RESPONSE:
                raise httpx.RemoteProtocolError(
                    "the server closed the connection without an answer", request=request
                )
            http.receive_data(data)  # b"" is the close, which h11 judges

    def close(self) -> None:
        self.writer.close()


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
                reader, writer = await asyncio.open_connection(
                    name,
                    port,
                    ssl=tls,
                    server_hostname=name if tls else None,
                    limit=READ_SIZE,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(
                f"connect to {name}:{port} timed out", request=request
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or repr(exc), request=request) from exc
        return _Connection(reader, writer)

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
                        await conn.writer.drain()
                conn.write(h11.EndOfMessage())
                await conn.writer.drain()
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
