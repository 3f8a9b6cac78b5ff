"""Lists answered from cached encoded replies are never stale.

Namespaces, Images, Containers and Content `List`, and Content `Info` and the
`Read` of a small blob, keep their encoded reply until the metadata changes
(`core/services/replies.py`; Content's until its own table changes). Each test asks the
same list (same namespace, same filters) before and after every kind of
write, so a cached reply would show if a write failed to invalidate it, and
checks another namespace and filtered lists alongside.
"""

from __future__ import annotations

import hashlib

import pytest
from grpclib import GRPCError
from grpclib.const import Status

from core.api.containerd import types
from core.api.containerd.services.containers import v1 as containers
from core.api.containerd.services.content import v1 as content
from core.api.containerd.services.images import v1 as images
from core.api.containerd.services.leases import v1 as leases
from core.api.containerd.services.namespaces import v1 as namespaces
from core.api.google.protobuf import Any, FieldMask
from core.client import Client
from core.services.version import REVISION, VERSION

SPEC = Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=b"{}")
DIGEST = "sha256:" + "c" * 64


def _image(name: str, **labels: str) -> images.Image:
    target = types.Descriptor(
        media_type="application/vnd.oci.image.manifest.v1+json", digest=DIGEST, size=10
    )
    return images.Image(name=name, labels=labels, target=target)


def _container(cid: str, **labels: str) -> containers.Container:
    runtime = containers.ContainerRuntime(name="io.containerd.runc.v2")
    return containers.Container(id=cid, runtime=runtime, spec=SPEC, labels=labels)


async def _namespaces(c: Client, filter_: str = "") -> dict[str, dict[str, str]]:
    got = await c.namespaces.list(namespaces.ListNamespacesRequest(filter=filter_))
    return {n.name: dict(n.labels) for n in got.namespaces}


async def _images(c: Client, *filters: str) -> dict[str, dict[str, str]]:
    got = await c.images.list(images.ListImagesRequest(filters=list(filters)))
    return {i.name: dict(i.labels) for i in got.images}


async def _containers(c: Client, *filters: str) -> dict[str, dict[str, str]]:
    got = await c.containers.list(containers.ListContainersRequest(filters=list(filters)))
    return {x.id: dict(x.labels) for x in got.containers}


async def _content(c: Client, *filters: str) -> tuple[int, dict[str, dict[str, str]]]:
    """(messages in the stream, labels by digest)."""
    messages = 0
    found: dict[str, dict[str, str]] = {}
    async for reply in c.content.list(content.ListContentRequest(filters=list(filters))):
        messages += 1
        found.update({i.digest: dict(i.labels) for i in reply.info})
    return messages, found


async def test_version_is_the_engines(client: Client) -> None:
    for _ in range(2):
        got = await client.server_version()
        assert (got.version, got.revision) == (VERSION, REVISION)


async def test_namespaces_list_follows_create_update_delete(client: Client) -> None:
    assert "n1" not in await _namespaces(client)
    await client.namespaces.create(
        namespaces.CreateNamespaceRequest(namespace=namespaces.Namespace(name="n1"))
    )
    assert (await _namespaces(client))["n1"] == {}
    assert await _namespaces(client, "labels.team==a") == {}
    await client.namespaces.update(
        namespaces.UpdateNamespaceRequest(
            namespace=namespaces.Namespace(name="n1", labels={"team": "a"}),
            update_mask=FieldMask(paths=["labels.team"]),
        )
    )
    assert (await _namespaces(client))["n1"] == {"team": "a"}
    assert await _namespaces(client, "labels.team==a") == {"n1": {"team": "a"}}
    # A namespace made implicitly, by a write in it, shows at once too.
    await client.with_namespace("n2").images.create(images.CreateImageRequest(image=_image("i")))
    assert {"n1", "n2"} <= set(await _namespaces(client))
    await client.namespaces.delete(namespaces.DeleteNamespaceRequest(name="n1"))
    assert "n1" not in await _namespaces(client)
    assert await _namespaces(client, "labels.team==a") == {}


async def test_images_list_follows_writes_per_namespace_and_filter(client: Client) -> None:
    other = client.with_namespace("other")
    assert await _images(client) == {}
    await client.images.create(images.CreateImageRequest(image=_image("a", k="1")))
    await client.images.create(images.CreateImageRequest(image=_image("b")))
    await other.images.create(images.CreateImageRequest(image=_image("z")))
    assert await _images(client) == {"a": {"k": "1"}, "b": {}}
    assert await _images(other) == {"z": {}}
    assert await _images(client, "labels.k==2") == {}
    await client.images.update(
        images.UpdateImageRequest(
            image=_image("a", k="2"), update_mask=FieldMask(paths=["labels.k"])
        )
    )
    assert await _images(client) == {"a": {"k": "2"}, "b": {}}
    assert await _images(client, "labels.k==2") == {"a": {"k": "2"}}
    assert await _images(client, "name==b") == {"b": {}}
    await client.images.delete(images.DeleteImageRequest(name="b"))
    assert await _images(client) == {"a": {"k": "2"}}
    assert await _images(client, "name==b") == {}
    assert await _images(other) == {"z": {}}


