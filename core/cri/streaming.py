"""The CRI streaming server: Exec, Attach and PortForward, over WebSocket and SPDY/3.1.

`Exec` and `Attach` answer a one-time URL on `stream_server_address:stream_server_port`
(port 0: any free one); the client dials it within a minute. The connection is
either a WebSocket (aiohttp serves it) speaking the `v4.channel.k8s.io`
subprotocol (`channel.k8s.io` too): every binary message starts with a channel
byte, 0 stdin, 1 stdout, 2 stderr, 3 the final status (v4: a Kubernetes Status
as JSON, with the exit code of a failed command), 4 terminal resize (JSON
`{"Width", "Height"}`); or an HTTP Upgrade to SPDY/3.1, kubelet's and
crictl's default, served by `spdyserve.py` over our own SPDY codec (`spdy.py`)
and presented to the same sessions as channel messages. An exec runs as an
exec of the container's task with FIFOs the engine holds; an attach follows
the container's output (`attach.py`). PortForward is served the same way
(`portforward.py`, `spdyserve.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.cri import NAMESPACE, attach, portforward, spdyserve
from core.engine import Engine
from core.errors import CtrdeckError, FailedPrecondition, InvalidArgument, NotFound
from core.runtime.records import Stdio

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("ctrdeck.cri")

PROTOCOLS = ("v4.channel.k8s.io", "channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
TOKEN_TTL = 60.0


@dataclass
class ExecCall:
    container_id: str
    cmd: list[str]
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool
    process: dict[str, Any]
    expires: float
    # Set for an attach to the container's own process rather than an exec.
    attach_to: attach.Target | None = None


def status_message(exit_code: int, protocol: str) -> bytes:
    """The channel-3 message that ends a stream: success, or the command's exit code."""
    if not protocol.startswith("v4.") and exit_code != 0:
        return f"command terminated with non-zero exit code: {exit_code}".encode()
    if exit_code == 0:
        doc: dict[str, Any] = {"metadata": {}, "status": "Success"}
    else:
        doc = {
            "metadata": {},
            "status": "Failure",
            "message": f"command terminated with non-zero exit code: {exit_code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
        }
    return json.dumps(doc).encode() if protocol.startswith("v4.") else b""


