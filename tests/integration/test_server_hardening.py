"""The server layer bounds what one client can cost: stream-reset floods,
oversized messages, malformed requests and half-open connections (issue 10,
items 1 to 4). The misbehaving clients are in `tests/h2attack.py`."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import h2attack
from tests.engine_proc import EngineProcess
from tests.helpers import ctr


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_stream_reset_flood_does_not_grow_memory(engine: EngineProcess, ctr_bin: str) -> None:
    assert engine.proc is not None
    loop = asyncio.get_running_loop()
    # One round to warm up what any first calls allocate (imports, caches).
    await loop.run_in_executor(None, h2attack.reset_flood, engine.address, 10_000)
    ctr(engine.address, "version")
    start = rss_mib(engine.proc.pid)
    for _ in range(10):
        result = await loop.run_in_executor(None, h2attack.reset_flood, engine.address, 10_000)
        assert result["goaway"], "an abusive connection must be closed"
        assert "ctrdeck" in ctr(engine.address, "version").stdout
    assert rss_mib(engine.proc.pid) - start < 10
    assert "too many stream resets" in engine.log.read_text()


SHORT_TIMEOUTS = """
version = 2
[grpc]
connection_timeout = 1
idle_timeout = 2
"""


@pytest.fixture
def short_timeouts() -> Iterator[EngineProcess]:
    proc = EngineProcess(config=SHORT_TIMEOUTS).start()
    try:
        yield proc
    finally:
        proc.stop(cleanup=True)


@pytest.mark.parametrize(
    ("payload", "within"),
    [
        (h2attack.PREFACE[:10], 1),  # a truncated preface: the handshake timeout
        (h2attack.PREFACE, 1),  # a preface without SETTINGS: the handshake timeout
        (h2attack.promised_frame(16_000), 1),  # a frame begun, never finished
        (h2attack.promised_frame((1 << 24) - 1), 0),  # over the frame size: at once
        (h2attack.handshake(), 2),  # nothing asked: the idle timeout
    ],
    ids=["preface", "no-settings", "stalled-frame", "16MiB-frame", "idle"],
)
def test_half_open_connections_are_closed(
    short_timeouts: EngineProcess, payload: bytes, within: float
) -> None:
    took = h2attack.held_open(short_timeouts.address, payload, limit=within + 5)
    assert took is not None, "the engine kept the connection open"
    assert "ctrdeck" in ctr(short_timeouts.address, "version").stdout


def test_a_connection_with_a_stream_in_flight_is_not_idle(
    short_timeouts: EngineProcess, ctr_bin: str
) -> None:
    events = subprocess.Popen(
        [ctr_bin, "--address", str(short_timeouts.address), "events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(4)
        assert events.poll() is None, "an events subscription was cut as idle"
        ctr(short_timeouts.address, "namespaces", "create", "seen")
        assert events.stdout is not None
        assert b"/namespaces/create" in events.stdout.readline()
    finally:
        events.terminate()
        events.wait(timeout=10)
