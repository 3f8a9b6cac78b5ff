"""A SPDY/3.1 streaming client of the tests' own, in the role crictl and kubelet play.

It dials the engine's streaming server over real TCP, sends the HTTP Upgrade
kubelet sends (`Connection: Upgrade`, `Upgrade: SPDY/3.1`, one
`X-Stream-Protocol-Version` per protocol offered), checks the 101 answer and
then drives a `core.cri.spdy.Session` in the client role.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from core.cri import spdy


@contextlib.asynccontextmanager
async def connect(url: str, *protocols: str) -> AsyncIterator[tuple[spdy.Session, str]]:
    """An upgraded connection to `url`: the session and the protocol the server chose."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}",
               "Connection: Upgrade", "Upgrade: SPDY/3.1"]  # fmt: skip
    request += [f"X-Stream-Protocol-Version: {p}" for p in protocols]
    writer.write(("\r\n".join(request) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = head.decode().split("\r\n")
    if status_line.split()[1] != "101":
        body = await asyncio.wait_for(reader.read(4096), 10)
        writer.close()
        raise ConnectionRefusedError(f"{status_line}: {body.decode(errors='replace')}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)}
    assert headers["upgrade"].lower() == "spdy/3.1"
    session = spdy.Session(writer.write, lambda stream: None, client=True)
    session.start()

    async def pump() -> None:
        while data := await reader.read(65536):
            session.feed(data)
        session.close()

    pumping = asyncio.create_task(pump())
    try:
        yield session, headers.get("x-stream-protocol-version", "")
    finally:
        pumping.cancel()
        session.close()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_all(stream: spdy.Stream) -> bytes:
    chunks = []
    while data := await stream.read():
        chunks.append(data)
    return b"".join(chunks)
