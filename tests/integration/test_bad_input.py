"""Bad input gets containerd's status code and a message saying what was wrong,
and the engine keeps serving afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import socket

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
from tests.engine_proc import EngineProcess
from tests.helpers import sha

SPEC = Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=b"{}")
BIG = "x" * 4097


async def _code(call) -> tuple[Status, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(GRPCError) as err:
        await call
    return err.value.status, err.value.message or ""


def _container(cid: str, **kw) -> containers.CreateContainerRequest:  # type: ignore[no-untyped-def]
    fields = dict(
        id=cid, runtime=containers.ContainerRuntime(name="io.containerd.runc.v2"), spec=SPEC
    )
    fields.update(kw)
    return containers.CreateContainerRequest(container=containers.Container(**fields))


async def test_missing_namespace_header(client: Client) -> None:
    bare = images.ImagesStub(client.channel)
    code, msg = await _code(bare.list(images.ListImagesRequest()))
    assert code == Status.FAILED_PRECONDITION and "namespace is required" in msg


async def test_bad_namespace_names(client: Client) -> None:
    code, msg = await _code(
        client.with_namespace("bad ns!").images.list(images.ListImagesRequest())
    )
    assert code == Status.INVALID_ARGUMENT and "namespace validation" in msg
    code, msg = await _code(
        client.namespaces.create(
            namespaces.CreateNamespaceRequest(namespace=namespaces.Namespace(name="-bad"))
        )
    )
    assert code == Status.INVALID_ARGUMENT and "-bad" in msg
    code, _ = await _code(
        client.namespaces.create(
            namespaces.CreateNamespaceRequest(namespace=namespaces.Namespace(name="n" * 77))
        )
    )
    assert code == Status.INVALID_ARGUMENT


async def test_unknown_namespace(client: Client) -> None:
    got = await client.namespaces.get(namespaces.GetNamespaceRequest(name="never-written"))
    assert got.namespace.name == "never-written" and got.namespace.labels == {}
    assert (
        await client.with_namespace("never-written").images.list(images.ListImagesRequest())
    ).images == []
    code, msg = await _code(
        client.namespaces.delete(namespaces.DeleteNamespaceRequest(name="never-written"))
    )
    assert code == Status.NOT_FOUND and "never-written" in msg
    code, _ = await _code(
        client.namespaces.update(
            namespaces.UpdateNamespaceRequest(
                namespace=namespaces.Namespace(name="never-written", labels={"a": "b"})
            )
        )
    )
    assert code == Status.NOT_FOUND


async def test_bad_container_input(client: Client) -> None:
    code, msg = await _code(client.containers.create(_container("bad id")))
    assert code == Status.INVALID_ARGUMENT and "bad id" in msg
    code, msg = await _code(client.containers.create(_container("nospec", spec=None)))
    assert code == Status.INVALID_ARGUMENT and "spec" in msg
    code, msg = await _code(
        client.containers.create(
            _container("noruntime", runtime=containers.ContainerRuntime(name=""))
        )
    )
    assert code == Status.INVALID_ARGUMENT and "runtime" in msg
    code, msg = await _code(client.containers.create(_container("nosnapshotter", snapshot_key="k")))
    assert code == Status.INVALID_ARGUMENT and "snapshotter" in msg
    await client.containers.create(_container("ok"))
    code, msg = await _code(client.containers.create(_container("ok")))
    assert code == Status.ALREADY_EXISTS and "ok" in msg
    code, msg = await _code(client.containers.get(containers.GetContainerRequest(id="nope")))
    assert code == Status.NOT_FOUND and 'container "nope"' in msg
    code, _ = await _code(
        client.containers.update(
            containers.UpdateContainerRequest(
                container=containers.Container(
                    id="ok", runtime=containers.ContainerRuntime(name="other"), spec=SPEC
                )
            )
        )
    )
    assert code == Status.INVALID_ARGUMENT
    code, _ = await _code(
        client.containers.update(
            containers.UpdateContainerRequest(
                container=containers.Container(id="ok"),
                update_mask=FieldMask(paths=["runtime.name"]),
            )
        )
    )
    assert code == Status.INVALID_ARGUMENT


async def test_labels_over_4096_bytes(client: Client) -> None:
    code, msg = await _code(
        client.namespaces.create(
            namespaces.CreateNamespaceRequest(
                namespace=namespaces.Namespace(name="big", labels={"k": BIG})
            )
        )
    )
    assert code == Status.INVALID_ARGUMENT and "4096" in msg
    code, _ = await _code(client.containers.create(_container("big", labels={"k": BIG})))
    assert code == Status.INVALID_ARGUMENT
    code, _ = await _code(client.leases.create(leases.CreateRequest(id="big", labels={"k": BIG})))
    assert code == Status.INVALID_ARGUMENT
    data = b"blob"
    await client.write_content("b", data, sha(data))
    code, _ = await _code(
        client.content.update(
            content.UpdateRequest(
                info=content.Info(digest=sha(data), labels={"k": BIG}),
                update_mask=FieldMask(paths=["labels.k"]),
            )
        )
    )
    assert code == Status.INVALID_ARGUMENT


@pytest.mark.parametrize("bad", ["name==", "==x", "name=x", 'labels."unterminated', "name~=("])
async def test_malformed_filters(client: Client, bad: str) -> None:
    for call in [
        client.images.list(images.ListImagesRequest(filters=[bad])),
        client.containers.list(containers.ListContainersRequest(filters=[bad])),
        client.leases.list(leases.ListRequest(filters=[bad])),
    ]:
        code, msg = await _code(call)
        assert code == Status.INVALID_ARGUMENT and ("filters" in msg or "regular expression" in msg)


async def test_bad_images(client: Client) -> None:
    code, msg = await _code(
        client.images.create(images.CreateImageRequest(image=images.Image(name="")))
    )
    assert code == Status.INVALID_ARGUMENT and "name" in msg
    code, msg = await _code(
        client.images.create(
            images.CreateImageRequest(
                image=images.Image(
                    name="a",
                    target=types.Descriptor(media_type="x", digest="sha256:nothex", size=1),
                )
            )
        )
    )
    assert code == Status.INVALID_ARGUMENT and "digest" in msg
    code, msg = await _code(client.images.get(images.GetImageRequest(name="missing:1")))
    assert code == Status.NOT_FOUND and "missing:1" in msg
    code, _ = await _code(client.content.info(content.InfoRequest(digest="md5:abc")))
    assert code == Status.INVALID_ARGUMENT


async def test_bad_lease_resources(client: Client) -> None:
    await client.leases.create(leases.CreateRequest(id="l1"))
    code, _ = await _code(
        client.leases.add_resource(
            leases.AddResourceRequest(id="l1", resource=leases.Resource(id="x", type="volumes"))
        )
    )
    assert code == Status.UNIMPLEMENTED
    code, _ = await _code(
        client.leases.add_resource(
            leases.AddResourceRequest(
                id="missing", resource=leases.Resource(id=sha(b""), type="content")
            )
        )
    )
    assert code == Status.NOT_FOUND
    code, _ = await _code(client.leases.create(leases.CreateRequest(id="l1")))
    assert code == Status.ALREADY_EXISTS


async def test_garbage_on_the_socket_does_not_stop_the_engine(
    engine: EngineProcess, client: Client
) -> None:
    for payload in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00" * 100,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff" * 3,
    ]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(engine.address))
        s.sendall(payload)
        s.settimeout(2)
        with contextlib.suppress(OSError):
            s.recv(1024)
        s.close()
    await asyncio.sleep(0.1)
    assert "ctrdeck" in (await client.server_version()).version
    assert engine.proc is not None and engine.proc.poll() is None


async def test_unknown_method_is_unimplemented(engine: EngineProcess, client: Client) -> None:
    from core.api.containerd.services.version import v1 as version

    stub = version.VersionStub(client.channel, metadata=client.metadata)
    with pytest.raises(GRPCError) as err:
        await stub._unary_unary(
            "/containerd.services.nothing.v1.Nothing/Call",
            version.VersionResponse(),
            version.VersionResponse,
        )
    assert err.value.status == Status.UNIMPLEMENTED
    assert "unknown method" in (err.value.message or "")
