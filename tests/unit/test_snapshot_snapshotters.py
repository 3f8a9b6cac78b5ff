"""The overlayfs and native snapshotters in-process, on real directories
(core/snapshots): chains that mount and read back, what the native copy keeps,
usage, and the crash-safety rules (orphans swept, failures leave nothing)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import AlreadyExists, FailedPrecondition, Internal, NotFound
from core.metadata import Metadata
from core.metadata.snapshots import Kind, SnapshotStore, Usage
from core.snapshots import Snapshotter, mounted
from core.snapshots.base import disk_usage
from core.snapshots.native import NativeSnapshotter
from core.snapshots.overlay import OverlaySnapshotter, supports_d_type

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="snapshotters mount, which needs root")

NS = "default"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SnapshotStore]:
    md = Metadata(tmp_path / "meta.db")
    try:
        yield SnapshotStore(md.db, md.namespaces, md.leases)
    finally:
        md.close()


def opened(cls: type[Snapshotter], root: Path, store: SnapshotStore) -> Snapshotter:
    sn = cls(root, store)
    assert sn.open() == ""
    return sn


@pytest.fixture(params=[OverlaySnapshotter, NativeSnapshotter], ids=["overlayfs", "native"])
def sn(request: pytest.FixtureRequest, tmp_path: Path, store: SnapshotStore) -> Snapshotter:
    return opened(request.param, tmp_path / request.param.NAME, store)


def entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_disk_usage_counts_a_hard_link_once(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 10000)
    os.link(tmp_path / "a", tmp_path / "b")
    (tmp_path / "d").mkdir()
    os.symlink("a", tmp_path / "d" / "s")
    usage = disk_usage(tmp_path)
    assert usage.inodes == 4  # the root, a(=b), d, s
    assert usage.size >= 10000
    assert disk_usage(tmp_path / "missing") == Usage()


def test_this_host_reports_d_type(tmp_path: Path) -> None:
    assert supports_d_type(tmp_path)


async def test_chain_mounts_write_and_read_back(sn: Snapshotter) -> None:
    mounts = await sn.prepare(NS, "extract 1")
    with mounted(mounts) as root:
        (root / "etc").mkdir()
        (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
        (root / "gone").write_text("soon deleted")
    await sn.commit(NS, "layer1", "extract 1")

    mounts = await sn.prepare(NS, "extract 2", "layer1")
    with mounted(mounts) as root:
        assert (root / "etc" / "passwd").exists()
        (root / "gone").unlink()
        (root / "etc" / "group").write_text("root:x:0:\n")
    active = await sn.usage(NS, "extract 2")
    assert active.inodes >= 1
    await sn.commit(NS, "layer2", "extract 2", labels={"l": "v"})

    mounts = await sn.view(NS, "look", "layer2")
    with mounted(mounts) as root:
        assert entries(root) == ["etc"]
        assert entries(root / "etc") == ["group", "passwd"]
        with pytest.raises(OSError):
            (root / "new").write_text("views are read-only")
    assert (await sn.stat(NS, "layer2")).labels == {"l": "v"}
    assert (await sn.stat(NS, "look")).kind == Kind.VIEW
    assert await sn.mounts(NS, "look") == mounts
    with pytest.raises(FailedPrecondition, match="not active or view"):
        await sn.mounts(NS, "layer2")


async def test_remove_deletes_the_directory(sn: Snapshotter) -> None:
    await sn.prepare(NS, "a")
    record = await sn.stat(NS, "a")
    assert (sn.root / record.directory).is_dir()
    await sn.remove(NS, "a")
    assert not (sn.root / record.directory).exists()
    with pytest.raises(NotFound):
        await sn.stat(NS, "a")
    assert entries(sn.root / "trash") == []


async def test_existing_key_fails_before_any_disk_work(sn: Snapshotter) -> None:
    await sn.prepare(NS, "a")
    before = entries(sn.root / "snapshots")
    with pytest.raises(AlreadyExists):
        await sn.prepare(NS, "a")
    assert entries(sn.root / "snapshots") == before
    assert entries(sn.root / "tmp") == []


async def test_open_sweeps_what_a_crash_left(
    tmp_path: Path, store: SnapshotStore, sn: Snapshotter
) -> None:
    await sn.prepare(NS, "kept")
    kept = (await sn.stat(NS, "kept")).directory
    (sn.root / "snapshots" / "999" / "fs").mkdir(parents=True)
    (sn.root / "tmp" / "half-built").mkdir()
    (sn.root / "trash" / "half-deleted").mkdir()
    again = opened(type(sn), sn.root, store)
    assert [f"snapshots/{n}" for n in entries(again.root / "snapshots")] == [kept]
    assert entries(again.root / "tmp") == entries(again.root / "trash") == []


async def test_cleanup_removes_orphans_only(sn: Snapshotter) -> None:
    await sn.prepare(NS, "kept")
    (sn.root / "snapshots" / "12345").mkdir()
    assert await sn.cleanup() == 1
    assert len(entries(sn.root / "snapshots")) == 1
    assert await sn.cleanup() == 0


async def test_a_failed_native_prepare_leaves_nothing(tmp_path: Path, store: SnapshotStore) -> None:
    sn = opened(NativeSnapshotter, tmp_path / "native", store)
    await sn.prepare(NS, "k")
    await sn.commit(NS, "base", "k")
    base = sn.root / (await sn.stat(NS, "base")).directory
    base.rename(tmp_path / "stolen")
    with pytest.raises(Internal, match="copying snapshot"):
        await sn.prepare(NS, "child", "base")
    assert store.find(NS, "native", "child") is None
    assert entries(sn.root / "tmp") == entries(sn.root / "trash") == []
    assert entries(sn.root / "snapshots") == []


async def test_native_copy_keeps_what_a_root_filesystem_needs(
    tmp_path: Path, store: SnapshotStore
) -> None:
    sn = opened(NativeSnapshotter, tmp_path / "native", store)
    with mounted(await sn.prepare(NS, "k")) as root:
        data = root / "data"
        data.write_text("content")
        os.chown(data, 1234, 5678)
        os.chmod(data, 0o4751)
        os.setxattr(data, "user.note", b"kept")
        os.link(data, root / "hardlink")
        os.symlink("data", root / "symlink")
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.utime(data, ns=(1_000_000_000_123, 1_500_000_000_456))
        os.utime(root / "symlink", ns=(1_000_000_000, 2_000_000_000), follow_symlinks=False)
    await sn.commit(NS, "base", "k")
    with mounted(await sn.prepare(NS, "copy", "base")) as root:
        st = os.lstat(root / "data")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4751)
        assert st.st_mtime_ns == 1_500_000_000_456
        assert os.getxattr(root / "data", "user.note") == b"kept"
        assert os.lstat(root / "hardlink").st_ino == st.st_ino
        assert os.readlink(root / "symlink") == "data"
        assert os.lstat(root / "symlink").st_mtime_ns == 2_000_000_000
        dev = os.lstat(root / "null")
        assert stat.S_ISCHR(dev.st_mode) and dev.st_rdev == os.makedev(1, 3)
