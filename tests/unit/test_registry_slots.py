"""The registry client's download slots: lowest priority first, none lost to cancellation."""

from __future__ import annotations

import asyncio

from core.images.registry import Slots


async def _waiters(
    slots: Slots, wanted: list[tuple[int, str]], order: list[str]
) -> list[asyncio.Task[None]]:
    async def take(priority: int, name: str) -> None:
        async with slots.hold(priority):
            order.append(name)
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(take(p, n)) for p, n in wanted]
    await asyncio.sleep(0.01)
    return tasks


async def test_a_freed_slot_goes_to_the_lowest_priority_then_in_turn() -> None:
    slots, order = Slots(1), []
    async with slots.hold(0):
        tasks = await _waiters(slots, [(3, "c"), (1, "a"), (2, "b"), (1, "a2")], order)
        assert order == []
    await asyncio.gather(*tasks)
    assert order == ["a", "a2", "b", "c"]


async def test_slots_are_shared_up_to_their_count() -> None:
    slots, inside, most = Slots(2), [0], [0]

    async def take() -> None:
        async with slots.hold():
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            await asyncio.sleep(0.005)
            inside[0] -= 1

    await asyncio.gather(*(take() for _ in range(6)))
    assert most[0] == 2


async def test_a_waiter_cancelled_before_its_turn_is_skipped() -> None:
    slots, order = Slots(1), []
    async with slots.hold(0):
        tasks = await _waiters(slots, [(1, "a"), (2, "b")], order)
        tasks[0].cancel()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == ["b"]
    async with asyncio.timeout(1):
        async with slots.hold():
            pass


async def test_a_waiter_cancelled_once_handed_the_slot_passes_it_on() -> None:
    slots, order = Slots(1), []
    holder = slots.hold(0)
    await holder.__aenter__()
    tasks = await _waiters(slots, [(1, "a"), (2, "b")], order)
    # The slot is handed to "a", which is cancelled before it runs again.
    await holder.__aexit__(None, None, None)
    tasks[0].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == ["b"]
    async with asyncio.timeout(1):
        async with slots.hold():
            pass