class StreamServer:
    def __init__(self, engine: Engine, address: str, port: int) -> None:
        self.engine = engine
        self.address = address
        self.port = port
        self.calls: dict[str, ExecCall] = {}
        self.forwards: dict[str, tuple[str, list[int], float]] = {}
        self.runner: web.AppRunner | None = None
        self.base_url = ""
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Bind and serve, on the first Exec: aiohttp is only imported when streaming is used."""
        async with self._starting:
            if self.runner is None:
                await self._start()

    async def _start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/exec/{token}", self._exec)
        app.router.add_get("/attach/{token}", self._exec)
        app.router.add_get("/portforward/{token}", self._portforward)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.address, self.port)
        await site.start()
        server = site._server  # aiohttp keeps the bound sockets there
        sock = server.sockets[0] if server is not None and server.sockets else None
        port = sock.getsockname()[1] if sock is not None else self.port
        host = f"[{self.address}]" if ":" in self.address else self.address
        self.base_url = f"http://{host}:{port}"
        log.info("CRI streaming server on %s", self.base_url)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def exec_url(self, call: ExecCall) -> str:
        if not self.base_url:
            raise FailedPrecondition("the CRI streaming server is not running")
        if not (call.stdin or call.stdout or call.stderr):
            raise InvalidArgument("one of stdin, stdout and stderr must be streamed")
        if call.tty and call.stderr and call.attach_to is None:
            raise InvalidArgument("a terminal has no separate stderr: set stderr false with tty")
        now = time.monotonic()
        for token in [t for t, c in self.calls.items() if c.expires < now]:
            del self.calls[token]
        token = secrets.token_urlsafe(24)
        self.calls[token] = call
        kind = "exec" if call.attach_to is None else "attach"
        return f"{self.base_url}/{kind}/{token}"

    def portforward_url(self, netns: str, ports: list[int]) -> str:
        if not self.base_url:
            raise FailedPrecondition("the CRI streaming server is not running")
        token = secrets.token_urlsafe(24)
        self.forwards[token] = (netns, ports, time.monotonic() + TOKEN_TTL)
        return f"{self.base_url}/portforward/{token}"

    async def _portforward(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        found = self.forwards.pop(request.match_info["token"], None)
        if found is None or found[2] < time.monotonic():
            raise web.HTTPNotFound(text="unknown or expired port-forward session")
        netns, ports = found[0], found[1]
        if spdyserve.wanted(request):
            return await spdyserve.port_forward(request, netns)
        asked = request.query.getall("port", [])
        if asked:
            try:
                ports = [int(p) for p in asked]
            except ValueError:
                raise web.HTTPBadRequest(text=f"ports must be numbers: {asked}") from None
        if not ports or not all(0 < p < 65536 for p in ports):
            raise web.HTTPBadRequest(text="name the ports to forward (?port=N)")
        ws = web.WebSocketResponse(protocols=PROTOCOLS)
        await ws.prepare(request)
        try:
            await portforward.serve(ws, netns, ports)
        finally:
            await ws.close()
        return ws

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        call = self.calls.pop(request.match_info["token"], None)
        if call is None or call.expires < time.monotonic():
            raise web.HTTPNotFound(text="unknown or expired exec session")
        if spdyserve.wanted(request):
            asked = (("stdin", call.stdin), ("stdout", call.stdout),
                     ("stderr", call.stderr and not call.tty))  # fmt: skip
            needs = {"error"} | {name for name, on in asked if on}
            return await spdyserve.remotecommand(
                request, needs, lambda channels, protocol: self._serve(call, channels, protocol)
            )
        ws = web.WebSocketResponse(protocols=PROTOCOLS)
        await ws.prepare(request)
        try:
            await self._serve(call, ws, ws.ws_protocol or "")
        finally:
            await ws.close()
        return ws

    async def _serve(self, call: ExecCall, ws: Any, protocol: str) -> None:
        try:
            if call.attach_to is None:
                await _Session(self.engine, call, ws, protocol).run()
                return
            exit_code = await attach.Attach(
                self.engine, call.container_id, call.attach_to,
                tty=call.tty, stdout=call.stdout, stderr=call.stderr, ws=ws,
            ).run()  # fmt: skip
            if exit_code is not None:
                await ws.send_bytes(bytes([ERROR]) + status_message(exit_code, protocol))
        except CtrdeckError as exc:
            with contextlib.suppress(ConnectionError):
                await ws.send_bytes(bytes([ERROR]) + exc.message.encode())


class _Session:
    """One exec: FIFOs, the process, and the copying between them and the WebSocket."""

    def __init__(self, engine: Engine, call: ExecCall, ws: web.WebSocketResponse, protocol: str):
        self.engine = engine
        self.call = call
        self.ws = ws
        self.protocol = protocol
        self.exec_id = f"stream-{secrets.token_hex(8)}"
        self.dir = Path(tempfile.mkdtemp(prefix="cri-stream-", dir=engine.state))
        self.fds: dict[int, int] = {}
        # One sender, so frames leave in the order the output came.
        self.outgoing: asyncio.Queue[bytes | None] = asyncio.Queue()

    def _fifo(self, name: str) -> str:
        path = self.dir / name
        os.mkfifo(path, 0o600)
        return str(path)

    async def run(self) -> None:
        call, tasks = self.call, self.engine.tasks
        paths = {
            STDIN: self._fifo("stdin") if call.stdin else "",
            STDOUT: self._fifo("stdout") if call.stdout else "",
            STDERR: self._fifo("stderr") if call.stderr and not call.tty else "",
        }
        loop = asyncio.get_running_loop()
        try:
            for channel, path in paths.items():
                if path:
                    # Read-write: neither side ever waits for the other to open.
                    self.fds[channel] = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            for channel in (STDOUT, STDERR):
                if channel in self.fds:
                    loop.add_reader(self.fds[channel], self._forward, channel)
            sender = asyncio.create_task(self._sender())
            stdio = Stdio(paths[STDIN], paths[STDOUT], paths[STDERR], call.tty)
            process = dict(call.process, args=call.cmd, terminal=call.tty)
            await tasks.exec(NAMESPACE, call.container_id, self.exec_id, process, stdio)
            await tasks.start(NAMESPACE, call.container_id, self.exec_id)
            receiving = asyncio.create_task(self._receive())
            exit_ = await tasks.wait(NAMESPACE, call.container_id, self.exec_id)
            receiving.cancel()
            for channel in (STDOUT, STDERR):
                if channel in self.fds:
                    self._forward(channel)
            self.outgoing.put_nowait(bytes([ERROR]) + status_message(exit_.status, self.protocol))
            self.outgoing.put_nowait(None)
            await sender
        finally:
            for channel, fd in self.fds.items():
                if channel != STDIN:
                    loop.remove_reader(fd)
                os.close(fd)
            with contextlib.suppress(CtrdeckError):
                await tasks.wait(NAMESPACE, call.container_id, self.exec_id)
                await tasks.delete_process(NAMESPACE, call.container_id, self.exec_id)
            shutil.rmtree(self.dir, ignore_errors=True)

    def _forward(self, channel: int) -> None:
        fd = self.fds[channel]
        while True:
            try:
                data = os.read(fd, 32 * 1024)
            except BlockingIOError:
                return
            if not data:
                return
            self.outgoing.put_nowait(bytes([channel]) + data)

    async def _sender(self) -> None:
        while (frame := await self.outgoing.get()) is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_bytes(frame)

    async def _receive(self) -> None:
        from aiohttp import WSMsgType

        tasks = self.engine.tasks
        async for msg in self.ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel == STDIN and STDIN in self.fds:
                if data:
                    await attach.write_all(self.fds[STDIN], data)
            elif channel == RESIZE and self.call.tty:
                with contextlib.suppress(ValueError, CtrdeckError):
                    size = json.loads(data)
                    tasks.resize_pty(NAMESPACE, self.call.container_id, self.exec_id,
                                     int(size["Width"]), int(size["Height"]))  # fmt: skip
        # The client went away or half-closed: its input ends.
        if STDIN in self.fds:
            with contextlib.suppress(CtrdeckError):
                tasks.close_io(NAMESPACE, self.call.container_id, self.exec_id)
        if self.ws.closed:
            with contextlib.suppress(NotFound, CtrdeckError):
                await tasks.kill(NAMESPACE, self.call.container_id, signal.SIGKILL,
                                 exec_id=self.exec_id)  # fmt: skip
