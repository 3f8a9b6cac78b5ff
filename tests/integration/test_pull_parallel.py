"""Layers unpacked side by side on overlayfs: the same trees, commits in order, nothing left over.

The image's bottom layer is large (thousands of files) and the one above it tiny, so the
second layer is applied into a staging snapshot while the first is still being written. The
merged tree must be exactly what applying the layers one after another gives, including a
directory the second layer implies without listing it (its owner and mode come from the
layer below, as a copy-up would have them), whiteouts and an opaque directory above; the
snapshots must be committed bottom first; and after the image is deleted no snapshot,
staging directory or mount is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest
from grpclib import GRPCError

from core.api.containerd.services.events import v1 as events_api
from core.api.containerd.services.images import v1 as images_api
from core.client import Client
from core.images.handlers import chain_ids
from core.typeurl import unpack as unpack_any
from tests.engine_proc import EngineProcess
from tests.integration.test_pull import (
    ThrottledProxy,
    assert_nothing_left,
    expected_of,
    pull,
    view_tree,
)
from tests.registry import (
    Registry,
    build_image,
    directory,
    file,
    make_layer,
    opaque,
    single,
    whiteout,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="snapshot mounts need root"),
]


def staged_image() -> tuple[object, list[object]]:
    bottom = [
        directory("opt", 0o755),
        directory("opt/app", 0o750, 1000, 1001),
        file("opt/app/keep", "keep", 0o640, 1000, 1001),
        directory("etc"),
        file("etc/gone", "gone"),
        directory("var"),
        directory("var/lib"),
        file("var/lib/old", "old"),
    ]
    bottom += [directory("usr"), directory("usr/share")]
    bottom += [directory(f"usr/share/d{d:02d}") for d in range(40)]
    bottom += [file(f"usr/share/d{n % 40:02d}/f{n:04d}", f"data {n}") for n in range(3000)]
    layers = [
        make_layer(bottom),
        # `opt/app` and `opt/app/conf` are implied: the first exists below, the second not.
        make_layer([file("opt/app/conf/x", "x", 0o600, 1000, 1001)]),
        make_layer([whiteout("etc/gone"), opaque("var/lib"), file("var/lib/new", "new")]),
        make_layer([file("opt/app/conf/y", "y")]),
    ]
    return single(build_image(layers)), layers


@contextlib.asynccontextmanager
async def snapshot_events(client: Client) -> AsyncIterator[list[tuple[str, object]]]:
    seen: list[tuple[str, object]] = []

    async def listen() -> None:
        async for env in client.events.subscribe(
            events_api.SubscribeRequest(filters=['topic~="^/snapshot/"'])
        ):
            assert env.event is not None
            seen.append((env.topic, unpack_any(env.event)))

    task = asyncio.create_task(listen())
    await asyncio.sleep(0.3)
    try:
        yield seen
    finally:
        await asyncio.sleep(0.3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, GRPCError):
            await task


async def test_layers_applied_side_by_side_give_the_sequential_tree(
    engine: EngineProcess, client: Client, registry: Registry
) -> None:
    built, layers = staged_image()
    ref = registry.push(built, "test/staged")  # type: ignore[arg-type]
    image = built.images[0]  # type: ignore[attr-defined]
    chain = chain_ids([layer.diff_id for layer in layers])  # type: ignore[attr-defined]
    async with snapshot_events(client) as seen:
        await pull(client, ref, snapshotter="overlayfs")

    want = expected_of(image.expected_tree())
    want["opt/app/conf"] = ("dir", 0o755, 0, 0)
    got = await view_tree(client, "overlayfs", chain[-1])
    assert got == want
    assert got["opt/app"] == ("dir", 0o750, 1000, 1001)

    commits = [event.name for topic, event in seen if topic == "/snapshot/commit"]
    assert commits == chain
    # The second layer went into a parentless staging snapshot before its parent was there.
    staged = [
        event.key
        for topic, event in seen
        if topic == "/snapshot/prepare" and not event.parent and event.key.endswith(chain[1])
    ]
    assert staged, seen

    for listed in (await client.images.list(images_api.ListImagesRequest())).images:
        await client.images.delete(images_api.DeleteImageRequest(name=listed.name, sync=True))
    await assert_nothing_left(engine, client, "overlayfs")


async def test_concurrent_pulls_streaming_every_layer_all_finish(
    engine: EngineProcess, client: Client, registry: Registry
) -> None:
    # Three images of four layers, pulled at once through a slow relay: twelve applies
    # stream from their downloads, more than the loop's default executor has threads. Each
    # waits for bytes that its download hands on only after the content store's write in
    # that executor, so an apply holding one of its threads could stop every pull.
    built = []
    for n in range(3):
        layers = [
            make_layer([directory(f"image{n}"), file(f"image{n}/{i}.bin", os.urandom(3 << 19))])
            for i in range(4)
        ]
        image = single(build_image(layers))
        built.append((registry.push(image, f"test/many{n}"), image.images[0], layers))
    proxy = ThrottledProxy(registry.port, rate=16 << 20)
    try:
        pulls = [
            pull(client, ref.replace(registry.host, f"127.0.0.1:{proxy.port}"))
            for ref, _, _ in built
        ]
        await asyncio.wait_for(asyncio.gather(*pulls), 120)
    finally:
        proxy.close()
    for _, image, layers in built:
        chain = chain_ids([layer.diff_id for layer in layers])
        got = await view_tree(client, "overlayfs", chain[-1])
        assert got == expected_of(image.expected_tree())
    for listed in (await client.images.list(images_api.ListImagesRequest())).images:
        await client.images.delete(images_api.DeleteImageRequest(name=listed.name, sync=True))
    await assert_nothing_left(engine, client, "overlayfs")
