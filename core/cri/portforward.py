"""CRI PortForward over WebSocket: kubelet's framing, connections made inside the pod's netns.

The client names the ports (`?port=80&port=443`, else the ones PortForward was
asked for). Port i gets channels 2i (data) and 2i+1 (errors); the first message
on each is the port number (two bytes, little-endian), as kubelet sends it.
Each port's TCP connection is opened from a short-lived thread that has joined
the pod's network namespace (`setns`), so a server listening on the pod's
localhost is reached, as containerd reaches it; the socket keeps that namespace
after the thread is gone. Host-network pods connect from the engine's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import Unavailable

if TYPE_CHECKING:
    from aiohttp import web

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _connect_in(netns: str, port: int) -> socket.socket:
    """A TCP connection to localhost:`port` made inside the network namespace `netns`."""
    result: list[socket.socket | BaseException] = []

    def run() -> None:
        try:
            if netns:
                fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
                finally:
                    os.close(fd)
            result.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except BaseException as exc:
            result.append(exc)

    # A thread of its own: one that joined the pod's namespace must never serve anything else.
    thread = threading.Thread(target=run, name=f"portforward-{port}", daemon=True)
    thread.start()
    thread.join()
    found = result[0]
    if isinstance(found, BaseException):
        raise Unavailable(f"port {port} of the pod: {found}")
    found.settimeout(None)
    found.setblocking(False)
    return found


async def serve(ws: web.WebSocketResponse, netns: str, ports: list[int]) -> None:
    from aiohttp import WSMsgType

    loop = asyncio.get_running_loop()
    netns = netns if netns and Path(netns).exists() else ""
    outgoing: asyncio.Queue[bytes | None] = asyncio.Queue()
    conns: dict[int, socket.socket] = {}
    pumps = []

    async def pump(index: int, sock: socket.socket) -> None:
        while data := await loop.sock_recv(sock, 32 * 1024):
            outgoing.put_nowait(bytes([2 * index]) + data)

    for i, port in enumerate(ports):
        head = port.to_bytes(2, "little")
        outgoing.put_nowait(bytes([2 * i]) + head)
        outgoing.put_nowait(bytes([2 * i + 1]) + head)
        try:
            conns[i] = await asyncio.to_thread(_connect_in, netns, port)
        except Unavailable as exc:
            outgoing.put_nowait(bytes([2 * i + 1]) + exc.message.encode())
            continue
        pumps.append(asyncio.create_task(pump(i, conns[i])))

    async def sender() -> None:
        while (frame := await outgoing.get()) is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_bytes(frame)

    async def close_when_done() -> None:
        # Every port's connection closed by the pod: the session is over.
        await asyncio.gather(*pumps, return_exceptions=True)
        outgoing.put_nowait(None)
        await sending
        await ws.close()

    sending = asyncio.create_task(sender())
    closing = asyncio.create_task(close_when_done()) if pumps else None
    try:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            sock = conns.get(channel // 2) if channel % 2 == 0 else None
            if sock is not None and data:
                with contextlib.suppress(OSError):
                    await loop.sock_sendall(sock, data)
    finally:
        for task in pumps:
            task.cancel()
        for sock in conns.values():
            sock.close()
        outgoing.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        if closing is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await closing
