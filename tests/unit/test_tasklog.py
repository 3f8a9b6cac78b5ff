"""Reading a process's log (`core.runtime.tasklog`) on real files, written as the monitor writes.

The last lines are found across read blocks and with or without a final
newline; a follower sees appended output, crosses the monitor's rotation
(`log` renamed to `log.1`, a fresh `log`) without losing the old file's end,
and stops once the process is marked exited and everything is read.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from core.errors import InvalidArgument, NotFound
from core.runtime import tasklog


async def collect(path: Path, **kwargs: object) -> list[tuple[int, bytes]]:
    """`(offset, data)` of each chunk, all from the file at `path` now."""
    chunks = [chunk async for chunk in tasklog.read(path, "task t", **kwargs)]  # type: ignore[arg-type]
    if chunks:
        assert {file for file, _, _ in chunks} == {ident(path)}
    return [(offset, data) for _, offset, data in chunks]


def ident(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


@pytest.mark.parametrize(
    ("data", "lines", "expected"),
    [
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc", 2, b"b\nc"),
        (b"a\nb\nc\n", 9, b"a\nb\nc\n"),
        (b"", 3, b""),
        (b"\n\n", 1, b"\n"),
        # Lines spread over several read blocks.
        (b"x" * (tasklog.CHUNK + 10) + b"\nend\n", 1, b"end\n"),
        (
            b"x" * (tasklog.CHUNK * 2 + 3) + b"\nend\n",
            2,
            b"x" * (tasklog.CHUNK * 2 + 3) + b"\nend\n",
        ),
    ],
)
async def test_the_last_lines(tmp_path: Path, data: bytes, lines: int, expected: bytes) -> None:
    log = tmp_path / "log"
    log.write_bytes(data)
    got = b"".join(d for _, d in await collect(log, tail_lines=lines))
    assert got == expected


async def test_offsets_and_refusals(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"hello\nworld\n")
    assert await collect(log, offset=6) == [(6, b"world\n")]
    assert await collect(log, offset=12) == []
    with pytest.raises(InvalidArgument, match="past the end of the log of task t"):
        await collect(log, offset=13)
    with pytest.raises(InvalidArgument, match="not both"):
        await collect(log, offset=1, tail_lines=1)
    with pytest.raises(NotFound, match="task t keeps no log"):
        await collect(tmp_path / "missing")


async def test_a_follower_crosses_a_rotation_and_ends_after_the_exit(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"first\n")
    exited = asyncio.Event()
    seen: list[tuple[int, bytes]] = []
    first = ident(log)
    files: list[str] = []

    async def follow() -> None:
        async for file, offset, data in tasklog.read(log, "task t", exited=exited):
            files.append(file)
            seen.append((offset, data))

    async def settled(count: int) -> None:
        while len(seen) < count:
            await asyncio.sleep(0.01)

    reader = asyncio.create_task(follow())
    async with asyncio.timeout(30):
        await settled(1)
        # The monitor's rotation: its last write to the old file, rename, a fresh file.
        with open(log, "ab") as f:
            f.write(b"old tail\n")
        os.replace(log, tmp_path / "log.1")
        log.write_bytes(b"fresh\n")
        await settled(3)
        exited.set()
        await reader
    assert seen == [(0, b"first\n"), (6, b"old tail\n"), (0, b"fresh\n")]
    assert files == [first, first, ident(log)]


async def test_resuming_continues_in_the_rotated_file(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"one\n")
    was = ident(log)
    # While the client was away: more output, a rotation, output in the fresh file.
    with open(log, "ab") as f:
        f.write(b"two\n")
    os.replace(log, tmp_path / "log.1")
    log.write_bytes(b"three\n")
    chunks = [c async for c in tasklog.read(log, "task t", file=was, offset=4)]
    assert chunks == [(was, 4, b"two\n"), (ident(log), 0, b"three\n")]
    # A file no longer kept: the current one from its start.
    (tmp_path / "log.1").unlink()
    assert await collect(log, file=was, offset=4) == [(0, b"three\n")]
    with pytest.raises(InvalidArgument, match="not tail_lines"):
        await collect(log, file=was, tail_lines=1)
