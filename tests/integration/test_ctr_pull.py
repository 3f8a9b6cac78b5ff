"""Debian's `ctr image pull` against the engine: the client-side pull through our Content,
Leases, Images, Diff and Snapshots services, then `ctr images|content|snapshots ls`, and
`ctr image rm --sync` leaving no unreferenced blob, snapshot or mount. A server-side pull
of the same image labels its blobs exactly as ctr's pull does."""

from __future__ import annotations

import os

import pytest

from core.api.containerd.services.content import v1 as content_api
from core.api.containerd.services.images import v1 as images_api
from core.client import Client
from core.images.handlers import chain_ids
from tests.engine_proc import EngineProcess
from tests.helpers import ctr
from tests.integration.test_pull import assert_nothing_left, expected_of, view_tree
from tests.registry import Registry, layered_image, multiplatform_image

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="snapshot mounts need root"),
]


async def labels_by_digest(client: Client) -> dict[str, dict[str, str]]:
    out = {}
    async for resp in client.content.list(content_api.ListContentRequest()):
        out.update({i.digest: dict(i.labels) for i in resp.info})
    return out


async def test_ctr_pull_ls_and_rm_sync(
    engine: EngineProcess, client: Client, registry: Registry, ctr_bin: str
) -> None:
    layered = registry.push(layered_image(), "test/layered")
    multi = registry.push(multiplatform_image(), "test/multi")
    for ref in (layered, multi):
        ctr(engine.address, "image", "pull", "--plain-http", ref, timeout=120)

    images = ctr(engine.address, "images", "ls").stdout
    assert layered in images and multi in images
    assert "linux/amd64,linux/arm64/v8" in images
    blobs = ctr(engine.address, "content", "ls").stdout
    want = layered_image().images[0]
    for digest in [want.descriptor.digest, want.config_descriptor.digest] + [
        layer.descriptor.digest for layer in want.layers
    ]:
        assert digest in blobs
    chain = chain_ids([layer.diff_id for layer in want.layers])
    snapshots = ctr(engine.address, "snapshots", "ls").stdout
    for key in chain:
        assert key in snapshots
    assert await view_tree(client, "overlayfs", chain[-1]) == expected_of(want.expected_tree())

    ctr(engine.address, "image", "rm", "--sync", layered, multi)
    await assert_nothing_left(engine, client, "overlayfs")
    assert ctr(engine.address, "snapshots", "ls").stdout.split() == ["KEY", "PARENT", "KIND"]


async def test_server_pull_labels_match_ctr_pull(
    engine: EngineProcess, client: Client, registry: Registry, ctr_bin: str
) -> None:
    ref = registry.push(multiplatform_image(), "test/multi")
    ctr(engine.address, "image", "pull", "--plain-http", ref, timeout=120)
    by_ctr = await labels_by_digest(client)
    ctr(engine.address, "image", "rm", "--sync", ref)
    assert await labels_by_digest(client) == {}

    async for _ in client.images.pull(images_api.PullImageRequest(ref=ref, plain_http=True)):
        pass
    assert await labels_by_digest(client) == by_ctr
    # And ctr sees a server-pulled image as its own: unpacked, with its chain.
    check = ctr(engine.address, "images", "check").stdout.splitlines()[-1]
    assert "complete" in check and check.split()[-1] == "true"
