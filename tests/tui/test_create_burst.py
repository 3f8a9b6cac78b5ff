"""A burst of container creates reaches the console whole, without one fetch per event.

The syncer shows a created container from its event at once and fetches the
rest of the record (labels, snapshot) for the whole burst with filtered
`Containers.List` calls; a container deleted meanwhile does not come back.
"""

from __future__ import annotations

import asyncio

import pytest

from core.api.containerd.services.containers import v1 as containers_api
from core.client import Client
from tests.tui.conftest import AppFactory
from tests.tui.support import seed_container, until

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
