"""Reading a process's output log: from an offset or its last lines, and following it.

The monitor appends a process's output to `log` in its directory and, at the
engine's `log_max`, renames it to `log.1` and starts a fresh `log`
(`core.runtime.monitor.Log`). `read` yields `(file, offset, data)` chunks of one
log, offsets counting within the file they come from, `file` naming that file
(its device and inode), so a client can resume where it was: in `log.1` if the
file it read has been rotated since. Following keeps the file open:
when the name points at a new file, what the old one still holds is read to its
end (the monitor closed it before the rename, so that end is final) and the new
file is read from 0. It ends once the process has exited and everything written
before is sent: the monitor closes the log before it ends, and the engine marks
the process exited only when the monitor is gone. File reads run in a worker
thread, so a large tail never stalls the engine's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from core.errors import InvalidArgument, NotFound

T = TypeVar("T")

CHUNK = 64 * 1024
POLL_INTERVAL = 0.2


def _tail_offset(fd: int, size: int, lines: int) -> int:
    """Where the last `lines` lines of the file begin; a final newline ends a line."""
    end = size
    seen = 0
    while end > 0:
        start = max(0, end - CHUNK)
        block = os.pread(fd, end - start, start)
        # The newline that ends the file's last line starts no line of its own.
        stop = len(block) - 1 if end == size and block.endswith(b"\n") else len(block)
        at = stop
        while True:
            at = block.rfind(b"\n", 0, at)
            if at < 0:
                break
            seen += 1
            if seen == lines:
                return start + at + 1
        end = start
    return 0


def file_id(fd: int) -> str:
    held = os.fstat(fd)
    return f"{held.st_dev}:{held.st_ino}"


def _open(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def _resume_in(path: Path, fd: int, file: str) -> tuple[int, bool]:
    """The file to resume `file` in: `fd` itself, or the rotated `log.1` if that is it.

    The second value says whether `file` was found; if not, the caller starts
    the current file from 0.
    """
    if file_id(fd) == file:
        return fd, True
    rotated = _open(path.with_name(path.name + ".1"))
    if rotated is not None:
        if file_id(rotated) == file:
            os.close(fd)
            return rotated, True
        os.close(rotated)
    return fd, False


def _same_file(fd: int, path: Path) -> bool:
    try:
        current = path.stat()
    except FileNotFoundError:
        return True  # between the monitor's rename and its new file: keep reading this one
    held = os.fstat(fd)
    return (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino)


async def _in_worker(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a worker thread; a cancelled caller still waits for it to return,
    so the file descriptor it reads is never closed under it."""
    running = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait({running})
        raise


def validate(offset: int, tail_lines: int) -> None:
    if offset < 0:
        raise InvalidArgument(f"offset {offset} must not be negative")
    if tail_lines < 0:
        raise InvalidArgument(f"tail_lines {tail_lines} must not be negative")
    if offset and tail_lines:
        raise InvalidArgument("give an offset or tail_lines, not both")


async def read(
    path: Path,
    what: str,
    *,
    offset: int = 0,
    tail_lines: int = 0,
    file: str = "",
    exited: asyncio.Event | None = None,
) -> AsyncIterator[tuple[str, int, bytes]]:
    """The log at `path` as `(file, offset, data)` chunks; with `exited`, followed until it is set.

    `what` names the process in errors ("task web"). `file` is the file
    `offset` counts in (a chunk's `file`, to resume); empty means the current
    one; a rotated file is read to its end, then the current one. Without
    `exited` the chunks end at the current file's end as it is now.
    """
    validate(offset, tail_lines)
    if file and tail_lines:
        raise InvalidArgument("a file to resume in goes with an offset, not tail_lines")
    fd = _open(path)
    if fd is None:
        raise NotFound(f"{what} keeps no log")
    try:
        if file:
            fd, found = _resume_in(path, fd, file)
            offset = offset if found else 0
        size = os.fstat(fd).st_size
        if tail_lines:
            position = await _in_worker(_tail_offset, fd, size, tail_lines)
        elif offset > size:
            raise InvalidArgument(
                f"offset {offset} is past the end of the log of {what} ({size} bytes)"
            )
        else:
            position = offset
        while True:
            finished = exited is not None and exited.is_set()
            data = await _in_worker(os.pread, fd, CHUNK, position)
            if data:
                yield file_id(fd), position, data
                position += len(data)
                continue
            if not _same_file(fd, path):
                # Read again: the old file is complete only now that it has been replaced.
                rest = await _in_worker(os.pread, fd, CHUNK, position)
                if rest:
                    yield file_id(fd), position, rest
                    position += len(rest)
                    continue
                fresh = _open(path)
                if fresh is not None:
                    os.close(fd)
                    fd, position = fresh, 0
                continue
            if exited is None or finished:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited.wait(), POLL_INTERVAL)
    finally:
        os.close(fd)
