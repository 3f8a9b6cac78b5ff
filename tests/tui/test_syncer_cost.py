"""The syncer's cost on a big node: create bursts, and the resync safety net.

The syncer shows a created container from its event at once and fetches the
rest of the record (labels, snapshot) for the whole burst with filtered
`Containers.List` calls; a container deleted meanwhile does not come back. A
resync that finds nothing the events missed stretches the wait for the next,
decodes no container record when the engine's reply is the same as the last
one, and only the changed record when one changed behind the console's back.
"""

from __future__ import annotations

import asyncio

import pytest

from core.api.containerd.services.containers import v1 as containers_api
from core.api.google.protobuf import FieldMask
from core.client import Client
from tests.engine_proc import EngineProcess
from tests.tui.conftest import AppFactory
from tests.tui.support import seed_container, until
from tui import container_list
from tui.state import CONTAINERS, ContainerRow, NodeState
from tui.syncer import RESYNC_INTERVAL, RESYNC_STRETCH, Syncer

BUSYBOX = "127.0.0.1:5000/library/busybox:1.36"
BURST = 40


async def test_a_burst_of_creates_is_fetched_in_batches(
    client: Client, console: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gets: list[str] = []
    real_get = containers_api.ContainersStub.get

    async def counted_get(self, message, *args, **kwargs):  # type: ignore[no-untyped-def]
        gets.append(message.id)
        return await real_get(self, message, *args, **kwargs)

    monkeypatch.setattr(containers_api.ContainersStub, "get", counted_get)
    app = console()
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.state.connected)
        ids = [f"burst-{i:02d}" for i in range(BURST)]
        await asyncio.gather(*(seed_container(client, cid, BUSYBOX) for cid in ids))
        await client.containers.delete(containers_api.DeleteContainerRequest(id=ids[0]))

        def fetched() -> bool:
            rows = app.state.containers
            return set(rows) == set(ids[1:]) and all(
                rows[cid].snapshot_key == cid and rows[cid].labels for cid in ids[1:]
            )

        await until(pilot, fetched)
        row = app.state.containers[ids[1]]
        assert row.image == BUSYBOX
        assert row.runtime == "io.containerd.runc.v2"
        assert row.labels == {"io.containerd.image.config.stop-signal": "SIGTERM"}
        assert gets == []


async def test_a_resync_that_finds_nothing_missed_waits_longer(
    engine: EngineProcess, client: Client
) -> None:
    await seed_container(client, "steady", BUSYBOX)
    base = Client(str(engine.address), "default")
    state = NodeState("default", str(engine.address))
    syncer = Syncer(base, state, on_log=lambda _: None, on_connection=lambda *_: None)
    try:
        await syncer.resync()
        assert syncer._resync_every == RESYNC_INTERVAL
        await syncer.resync()
        await syncer.resync()
        assert syncer._resync_every == 4 * RESYNC_INTERVAL
        for _ in range(5):
            await syncer.resync()
        assert syncer._resync_every == RESYNC_STRETCH * RESYNC_INTERVAL
        # A row the events did not keep (a missed event): the resync restores it
        # and the safety net is back to its pace.
        state.remove(CONTAINERS, "steady")
        await syncer.resync()
        assert "steady" in state.containers
        assert syncer._resync_every == RESYNC_INTERVAL
    finally:
        base.close()


def relabelled(container_id: str, labels: dict[str, str]) -> containers_api.UpdateContainerRequest:
    return containers_api.UpdateContainerRequest(
        container=containers_api.Container(id=container_id, labels=labels),
        update_mask=FieldMask(paths=["labels"]),
    )


async def test_a_resync_decodes_only_the_records_that_changed(
    engine: EngineProcess, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"quiet-{i:02d}" for i in range(12)]
    for cid in ids:
        await seed_container(client, cid, BUSYBOX)
    base = Client(str(engine.address), "default")
    state = NodeState("default", str(engine.address))
    # Not running: no events reach it, so whatever changes is missed and left to the resync.
    syncer = Syncer(base, state, on_log=lambda _: None, on_connection=lambda *_: None)
    try:
        await syncer.resync()
        assert set(state.containers) == set(ids)
        assert syncer._listing.decoded == len(ids)
        rows = dict(state.containers)

        # Every record read, by either reader: the row reader or the generated decoder.
        decoded: list[bytes] = []
        real = containers_api.Container.FromString
        real_lean = container_list.lean_row

        def counted(data: bytes) -> containers_api.Container:
            decoded.append(data)
            return real(data)

        def counted_lean(data: memoryview) -> tuple[ContainerRow, int] | None:
            decoded.append(bytes(data))
            return real_lean(data)

        monkeypatch.setattr(containers_api.Container, "FromString", counted)
        monkeypatch.setattr(container_list, "lean_row", counted_lean)
        await syncer.resync()
        assert decoded == []
        assert all(state.containers[cid] is rows[cid] for cid in ids)

        await client.containers.update(relabelled(ids[3], {"tier": "web"}))
        await syncer.resync()
        assert state.containers[ids[3]].labels == {"tier": "web"}
        assert len(decoded) == 1
        assert all(state.containers[cid] is rows[cid] for cid in ids if cid != ids[3])
        # A drift found resets the safety net's pace.
        assert syncer._resync_every == RESYNC_INTERVAL

        await client.containers.delete(containers_api.DeleteContainerRequest(id=ids[0]))
        await syncer.resync()
        assert set(state.containers) == set(ids[1:])
        assert len(decoded) == 1
    finally:
        base.close()
