"""The registry client against a real docker-registry on 127.0.0.1 (and a real token server)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import random
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.content.store import ContentStore, Writer
from core.descriptor import Descriptor
from core.errors import FailedPrecondition, NotFound, Unauthenticated, Unavailable
from core.images import mediatypes, platforms
from core.images import registry as registry_module
from core.images.hosts import Hosts
from core.images.reference import parse
from core.images.registry import RegistryClient, RetryPolicy
from core.images.registry_push import RegistryPusher
from tests.registry import (
    Built,
    Registry,
    TokenServer,
    build_image,
    busybox_image,
    file,
    free_port,
    index_of,
    layered_image,
    make_layer,
    multiplatform_image,
    registry_fixture,  # noqa: F401  (the `registry` fixture)
    running_registry,
    single,
)

pytestmark = pytest.mark.integration

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


@pytest.fixture
async def client() -> AsyncIterator[RegistryClient]:
    async with RegistryClient(Hosts(plain_http=True), retry=FAST) as c:
        yield c


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ctrdeck-regtest-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@functools.cache
def big_image(mib: int = 3) -> Built:
    """One incompressible uncompressed layer of `mib` MiB, so a blob spans many chunks."""
    noise = random.Random(mib).randbytes(mib << 20)
    return single(build_image([make_layer([file("noise.bin", noise)], "none")]))


async def fetch_all(
    client: RegistryClient, ref: str, desc: Descriptor, *, slot: bool = True
) -> bytes:
    out = bytearray()
    async with contextlib.aclosing(client.blob_chunks(ref, desc, slot=slot)) as chunks:
        async for offset, chunk in chunks:
            # A retry sends the blob again from an earlier offset.
            del out[offset:]
            out.extend(chunk)
    return bytes(out)


async def test_resolve_tag_and_digest(registry: Registry, client: RegistryClient) -> None:
    built = busybox_image()
    ref = registry.push(built, "test/busybox", "v1")

    by_tag = await client.resolve(ref)
    assert by_tag == Descriptor(mediatypes.OCI_MANIFEST, built.descriptor.digest, len(built.root))

    by_digest = await client.resolve(f"{registry.host}/test/busybox@{built.descriptor.digest}")
    assert by_digest.digest == built.descriptor.digest
    assert by_digest.size == built.descriptor.size

    with pytest.raises(NotFound, match=rf"{registry.host}/test/busybox:nope"):
        await client.resolve(f"{registry.host}/test/busybox:nope")
    with pytest.raises(NotFound, match="not found"):
        await client.resolve(f"{registry.host}/test/absent:v1")


async def test_index_platform_manifest_config_layers(
    registry: Registry, client: RegistryClient
) -> None:
    built = multiplatform_image()
    ref = registry.push(built, "test/multi", "v1")

    root = await client.resolve(ref)
    assert root.media_type == mediatypes.OCI_INDEX and root.digest == built.descriptor.digest
    index = json.loads(await client.fetch_manifest(ref, root))
    entries = [
        (
            platforms.Platform.from_oci(m["platform"]),
            Descriptor(m["mediaType"], m["digest"], m["size"]),
        )
        for m in index["manifests"]
    ]
    for spec, arch in (("linux/arm64", "arm64"), ("linux/amd64", "amd64"), ("aarch64", "arm64")):
        chosen = platforms.only(platforms.parse(spec)).select(entries, key=lambda e: e[0])
        desc = chosen[0][1]
        image = built.image_for(arch)
        assert desc.digest == image.descriptor.digest
        manifest = json.loads(await client.fetch_manifest(ref, desc))
        config_desc = Descriptor(**_desc(manifest["config"]))
        config = await fetch_all(client, ref, config_desc)
        assert json.loads(config)["architecture"] == arch
        layers = await asyncio.gather(
            *(fetch_all(client, ref, Descriptor(**_desc(layer))) for layer in manifest["layers"])
        )
        assert layers == [layer.blob for layer in image.layers]


async def test_docker_schema2_media_types(registry: Registry, client: RegistryClient) -> None:
    built = layered_image()
    ref = registry.push(built, "test/docker", "v1", docker_format=True)
    root = await client.resolve(ref)
    assert root.media_type == mediatypes.DOCKER_MANIFEST
    manifest = json.loads(await client.fetch_manifest(ref, root))
    assert manifest["config"]["mediaType"] == mediatypes.DOCKER_CONFIG
    assert all(mediatypes.is_layer(layer["mediaType"]) for layer in manifest["layers"])
    blobs = [await fetch_all(client, ref, Descriptor(**_desc(lay))) for lay in manifest["layers"]]
    assert blobs == [layer.blob for layer in built.images[0].layers]


async def test_range_resume_continues_from_offset(
    registry: Registry, client: RegistryClient
) -> None:
    built = big_image()
    ref = registry.push(built, "test/big", "v1")
    desc = built.images[0].layers[0].descriptor
    held = bytearray()
    async with contextlib.aclosing(client.blob_chunks(ref, desc)) as chunks:
        async for offset, chunk in chunks:
            assert offset == len(held)
            held += chunk
            break
    assert 0 < len(held) < desc.size

    stopped_at = len(held)
    offsets: list[int] = []
    done: list[int] = []

    async def sink(offset: int, chunk: bytes) -> None:
        offsets.append(offset)
        del held[offset:]
        held.extend(chunk)

    await client.fetch_blob(
        ref,
        desc,
        sink,
        offset=stopped_at,
        prefix_hash=hashlib.sha256(held),
        progress=done.append,
    )
    # The first resumed chunk starts where we stopped: the registry answered 206, not 200.
    assert offsets[0] == stopped_at
    assert bytes(held) == built.images[0].layers[0].blob
    assert done[-1] == desc.size


async def test_corrupt_blob_is_refused_and_not_committed(
    registry: Registry, client: RegistryClient, workdir: Path
) -> None:
    built = busybox_image()
    ref = registry.push(built, "test/corrupt", "v1")
    layer = built.images[0].layers[0].descriptor
    stored = registry.blob_path(layer.digest)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))

    store = ContentStore(workdir / "content")
    writer = store.open_writer("pull-test", total=layer.size, expected=layer.digest)

    async def sink(offset: int, chunk: bytes) -> None:
        await asyncio.to_thread(writer.write, chunk, offset)

    with pytest.raises(FailedPrecondition, match=f"digest mismatch.*expected {layer.digest}"):
        await client.fetch_blob(ref, layer, sink)
    writer.close()
    assert not store.exists(layer.digest)


async def _write_through(
    client: RegistryClient, ref: str, desc: Descriptor, writer: Writer, offset: int = 0
) -> None:
    """A download checked against the writer's digest, as the pull does: one hash, the writer's."""
    async with contextlib.aclosing(
        client.blob_chunks(ref, desc, offset=offset, held_digest=writer.digest)
    ) as chunks:
        async for at, chunk in chunks:
            await asyncio.to_thread(writer.write, chunk, at)


async def test_download_checked_against_the_writers_digest(
    registry: Registry, client: RegistryClient, workdir: Path
) -> None:
    built = big_image()
    ref = registry.push(built, "test/onehash", "v1")
    desc = built.images[0].layers[0].descriptor
    store = ContentStore(workdir / "content")
    writer = store.open_writer("one-hash", total=desc.size, expected=desc.digest)
    async with contextlib.aclosing(client.blob_chunks(ref, desc)) as chunks:
        async for at, chunk in chunks:
            writer.write(chunk, at)
            break
    writer.close()
    # A resumed ingest: the writer re-hashed what it holds, so no prefix hash is passed.
    writer = store.open_writer("one-hash", total=desc.size, expected=desc.digest)
    assert 0 < writer.offset < desc.size
    await _write_through(client, ref, desc, writer, writer.offset)
    assert writer.commit() == desc.digest
    assert store.path(desc.digest).read_bytes() == built.images[0].layers[0].blob


async def test_writers_digest_refuses_a_corrupt_blob(
    registry: Registry, client: RegistryClient, workdir: Path
) -> None:
    built = busybox_image()
    ref = registry.push(built, "test/onehash-corrupt", "v1")
    layer = built.images[0].layers[0].descriptor
    stored = registry.blob_path(layer.digest)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    store = ContentStore(workdir / "content")
    writer = store.open_writer("one-hash-bad", total=layer.size, expected=layer.digest)
    with pytest.raises(FailedPrecondition, match=f"digest mismatch.*expected {layer.digest}"):
        await _write_through(client, ref, layer, writer)
    writer.close()
    assert not store.exists(layer.digest)


async def test_registry_down_is_unavailable_naming_host(registry: Registry) -> None:
    built = busybox_image()
    ref = registry.push(built, "test/down", "v1")
    registry.stop()
    async with RegistryClient(Hosts(plain_http=True), retry=FAST) as client:
        with pytest.raises(Unavailable, match=rf"registry {registry.host}.*Connection refused"):
            await client.resolve(ref)


async def test_registry_stopped_mid_blob_then_resumed(registry: Registry) -> None:
    # Large enough that loopback socket buffers cannot hold the rest when the registry dies.
    built = big_image(32)
    ref = registry.push(built, "test/midway", "v1")
    desc = built.images[0].layers[0].descriptor
    held = bytearray()
    async with RegistryClient(Hosts(plain_http=True), retry=FAST) as client:
        with pytest.raises(Unavailable, match=registry.host):
            async with contextlib.aclosing(client.blob_chunks(ref, desc)) as chunks:
                async for offset, chunk in chunks:
                    del held[offset:]
                    held += chunk
                    if registry.running:
                        registry.kill()
        assert 0 < len(held) < desc.size

        registry.start()
        resumed_at: list[int] = []

        async def sink(offset: int, chunk: bytes) -> None:
            resumed_at.append(offset)
            del held[offset:]
            held.extend(chunk)

        await client.fetch_blob(ref, desc, sink, offset=len(held), prefix_hash=hashlib.sha256(held))
        assert resumed_at[0] > 0
        assert bytes(held) == built.images[0].layers[0].blob


async def test_push_then_resolve_back(registry: Registry, client: RegistryClient) -> None:
    layer = make_layer([file("pushed.txt", "pushed by ctrdeck\n")])
    big = make_layer([file("chunky.bin", random.Random(3).randbytes(300_000))], "none")
    image = build_image([layer, big])
    ref = f"{registry.host}/test/pushed:v2"

    assert await RegistryPusher(client).push_blob(ref, layer.descriptor, layer.blob) is True
    assert await RegistryPusher(client).push_blob(ref, layer.descriptor, layer.blob) is False

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(big.blob), 65536):
            yield big.blob[start : start + 65536]

    sent: list[int] = []
    assert await RegistryPusher(client).push_blob(
        ref, big.descriptor, stream, chunk_size=100_000, progress=sent.append
    )
    assert sent[-1] == big.descriptor.size
    await RegistryPusher(client).push_blob(ref, image.config_descriptor, image.config)
    await RegistryPusher(client).push_manifest(ref, image.descriptor, image.manifest)

    root = await client.resolve(ref)
    assert root.digest == image.descriptor.digest
    assert await fetch_all(client, ref, big.descriptor) == big.blob

    other = f"{registry.host}/test/mounted:v1"
    assert (
        await RegistryPusher(client).push_blob(
            other, big.descriptor, big.blob, mount_from="test/pushed"
        )
        is False
    )
    assert await fetch_all(client, other, big.descriptor) == big.blob

    wrong = Descriptor(layer.descriptor.media_type, big.descriptor.digest, len(layer.blob))
    with pytest.raises(FailedPrecondition, match="digest"):
        await RegistryPusher(client).push_blob(f"{registry.host}/test/wrong:v1", wrong, layer.blob)


async def test_multiplatform_push_through_client_round_trips(
    registry: Registry, client: RegistryClient
) -> None:
    built = index_of([build_image([make_layer([file("a", "a")])], architecture="s390x")])
    ref = f"{registry.host}/test/idx:v1"
    for image in built.images:
        for digest, data in image.blobs().items():
            if digest != image.descriptor.digest:
                await RegistryPusher(client).push_blob(
                    ref, Descriptor("application/octet-stream", digest, len(data)), data
                )
        await RegistryPusher(client).push_manifest(
            ref, image.descriptor, image.manifest, tag=image.descriptor.digest
        )
    await RegistryPusher(client).push_manifest(ref, built.descriptor, built.root)
    root = await client.resolve(ref)
    assert root == Descriptor(mediatypes.OCI_INDEX, built.descriptor.digest, built.descriptor.size)


async def test_basic_auth_with_and_without_credentials() -> None:
    with running_registry(users={"alice": "s3cret"}) as reg:
        ref = reg.push(busybox_image(), "test/private", "v1")
        async with RegistryClient(Hosts(plain_http=True), retry=FAST) as anonymous:
            with pytest.raises(Unauthenticated, match="unauthorized"):
                await anonymous.resolve(ref)
        wrong = RegistryClient(
            Hosts(plain_http=True), credentials=lambda host: ("alice", "nope"), retry=FAST
        )
        async with wrong:
            with pytest.raises(Unauthenticated, match="unauthorized"):
                await wrong.resolve(ref)
        good = RegistryClient(
            Hosts(plain_http=True), credentials=lambda host: ("alice", "s3cret"), retry=FAST
        )
        async with good:
            root = await good.resolve(ref)
            manifest = json.loads(await good.fetch_manifest(ref, root))
            layer = Descriptor(**_desc(manifest["layers"][0]))
            assert await fetch_all(good, ref, layer) == busybox_image().images[0].layers[0].blob


async def test_bearer_tokens_anonymous_and_with_credentials(workdir: Path) -> None:
    token = TokenServer(workdir, users={"bob": "hunter2"}).start()
    try:
        with running_registry(token=token) as reg:
            ref = reg.push(busybox_image(), "test/tokened", "v1", creds=("bob", "hunter2"))
            token.requests.clear()
            async with RegistryClient(Hosts(plain_http=True), retry=FAST) as anonymous:
                root = await anonymous.resolve(ref)
                manifest = json.loads(await anonymous.fetch_manifest(ref, root))
                for layer in manifest["layers"]:
                    await fetch_all(anonymous, ref, Descriptor(**_desc(layer)))
                # One token for the scope, cached across the resolve and every fetch.
                assert token.requests == [("", ["repository:test/tokened:pull"])]
                image = build_image([make_layer([file("t", "t")])])
                with pytest.raises(Unauthenticated, match="unauthorized"):
                    await RegistryPusher(anonymous).push_blob(
                        ref, image.config_descriptor, image.config
                    )

            token.requests.clear()
            creds = RegistryClient(
                Hosts(plain_http=True), credentials=lambda host: ("bob", "hunter2"), retry=FAST
            )
            async with creds:
                pushed = f"{reg.host}/test/by-bob:v1"
                for layer in image.layers:
                    await RegistryPusher(creds).push_blob(pushed, layer.descriptor, layer.blob)
                await RegistryPusher(creds).push_blob(pushed, image.config_descriptor, image.config)
                await RegistryPusher(creds).push_manifest(pushed, image.descriptor, image.manifest)
                assert (await creds.resolve(pushed)).digest == image.descriptor.digest
            assert token.requests and all(user == "bob" for user, _ in token.requests)

            wrong = RegistryClient(
                Hosts(plain_http=True), credentials=lambda host: ("bob", "bad"), retry=FAST
            )
            async with wrong:
                with pytest.raises(Unauthenticated, match=r"unauthorized.*token server"):
                    await wrong.resolve(ref)
    finally:
        token.stop()


async def test_hosts_dir_server_and_mirror_fallback(registry: Registry, workdir: Path) -> None:
    built = busybox_image()
    registry.push(built, "test/mirrored", "v1")
    dead = f"127.0.0.1:{free_port()}"
    host_dir = workdir / "certs.d" / "example.test_5000_"
    host_dir.mkdir(parents=True)
    (host_dir / "hosts.toml").write_text(
        f'server = "http://{registry.host}"\n\n'
        f'[host."http://{dead}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    hosts = Hosts(str(workdir / "certs.d"))
    assert [e.host for e in hosts.endpoints("example.test:5000")] == [dead, registry.host]
    async with RegistryClient(hosts, retry=FAST) as client:
        ref = "example.test:5000/test/mirrored:v1"
        root = await client.resolve(ref)
        assert root.digest == built.descriptor.digest
        assert await client.fetch_manifest(ref, root) == built.root


async def test_loopback_registry_falls_back_to_plain_http(registry: Registry) -> None:
    built = busybox_image()
    ref = registry.push(built, "test/tls", "v1")
    async with RegistryClient(Hosts(), retry=FAST) as client:
        root = await client.resolve(ref)
        assert root.digest == built.descriptor.digest
        assert await client.fetch_manifest(ref, root) == built.root
    # The same registry named as localhost falls back too.
    local = ref.replace("127.0.0.1", "localhost")
    async with RegistryClient(Hosts(), retry=FAST) as client:
        assert (await client.resolve(local)).digest == built.descriptor.digest


async def test_https_to_plain_registry_explains(registry: Registry, tmp_path: Path) -> None:
    # Explicit TLS settings mean TLS, so even a loopback registry does not fall back.
    ref = registry.push(busybox_image(), "test/tls", "v1")
    (tmp_path / registry.host).mkdir()
    (tmp_path / registry.host / "hosts.toml").write_text("skip_verify = true\n")
    async with RegistryClient(Hosts(str(tmp_path)), retry=FAST) as client:
        with pytest.raises(FailedPrecondition, match="plain HTTP"):
            await client.resolve(ref)


async def test_parallel_downloads_share_slots(registry: Registry) -> None:
    built = layered_image()
    ref = registry.push(built, "test/parallel", "v1")
    image = built.images[0]
    async with RegistryClient(
        Hosts(plain_http=True), retry=FAST, max_concurrent_downloads=1
    ) as client:
        got = await asyncio.gather(
            *(fetch_all(client, ref, layer.descriptor) for layer in image.layers)
        )
    assert got == [layer.blob for layer in image.layers]
    assert parse(ref).path == "test/parallel"


async def test_a_blob_without_a_slot_passes_downloads_holding_every_slot(
    registry: Registry,
) -> None:
    # A pull fetches its config beside its layers, and every unpack waits for the config:
    # it must not queue behind the layers for a slot.
    built = layered_image()
    ref = registry.push(built, "test/slotless", "v1")
    image = built.images[0]
    async with RegistryClient(
        Hosts(plain_http=True), retry=FAST, max_concurrent_downloads=1
    ) as client:
        holding = client.blob_chunks(ref, image.layers[1].descriptor)
        async with contextlib.aclosing(holding) as stream:
            first = await anext(stream)
            assert first[0] == 0
            got = await fetch_all(client, ref, image.config_descriptor, slot=False)
            assert got == image.config
            # The same blob asking for a slot waits while the layer holds the only one.
            queued = asyncio.ensure_future(fetch_all(client, ref, image.config_descriptor))
            await asyncio.sleep(0.2)
            assert not queued.done()
        assert await queued == image.config


def _desc(d: dict[str, object]) -> dict[str, object]:
    return {"media_type": d["mediaType"], "digest": d["digest"], "size": d["size"]}


async def test_a_plain_http_registry_loads_no_tls_roots(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = busybox_image()
    ref = registry.push(built, "test/plain", "v1")
    loaded: list[str] = []
    real_default, real_verify = (
        ssl.SSLContext.load_default_certs,
        ssl.SSLContext.load_verify_locations,
    )

    def default_certs(self: ssl.SSLContext, *args: object) -> None:
        loaded.append("default")
        real_default(self, *args)  # type: ignore[arg-type]

    def verify_locations(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loaded.append("locations")
        real_verify(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", default_certs)
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", verify_locations)
    registry_module._default_tls.cache_clear()
    try:
        async with RegistryClient(Hosts(plain_http=True), retry=FAST) as client:
            root = await client.resolve(ref)
            manifest = json.loads(await client.fetch_manifest(ref, root))
            layer = manifest["layers"][0]
            desc = Descriptor(layer["mediaType"], layer["digest"], layer["size"])
            assert await fetch_all(client, ref, desc) == built.images[0].layers[0].blob
    finally:
        registry_module._default_tls.cache_clear()
    assert loaded == []
