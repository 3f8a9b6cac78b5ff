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


async def test_list_answers_each_container_as_it_is_now(client: Client) -> None:
    # The list is assembled from cached encodings: updates, re-creations and other
    # namespaces must each show as they are, the same as Get says.
    await client.containers.create(api.CreateContainerRequest(container=_container(id="l1")))
    await client.containers.create(
        api.CreateContainerRequest(container=_container(id="l2", labels={"k": "v"}))
    )

    async def listed(c: Client = client, filters: tuple[str, ...] = ()) -> dict[str, api.Container]:
        found = await c.containers.list(api.ListContainersRequest(filters=list(filters)))
        return {x.id: x for x in found.containers}

    first = await listed()
    assert set(first) == {"l1", "l2"} and first["l2"].labels == {"k": "v"}
    assert first["l1"].spec == SPEC
    await client.containers.update(
        api.UpdateContainerRequest(
            container=_container(id="l2", labels={"k": "w"}),
            update_mask=FieldMask(paths=["labels.k"]),
        )
    )
    again = await listed()
    assert again["l2"].labels == {"k": "w"}
    got = await client.containers.get(api.GetContainerRequest(id="l2"))
    assert again["l2"] == got.container
    assert set(await listed(filters=("labels.k==w",))) == {"l2"}

    await client.containers.delete(api.DeleteContainerRequest(id="l1"))
    other = Any(type_url=SPEC.type_url, value=b'{"ociVersion":"1.0.2"}')
    await client.containers.create(
        api.CreateContainerRequest(container=_container(id="l1", spec=other))
    )
    assert (await listed())["l1"].spec == other
    assert await listed(client.with_namespace("elsewhere")) == {}
