"""CRI Attach: a running container's output, streamed to a client, over WebSocket or SPDY.

The task monitor holds the container's stdio and writes every byte of output to
the container's CRI log (`log_directory/log_path`), so attaching means following
that log from its end: each record (`<time> <stream> <F|P> <text>`) becomes
output on the stdout or stderr channel (a full line gets its newline back; a
tty's output is all stdout). A container created with `stdin` has a FIFO the
monitor holds open (`containers.py`); a client's input is written there, and
with `stdin_once` the end of the client's input closes the container's stdin.
A container created without stdin has nothing to write to: input is dropped,
and attach streams its output. Resize messages reach the container's terminal
when it has one. The session ends when the container's process exits (its exit
code is the final status) or when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterable, Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from core.cri import NAMESPACE
from core.engine import Engine
from core.errors import CtrdeckError, FailedPrecondition

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
POLL = 0.05


class Channel(Protocol):
    """The part of a WebSocket an attach uses; `spdyserve.Channels` has it too."""

    async def send_bytes(self, data: bytes) -> None: ...

    def __aiter__(self) -> Any: ...


@dataclass
class Target:
    """What an attach reaches: the container's CRI log and, if it has one, its stdin FIFO."""

    log_path: str
    stdin: str = ""
    stdin_once: bool = False


def parse_record(line: bytes) -> tuple[int, bytes] | None:
    """One CRI log line as (channel, bytes the process wrote); None for a malformed line."""
    parts = line.split(b" ", 3)
    if len(parts) != 4 or parts[1] not in (b"stdout", b"stderr"):
        return None
    channel = STDOUT if parts[1] == b"stdout" else STDERR
    return channel, parts[3] + (b"\n" if parts[2] == b"F" else b"")


class Attach:
    def __init__(
        self,
        engine: Engine,
        container_id: str,
        target: Target,
        *,
        tty: bool,
        stdout: bool,
        stderr: bool,
        ws: Channel,
    ) -> None:
        self.engine = engine
        self.container_id = container_id
        self.log_path = target.log_path
        self.target = target
        self.tty = tty
        streams = ((STDOUT, stdout), (STDERR, stderr))
        self.wanted = {STDOUT} if tty else {channel for channel, on in streams if on}
        self.ws = ws
        self.pending = b""

    async def run(self) -> int | None:
        """Stream until the process exits (its exit code) or the client leaves (None)."""
        if not self.log_path:
            raise FailedPrecondition(
                f'container "{self.container_id}" has no log to attach to (no log_path)'
            )
        tasks = self.engine.tasks
        # Where the log ends now is where this attach begins: before any input goes in,
        # so the answer to it is never missed.
        try:
            fp = await asyncio.to_thread(_open_at_end, self.log_path)
        except OSError as exc:
            raise FailedPrecondition(f"the container's log {self.log_path}: {exc}") from None
        exited = asyncio.ensure_future(tasks.wait(NAMESPACE, self.container_id, ""))
        follow = asyncio.create_task(self._follow(fp, exited))
        receive = asyncio.create_task(self._receive(self.ws))
        try:
            done, _ = await asyncio.wait({follow, receive}, return_when="FIRST_COMPLETED")
            if follow in done:
                follow.result()
                return exited.result().status
            return None
        finally:
            for task in (follow, receive, exited):
                task.cancel()
            fp.close()

    async def _follow(self, fp: Any, exited: Awaitable[Any]) -> None:
        try:
            while True:
                over = exited.done()  # type: ignore[attr-defined]
                fp = await self._drain(fp)
                if over:
                    return
                await asyncio.sleep(POLL)
        finally:
            fp.close()  # a reopened log; run() closes the first

    async def _drain(self, fp: Any) -> Any:
        # kubelet rotates the log and asks for ReopenContainerLog: follow the new file.
        with contextlib.suppress(OSError):
            if os.stat(self.log_path).st_ino != os.fstat(fp.fileno()).st_ino:
                await self._send_lines(fp.read())
                fp.close()
                fp = open(self.log_path, "rb")  # noqa: SIM115 - closed by _follow
        await self._send_lines(fp.read())
        return fp

    async def _send_lines(self, data: bytes) -> None:
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            record = parse_record(line)
            if record is not None and record[0] in self.wanted:
                await self.ws.send_bytes(bytes([record[0]]) + record[1])

    async def _receive(self, ws: AsyncIterable[Any]) -> None:
        tasks = self.engine.tasks
        fifo = -1
        if self.target.stdin:
            # The monitor holds the FIFO open for reading, so this never blocks or fails.
            fifo = os.open(self.target.stdin, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            await self._copy_input(ws, fifo)
        finally:
            if fifo >= 0:
                os.close(fifo)
        if fifo >= 0 and self.target.stdin_once:
            with contextlib.suppress(CtrdeckError):
                tasks.close_io(NAMESPACE, self.container_id, "")
        # Input ending is not leaving: SPDY ends stdin apart from the connection.
        while not getattr(ws, "closed", True):
            await asyncio.sleep(POLL)

    async def _copy_input(self, ws: AsyncIterable[Any], fifo: int) -> None:
        tasks = self.engine.tasks
        async for msg in ws:
            data = getattr(msg, "data", b"")
            if not isinstance(data, bytes) or not data:
                continue
            if data[0] == STDIN and fifo >= 0:
                await write_all(fifo, data[1:])
            elif data[0] == RESIZE and self.tty:
                with contextlib.suppress(ValueError, KeyError, CtrdeckError):
                    size = json.loads(data[1:])
                    tasks.resize_pty(NAMESPACE, self.container_id, "",
                                     int(size["Width"]), int(size["Height"]))  # fmt: skip


async def write_all(fd: int, data: bytes) -> None:
    """All of `data` into non-blocking `fd` (a container's stdin FIFO), waiting while it is full."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        view = view[n:]


def _open_at_end(path: str) -> Any:
    fp = open(path, "rb")  # noqa: SIM115 - the caller closes it
    fp.seek(0, os.SEEK_END)
    return fp
