"""The registry client's HTTP/1.1 transport against a canned server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from core.images.registry_http import READ_SIZE, AsyncHTTP11
from tests.tls_certs import make_pki

Answer = Callable[[bytes], bytes]
"""Makes the raw answer to one raw request head; b"" closes the connection instead."""


class Server:
    def __init__(self, answer: Answer, close: bool) -> None:
        self.answer = answer
        self.close = close
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                self.heads.append(head)
                self.bodies.append(await _body(reader, head))
                raw = self.answer(head)
                if not raw:
                    break
                writer.write(raw)
                await writer.drain()
                if self.close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        out = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            out += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readexactly(2)
        return out
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":")[1]))
    return b""


async def start(
    answer: Answer, tls: ssl.SSLContext | None = None, *, close: bool = False
) -> tuple[Server, str]:
    """A server giving `answer`; with `close`, it ends each connection after one."""
    server = Server(answer, close)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    return server, f"{'https' if tls else 'http'}://127.0.0.1:{port}"


def fixed(body: bytes, extra: bytes = b"", version: bytes = b"HTTP/1.1") -> Answer:
    return lambda head: (
        version + b" 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=AsyncHTTP11(ssl.create_default_context)) as c:
        yield c


async def test_a_kept_alive_connection_serves_the_next_request(
    client: httpx.AsyncClient,
) -> None:
    server, url = await start(fixed(b"hello"))
    for _ in range(3):
        response = await client.get(url + "/v2/")
        assert (response.status_code, response.content) == (200, b"hello")
    assert server.connections == 1


async def test_a_large_body_comes_whole_in_reads_of_at_most_read_size(
    client: httpx.AsyncClient,
) -> None:
    data = bytes(range(256)) * (3 * READ_SIZE // 256 + 17)
    _, url = await start(fixed(data))
    async with client.stream("GET", url + "/blob") as response:
        parts = [part async for part in response.aiter_raw()]
    assert b"".join(parts) == data
    assert max(len(p) for p in parts) <= READ_SIZE


async def test_a_slow_reader_gets_every_byte_of_a_body_larger_than_the_buffer(
    client: httpx.AsyncClient,
) -> None:
    # The server can send far ahead of the reader: reading pauses while the connection's
    # buffer is full, and resumes as the reader takes it, without losing or reordering.
    data = bytes(range(251)) * (6 * READ_SIZE // 251 + 5)
    server, url = await start(fixed(data))
    async with client.stream("GET", url + "/blob") as response:
        parts = []
        async for part in response.aiter_raw():
            parts.append(part)
            await asyncio.sleep(0.01)
    assert b"".join(parts) == data
    assert max(len(p) for p in parts) <= READ_SIZE
    response = await client.get(url + "/v2/")
    assert response.content == data
    assert server.connections == 1


async def test_interim_answers_are_skipped_and_an_unread_head_answer_keeps_its_connection(
    client: httpx.AsyncClient,
) -> None:
    def answer(head: bytes) -> bytes:
        if head.startswith(b"HEAD "):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"
        return b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    server, url = await start(answer)
    async with client.stream("HEAD", url + "/v2/x/manifests/latest") as response:
        assert response.headers["content-length"] == "42"
    response = await client.get(url + "/v2/")
    assert (response.status_code, response.content) == (200, b"ok")
    assert server.connections == 1


async def test_chunked_answers_and_chunked_uploads(client: httpx.AsyncClient) -> None:
    chunked = (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    server, url = await start(lambda head: chunked)

    async def upload() -> AsyncIterator[bytes]:
        yield b"part one, "
        yield b"part two"

    response = await client.put(url + "/upload", content=upload())
    assert (response.status_code, response.content) == (201, b"abcde")
    assert server.bodies == [b"part one, part two"]
    response = await client.put(url + "/upload", content=b"whole")
    assert server.bodies[-1] == b"whole" and server.connections == 1


async def test_http_1_0_and_close_answers_are_not_reused(client: httpx.AsyncClient) -> None:
    server, url = await start(fixed(b"old", version=b"HTTP/1.0"), close=True)
    for _ in range(2):
        assert (await client.get(url)).content == b"old"
    assert server.connections == 2
    server, url = await start(fixed(b"bye", b"Connection: close\r\n"), close=True)
    for _ in range(2):
        assert (await client.get(url)).content == b"bye"
    assert server.connections == 2


async def test_a_body_up_to_the_close(client: httpx.AsyncClient) -> None:
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
    _, url = await start(lambda head: answer, close=True)
    assert (await client.get(url)).content == b"until the end"


async def test_a_connection_the_server_closed_is_replaced(client: httpx.AsyncClient) -> None:
    answers = iter([fixed(b"one")(b""), b"", fixed(b"two")(b"")])
    server, url = await start(lambda head: next(answers))
    assert (await client.get(url)).content == b"one"
    # The server drops the kept-alive connection at the next request: asked again afresh.
    assert (await client.get(url)).content == b"two"
    assert server.connections == 2


async def test_a_cut_body_is_a_transport_error(client: httpx.AsyncClient) -> None:
    _, url = await start(
        lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", close=True
    )
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get(url)
    _, url = await start(lambda head: b"garbage\r\n\r\n", close=True)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get(url)


async def test_a_body_closed_early_closes_its_connection(client: httpx.AsyncClient) -> None:
    server, url = await start(fixed(b"x" * (4 * READ_SIZE)))
    async with client.stream("GET", url) as response:
        async for _ in response.aiter_raw():
            break
    assert (await client.get(url)).status_code == 200
    assert server.connections == 2


async def test_refused_connection_is_a_connect_error(client: httpx.AsyncClient) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(httpx.ConnectError):
        await client.get(f"http://127.0.0.1:{port}/")


async def test_https_checks_the_certificate_with_the_context_it_builds(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(pki.server_cert, pki.server_key)
    secret = bytes(range(256)) * (5 * READ_SIZE // 256 + 3)
    _, url = await start(fixed(secret), tls=serving)
    built: list[str] = []

    def trusting() -> ssl.SSLContext:
        built.append("ours")
        return ssl.create_default_context(cafile=str(pki.ca))

    async with httpx.AsyncClient(transport=AsyncHTTP11(trusting)) as ok:
        assert (await ok.get(url)).content == secret
        assert (await ok.get(url)).content == secret
    assert built == ["ours"]
    async with httpx.AsyncClient(transport=AsyncHTTP11(ssl.create_default_context)) as refusing:
        with pytest.raises(httpx.ConnectError) as info:
            await refusing.get(url)
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
