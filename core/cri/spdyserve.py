"""kubelet's streaming protocols over SPDY/3.1, on the aiohttp streaming server.

A client asks for `Connection: Upgrade`, `Upgrade: SPDY/3.1` and lists the
subprotocols it speaks in `X-Stream-Protocol-Version` headers; the first one
it lists that we speak wins (none listed: the legacy `channel.k8s.io`), none
we speak is refused with 403, as kubelet does. After the 101 answer the
connection's bytes go to a `spdy.Session` (aiohttp's parser hook), never to
aiohttp's HTTP parser again.

remotecommand (exec, attach): the client opens one stream per `streamType`
header (`error`, `stdin`, `stdout`, `stderr`, `resize`); once those the call
needs are there, `Channels` presents them to the exec and attach sessions as
the channel-numbered messages the WebSocket carries, so both transports share
one implementation. The final status goes on the error stream (v4: a
Kubernetes Status as JSON; older: the error text only on failure).

port-forward (`portforward.k8s.io`): each forwarded connection is a pair of
streams, `error` and `data`, sharing `port` and `requestID` headers; the pair
gets one TCP connection made inside the pod's network namespace, data copied
both ways (the client's FIN half-closes the socket), errors as text on the
error stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.cri import portforward, spdy
from core.errors import CtrdeckError

if TYPE_CHECKING:
    from aiohttp import web

REMOTECOMMAND = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
PORTFORWARD = ("portforward.k8s.io",)
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
STREAM_WAIT = 30.0


def wanted(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").strip().lower() == "spdy/3.1"


class _Feed:
    """aiohttp's payload-parser hook: every byte after the upgrade goes to the session."""

    def __init__(self, session: spdy.Session) -> None:
        self.session = session

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.session.feed(data)
        return False, b""

    def feed_eof(self) -> None:
        self.session.close()


async def upgrade(
    request: web.Request,
    protocols: tuple[str, ...],
    on_stream: Callable[[spdy.Stream], Awaitable[None] | None],
) -> tuple[spdy.Session, str, web.StreamResponse]:
    """Answer 101 and hand the connection to a SPDY session; the subprotocol and answer too."""
    from aiohttp import web

    offered = [
        p.strip()
        for value in request.headers.getall("X-Stream-Protocol-Version", [])
        for p in value.split(",")
        if p.strip()
    ]
    chosen = next((p for p in offered if p in protocols), "")
    if offered and not chosen:
        raise web.HTTPForbidden(
            text=f"none of the offered protocols {offered} is spoken; try {list(protocols)}"
        )
    transport = request.transport
    if transport is None:
        raise web.HTTPBadRequest(text="the connection is gone")

    def write(data: bytes) -> None:
        if not transport.is_closing():
            transport.write(data)

    session = spdy.Session(write, on_stream)
    headers = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}
    if chosen:
        headers["X-Stream-Protocol-Version"] = chosen
    response = web.StreamResponse(status=101, headers=headers)
    # Before the answer leaves, so not one byte of the client's SPDY can reach the HTTP parser.
    request.protocol.set_parser(_Feed(session))  # type: ignore[arg-type]
    await response.prepare(request)
    request.protocol.keep_alive(False)
    session.start()
    return session, chosen or "channel.k8s.io", response


def finish(request: web.Request, session: spdy.Session) -> None:
    session.send(spdy.goaway(session.last_peer_id))
    session.close()
    if request.transport is not None:
        request.transport.close()


@dataclass
class _Message:
    """What `_Session._receive` reads off a WebSocket, made from SPDY streams."""

    type: object
    data: bytes


