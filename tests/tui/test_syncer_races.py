"""A resync's listing against the events that arrive while it is under way.

The syncer follows the event stream and, beside it, re-lists whole tables (on
connect, a second after the stream is up, and as a slow safety net). A listing
the engine answered before a delete reached the console must not bring the
deleted container back when it lands, nor drop one that an event added after
the engine answered; a listing of a namespace the operator has since left is
dropped. On a real engine, the listing is held back until the change is in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from core.api.containerd.services.containers import v1 as containers_api
from core.client import Client
from tests.engine_proc import EngineProcess
from tests.helpers import eventually
from tests.tui.support import seed_container, seed_namespace
from tui.state import CONTAINERS, ContainerRow, NodeState
from tui.syncer import Syncer

IMAGE = "example.com/app:1"


def row(cid: str, status: str = "") -> ContainerRow:
    return ContainerRow(cid, IMAGE, "io.containerd.runc.v2", status=status)


def test_a_listing_older_than_the_events_keeps_what_they_did() -> None:
    state = NodeState("default")
    for cid in ("kept", "deleted", "started"):
        state.upsert(CONTAINERS, cid, row(cid))
    listed_at = state.seq
    listing = {cid: row(cid) for cid in ("kept", "deleted", "started", "gone-before")}
    # While the listing was under way: a delete, a create and a start arrived.
    state.remove(CONTAINERS, "deleted")
    state.upsert(CONTAINERS, "created", row("created"))
    state.upsert(CONTAINERS, "started", row("started", "RUNNING"))
    state.replace_all(CONTAINERS, listing, listed_at=listed_at)
    assert set(state.containers) == {"kept", "started", "created", "gone-before"}
    assert state.containers["started"].status == "RUNNING"
    # Without a change number the listing is the whole truth, as before.
    state.replace_all(CONTAINERS, {"kept": row("kept")})
    assert set(state.containers) == {"kept"}


@pytest.fixture
async def idle(engine: EngineProcess) -> AsyncIterator[Syncer]:
    """A syncer that does only what the test asks of it: no events, no resync of its own."""
    base = Client(str(engine.address), "default")
    try:
        yield Syncer(
            base,
            NodeState("default", str(engine.address)),
            on_log=lambda _: None,
            on_connection=lambda *_: None,
        )
    finally:
        base.close()


@pytest.fixture
async def following(engine: EngineProcess, client: Client) -> AsyncIterator[Syncer]:
    """A syncer connected to the engine and applying its events."""
    base = Client(str(engine.address), "default")
    state = NodeState("default", str(engine.address))
    syncer = Syncer(base, state, on_log=lambda _: None, on_connection=lambda *_: None)
    running = asyncio.ensure_future(syncer.run())
    try:
        await eventually(lambda: state.connected)
        # A container only an event can bring (the next resync is 30 s away): the stream is up.
        await seed_container(client, "probe", IMAGE)
        await eventually(lambda: "probe" in state.containers)
        yield syncer
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        base.close()


def hold_listing(
    syncer: Syncer, monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], Awaitable[None]]
) -> None:
    """The next container listing comes back only after `meanwhile` has run."""
    real = syncer._listing.rows
    holding = [meanwhile]

    async def held(client: Client) -> list[ContainerRow]:
        rows = await real(client)
        while holding:
            await holding.pop()()
        return rows

    monkeypatch.setattr(syncer._listing, "rows", held)


async def test_a_delete_during_a_resync_stays_deleted(
    following: Syncer, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = following.state
    await seed_container(client, "doomed", IMAGE)
    await eventually(lambda: "doomed" in state.containers)

    async def change() -> None:
        await client.containers.delete(containers_api.DeleteContainerRequest(id="doomed"))
        await seed_container(client, "newborn", IMAGE)
        await eventually(lambda: "doomed" not in state.containers and "newborn" in state.containers)

    hold_listing(following, monkeypatch, change)
    await following.resync()
    assert "doomed" not in state.containers
    assert {"probe", "newborn"} <= set(state.containers)
    # The next listing is newer than both events, and agrees.
    await following.resync()
    assert set(state.containers) == {"probe", "newborn"}


async def test_a_listing_of_a_namespace_left_meanwhile_is_dropped(
    idle: Syncer, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed_container(client, "here", IMAGE)
    await idle.resync()
    state = idle.state
    assert set(state.containers) == {"here"}
    await seed_namespace(client, "elsewhere")
    elsewhere = client.with_namespace("elsewhere")
    await seed_container(elsewhere, "far", IMAGE)

    async def switch() -> None:
        await idle.switch_namespace("elsewhere")

    hold_listing(idle, monkeypatch, switch)
    await idle.resync()
    assert state.containers == {}
    await idle.resync()
    assert set(state.containers) == {"far"}
