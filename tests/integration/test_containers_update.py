"""Containers.Update changes exactly the fields its mask names."""

from __future__ import annotations

from core.api.containerd.services.containers import v1 as api
from core.api.google.protobuf import Any, FieldMask
from core.client import Client

SPEC = Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=b"{}")


def _container(**kw) -> api.Container:  # type: ignore[no-untyped-def]
    fields = dict(id="u1", runtime=api.ContainerRuntime(name="io.containerd.runc.v2"), spec=SPEC)
    fields.update(kw)
    return api.Container(**fields)


async def test_mask_paths_touch_only_what_they_name(client: Client) -> None:
    old = Any(type_url="x.Old", value=b"\x01")
    await client.containers.create(
        api.CreateContainerRequest(container=_container(labels={"a": "1"}, extensions={"e": old}))
    )
    new = Any(type_url="x.New", value=b"\x02")
    got = await client.containers.update(
        api.UpdateContainerRequest(
            container=_container(labels={"a": "2"}, extensions={"e": new}),
            update_mask=FieldMask(paths=["labels.a"]),
        )
    )
    assert got.container.labels == {"a": "2"}
    assert got.container.extensions["e"] == old

    got = await client.containers.update(
        api.UpdateContainerRequest(
            container=_container(extensions={"e": new, "f": new}),
            update_mask=FieldMask(paths=["extensions.e"]),
        )
    )
    assert got.container.extensions == {"e": new}
    assert got.container.labels == {"a": "2"}

    got = await client.containers.update(
        api.UpdateContainerRequest(
            container=_container(), update_mask=FieldMask(paths=["extensions.e"])
        )
    )
    assert got.container.extensions == {}
