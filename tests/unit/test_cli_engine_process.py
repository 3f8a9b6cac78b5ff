"""The engine's process refuses trio, and its registry client's HTTP stack still works.

`tui.cli.refuse_trio` runs in the engine's process before anything is imported:
httpcore must then load without trio and pick asyncio for its locks. Checked in a
fresh interpreter, since the test process may have imported trio already.
"""

from __future__ import annotations

from tests.fresh import run_fresh

SCRIPT = """
import asyncio, sys
from tui import cli

cli.refuse_trio()
import httpcore
from httpcore._synchronization import AsyncLock, current_async_library

async def main() -> str:
    lock = AsyncLock()
    async with lock:
        return current_async_library()

print(asyncio.run(main()))
print(sys.modules.get("trio") is None)
"""


def test_engine_process_runs_httpcore_without_trio() -> None:
    out = run_fresh(SCRIPT).split()
    assert out == ["asyncio", "True"]
