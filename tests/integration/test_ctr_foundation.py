"""Debian's stock ctr drives the engine: version, namespaces, images, content,
containers, leases and plugins, with the output ctr users expect."""

from __future__ import annotations

from core.api.containerd import types
from core.api.containerd.services.containers import v1 as containers
from core.api.containerd.services.images import v1 as images
from core.api.google.protobuf import Any
from core.client import Client
from tests.engine_proc import EngineProcess
from tests.helpers import ctr, sha

SPEC = Any(
    type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec",
    value=b'{"ociVersion":"1.0.2-dev","process":{"args":["true"],"cwd":"/"},"root":{"path":"rootfs"}}',
)


def test_version(engine: EngineProcess, ctr_bin: str) -> None:
    out = ctr(engine.address, "version").stdout
    assert "Server:" in out
    assert "ctrdeck" in out
    assert "UUID:" in out


def test_namespaces_create_label_ls_rm(engine: EngineProcess, ctr_bin: str) -> None:
    ctr(engine.address, "namespaces", "create", "team-a", "owner=ops")
    ctr(engine.address, "namespaces", "label", "team-a", "tier=gold")
    ls = ctr(engine.address, "namespaces", "ls").stdout.splitlines()
    row = next(line for line in ls if line.startswith("team-a"))
    assert "owner=ops" in row and "tier=gold" in row
    ctr(engine.address, "namespaces", "label", "team-a", "tier=")
    row = next(x for x in ctr(engine.address, "ns", "ls").stdout.splitlines() if "team-a" in x)
    assert "tier" not in row
    ctr(engine.address, "namespaces", "rm", "team-a")
    assert "team-a" not in ctr(engine.address, "namespaces", "ls").stdout
    # ctr treats NotFound on removal as done; the engine still says NotFound.
    assert ctr(engine.address, "namespaces", "rm", "team-a").returncode == 0


async def test_images_ls_empty_then_created(
    engine: EngineProcess, client: Client, ctr_bin: str
) -> None:
    assert ctr(engine.address, "images", "ls", namespace="x").stdout.splitlines()[1:] == []
    data = b'{"schemaVersion":2,"manifests":[]}'
    x = client.with_namespace("x")
    await x.write_content("index-1", data, sha(data))
    target = types.Descriptor(
        media_type="application/vnd.oci.image.index.v1+json", digest=sha(data), size=len(data)
    )
    await x.images.create(
        images.CreateImageRequest(image=images.Image(name="example.com/app:1", target=target))
    )
    out = ctr(engine.address, "images", "ls", namespace="x").stdout
    assert "example.com/app:1" in out and sha(data) in out
    names = ctr(engine.address, "images", "ls", "-q", namespace="x").stdout.split()
    assert names == ["example.com/app:1"]
    filtered = ctr(engine.address, "images", "ls", "name~=other", namespace="x").stdout
    assert "example.com/app:1" not in filtered
    assert ctr(engine.address, "images", "ls").stdout.splitlines()[1:] == []


async def test_content_ls(engine: EngineProcess, client: Client, ctr_bin: str) -> None:
    data = b"some blob"
    await client.write_content("blob-1", data, sha(data), labels={"a": "b"})
    out = ctr(engine.address, "content", "ls").stdout
    assert sha(data) in out and "a=b" in out


async def test_containers_ls(engine: EngineProcess, client: Client, ctr_bin: str) -> None:
    await client.containers.create(
        containers.CreateContainerRequest(
            container=containers.Container(
                id="c1",
                image="example.com/app:1",
                runtime=containers.ContainerRuntime(name="io.containerd.runc.v2"),
                spec=SPEC,
            )
        )
    )
    out = ctr(engine.address, "containers", "ls").stdout
    assert "c1" in out and "example.com/app:1" in out and "io.containerd.runc.v2" in out
    info = ctr(engine.address, "containers", "info", "c1").stdout
    assert '"ociVersion": "1.0.2-dev"' in info


async def test_leases_ls(engine: EngineProcess, client: Client, ctr_bin: str) -> None:
    ctr(engine.address, "leases", "create", "--id", "my-lease")
    async with client.lease() as leased:
        out = ctr(engine.address, "leases", "ls").stdout
        assert "my-lease" in out and leased.lease_id in out
        assert "containerd.io/gc.expire" in out
    assert leased.lease_id not in ctr(engine.address, "leases", "ls").stdout
    ctr(engine.address, "leases", "rm", "my-lease")


def test_plugins_ls(engine: EngineProcess, ctr_bin: str) -> None:
    out = ctr(engine.address, "plugins", "ls").stdout
    assert "io.containerd.content.v1" in out
    assert "io.containerd.grpc.v1" in out
    rows = [line.split() for line in out.splitlines()[1:]]
    assert all(row[-1] in ("ok", "skip", "error") for row in rows)
    only = ctr(engine.address, "plugins", "ls", "type==io.containerd.grpc.v1").stdout
    assert all("io.containerd.grpc.v1" in line for line in only.splitlines()[1:])


def test_namespace_with_content_cannot_be_removed(engine: EngineProcess, ctr_bin: str) -> None:
    ctr(engine.address, "leases", "create", "--id", "keep", namespace="busy")
    out = ctr(engine.address, "namespaces", "rm", "busy", check=False)
    assert out.returncode != 0
    assert "must be empty" in out.stderr and "leases" in out.stderr