async def test_containers_list_follows_writes_per_namespace_and_filter(client: Client) -> None:
    other = client.with_namespace("other")
    await client.containers.create(containers.CreateContainerRequest(container=_container("c1")))
    assert await _containers(client) == {"c1": {}}
    assert await _containers(client, "labels.k==v") == {}
    await client.containers.update(
        containers.UpdateContainerRequest(
            container=_container("c1", k="v"), update_mask=FieldMask(paths=["labels.k"])
        )
    )
    assert await _containers(client) == {"c1": {"k": "v"}}
    assert await _containers(client, "labels.k==v") == {"c1": {"k": "v"}}
    assert await _containers(other) == {}
    await other.containers.create(containers.CreateContainerRequest(container=_container("c2")))
    assert await _containers(other) == {"c2": {}}
    await client.containers.delete(containers.DeleteContainerRequest(id="c1"))
    assert await _containers(client) == {}
    assert await _containers(client, "labels.k==v") == {}
    assert await _containers(other) == {"c2": {}}


async def test_content_list_follows_writes_in_batches(client: Client) -> None:
    other = client.with_namespace("other")
    blobs = [f"blob {i}".encode() for i in range(101)]
    digests = ["sha256:" + hashlib.sha256(b).hexdigest() for b in blobs]
    assert await _content(client) == (0, {})
    for i, blob in enumerate(blobs):
        await client.write_content(f"ref-{i}", blob, digests[i])
    messages, found = await _content(client)
    assert messages == 2 and set(found) == set(digests)
    assert await _content(other) == (0, {})
    await client.content.update(
        content.UpdateRequest(
            info=content.Info(digest=digests[0], labels={"k": "v"}),
            update_mask=FieldMask(paths=["labels.k"]),
        )
    )
    assert (await _content(client))[1][digests[0]] == {"k": "v"}
    assert await _content(client, "labels.k==v") == (1, {digests[0]: {"k": "v"}})
    await client.content.delete(content.DeleteContentRequest(digest=digests[0]))
    messages, found = await _content(client)
    assert messages == 1 and set(found) == set(digests[1:])
    assert await _content(client, "labels.k==v") == (0, {})
    await other.write_content("ref-o", blobs[0], digests[0])
    assert await _content(other) == (1, {digests[0]: {}})


async def _info(c: Client, digest: str) -> dict[str, str] | None:
    """A blob's labels by `Content.Info`, or None when the namespace does not have it."""
    try:
        got = await c.content.info(content.InfoRequest(digest=digest))
    except GRPCError as exc:
        assert exc.status == Status.NOT_FOUND
        return None
    assert got.info is not None and got.info.digest == digest
    return dict(got.info.labels)


async def test_content_info_follows_writes(client: Client) -> None:
    other = client.with_namespace("other")
    blob = b"info blob"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    for _ in range(2):
        assert await _info(client, digest) is None
    await client.write_content("ref-i", blob, digest)
    for _ in range(2):
        assert await _info(client, digest) == {}
        assert await _info(other, digest) is None
    for value in ("v1", "v2"):
        await client.content.update(
            content.UpdateRequest(
                info=content.Info(digest=digest, labels={"k": value}),
                update_mask=FieldMask(paths=["labels.k"]),
            )
        )
        assert await _info(client, digest) == {"k": value}
    await other.write_content("ref-o", blob, digest)
    assert await _info(other, digest) == {}
    await client.content.delete(content.DeleteContentRequest(digest=digest))
    assert await _info(client, digest) is None
    assert await _info(other, digest) == {}


async def test_refusals_are_not_cached(client: Client) -> None:
    await client.images.create(images.CreateImageRequest(image=_image("a")))
    for _ in range(2):
        with pytest.raises(GRPCError) as raised:
            await _images(client, "name==")
        assert raised.value.status == Status.INVALID_ARGUMENT
    for _ in range(2):
        with pytest.raises(GRPCError) as raised:
            await _images(client.with_namespace("bad ns"))
        assert raised.value.status == Status.INVALID_ARGUMENT
    assert await _images(client) == {"a": {}}


