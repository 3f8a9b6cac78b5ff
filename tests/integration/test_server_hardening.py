"""The server layer bounds what one client can cost: stream-reset floods,
oversized messages, malformed requests and half-open connections (issue 10,
items 1 to 4). The misbehaving clients are in `tests/h2attack.py`."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
