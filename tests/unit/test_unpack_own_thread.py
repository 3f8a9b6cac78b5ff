"""A streamed apply runs on a thread of its own, never one of the loop's default executor.

Streamed applies block until their downloads hand them bytes, and the downloads hand them
on only after the content store's write, which runs in the default executor: applies that
held all of its threads would stop the writes they wait for. Here the default executor has
one thread, held until the work `in_thread(..., own_thread=True)` runs has happened, which
could not happen if that work queued behind it. Results, errors and a cancelled caller are
checked too.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.snapshots.base import in_thread


def test_it_runs_while_every_thread_of_the_default_executor_waits_for_it() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        ran = threading.Event()
        held = loop.run_in_executor(None, ran.wait, 10)
        work = in_thread(lambda: (ran.set(), "done")[1], own_thread=True)
        result = await asyncio.wait_for(work, 10)
        assert await held is True
        return result

    assert asyncio.run(main()) == "done"


def test_an_error_reaches_the_caller() -> None:
    def fail() -> None:
        raise ValueError("bad layer")

    with pytest.raises(ValueError, match="bad layer"):
        asyncio.run(in_thread(fail, own_thread=True))


def test_a_cancelled_caller_waits_for_the_thread_to_end() -> None:
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.2)
        finished.set()

    async def main() -> None:
        task = asyncio.create_task(in_thread(slow, own_thread=True))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished.is_set()

    asyncio.run(main())


def test_it_sees_the_callers_context_variables() -> None:
    name: contextvars.ContextVar[str] = contextvars.ContextVar("name", default="")

    async def main() -> str:
        name.set("ns1")
        return await in_thread(name.get, own_thread=True)

    assert asyncio.run(main()) == "ns1"
