"""Our Images.Pull against a real docker-registry on 127.0.0.1, through the real engine.

Each test image (one busybox layer; layers with whiteouts and an opaque directory; an index
for two platforms) is pulled into overlayfs, native and, on a loop-mounted file, btrfs, and a
View of the top chain ID must mount as exactly the expected tree. Deleting the image leaves
no blob, snapshot or mount behind. Faults: a registry killed in the middle of a blob fails the
pull cleanly and a retry resumes the ingest; a blob whose bytes do not match is refused and
nothing is committed. Also: re-pulls are idempotent, concurrent pulls share one pipeline, and
`ctrdeck pull` prints plain progress lines when not on a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from grpclib import GRPCError
from grpclib.const import Status

from core.api.containerd.services.content import v1 as content_api
from core.api.containerd.services.events import v1 as events_api
from core.api.containerd.services.images import v1 as images_api
from core.api.containerd.services.leases import v1 as leases_api
from core.api.containerd.services.snapshots import v1 as snapshots_api
from core.client import Client
from core.images.handlers import GC_SNAPSHOT, chain_ids
from core.snapshots.mount import Mount, mounted
from tests.engine_proc import ROOT, EngineProcess
from tests.integration.test_snapshots import btrfs_root  # noqa: F401  (fixture)
from tests.registry import (
    Built,
    Entry,
    Image,
    Registry,
    build_image,
    busybox_image,
    busybox_layer,
    file,
    layered_image,
    make_layer,
    multiplatform_image,
    single,
)
from tests.registry import _desc_json as registry_desc_json
from tests.registry import _json as registry_json
from tests.registry import _sha as registry_sha

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="snapshot mounts need root"),
]


# -- helpers ---------------------------------------------------------------------------------


async def pull(
    client: Client, ref: str, **options: Any
) -> tuple[images_api.Image, list[images_api.PullImageProgress]]:
    seen = []
    request = images_api.PullImageRequest(ref=ref, plain_http=True, **options)
    async for progress in client.images.pull(request):
        seen.append(progress)
    assert seen and seen[-1].phase == "done" and seen[-1].image is not None
    return seen[-1].image, seen


def expected_of(tree: dict[str, Entry]) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for path, entry in tree.items():
        if entry.kind == "symlink":
            out[path] = ("symlink", entry.target)
        elif entry.kind == "dir":
            out[path] = ("dir", entry.mode, entry.uid, entry.gid)
        else:
            out[path] = ("file", entry.mode, entry.uid, entry.gid, entry.data)
    return out


def tree_of(root: Path) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode, st.st_uid, st.st_gid)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", mode, st.st_uid, st.st_gid, path.read_bytes())
            else:
                out[rel] = ("other", st.st_mode)
    return out


def host_mounts(mounts: list[Any]) -> list[Mount]:
    return [Mount(m.type, m.source, tuple(m.options), m.target) for m in mounts]


async def view_tree(client: Client, snapshotter: str, chain: str) -> dict[str, tuple[Any, ...]]:
    """Mount a View of `chain` and read its whole tree; the view is removed again."""
    key = f"test-view-{time.time_ns()}"
    # Under a lease, as ctr works: garbage collection may run at any moment.
    async with client.lease() as leased:
        view = await leased.snapshots.view(
            snapshots_api.ViewSnapshotRequest(snapshotter=snapshotter, key=key, parent=chain)
        )
        try:
            with mounted(host_mounts(view.mounts)) as root:
                return tree_of(root)
        finally:
            await leased.snapshots.remove(
                snapshots_api.RemoveSnapshotRequest(snapshotter=snapshotter, key=key)
            )


async def config_labels(client: Client, image: Image) -> dict[str, str]:
    info = await client.content.info(content_api.InfoRequest(digest=image.config_descriptor.digest))
    assert info.info is not None
    return dict(info.info.labels)


async def blobs(client: Client) -> list[str]:
    out = []
    async for resp in client.content.list(content_api.ListContentRequest()):
        out += [i.digest for i in resp.info]
    return out


async def snapshot_keys(client: Client, snapshotter: str) -> list[str]:
    out = []
    async for resp in client.snapshots.list(
        snapshots_api.ListSnapshotsRequest(snapshotter=snapshotter)
    ):
        out += [i.name for i in resp.info]
    return out


def mounts_under(path: Path) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text()
    return [line for line in text.splitlines() if str(path) in line]


def files_in(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


async def assert_nothing_left(engine: EngineProcess, client: Client, snapshotter: str) -> None:
    assert (await client.images.list(images_api.ListImagesRequest())).images == []
    assert await blobs(client) == []
    assert await snapshot_keys(client, snapshotter) == []
    content_root = engine.root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    assert files_in(content_root) == []
    sn_root = engine.root / f"io.containerd.snapshotter.v1.{snapshotter}" / "snapshots"
    assert not sn_root.is_dir() or os.listdir(sn_root) == []
    assert mounts_under(engine.base) == []


# -- trees -----------------------------------------------------------------------------------

CASES = [
    ("busybox", lambda: busybox_image(), ""),
    ("layered", lambda: layered_image(), ""),
    ("multi", lambda: multiplatform_image(), ""),
    ("multi", lambda: multiplatform_image(), "linux/arm64"),
]


def chosen(built: Built, platform: str) -> Image:
    if not built.is_index:
        return built.images[0]
    return built.image_for("arm64" if platform == "linux/arm64" else "amd64")


async def pull_and_check(client: Client, registry: Registry, snapshotter: str) -> None:
    pushed: dict[str, str] = {}
    for name, build, platform in CASES:
        built = build()
        if name not in pushed:
            pushed[name] = registry.push(built, f"test/{name}")
        image, progress = await pull(
            client, pushed[name], snapshotter=snapshotter, platform=platform
        )
        assert image.name == pushed[name]
        assert image.target is not None and image.target.digest == built.descriptor.digest
        want = chosen(built, platform)
        chain = chain_ids([layer.diff_id for layer in want.layers])
        labels = await config_labels(client, want)
        assert labels[GC_SNAPSHOT + snapshotter] == chain[-1]
        assert await view_tree(client, snapshotter, chain[-1]) == expected_of(
            want.expected_tree()
        ), f"{name} {platform or 'host'} on {snapshotter}"
        reported = {layer.digest for layer in progress[-1].layers}
        assert reported == {layer.descriptor.digest for layer in want.layers}


@pytest.mark.parametrize("snapshotter", ["overlayfs", "native"])
async def test_pulled_trees_are_exact_and_delete_leaves_nothing(
    engine: EngineProcess, client: Client, registry: Registry, snapshotter: str
) -> None:
    await pull_and_check(client, registry, snapshotter)
    listed = (await client.images.list(images_api.ListImagesRequest())).images
    for image in listed:
        await client.images.delete(images_api.DeleteImageRequest(name=image.name, sync=True))
    await assert_nothing_left(engine, client, snapshotter)
    assert (await client.leases.list(leases_api.ListRequest())).leases == []


async def test_pull_into_btrfs(btrfs_root: Path, registry: Registry) -> None:  # noqa: F811
    config = (
        'version = 2\n[plugins."io.containerd.snapshotter.v1.btrfs"]\n'
        f'root_path = "{btrfs_root / "snapshots"}"\n'
    )
    engine = EngineProcess(config=config).start()
    try:
        async with Client(str(engine.address), "default") as client:
            ref = registry.push(layered_image(), "test/layered")
            await pull(client, ref, snapshotter="btrfs")
            want = layered_image().images[0]
            chain = chain_ids([layer.diff_id for layer in want.layers])
            assert await view_tree(client, "btrfs", chain[-1]) == expected_of(want.expected_tree())
            await client.images.delete(images_api.DeleteImageRequest(name=ref, sync=True))
            assert await snapshot_keys(client, "btrfs") == []
            assert await blobs(client) == []
            left = subprocess.run(
                ["btrfs", "subvolume", "list", str(btrfs_root)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert left.strip() == ""
    finally:
        engine.stop(cleanup=True)


# -- sharing and idempotence -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def image_events(client: Client) -> AsyncIterator[list[str]]:
    topics: list[str] = []

    async def listen() -> None:
        async for env in client.events.subscribe(
            events_api.SubscribeRequest(filters=['topic~="^/images/"'])
        ):
            topics.append(env.topic)

    task = asyncio.create_task(listen())
    await asyncio.sleep(0.3)
    try:
        yield topics
    finally:
        await asyncio.sleep(0.3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, GRPCError):
            await task


async def test_concurrent_pulls_share_one_pipeline_and_repulls_are_idempotent(
    client: Client, registry: Registry
) -> None:
    ref = registry.push(layered_image(), "test/layered")
    async with image_events(client) as topics:
        (first, p1), (second, p2) = await asyncio.gather(pull(client, ref), pull(client, ref))
        assert first.target == second.target
        assert p1 and p2
    assert topics == ["/images/create"]

    async with image_events(client) as topics:
        again, progress = await pull(client, ref)
    assert again.target == first.target
    assert topics == ["/images/update"]
    assert {layer.state for layer in progress[-1].layers} == {"exists"}
    assert len(await blobs(client)) == 5  # manifest, config, three layers


async def test_skip_unpack_and_bad_requests(client: Client, registry: Registry) -> None:
    ref = registry.push(busybox_image(), "test/busybox")
    await pull(client, ref, skip_unpack=True)
    assert await snapshot_keys(client, "overlayfs") == []
    for request, code in [
        (images_api.PullImageRequest(ref="Not A Ref!"), Status.INVALID_ARGUMENT),
        (images_api.PullImageRequest(ref=ref, plain_http=True, snapshotter="nope"),
         Status.INVALID_ARGUMENT),
        (images_api.PullImageRequest(ref=ref + "-missing", plain_http=True), Status.NOT_FOUND),
        (images_api.PullImageRequest(ref=ref, plain_http=True, platform="windows/s390x"),
         Status.NOT_FOUND),
    ]:  # fmt: skip
        with pytest.raises(GRPCError) as info:
            async for _ in client.images.pull(request):
                pass
        assert info.value.status == code, (request, info.value.message)


async def test_a_snapshotter_not_loaded_is_refused_before_anything_is_stored(
    engine: EngineProcess, client: Client, registry: Registry
) -> None:
    ref = registry.push(busybox_image(), "test/busybox")
    with pytest.raises(GRPCError) as info:
        await pull(client, ref, snapshotter="zfs")
    assert info.value.status == Status.INVALID_ARGUMENT
    assert "snapshotter not loaded: zfs" in (info.value.message or "")
    await assert_nothing_left(engine, client, "overlayfs")
    statuses = await client.content.list_statuses(content_api.ListStatusesRequest())
    assert statuses.statuses == []


# -- faults ----------------------------------------------------------------------------------


class ThrottledProxy:
    """A TCP relay to the registry that slows its answers, so a test can cut one mid-blob."""

    def __init__(self, upstream_port: int, rate: int) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                conn.close()
                continue
            self.sockets += [conn, upstream]
            threading.Thread(target=self._pump, args=(conn, upstream, 0), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(upstream, conn, self.rate), daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, rate: int) -> None:
        try:
            while data := src.recv(1 << 16):
                self._before_passing(data)
                dst.sendall(data)
                if rate and self.rate:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _before_passing(self, data: bytes) -> None:
        """A relay that holds some bytes back does it here."""

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


class HoldingProxy(ThrottledProxy):
    """A relay to the registry that holds back every request for `path` until `release`."""

    def __init__(self, upstream_port: int, path: bytes) -> None:
        self.path = path
        self.held = threading.Event()
        self.released = threading.Event()
        super().__init__(upstream_port, rate=0)

    def _before_passing(self, data: bytes) -> None:
        if self.path in data:
            self.held.set()
            self.released.wait(120)

    def release(self) -> None:
        self.released.set()


async def test_layers_download_while_the_config_is_held_back(
    engine: EngineProcess, client: Client, registry: Registry
) -> None:
    # The config and the layers are fetched together; the unpack waits for the config.
    built = layered_image()
    registry.push(built, "test/held")
    image = built.images[0]
    proxy = HoldingProxy(registry.port, f"/blobs/{image.config_descriptor.digest} ".encode())
    try:
        ref = f"127.0.0.1:{proxy.port}/test/held:latest"
        seen: list[set[str]] = []
        async for progress in client.images.pull(
            images_api.PullImageRequest(ref=ref, plain_http=True)
        ):
            seen.append({layer.state for layer in progress.layers})
            if seen[-1] == {"downloaded"} and not proxy.released.is_set():
                assert proxy.held.is_set()
                proxy.release()
        assert proxy.released.is_set(), seen
        assert progress.phase == "done"
        chain = chain_ids([layer.diff_id for layer in image.layers])
        assert await view_tree(client, "overlayfs", chain[-1]) == expected_of(image.expected_tree())
        statuses = await client.content.list_statuses(content_api.ListStatusesRequest())
        assert statuses.statuses == []
    finally:
        proxy.release()
        proxy.close()


@pytest.fixture
def big_image() -> Built:
    big = make_layer([file("big.bin", os.urandom(24 << 20))], compression="none")
    return single(build_image([busybox_layer(), big]))


async def test_registry_stopped_mid_blob_then_retry_resumes(
    engine: EngineProcess, client: Client, registry: Registry, big_image: Built
) -> None:
    registry.push(big_image, "test/big")
    proxy = ThrottledProxy(registry.port, rate=6 << 20)
    try:
        ref = f"127.0.0.1:{proxy.port}/test/big:latest"
        big = big_image.images[0].layers[1].descriptor
        with pytest.raises(GRPCError) as info:
            async for progress in client.images.pull(
                images_api.PullImageRequest(ref=ref, plain_http=True)
            ):
                offsets = {lp.digest: lp.offset for lp in progress.layers}
                if offsets.get(big.digest, 0) >= 2 << 20 and registry.running:
                    registry.kill()
        assert info.value.status == Status.UNAVAILABLE
        assert big.digest in (info.value.message or "")
        assert (await client.images.list(images_api.ListImagesRequest())).images == []
        assert await blobs(client) == []
        assert await snapshot_keys(client, "overlayfs") == []
        statuses = await client.content.list_statuses(content_api.ListStatusesRequest())
        left = {s.ref: s.offset for s in statuses.statuses}
        assert 0 < left[f"layer-{big.digest}"] < big.size

        registry.start()
        proxy.rate = 0
        image, _ = await pull(client, ref)
        assert image.target is not None and image.target.digest == big_image.descriptor.digest
        statuses = await client.content.list_statuses(content_api.ListStatusesRequest())
        assert statuses.statuses == []
        chain = chain_ids([layer.diff_id for layer in big_image.images[0].layers])
        tree = await view_tree(client, "overlayfs", chain[-1])
        assert tree["big.bin"][4] == big_image.images[0].layers[1].entries[0].data
    finally:
        proxy.close()


async def test_blob_with_wrong_bytes_is_refused_and_nothing_is_committed(
    engine: EngineProcess, client: Client, registry: Registry
) -> None:
    built = layered_image()
    ref = registry.push(built, "test/corrupt")
    middle = built.images[0].layers[1].descriptor
    path = registry.blob_path(middle.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(GRPCError) as info:
        await pull(client, ref)
    assert info.value.status == Status.FAILED_PRECONDITION
    assert "digest mismatch" in (info.value.message or "")
    await assert_nothing_left(engine, client, "overlayfs")
    # Other layers cut short may keep their ingests for a retry; the bad one must not.
    statuses = await client.content.list_statuses(content_api.ListStatusesRequest())
    assert f"layer-{middle.digest}" not in {s.ref for s in statuses.statuses}


async def test_layer_unpacking_to_another_diff_id_leaves_nothing(
    engine: EngineProcess, client: Client, registry: Registry
) -> None:
    # The top layer's blob is sound but the config names another diff ID for it: it is
    # applied and made durable, then refused before its commit, after the two below it
    # were committed; the failed pull must take all of it away.
    layers = [make_layer([file(f"l{i}/data", f"layer {i}\n" * 1000)]) for i in range(3)]
    lying = replace(layers[2], tar=b"not what the blob unpacks to")
    built = single(build_image([layers[0], layers[1], lying]))
    ref = registry.push(built, "test/wrong-diff-id")
    with pytest.raises(GRPCError) as info:
        await pull(client, ref)
    assert "diff ID" in (info.value.message or "")
    await assert_nothing_left(engine, client, "overlayfs")


async def test_a_config_with_too_few_diff_ids_leaves_nothing(
    engine: EngineProcess, client: Client, registry: Registry
) -> None:
    # The config lists two diff IDs for three layers: the pull stops before any layer is
    # unpacked (the layers download beside the config) and takes what it stored away.
    layers = [make_layer([file(f"l{i}/data", os.urandom(1 << 20))]) for i in range(3)]
    short = build_image(layers[:2])
    manifest = registry_json(
        {
            "schemaVersion": 2,
            "mediaType": short.descriptor.media_type,
            "config": registry_desc_json(short.config_descriptor),
            "layers": [registry_desc_json(layer.descriptor) for layer in layers],
        }
    )
    lying = replace(
        short,
        layers=layers,
        manifest=manifest,
        descriptor=replace(short.descriptor, digest=registry_sha(manifest), size=len(manifest)),
    )
    ref = registry.push(single(lying), "test/few-diff-ids")
    with pytest.raises(GRPCError) as info:
        await pull(client, ref)
    assert info.value.status == Status.FAILED_PRECONDITION
    assert "has 3 layers but its config lists 2 diff IDs" in (info.value.message or "")
    await assert_nothing_left(engine, client, "overlayfs")


# -- the shell command -----------------------------------------------------------------------


def test_ctrdeck_pull_prints_plain_progress(engine: EngineProcess, registry: Registry) -> None:
    ref = registry.push(busybox_image(), "test/busybox")
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "pull", "-a", str(engine.address), "--plain-http", ref],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    layer = busybox_image().images[0].layers[0].descriptor.digest
    assert f"{layer}: unpacked" in done.stdout
    assert f"{ref}: {busybox_image().descriptor.digest}" in done.stdout
    failed = subprocess.run(
        [sys.executable, "-m", "tui.cli", "pull", "-a", str(engine.address), "--plain-http",
         ref + "-nope"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert failed.returncode == 1
    assert failed.stderr.startswith("ctrdeck pull: ")


def test_loopback_registry_needs_no_plain_http(engine: EngineProcess, registry: Registry) -> None:
    # The registry speaks plain HTTP on 127.0.0.1: TLS is tried, then HTTP, as containerd does.
    ref = registry.push(busybox_image(), "test/loopback")
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "pull", "-a", str(engine.address), ref],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"{ref}: {busybox_image().descriptor.digest}" in done.stdout
    local = ref.replace("127.0.0.1", "localhost")

    async def through_the_api() -> images_api.Image | None:
        client = Client(str(engine.address), "default")
        try:
            last = None
            async for progress in client.images.pull(images_api.PullImageRequest(ref=local)):
                last = progress
            return last.image if last else None
        finally:
            client.close()

    image = asyncio.run(through_the_api())
    assert image is not None and image.name == local


async def test_unpack_reports_applied_bytes(client: Client, registry: Registry) -> None:
    big = make_layer([file("data/blob", os.urandom(3 << 20))])
    built = single(build_image([busybox_layer(), big]))
    ref = registry.push(built, "test/applied")
    _image, seen = await pull(client, ref)
    final = {layer.digest: layer for layer in seen[-1].layers}
    for layer in built.images[0].layers:
        got = final[layer.descriptor.digest]
        assert got.state == "unpacked"
        # The unpack read the whole blob, and said so as it went.
        assert got.applied == layer.descriptor.size
    assert any(p.phase == "unpacking" and "layer" in p.message for p in seen) or any(
        "unpacking layer" in p.message for p in seen
    )
