"""Snapshots through the real engine: our client and Debian's ctr drive prepare,
view, commit, mounts, labels, usage and removal on overlayfs, native and (on a
loop-mounted file) btrfs; the returned mounts mount on this host; errors carry
containerd's codes; events, namespaces, leases and garbage collection behave as
containerd's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from grpclib import GRPCError
from grpclib.const import Status

from core import typeurl
from core.api.containerd import events
from core.api.containerd.services.events import v1 as events_api
from core.api.containerd.services.introspection import v1 as introspection
from core.api.containerd.services.leases import v1 as leases
from core.api.containerd.services.namespaces import v1 as namespaces
from core.api.containerd.services.snapshots import v1 as api
from core.api.google.protobuf import FieldMask
from core.client import Client
from core.snapshots.mount import Mount, mounted
from tests.engine_proc import EngineProcess
from tests.helpers import ctr, eventually

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="snapshot mounts need root")

SNAPSHOTTERS = ["overlayfs", "native"]


def host_mounts(mounts: list) -> list[Mount]:  # type: ignore[type-arg]
    return [Mount(m.type, m.source, tuple(m.options), m.target) for m in mounts]


def snapshot_dirs(engine: EngineProcess, snapshotter: str) -> list[str]:
    root = engine.root / f"io.containerd.snapshotter.v1.{snapshotter}"
    found = []
    for sub in ("snapshots", "active", "view", "tmp", "trash"):
        if (root / sub).is_dir():
            found += [f"{sub}/{name}" for name in os.listdir(root / sub)]
    return sorted(found)


async def code_of(call: object) -> tuple[Status, str]:
    with pytest.raises(GRPCError) as info:
        await call  # type: ignore[misc]
    return info.value.status, info.value.message or ""


async def collect_garbage(client: Client) -> None:
    """Run a synchronous collection, the way `ctr leases rm --sync` asks for one."""
    lease = await client.leases.create(leases.CreateRequest())
    assert lease.lease is not None
    await client.leases.delete(leases.DeleteRequest(id=lease.lease.id, sync=True))


async def keys(client: Client, snapshotter: str, *filters: str) -> list[str]:
    out: list[str] = []
    async for resp in client.snapshots.list(
        api.ListSnapshotsRequest(snapshotter=snapshotter, filters=list(filters))
    ):
        out += [info.name for info in resp.info]
    return out


@contextlib.asynccontextmanager
async def snapshot_events(client: Client) -> AsyncIterator[list[events_api.Envelope]]:
    received: list[events_api.Envelope] = []

    async def listen() -> None:
        async for env in client.events.subscribe(
            events_api.SubscribeRequest(filters=['topic~="^/snapshot/"'])
        ):
            received.append(env)

    task = asyncio.create_task(listen())
    # An event published before the subscription lands would be missed.
    await asyncio.sleep(0.3)
    try:
        yield received
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, GRPCError):
            await task


@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)
async def test_chain_through_the_client_mounts_on_the_host(
    engine: EngineProcess, client: Client, snapshotter: str
) -> None:
    sn = client.snapshots
    root_label = {"containerd.io/gc.root": "test"}
    async with snapshot_events(client) as seen:
        prepared = await sn.prepare(
            api.PrepareSnapshotRequest(snapshotter=snapshotter, key="extract 1", labels=root_label)
        )
        with mounted(host_mounts(prepared.mounts)) as root:
            (root / "bin").mkdir()
            (root / "bin" / "sh").write_text("#!shell")
            (root / "old").write_text("replaced later")
        await sn.commit(
            api.CommitSnapshotRequest(
                snapshotter=snapshotter, name="layer1", key="extract 1", labels=root_label
            )
        )
        prepared = await sn.prepare(
            api.PrepareSnapshotRequest(
                snapshotter=snapshotter, key="extract 2", parent="layer1", labels=root_label
            )
        )
        again = await sn.mounts(api.MountsRequest(snapshotter=snapshotter, key="extract 2"))
        assert again.mounts == prepared.mounts
        with mounted(host_mounts(again.mounts)) as root:
            assert (root / "bin" / "sh").read_text() == "#!shell"
            (root / "old").unlink()
            (root / "new").write_text("fresh")
        usage = await sn.usage(api.UsageRequest(snapshotter=snapshotter, key="extract 2"))
        assert usage.inodes >= 1 and usage.size > 0
        await sn.commit(
            api.CommitSnapshotRequest(
                snapshotter=snapshotter, name="layer2", key="extract 2", labels=root_label
            )
        )
        viewed = await sn.view(
            api.ViewSnapshotRequest(snapshotter=snapshotter, key="v", parent="layer2")
        )
        with mounted(host_mounts(viewed.mounts)) as root:
            assert sorted(os.listdir(root)) == ["bin", "new"]
        await sn.remove(api.RemoveSnapshotRequest(snapshotter=snapshotter, key="v"))
        await eventually(lambda: len(seen) >= 5)

    got = [(e.topic, typeurl.unpack(e.event)) for e in seen]
    assert got == [
        ("/snapshot/prepare", events.SnapshotPrepare(key="extract 1")),
        ("/snapshot/commit", events.SnapshotCommit(key="extract 1", name="layer1")),
        ("/snapshot/prepare", events.SnapshotPrepare(key="extract 2", parent="layer1")),
        ("/snapshot/commit", events.SnapshotCommit(key="extract 2", name="layer2")),
        ("/snapshot/remove", events.SnapshotRemove(key="v")),
    ]

    info = (await sn.stat(api.StatSnapshotRequest(snapshotter=snapshotter, key="layer2"))).info
    assert info is not None
    assert (info.name, info.parent, info.kind) == ("layer2", "layer1", api.Kind.COMMITTED)
    assert info.labels == root_label
    committed = await sn.usage(api.UsageRequest(snapshotter=snapshotter, key="layer2"))
    assert committed.size > 0

    updated = await sn.update(
        api.UpdateSnapshotRequest(
            snapshotter=snapshotter,
            info=api.Info(name="layer2", labels={"team": "a", "ignored": "x"}),
            update_mask=FieldMask(paths=["labels.team"]),
        )
    )
    assert updated.info is not None
    assert updated.info.labels == {**root_label, "team": "a"}
    assert await keys(client, snapshotter, "labels.team==a") == ["layer2"]
    assert await keys(client, snapshotter, "kind==committed") == ["layer1", "layer2"]
    assert await keys(client, snapshotter, "parent==layer1") == ["layer2"]


async def test_list_streams_in_batches_of_a_hundred(client: Client) -> None:
    for i in range(105):
        await client.snapshots.prepare(
            api.PrepareSnapshotRequest(snapshotter="overlayfs", key=f"k{i:03}")
        )
    sizes = [
        len(resp.info)
        async for resp in client.snapshots.list(api.ListSnapshotsRequest(snapshotter="overlayfs"))
    ]
    assert sizes == [100, 5]


async def test_errors_carry_containerds_codes(client: Client) -> None:
    sn = client.snapshots
    assert await code_of(sn.stat(api.StatSnapshotRequest(key="x"))) == (
        Status.INVALID_ARGUMENT,
        "snapshotter argument missing: invalid argument",
    )
    assert await code_of(sn.stat(api.StatSnapshotRequest(snapshotter="zfs", key="x"))) == (
        Status.INVALID_ARGUMENT,
        "snapshotter not loaded: zfs: invalid argument",
    )
    assert await code_of(sn.stat(api.StatSnapshotRequest(snapshotter="overlayfs", key="nope"))) == (
        Status.NOT_FOUND,
        "snapshot nope does not exist: not found",
    )

    def prep(key: str, parent: str = "") -> object:
        return sn.prepare(
            api.PrepareSnapshotRequest(snapshotter="overlayfs", key=key, parent=parent)
        )

    await prep("active")
    assert (await code_of(prep("active")))[0] == Status.ALREADY_EXISTS
    assert (await code_of(prep("child", "missing")))[0] == Status.NOT_FOUND
    assert (await code_of(prep("child", "active")))[0] == Status.INVALID_ARGUMENT
    status, message = await code_of(
        sn.mounts(api.MountsRequest(snapshotter="overlayfs", key="missing"))
    )
    assert status == Status.NOT_FOUND
    await sn.commit(api.CommitSnapshotRequest(snapshotter="overlayfs", name="base", key="active"))
    assert (await code_of(sn.mounts(api.MountsRequest(snapshotter="overlayfs", key="base"))))[
        0
    ] == Status.FAILED_PRECONDITION
    await sn.view(api.ViewSnapshotRequest(snapshotter="overlayfs", key="view", parent="base"))
    status, _ = await code_of(
        sn.commit(api.CommitSnapshotRequest(snapshotter="overlayfs", name="x", key="view"))
    )
    assert status == Status.FAILED_PRECONDITION
    await prep("second", "base")
    status, _ = await code_of(
        sn.commit(api.CommitSnapshotRequest(snapshotter="overlayfs", name="base", key="second"))
    )
    assert status == Status.ALREADY_EXISTS
    status, message = await code_of(
        sn.remove(api.RemoveSnapshotRequest(snapshotter="overlayfs", key="base"))
    )
    assert status == Status.FAILED_PRECONDITION and "child" in message
    status, _ = await code_of(
        sn.update(
            api.UpdateSnapshotRequest(
                snapshotter="overlayfs",
                info=api.Info(name="base"),
                update_mask=FieldMask(paths=["parent"]),
            )
        )
    )
    assert status == Status.INVALID_ARGUMENT
    status, _ = await code_of(
        sn.prepare(
            api.PrepareSnapshotRequest(snapshotter="overlayfs", key="big", labels={"k": "v" * 5000})
        )
    )
    assert status == Status.INVALID_ARGUMENT


async def test_concurrent_prepares_of_one_key_make_one_snapshot(
    engine: EngineProcess, client: Client
) -> None:
    results = await asyncio.gather(
        *(
            client.snapshots.prepare(api.PrepareSnapshotRequest(snapshotter="native", key="same"))
            for _ in range(8)
        ),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 7
    assert all(isinstance(f, GRPCError) and f.status == Status.ALREADY_EXISTS for f in failures)
    await eventually(lambda: len(snapshot_dirs(engine, "native")) == 1)
    assert snapshot_dirs(engine, "native")[0].startswith("snapshots/")


@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)
def test_ctr_snapshots_commands(
    engine: EngineProcess, ctr_bin: str, snapshotter: str, tmp_path: Path
) -> None:
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return ctr(engine.address, "snapshots", "--snapshotter", snapshotter, *args, check=check)

    run("prepare", "base key")
    target = tmp_path / "mnt"
    target.mkdir()
    # ctr prints the mount(8) line for the snapshot; running it is what an operator does.
    line = run("mounts", str(target), "base key").stdout.strip()
    assert line.startswith("mount -t bind")
    subprocess.run(line, shell=True, check=True)
    try:
        (target / "hello").write_text("from ctr")
    finally:
        subprocess.run(["umount", str(target)], check=True)
    run("commit", "base", "base key")
    run("prepare", "work", "base")
    line = run("mounts", str(target), "work").stdout.strip()
    if snapshotter == "overlayfs":
        assert line.startswith("mount -t overlay overlay")
    subprocess.run(line, shell=True, check=True)
    try:
        assert (target / "hello").read_text() == "from ctr"
        (target / "more").write_text("x")
    finally:
        subprocess.run(["umount", str(target)], check=True)
    run("view", "look", "base")

    listing = run("ls").stdout.split("\n")
    assert listing[0].split() == ["KEY", "PARENT", "KIND"]
    rows = sorted(row.split() for row in listing[1:] if row.strip())
    assert rows == [["base", "Committed"], ["look", "base", "View"], ["work", "base", "Active"]]
    info = run("info", "work").stdout
    assert '"Kind": "Active"' in info and '"Parent": "base"' in info
    assert "containerd.io/gc.root" in info  # ctr roots what it prepares
    assert "team=a" in run("label", "base", "team=a").stdout
    usage = run("usage", "base").stdout
    assert "base" in usage
    assert "base" in run("tree").stdout

    failed = run("rm", "base", check=False)
    assert failed.returncode != 0 and "child" in failed.stderr
    run("rm", "work", "look")
    run("rm", "base")
    assert run("ls").stdout.split("\n")[1:] == [""]
    assert snapshot_dirs(engine, snapshotter) == []


async def test_namespaces_are_isolated(client: Client) -> None:
    a, b = client.with_namespace("ns-a"), client.with_namespace("ns-b")
    for c in (a, b):
        await c.snapshots.prepare(api.PrepareSnapshotRequest(snapshotter="overlayfs", key="same"))
    await a.snapshots.commit(
        api.CommitSnapshotRequest(snapshotter="overlayfs", name="only-a", key="same")
    )
    assert await keys(a, "overlayfs") == ["only-a"]
    assert await keys(b, "overlayfs") == ["same"]
    status, _ = await code_of(
        b.snapshots.prepare(
            api.PrepareSnapshotRequest(snapshotter="overlayfs", key="x", parent="only-a")
        )
    )
    assert status == Status.NOT_FOUND


async def test_namespace_delete_is_refused_while_snapshots_remain(
    client: Client, engine: EngineProcess, ctr_bin: str
) -> None:
    busy = client.with_namespace("busy")
    await busy.snapshots.prepare(api.PrepareSnapshotRequest(snapshotter="native", key="k"))
    status, message = await code_of(
        client.namespaces.delete(namespaces.DeleteNamespaceRequest(name="busy"))
    )
    assert status == Status.FAILED_PRECONDITION
    assert 'snapshots on "native" snapshotter' in message
    failed = ctr(engine.address, "namespaces", "rm", "busy", check=False)
    assert "snapshots on" in failed.stderr
    await busy.snapshots.remove(api.RemoveSnapshotRequest(snapshotter="native", key="k"))
    await client.namespaces.delete(namespaces.DeleteNamespaceRequest(name="busy"))


async def test_a_lease_keeps_its_snapshots_through_gc(
    client: Client, engine: EngineProcess
) -> None:
    async with client.lease(sync_delete=True) as leased:
        await leased.snapshots.prepare(api.PrepareSnapshotRequest(snapshotter="overlayfs", key="a"))
        await leased.snapshots.commit(
            api.CommitSnapshotRequest(snapshotter="overlayfs", name="held", key="a")
        )
        resources = await client.leases.list_resources(
            leases.ListResourcesRequest(id=leased.lease_id or "")
        )
        assert [(r.id, r.type) for r in resources.resources] == [("held", "snapshots/overlayfs")]
        await collect_garbage(client)
        await client.snapshots.stat(api.StatSnapshotRequest(snapshotter="overlayfs", key="held"))
    status, _ = await code_of(
        client.snapshots.stat(api.StatSnapshotRequest(snapshotter="overlayfs", key="held"))
    )
    assert status == Status.NOT_FOUND
    assert snapshot_dirs(engine, "overlayfs") == []


async def test_gc_takes_an_unreferenced_chain_and_keeps_what_is_referenced(
    client: Client, engine: EngineProcess
) -> None:
    sn = client.snapshots
    async with client.lease(sync_delete=True) as leased:
        parent = ""
        for name in ("l1", "l2", "l3"):
            await leased.snapshots.prepare(
                api.PrepareSnapshotRequest(snapshotter="native", key=f"x {name}", parent=parent)
            )
            await leased.snapshots.commit(
                api.CommitSnapshotRequest(snapshotter="native", name=name, key=f"x {name}")
            )
            parent = name
        # A rooted blob that points at l2 keeps l2 and, through it, l1.
        await leased.write_content(
            "config",
            b"{}",
            labels={"containerd.io/gc.root": "now", "containerd.io/gc.ref.snapshot.native": "l2"},
        )
        await leased.snapshots.prepare(
            api.PrepareSnapshotRequest(
                snapshotter="native", key="rooted", labels={"containerd.io/gc.root": "now"}
            )
        )
    assert await keys(client, "native") == ["l1", "l2", "rooted"]
    assert len(snapshot_dirs(engine, "native")) == 3
    status, _ = await code_of(sn.stat(api.StatSnapshotRequest(snapshotter="native", key="l3")))
    assert status == Status.NOT_FOUND


async def test_introspection_lists_the_snapshotters(client: Client, engine: EngineProcess) -> None:
    resp = await client.introspection.plugins(
        introspection.PluginsRequest(filters=["type==io.containerd.snapshotter.v1"])
    )
    by_id = {p.id: p for p in resp.plugins}
    assert set(by_id) == {"btrfs", "native", "overlayfs", "devmapper", "zfs"}
    # containerd's snapshotters this engine lacks are listed skipped, with why.
    for absent in ("devmapper", "zfs"):
        err = by_id[absent].init_err
        assert err is not None and f"ctrdeck has no {absent} snapshotter" in err.message
    assert by_id["overlayfs"].init_err is None and by_id["native"].init_err is None
    assert by_id["overlayfs"].exports["root"] == str(
        engine.root / "io.containerd.snapshotter.v1.overlayfs"
    )
    btrfs_err = by_id["btrfs"].init_err
    if btrfs_err is not None:
        assert "skip plugin" in btrfs_err.message


def test_restart_sweeps_orphans_and_keeps_records(engine: EngineProcess, ctr_bin: str) -> None:
    ctr(engine.address, "snapshots", "prepare", "kept")
    kept = snapshot_dirs(engine, "overlayfs")
    root = engine.root / "io.containerd.snapshotter.v1.overlayfs"
    engine.stop()
    # What a crash leaves: a directory whose record never committed, a half
    # built one, and a half deleted one.
    (root / "snapshots" / "4242" / "fs").mkdir(parents=True)
    (root / "tmp" / "half-built").mkdir()
    (root / "trash" / "half-deleted").mkdir()
    engine.start()
    assert snapshot_dirs(engine, "overlayfs") == kept
    assert "kept" in ctr(engine.address, "snapshots", "ls").stdout


@pytest.fixture
def btrfs_root() -> Iterator[Path]:
    """A btrfs filesystem on a loop-mounted file.

    Only a missing mkfs.btrfs skips; a failing mkfs or loop mount is a broken host
    and fails the test instead of hiding the btrfs snapshotter's tests.
    """
    if shutil.which("mkfs.btrfs") is None:
        pytest.skip("mkfs.btrfs (btrfs-progs) is not installed")
    base = Path(tempfile.mkdtemp(prefix="ctrdeck-btrfs-", dir="/tmp"))
    image, mnt = base / "fs.img", base / "mnt"
    mnt.mkdir()
    try:
        with open(image, "wb") as f:
            f.truncate(256 << 20)
        made = subprocess.run(["mkfs.btrfs", "-q", str(image)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.fail(f"mkfs.btrfs failed: {made.stderr.strip()}")
        done = subprocess.run(
            ["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.fail(f"cannot loop-mount a btrfs file here: {done.stderr.strip()}")
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_btrfs_on_a_loop_mounted_file(btrfs_root: Path, ctr_bin: str) -> None:
    config = (
        'version = 2\n[plugins."io.containerd.snapshotter.v1.btrfs"]\n'
        f'root_path = "{btrfs_root / "snapshots"}"\n'
    )
    engine = EngineProcess(config=config).start()
    try:
        async with Client(str(engine.address), "default") as client:
            sn = client.snapshots
            prepared = await sn.prepare(api.PrepareSnapshotRequest(snapshotter="btrfs", key="k1"))
            with mounted(host_mounts(prepared.mounts)) as root:
                (root / "file").write_text("on btrfs")
            await sn.commit(api.CommitSnapshotRequest(snapshotter="btrfs", name="b1", key="k1"))
            prepared = await sn.prepare(
                api.PrepareSnapshotRequest(snapshotter="btrfs", key="k2", parent="b1")
            )
            with mounted(host_mounts(prepared.mounts)) as root:
                assert (root / "file").read_text() == "on btrfs"
                (root / "file").unlink()
                (root / "other").write_text("second layer")
            await sn.commit(api.CommitSnapshotRequest(snapshotter="btrfs", name="b2", key="k2"))
            viewed = await sn.view(
                api.ViewSnapshotRequest(snapshotter="btrfs", key="v", parent="b2")
            )
            with mounted(host_mounts(viewed.mounts)) as root:
                assert os.listdir(root) == ["other"]

            subvolumes = subprocess.run(
                ["btrfs", "subvolume", "list", "-r", str(btrfs_root)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert subvolumes.count("snapshots/snapshots/") == 2  # both commits are read-only

            listing = ctr(engine.address, "snapshots", "--snapshotter", "btrfs", "ls").stdout
            assert "b2" in listing and "View" in listing
            ctr(engine.address, "snapshots", "--snapshotter", "btrfs", "rm", "v", "b2", "b1")
            left = subprocess.run(
                ["btrfs", "subvolume", "list", str(btrfs_root)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert left.strip() == ""
    finally:
        engine.stop(cleanup=True)
