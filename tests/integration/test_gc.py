"""Garbage collection through the real engine: it runs after deletes and on request, follows
containerd's gc.ref labels from images, and never takes what a live lease, a container or a
`containerd.io/gc.root` label holds; an expired lease holds nothing."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from core.api.containerd.services.images import v1 as images_api
from core.api.containerd.services.leases import v1 as leases_api
from core.api.containerd.services.snapshots import v1 as snapshots_api
from core.client import Client
from core.images.handlers import chain_ids
from tests.engine_proc import EngineProcess
from tests.helpers import ctr, eventually, sha
from tests.integration.test_pull import blobs, files_in, pull, snapshot_keys
from tests.registry import Registry, layered_image

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="snapshot mounts need root"),
]


async def collect(client: Client) -> None:
    """A synchronous collection on request, as `ctr leases rm --sync` asks for one."""
    lease = await client.leases.create(leases_api.CreateRequest())
    assert lease.lease is not None
    await client.leases.delete(leases_api.DeleteRequest(id=lease.lease.id, sync=True))


async def no_blobs(client: Client) -> bool:
    return await blobs(client) == []


def blob_files(engine: EngineProcess) -> list[str]:
    return files_in(engine.root / "io.containerd.content.v1.content" / "blobs" / "sha256")


async def test_lease_holds_content_until_it_is_deleted_or_expires(
    engine: EngineProcess, client: Client
) -> None:
    held, rooted, loose, expired = (f"blob {i}".encode() for i in range(4))
    lease = await client.leases.create(leases_api.CreateRequest(id="holding"))
    assert lease.lease is not None
    holding = Client(str(engine.address), "default", lease="holding")
    await holding.write_content("held", held, sha(held))
    await client.write_content("rooted", rooted, sha(rooted), {"containerd.io/gc.root": "now"})
    await client.write_content("loose", loose, sha(loose))
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await client.leases.create(
        leases_api.CreateRequest(id="old", labels={"containerd.io/gc.expire": past})
    )
    stale = Client(str(engine.address), "default", lease="old")
    await stale.write_content("expired", expired, sha(expired))

    await collect(client)
    assert sorted(await blobs(client)) == sorted([sha(held), sha(rooted)])
    assert len(blob_files(engine)) == 2

    await client.leases.delete(leases_api.DeleteRequest(id="holding", sync=True))
    assert await blobs(client) == [sha(rooted)]
    assert blob_files(engine) == [sha(rooted).removeprefix("sha256:")]


async def test_image_delete_collects_soon_and_a_container_keeps_its_chain(
    engine: EngineProcess, client: Client, registry: Registry, ctr_bin: str
) -> None:
    ref = registry.push(layered_image(), "test/layered")
    await pull(client, ref)
    want = layered_image().images[0]
    chain = chain_ids([layer.diff_id for layer in want.layers])
    ctr(engine.address, "containers", "create", ref, "keeper")
    assert "keeper" in await snapshot_keys(client, "overlayfs")

    # Deleting without sync still collects, just a moment later.
    await client.images.delete(images_api.DeleteImageRequest(name=ref))
    await eventually(lambda: no_blobs(client), timeout=10)
    # The files go in a worker after the records, so they may trail them a moment.
    await eventually(lambda: blob_files(engine) == [], timeout=10)
    # The container's snapshot, and the chain under it, outlive the image.
    assert sorted(await snapshot_keys(client, "overlayfs")) == sorted([*chain, "keeper"])

    ctr(engine.address, "containers", "rm", "keeper")
    await collect(client)
    assert await snapshot_keys(client, "overlayfs") == []
    sn_root = engine.root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    assert os.listdir(sn_root) == []


async def test_a_dropped_lease_collects_what_only_it_held(
    engine: EngineProcess, client: Client, registry: Registry, ctr_bin: str
) -> None:
    """`ctr containers create` drops its lease once the container holds the snapshot; a
    lease holding a snapshot nothing else does, deleted without sync, still gets a pass."""
    ref = registry.push(layered_image(), "test/layered")
    await pull(client, ref)
    top = chain_ids([layer.diff_id for layer in layered_image().images[0].layers])[-1]
    ctr(engine.address, "containers", "create", ref, "keeper")
    await client.leases.create(leases_api.CreateRequest(id="work"))
    working = Client(str(engine.address), "default", lease="work")
    try:
        await working.snapshots.prepare(
            snapshots_api.PrepareSnapshotRequest(snapshotter="overlayfs", key="loose", parent=top)
        )
    finally:
        working.close()
    await client.leases.delete(leases_api.DeleteRequest(id="work"))

    async def loose_gone() -> bool:
        return "loose" not in await snapshot_keys(client, "overlayfs")

    await eventually(loose_gone, timeout=10)
    assert "keeper" in await snapshot_keys(client, "overlayfs")
    ctr(engine.address, "containers", "rm", "keeper")
    await collect(client)
