"""The registry client's retry policy: what is retried, how often, and what ends it.

A first attempt that succeeds loads no retry machinery (tenacity): checked in a fresh
interpreter.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from core.errors import CtrdeckError, NotFound, Unavailable
from core.images.registry import Retryable, RetryPolicy

POLICY = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01)


def gave_up(attempts: int, exc: Retryable) -> CtrdeckError:
    return Unavailable(f"gave up after {attempts}: {exc}")


async def test_retryable_failures_are_retried_until_the_budget_is_spent() -> None:
    calls: list[int] = []

    async def failing() -> str:
        calls.append(1)
        raise Retryable("HTTP 503")

    with pytest.raises(Unavailable, match="gave up after 3: HTTP 503") as info:
        await POLICY.retrying(gave_up)(failing)
    assert len(calls) == 3
    assert isinstance(info.value.__cause__, Retryable)


async def test_a_success_after_failures_is_the_result() -> None:
    outcomes = iter([Retryable("reset"), Retryable("reset"), "done"])

    async def flaky(suffix: str) -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome + suffix

    assert await POLICY.retrying(gave_up)(flaky, "!") == "done!"


async def test_a_failure_that_is_not_retryable_ends_the_retries() -> None:
    outcomes = iter([Retryable("HTTP 502"), NotFound("no such blob"), "never"])
    calls: list[int] = []

    async def vanishing() -> str:
        calls.append(1)
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with pytest.raises(NotFound):
        await POLICY.retrying(gave_up)(vanishing)
    assert len(calls) == 2


async def test_other_failures_are_not_retried() -> None:
    calls: list[int] = []

    async def missing() -> None:
        calls.append(1)
        raise NotFound("no such blob")

    with pytest.raises(NotFound):
        await POLICY.retrying(gave_up)(missing)
    assert calls == [1]


async def test_progress_renews_the_budget_and_the_loop_form_ends_on_success() -> None:
    position = [0]
    attempts = 0
    async for attempt in POLICY.retrying(gave_up, lambda: position[0]):
        with attempt:
            attempts += 1
            if attempts < 6:
                position[0] += 1  # every failing attempt got somewhere
                raise Retryable("connection lost")
    assert attempts == 6


async def test_retry_after_is_honoured_up_to_the_longest_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.05)
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    hints = iter([0.02, 30])

    async def busy() -> None:
        raise Retryable("HTTP 429", retry_after=next(hints, None))

    with pytest.raises(Unavailable, match="gave up after 3"):
        await policy.retrying(gave_up)(busy)
    assert waits == [0.02, 0.05]


def test_a_first_success_loads_no_retry_machinery() -> None:
    script = """
import asyncio, sys
from core.errors import Unavailable
from core.images.registry import Retryable, RetryPolicy

policy = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01)

async def main() -> None:
    async def ok() -> str:
        return "ok"
    assert await policy.retrying(lambda n, e: Unavailable(str(e)))(ok) == "ok"
    async for attempt in policy.retrying(lambda n, e: Unavailable(str(e)), lambda: 0):
        with attempt:
            pass
    print("tenacity" in sys.modules)
    outcomes = iter([Retryable("reset"), "ok"])
    async def flaky() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    assert await policy.retrying(lambda n, e: Unavailable(str(e)))(flaky) == "ok"
    print("tenacity" in sys.modules)

asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "True"]