class Channels:
    """remotecommand's SPDY streams, seen as a WebSocket of channel-numbered messages."""

    def __init__(self, session: spdy.Session, streams: dict[str, spdy.Stream]) -> None:
        self.session = session
        self.streams = streams
        self.by_channel = {
            STDOUT: streams.get("stdout"),
            STDERR: streams.get("stderr"),
            ERROR: streams.get("error"),
        }

    @property
    def closed(self) -> bool:
        return self.session.closed.is_set()

    async def send_bytes(self, frame: bytes) -> None:
        if self.closed:
            raise ConnectionError("the client went away")
        stream = self.by_channel.get(frame[0])
        if stream is None:
            return
        if frame[1:]:
            stream.write(frame[1:])
        if frame[0] == ERROR:
            # The status is the last word: every stream of ours ends with it.
            for s in self.streams.values():
                s.close()

    async def close(self) -> None:
        for stream in self.streams.values():
            stream.close()

    def __aiter__(self) -> AsyncIterator[_Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[_Message]:
        from aiohttp import WSMsgType

        queue: asyncio.Queue[_Message | None] = asyncio.Queue()
        stdin, resize = self.streams.get("stdin"), self.streams.get("resize")

        async def pump_stdin(stream: spdy.Stream) -> None:
            while data := await stream.read():
                queue.put_nowait(_Message(WSMsgType.BINARY, bytes([STDIN]) + data))
            queue.put_nowait(None)

        async def pump_resize(stream: spdy.Stream) -> None:
            # Go's json.Encoder writes one object after another on this stream.
            buffer, decoder = "", json.JSONDecoder()
            while data := await stream.read():
                buffer += data.decode(errors="replace")
                while buffer.strip():
                    try:
                        size, end = decoder.raw_decode(buffer.lstrip())
                    except ValueError:
                        break
                    buffer = buffer.lstrip()[end:]
                    raw = json.dumps(size).encode()
                    queue.put_nowait(_Message(WSMsgType.BINARY, bytes([RESIZE]) + raw))

        async def until_closed() -> None:
            await self.session.closed.wait()
            queue.put_nowait(None)

        pumps = [asyncio.create_task(until_closed())]
        if stdin is not None:
            pumps.append(asyncio.create_task(pump_stdin(stdin)))
        if resize is not None:
            pumps.append(asyncio.create_task(pump_resize(resize)))
        try:
            while (message := await queue.get()) is not None:
                yield message
        finally:
            for pump in pumps:
                pump.cancel()


async def remotecommand(
    request: web.Request,
    needs: set[str],
    run: Callable[[Channels, str], Awaitable[None]],
) -> web.StreamResponse:
    """Serve one exec or attach over SPDY: wait for the streams `needs`, then `run`."""

    streams: dict[str, spdy.Stream] = {}
    ready = asyncio.Event()

    def on_stream(stream: spdy.Stream) -> None:
        kind = stream.header("streamtype")
        if kind not in ("error", "stdin", "stdout", "stderr", "resize") or kind in streams:
            session.send(spdy.rst_stream(stream.id, spdy.RST_REFUSED_STREAM))
            return
        session.reply(stream)
        streams[kind] = stream
        if needs <= streams.keys():
            ready.set()

    session, protocol, response = await upgrade(request, REMOTECOMMAND, on_stream)
    try:
        closed = asyncio.create_task(session.closed.wait())
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait({closed, waiting}, timeout=STREAM_WAIT, return_when="FIRST_COMPLETED")
        closed.cancel()
        waiting.cancel()
        if ready.is_set() and not session.closed.is_set():
            await run(Channels(session, streams), protocol)
        elif "error" in streams and not session.closed.is_set():
            missing = sorted(needs - streams.keys())
            streams["error"].write(f"timed out waiting for streams {missing}".encode())
    finally:
        finish(request, session)
    return response


async def port_forward(request: web.Request, netns: str) -> web.StreamResponse:
    """Serve port-forward over SPDY until the client hangs up."""

    pairs: dict[str, dict[str, spdy.Stream]] = {}
    forwards: set[asyncio.Task[None]] = set()

    def on_stream(stream: spdy.Stream) -> None:
        kind, request_id = stream.header("streamtype"), stream.header("requestid")
        port_text = stream.header("port")
        pair = pairs.setdefault(request_id, {})
        if kind not in ("data", "error") or kind in pair or not port_text.isdigit():
            session.send(spdy.rst_stream(stream.id, spdy.RST_REFUSED_STREAM))
            return
        session.reply(stream)
        pair[kind] = stream
        if len(pair) == 2:
            del pairs[request_id]
            task = asyncio.create_task(_forward(netns, int(port_text), pair["data"], pair["error"]))
            forwards.add(task)
            task.add_done_callback(forwards.discard)

    session, _, response = await upgrade(request, PORTFORWARD, on_stream)
    try:
        await session.closed.wait()
    finally:
        for task in list(forwards):
            task.cancel()
        finish(request, session)
    return response


async def _forward(netns: str, port: int, data: spdy.Stream, error: spdy.Stream) -> None:
    loop = asyncio.get_running_loop()
    if not 0 < port < 65536:
        error.write(f"port {port} is not a TCP port".encode())
        error.close()
        data.close()
        return
    try:
        sock = await asyncio.to_thread(portforward._connect_in, netns, port)
    except CtrdeckError as exc:
        error.write(exc.message.encode())
        error.close()
        data.close()
        return

    async def upstream() -> None:
        while chunk := await data.read():
            await loop.sock_sendall(sock, chunk)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    async def downstream() -> None:
        while chunk := await loop.sock_recv(sock, spdy.DATA_CHUNK):
            data.write(chunk)
        data.close()

    try:
        results = await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        failed = [r for r in results if isinstance(r, OSError)]
        if failed:
            error.write(f"port {port}: {failed[0]}".encode())
    finally:
        sock.close()
        data.close()
        error.close()
