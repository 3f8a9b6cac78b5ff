"""Seeding an engine for console tests and screenshots (through `core.client` only), and waiting.

Images are real: their manifest, config and layer blobs (from the deterministic
builders in `tests/registry.py`) go in through Content.Write with containerd's
gc reference labels, under a lease, and the image record points at the
manifest, so inspect can walk them. Containers carry an OCI spec Any as ctr
writes it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from textual.pilot import Pilot

from core.api.containerd.services.containers import v1 as containers_api
from core.api.containerd.services.content import v1 as content_api
from core.api.containerd.services.images import v1 as images_api
from core.api.containerd.services.namespaces import v1 as namespaces_api
from core.api.containerd.types import Descriptor
from core.api.google.protobuf import Any as AnyMessage
from core.client import Client
from tests.registry import Built, build_image, busybox_image, busybox_layer, single

SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
WA = content_api.WriteAction


async def write_blob(client: Client, data: bytes, digest: str, labels: dict[str, str]) -> None:
    ref = f"seed-{digest}"
    requests = [
        content_api.WriteContentRequest(action=WA.STAT, ref=ref, total=len(data), expected=digest),
        content_api.WriteContentRequest(
            action=WA.COMMIT,
            ref=ref,
            offset=0,
            data=data,
            total=len(data),
            expected=digest,
            labels=labels,
        ),
    ]
    try:
        async for _resp in client.content.write(requests):
            pass
    except GRPCError as exc:
        # A blob already present (another image shares the layer) is as good as written.
        if exc.status is not Status.ALREADY_EXISTS:
            raise


async def seed_image(client: Client, name: str, built: Built | None = None) -> Built:
    built = built or busybox_image()
    async with client.lease() as leased:
        for image in built.images:
            for layer in image.layers:
                await write_blob(leased, layer.blob, layer.descriptor.digest, {})
            await write_blob(leased, image.config, image.config_descriptor.digest, {})
            refs = {"containerd.io/gc.ref.content.config": image.config_descriptor.digest}
            for i, layer in enumerate(image.layers):
                refs[f"containerd.io/gc.ref.content.l.{i}"] = layer.descriptor.digest
            await write_blob(leased, image.manifest, image.descriptor.digest, refs)
        if built.is_index:
            refs = {
                f"containerd.io/gc.ref.content.m.{i}": image.descriptor.digest
                for i, image in enumerate(built.images)
            }
            await write_blob(leased, built.root, built.descriptor.digest, refs)
        d = built.descriptor
        await leased.images.create(
            images_api.CreateImageRequest(
                image=images_api.Image(
                    name=name,
                    target=Descriptor(media_type=d.media_type, digest=d.digest, size=d.size),
                )
            )
        )
    return built


def tool_image(tag: str) -> Built:
    """A second, distinct image: busybox with another command (so its digest differs)."""
    return single(build_image([busybox_layer()], cmd=("/bin/sleep", tag)))


def chatty_image() -> Built:
    """Busybox that says hello on stdout, then sleeps: something for the log view."""
    script = "echo hello from the console test; exec sleep 1000"
    return single(build_image([busybox_layer()], cmd=("/bin/sh", "-c", script)))


def worker_image() -> Built:
    """Busybox that works a little every half second: something for the CPU column."""
    script = "while :; do i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 0.5; done"
    return single(build_image([busybox_layer()], cmd=("/bin/sh", "-c", script)))


def spec_any(container_id: str, args: list[str]) -> AnyMessage:
    spec = {
        "ociVersion": "1.0.2-dev",
        "process": {"args": args, "cwd": "/", "env": ["PATH=/bin"]},
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {
            "cgroupsPath": f"/default/{container_id}",
            "namespaces": [{"type": "pid"}, {"type": "mount"}],
        },
    }
    return AnyMessage(type_url=SPEC_URL, value=json.dumps(spec).encode())


async def seed_container(client: Client, container_id: str, image: str) -> None:
    await client.containers.create(
        containers_api.CreateContainerRequest(
            container=containers_api.Container(
                id=container_id,
                image=image,
                labels={"io.containerd.image.config.stop-signal": "SIGTERM"},
                runtime=containers_api.ContainerRuntime(name="io.containerd.runc.v2"),
                spec=spec_any(container_id, ["/bin/sleep", "1000"]),
                snapshotter="overlayfs",
                snapshot_key=container_id,
            )
        )
    )


async def seed_namespace(client: Client, name: str) -> None:
    await client.namespaces.create(
        namespaces_api.CreateNamespaceRequest(namespace=namespaces_api.Namespace(name=name))
    )


async def until(pilot: Pilot[Any], predicate: Callable[[], object], timeout: float = 15.0) -> None:
    """Let the app run until `predicate()` holds (the engine answers on its own time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("the console did not get there in time")
        await pilot.pause(0.05)
