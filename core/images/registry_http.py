"""HTTP/1.1 over asyncio streams: the registry client's transport under httpx.

This module owns the registry client's connections. httpx keeps the request and response
model, redirects, cookies and what timeouts mean; this transport writes each request on a
kept-alive connection per scheme, host and port (TLS with the caller's context and the host
as server name; a context still to be built is built in a worker thread on the first https
request), sends a body whole or chunked as httpx framed it, and streams the answer's body
(Content-Length, chunked, or up to the close) in reads of up to `READ_SIZE` bytes. A body
read to its end gives its connection back; one closed early closes it. Failures are httpx's
own (`ConnectError` caused by the `ssl.SSLError`, `ConnectTimeout`, `ReadError`,
`ReadTimeout`, `WriteError`, `RemoteProtocolError`), so the client's retries and TLS wording
see what they saw with httpx's default transport, which loads httpcore, h11 and anyio on a
fresh engine's first pull (~90 ms of CPU) and re-chunks every 64 KiB read.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable

import httpx

READ_SIZE = 1 << 20
"""Most bytes of a body handed on at once; also the stream's buffer limit."""
_HEAD_LIMIT = 64 << 10
_NO_BODY = frozenset({204, 304})


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class AsyncHTTP11(httpx.AsyncBaseTransport):
    """httpx's transport for HTTP/1.1 registries; `tls` (or what it builds) serves https URLs."""

    def __init__(self, tls: ssl.SSLContext | Callable[[], ssl.SSLContext]) -> None:
        self._tls = tls
        self._idle: dict[tuple[bytes, bytes, int], list[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        port = url.port or (443 if scheme == b"https" else 80)
        key = (scheme, url.raw_host, port)
        timeouts = request.extensions.get("timeout", {})
        replayable = isinstance(request.stream, httpx.ByteStream)
        while True:
            conn, reused = self._take(key), True
            if conn is None:
                conn, reused = await self._connect(request, key, timeouts.get("connect")), False
            try:
                await self._send(conn, request, timeouts.get("write"))
                answer = await self._head(conn, request, timeouts.get("read"))
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
        status, reason, headers, http11 = answer
        stream = _Body(self, key, conn, request, status, headers, http11, timeouts.get("read"))
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    def _take(self, key: tuple[bytes, bytes, int]) -> _Connection | None:
        idle = self._idle.get(key, [])
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    def give_back(self, key: tuple[bytes, bytes, int], conn: _Connection) -> None:
        if conn.usable():
            self._idle.setdefault(key, []).append(conn)
        else:
            conn.close()

    async def _connect(
        self, request: httpx.Request, key: tuple[bytes, bytes, int], timeout: float | None
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
        url = request.url
        lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), url.raw_path)]
        lines += [b"%s: %s\r\n" % (name, value) for name, value in request.headers.raw]
        lines.append(b"\r\n")
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        writer = conn.writer
        try:
            async with asyncio.timeout(timeout):
                writer.write(b"".join(lines))
                assert isinstance(request.stream, httpx.AsyncByteStream)
                async for part in request.stream:
                    if not part:
                        continue
                    if chunked:
                        writer.write(b"%x\r\n" % len(part))
                        writer.write(part)
                        writer.write(b"\r\n")
                    else:
                        writer.write(part)
                    await writer.drain()
                if chunked:
                    writer.write(b"0\r\n\r\n")
                await writer.drain()
        except TimeoutError as exc:
            raise httpx.WriteTimeout("sending the request timed out", request=request) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.WriteError(str(exc) or repr(exc), request=request) from exc

    async def _head(
        self, conn: _Connection, request: httpx.Request, timeout: float | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bool]:
        reader = conn.reader
        while True:
            try:
                async with asyncio.timeout(timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            except TimeoutError as exc:
                raise httpx.ReadTimeout(
                    "waiting for the answer timed out", request=request
                ) from exc
            except asyncio.IncompleteReadError as exc:
                raise httpx.RemoteProtocolError(
                    "the server closed the connection without an answer", request=request
                ) from exc
            except asyncio.LimitOverrunError as exc:
                raise httpx.RemoteProtocolError(
                    "the answer's head is too long", request=request
                ) from exc
            except (OSError, ssl.SSLError) as exc:
                raise httpx.ReadError(str(exc) or repr(exc), request=request) from exc
            if len(head) > _HEAD_LIMIT:
                raise httpx.RemoteProtocolError("the answer's head is too long", request=request)
            status_line, *fields = head[:-4].split(b"\r\n")
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                raise httpx.RemoteProtocolError(
                    f"not an HTTP/1.1 answer: {status_line[:80]!r}", request=request
                )
            status = int(parts[1])
            if 100 <= status < 200:
                continue  # an interim answer; the real one follows
            headers = []
            for field in fields:
                name, sep, value = field.partition(b":")
                if not sep or not name or name != name.strip():
                    raise httpx.RemoteProtocolError(
                        f"bad header line {field[:80]!r}", request=request
                    )
                headers.append((name, value.strip()))
            # An HTTP/1.0 answer ends its connection (this client asks for no keep-alive).
            return status, parts[2] if len(parts) > 2 else b"", headers, parts[0] == b"HTTP/1.1"

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
        key: tuple[bytes, bytes, int],
        conn: _Connection,
        request: httpx.Request,
        status: int,
        headers: list[tuple[bytes, bytes]],
        http11: bool,
        timeout: float | None,
    ) -> None:
        self._pool = pool
        self._key = key
        self._conn: _Connection | None = conn
        self._request = request
        self._timeout = timeout
        fields = {name.lower(): value for name, value in headers}
        self._chunked = b"chunked" in fields.get(b"transfer-encoding", b"").lower()
        length = fields.get(b"content-length", b"")
        self._length = int(length) if length.isdigit() and not self._chunked else None
        reusable = http11 and fields.get(b"connection", b"").lower() != b"close"
        self._keep = reusable and (self._chunked or self._length is not None)
        if request.method == "HEAD" or status in _NO_BODY:
            self._length, self._chunked, self._keep = 0, False, reusable

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._conn is None:
            raise httpx.StreamClosed()
        reader = self._conn.reader
        try:
            if self._chunked:
                async for part in self._chunks(reader):
                    yield part
            elif self._length is not None:
                left = self._length
                while left:
                    part = await self._read(reader.readexactly(min(left, READ_SIZE)))
                    left -= len(part)
                    yield part
            else:
                while part := await self._read(reader.read(READ_SIZE)):
                    yield part
        except BaseException:
            self._close()
            raise
        self._done()

    async def _chunks(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        while True:
            line = await self._read(reader.readuntil(b"\r\n"))
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(
                    f"bad chunk size {size_text[:20]!r}", request=self._request
                ) from None
            if size == 0:
                while (await self._read(reader.readuntil(b"\r\n"))) != b"\r\n":
                    pass  # trailers, which nothing here uses
                return
            while size:
                part = await self._read(reader.readexactly(min(size, READ_SIZE)))
                size -= len(part)
                yield part
            if await self._read(reader.readexactly(2)) != b"\r\n":
                raise httpx.RemoteProtocolError(
                    "a chunk did not end in CRLF", request=self._request
                )

    async def _read(self, step: object) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                return await step  # type: ignore[misc,no-any-return]
        except TimeoutError as exc:
            raise httpx.ReadTimeout("reading the answer timed out", request=self._request) from exc
        except asyncio.IncompleteReadError as exc:
            raise httpx.RemoteProtocolError(
                "the server closed the connection in the middle of the answer",
                request=self._request,
            ) from exc
        except asyncio.LimitOverrunError as exc:
            raise httpx.RemoteProtocolError(
                "a chunk header is too long", request=self._request
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ReadError(str(exc) or repr(exc), request=self._request) from exc

    def _done(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._keep:
                self._pool.give_back(self._key, conn)
            else:
                conn.close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def aclose(self) -> None:
        if self._conn is not None:
            if self._length == 0 and not self._chunked:
                self._done()
            else:
                self._close()
