"""A TCP relay on 127.0.0.1 that delays every byte by a fixed time each way: a registry an RTT away.

This machine's kernel has no netem, so `bench_pull --rtt MS` puts this between both engines
and the registry: every chunk read from one side is written to the other `rtt / 2` seconds
after it arrived, in order, without holding back what follows it (a delay line, not a
throttle), so the transfer rate stays the loopback's while each request and answer pays
the round trip, as with a registry on another host.

    with DelayLine(upstream_port, rtt=0.02) as line:
        ... 127.0.0.1:{line.port} ...
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import TracebackType


class DelayLine:
    """The relay, running on an event loop of its own in a daemon thread while in use."""

    def __init__(self, upstream_port: int, rtt: float) -> None:
        self.upstream_port = upstream_port
        self.delay = rtt / 2
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="delay-line", daemon=True)

    def __enter__(self) -> DelayLine:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            self._loop.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await line.get()
                if not data:
                    return
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(1 << 16):
                line.put_nowait((time.monotonic() + self.delay, data))
        except OSError:
            pass
        line.put_nowait((0.0, b""))
        with contextlib.suppress(OSError):
            await sender
        with contextlib.suppress(OSError):
            writer.close()
