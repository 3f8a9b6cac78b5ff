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


async def test_create_get_and_update_reply_with_the_record_as_stored(client: Client) -> None:
    # Create, Get and Update reply from the container's cached encoding: each must be
    # the record as it is now, in the namespace asked, after updates and re-creation.
    ext = Any(type_url="x.Ext", value=b"\x03")
    made = await client.containers.create(
        api.CreateContainerRequest(
            container=_container(id="g1", labels={"k": "v"}, extensions={"e": ext}, image="img")
        )
    )
    got = await client.containers.get(api.GetContainerRequest(id="g1"))
    assert made.container == got.container
    assert got.container.labels == {"k": "v"} and got.container.extensions == {"e": ext}
    assert got.container.image == "img" and got.container.spec == SPEC
    assert got.container.created_at == got.container.updated_at
    updated = await client.containers.update(
        api.UpdateContainerRequest(
            container=_container(id="g1", labels={"k": "w"}),
            update_mask=FieldMask(paths=["labels.k"]),
        )
    )
    again = await client.containers.get(api.GetContainerRequest(id="g1"))
    assert updated.container == again.container
    assert again.container.labels == {"k": "w"}
    assert again.container.updated_at > again.container.created_at

    await client.containers.delete(api.DeleteContainerRequest(id="g1"))
    other = Any(type_url=SPEC.type_url, value=b'{"ociVersion":"1.0.2"}')
    remade = await client.containers.create(
        api.CreateContainerRequest(container=_container(id="g1", spec=other))
    )
    final = await client.containers.get(api.GetContainerRequest(id="g1"))
    assert remade.container == final.container
    assert final.container.spec == other and final.container.labels == {}
    elsewhere = client.with_namespace("elsewhere")
    await elsewhere.containers.create(
        api.CreateContainerRequest(container=_container(id="g1", labels={"ns": "2"}))
    )
    assert (await client.containers.get(api.GetContainerRequest(id="g1"))).container == (
        final.container
    )
    theirs = await elsewhere.containers.get(api.GetContainerRequest(id="g1"))
    assert theirs.container.labels == {"ns": "2"}
