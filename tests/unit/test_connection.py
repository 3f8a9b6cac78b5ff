"""The hardened grpclib server: stream bookkeeping, frame watching, reset limit."""

from __future__ import annotations

import asyncio
import gc
import random
from pathlib import Path

import h2.errors
import pytest
from grpclib import protocol as gproto
from grpclib.health.service import Health

from core.connection import FrameTooLarge, FrameWatch, HardenedServer, Limits
from tests import h2attack


def _live_streams() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is gproto.Stream)


async def test_reset_streams_are_released_without_the_rate_limit(tmp_path: Path) -> None:
    server = HardenedServer([Health()], limits=Limits(reset_burst=10**9))
    path = tmp_path / "s.sock"
    await server.start(path=str(path))
    try:
        loop = asyncio.get_running_loop()
        before = _live_streams()
        for _ in range(2):
            result = await loop.run_in_executor(None, h2attack.reset_flood, path, 2000)
            assert result == {"sent": 2000, "goaway": 0}
        await asyncio.sleep(0.2)
        # grpclib 0.4.9 alone keeps every stream whose task was cancelled before it ran.
        assert _live_streams() - before == 0
        for handler in server._handlers:
            assert not handler._tasks and not handler._cancelled
    finally:
        server.close()
        await server.wait_closed()


async def test_reset_rate_limit_closes_the_connection(tmp_path: Path) -> None:
    server = HardenedServer([Health()], limits=Limits(reset_burst=50, reset_rate=1))
    path = tmp_path / "s.sock"
    await server.start(path=str(path))
    try:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(None, h2attack.reset_flood, path, 2000, 10)
        assert result["goaway"] and result["sent"] < 2000
    finally:
        server.close()
        await server.wait_closed()


def test_frame_watch_follows_boundaries() -> None:
    w = FrameWatch(16384)
    assert w.pending
    w.feed(h2attack.PREFACE[:10])
    assert w.pending and w.frames == 0
    w.feed(h2attack.PREFACE[10:] + h2attack.frame_header(0, 4, 0, 0))
    assert not w.pending and w.frames == 1
    frame = h2attack.frame_header(5, 0, 0, 1) + b"hello"
    for i in range(len(frame)):
        w.feed(frame[i : i + 1])
        assert w.pending == (i < len(frame) - 1)
    assert w.frames == 2
    w.feed(frame * 3 + frame[:4])
    assert w.frames == 5 and w.pending


def test_frame_watch_rejects_an_oversized_header_at_once() -> None:
    w = FrameWatch(16384)
    w.feed(h2attack.PREFACE)
    with pytest.raises(FrameTooLarge):
        w.feed(h2attack.frame_header((1 << 24) - 1, 0, 0, 1))


def test_frame_watch_counts_frames_in_any_chunking() -> None:
    rng = random.Random(7)
    frames = [h2attack.frame_header(n, 0, 0, 1) + bytes(n) for n in (0, 1, 5, 9, 10, 100, 0, 3)] * 5
    stream = h2attack.PREFACE + b"".join(frames)
    for _ in range(50):
        w = FrameWatch(16384)
        i = 0
        while i < len(stream):
            step = rng.randint(1, 40)
            w.feed(stream[i : i + step])
            i += step
        assert w.frames == len(frames) and not w.pending


async def test_replies_follow_the_clients_hpack_tables(tmp_path: Path) -> None:
    # Header blocks are remembered per table state (core.hpack_cache): a table
    # that grows, evicts, shrinks to nothing and grows again under them must
    # still give the client replies it decodes, on one connection.
    server = HardenedServer([Health()], limits=Limits())
    path = tmp_path / "s.sock"
    await server.start(path=str(path))
    try:
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(None, h2attack.calls_on_one_connection, path, 400)
        assert results == [("0", "application/grpc+proto")] * 400
    finally:
        server.close()
        await server.wait_closed()


async def test_an_undecodable_header_block_closes_the_connection_cleanly(tmp_path: Path) -> None:
    server = HardenedServer([Health()], limits=Limits())
    path = tmp_path / "s.sock"
    await server.start(path=str(path))
    try:
        loop = asyncio.get_running_loop()
        code = await loop.run_in_executor(None, h2attack.garbage_header_block, path)
        assert code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        # The server itself is unharmed.
        results = await loop.run_in_executor(None, h2attack.calls_on_one_connection, path, 3)
        assert results == [("0", "application/grpc+proto")] * 3
    finally:
        server.close()
        await server.wait_closed()