async def _read(c: Client, digest: str, offset: int = 0, size: int = 0) -> tuple[list[int], bytes]:
    """(each reply's offset, the bytes) of a `Content.Read`; NOT_FOUND and OUT_OF_RANGE raise."""
    offsets: list[int] = []
    data = b""
    request = content.ReadContentRequest(digest=digest, offset=offset, size=size)
    async for reply in c.content.read(request):
        offsets.append(reply.offset)
        data += reply.data
    return offsets, data


async def _code(c: Client, digest: str, offset: int = 0) -> Status:
    with pytest.raises(GRPCError) as raised:
        await _read(c, digest, offset)
    return raised.value.status


async def test_content_read_follows_ownership_and_ranges(client: Client) -> None:
    other = client.with_namespace("other")
    blob = bytes(range(256)) * 40
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    for _ in range(2):
        assert await _code(client, digest) == Status.NOT_FOUND
    await client.write_content("ref-r", blob, digest)
    for _ in range(2):
        assert await _read(client, digest) == ([0], blob)
        assert await _read(client, digest, 100, 50) == ([0], blob[100:150])
        assert await _read(client, digest, 10_000) == ([0], blob[10_000:])
        assert await _read(client, digest, len(blob)) == ([], b"")
        assert await _code(client, digest, len(blob) + 1) == Status.OUT_OF_RANGE
        assert await _code(other, digest) == Status.NOT_FOUND
    await other.write_content("ref-o", blob, digest)
    assert await _read(other, digest) == ([0], blob)
    await client.content.delete(content.DeleteContentRequest(digest=digest))
    assert await _code(client, digest) == Status.NOT_FOUND
    assert await _read(other, digest, 1, 2) == ([0], blob[1:3])


async def test_content_read_of_a_large_blob_streams_in_pieces(client: Client) -> None:
    blob = hashlib.sha256(b"seed").digest() * (3 << 15)  # 3 MiB: not kept, streamed in 1 MiB
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    await client.write_content("ref-big", blob, digest)
    for _ in range(2):
        assert await _read(client, digest) == ([0, 1 << 20, 2 << 20], blob)
        assert await _read(client, digest, 5, 10) == ([0], blob[5:15])


async def test_content_replies_follow_writes_among_other_writes(client: Client) -> None:
    # Info and Read stay cached across writes to other tables (a lease, a container,
    # as `ctr run` makes between its reads); a content write among them still shows.
    blob = b"manifest-like"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    await client.write_content("ref-m", blob, digest)
    assert await _info(client, digest) == {}
    assert await _read(client, digest) == ([0], blob)
    await client.leases.create(leases.CreateRequest(id="l1"))
    await client.containers.create(containers.CreateContainerRequest(container=_container("c1")))
    assert await _info(client, digest) == {}
    assert await _read(client, digest) == ([0], blob)
    await client.content.update(
        content.UpdateRequest(
            info=content.Info(digest=digest, labels={"k": "v"}),
            update_mask=FieldMask(paths=["labels.k"]),
        )
    )
    await client.leases.delete(leases.DeleteRequest(id="l1"))
    assert await _info(client, digest) == {"k": "v"}
    await client.content.delete(content.DeleteContentRequest(digest=digest))
    await client.containers.delete(containers.DeleteContainerRequest(id="c1"))
    assert await _info(client, digest) is None
    assert await _code(client, digest) == Status.NOT_FOUND


async def test_images_get_answers_each_image_as_it_is_now(client: Client) -> None:
    # Get replies from the image's cached encoding, as List does.
    other = client.with_namespace("other")

    async def got(c: Client, name: str) -> images.Image:
        return (await c.images.get(images.GetImageRequest(name=name))).image

    made = await client.images.create(images.CreateImageRequest(image=_image("g", k="1")))
    await other.images.create(images.CreateImageRequest(image=_image("g", k="o")))
    assert await got(client, "g") == made.image
    assert (await got(other, "g")).labels == {"k": "o"}
    updated = await client.images.update(
        images.UpdateImageRequest(
            image=_image("g", k="2"), update_mask=FieldMask(paths=["labels.k"])
        )
    )
    assert await got(client, "g") == updated.image
    assert updated.image.labels == {"k": "2"}
    listed = await client.images.list(images.ListImagesRequest())
    assert listed.images == [updated.image]
    await client.images.delete(images.DeleteImageRequest(name="g"))
    with pytest.raises(GRPCError) as raised:
        await got(client, "g")
    assert raised.value.status == Status.NOT_FOUND
    remade = await client.images.create(images.CreateImageRequest(image=_image("g")))
    assert await got(client, "g") == remade.image and remade.image.labels == {}
    assert (await got(other, "g")).labels == {"k": "o"}
