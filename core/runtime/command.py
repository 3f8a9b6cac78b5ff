"""Short commands run from the event loop without a thread: posix_spawn and a pidfd.

This module owns running one command to completion for the engine (the OCI
runtime's `start`, `kill`, `pause`, `delete`, `state`, ...). asyncio's own
subprocesses in Python 3.11 wait for each child in a thread of its own, which
costs more CPU than the command's start; here the child is started with
`posix_spawn` (no fork of the engine), in its own process group with stdin
on /dev/null, and its stdout, stderr and pidfd are all watched on the loop. The
child is reaped as soon as its pidfd says it ended, and every descriptor is
closed whether the command finishes, fails to start, overruns or is
cancelled. A command that overruns its timeout, or whose caller gives up, is
killed with its whole process group (everything it started that stayed in
it). A binary that cannot be run raises the `OSError` of its exec
(`FileNotFoundError` for a missing one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass

# The signals the engine's interpreter ignores or handles that a command must
# find at their defaults, as subprocess's restore_signals leaves them.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
_READ_SIZE = 65536


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: bytes
    stderr: bytes


class _Child:
    """One spawned command: its pidfd and output pipes, each a reader on the loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, pid: int, pidfd: int, out: int, err: int
    ) -> None:
        self.loop = loop
        self.pid = pid
        self.pidfd = pidfd
        self.returncode: int | None = None
        self.chunks: dict[int, list[bytes]] = {out: [], err: []}
        self.out, self.err = out, err
        self.open: set[int] = {out, err}
        self.exited = loop.create_future()
        self.finished = loop.create_future()
        for fd in (out, err):
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._read, fd)
        loop.add_reader(self.pidfd, self._reap)

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.chunks[fd].append(data)
            return
        self._close_pipe(fd)
        self._check()

    def _close_pipe(self, fd: int) -> None:
        self.loop.remove_reader(fd)
        os.close(fd)
        self.open.discard(fd)

    def _reap(self) -> None:
        self.loop.remove_reader(self.pidfd)
        os.close(self.pidfd)
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        self.exited.set_result(None)
        self._check()

    def _check(self) -> None:
        if self.returncode is not None and not self.open and not self.finished.done():
            self.finished.set_result(None)

    def result(self) -> Finished:
        assert self.returncode is not None
        return Finished(
            self.returncode, b"".join(self.chunks[self.out]), b"".join(self.chunks[self.err])
        )

    async def kill(self) -> None:
        """SIGKILL the child's process group, reap the child and close the pipes.

        The group is signalled even when the child itself has ended: what it
        started lives on in the group (and may hold the pipes), and Linux does
        not reuse the id while the group has members.
        """
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        await self.exited
        for fd in list(self.open):
            self._close_pipe(fd)


def _spawn(argv: list[str], out: int, err: int) -> int:
    return os.posix_spawnp(
        argv[0],
        argv,
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out, 1),
            (os.POSIX_SPAWN_DUP2, err, 2),
        ],
        # Its own process group, for the kill; not its own session, which would put it
        # in a scheduler autogroup of its own that waits behind every running one.
        setpgroup=0,
        setsigdef=_DEFAULT_SIGNALS,
    )


async def run(argv: list[str], timeout: float) -> Finished:
    """Run `argv` to completion: its exit code and all it wrote to stdout and stderr.

    Raises TimeoutError once `timeout` seconds pass, after killing it with its
    process group; a cancelled caller kills it the same way.
    """
    loop = asyncio.get_running_loop()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = _spawn(argv, out_w, err_w)
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    try:
        pidfd = os.pidfd_open(pid)
    except BaseException:
        # Out of descriptors: the child must not outlive this call.
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(out_r)
        os.close(err_r)
        raise
    child = _Child(loop, pid, pidfd, out_r, err_r)
    try:
        await asyncio.wait_for(asyncio.shield(child.finished), timeout)
    except BaseException:
        await asyncio.shield(child.kill())
        raise
    return child.result()
