"""Unit tests of mount records: option parsing, the mounts each snapshotter
describes, and mounting on the host (core/snapshots/mount.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.errors import Internal, InvalidArgument
from core.metadata.snapshots import Kind
from core.snapshots import mount as m
from core.snapshots.native import bind_mounts
from core.snapshots.overlay import overlay_mounts

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def is_mounted(path: Path) -> bool:
    # os.path.ismount cannot see a bind mount within one filesystem.
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def test_parse_options_splits_flags_propagation_and_data() -> None:
    parsed = m.parse_options(["ro", "rbind", "rprivate", "index=off", "lowerdir=/a:/b"])
    assert parsed.flags == m.MS_RDONLY | m.MS_BIND | m.MS_REC
    assert parsed.propagation == m.MS_PRIVATE | m.MS_REC
    assert parsed.data == "index=off,lowerdir=/a:/b"


def test_parse_options_later_words_clear_earlier_ones() -> None:
    assert m.parse_options(["ro", "rw"]).flags == 0
    assert m.parse_options(["nosuid", "suid", "nodev"]).flags == m.MS_NODEV
    assert m.parse_options([]).data == ""


def test_mount_command_reads_like_mount8() -> None:
    record = m.Mount("overlay", "overlay", ("index=off", "lowerdir=/l"))
    assert record.command("/t") == "mount -t overlay overlay /t -o index=off,lowerdir=/l"
    assert m.Mount("bind", "/s").command("/t") == "mount -t bind /s /t"


def test_overlay_parentless_active_is_a_rw_bind_of_fs() -> None:
    got = overlay_mounts(Kind.ACTIVE, Path("/r/snapshots/1"), [])
    assert got == [m.Mount("bind", "/r/snapshots/1/fs", ("rw", "rbind"))]


def test_overlay_parentless_view_is_read_only() -> None:
    got = overlay_mounts(Kind.VIEW, Path("/r/snapshots/1"), [])
    assert got == [m.Mount("bind", "/r/snapshots/1/fs", ("ro", "rbind"))]


def test_overlay_active_over_parents_lists_lower_nearest_first() -> None:
    parents = [Path("/r/snapshots/3"), Path("/r/snapshots/2"), Path("/r/snapshots/1")]
    got = overlay_mounts(Kind.ACTIVE, Path("/r/snapshots/4"), parents)
    assert got == [
        m.Mount(
            "overlay",
            "overlay",
            (
                "index=off",
                "workdir=/r/snapshots/4/work",
                "upperdir=/r/snapshots/4/fs",
                "lowerdir=/r/snapshots/3/fs:/r/snapshots/2/fs:/r/snapshots/1/fs",
            ),
        )
    ]


def test_overlay_view_of_one_parent_binds_the_parent_read_only() -> None:
    got = overlay_mounts(Kind.VIEW, Path("/r/snapshots/5"), [Path("/r/snapshots/2")])
    assert got == [m.Mount("bind", "/r/snapshots/2/fs", ("ro", "rbind"))]


def test_overlay_view_of_a_chain_has_only_lower_dirs() -> None:
    got = overlay_mounts(Kind.VIEW, Path("/r/snapshots/5"), [Path("/r/s/2"), Path("/r/s/1")])
    assert got == [
        m.Mount("overlay", "overlay", ("index=off", "ro", "lowerdir=/r/s/2/fs:/r/s/1/fs"))
    ]


def test_native_mounts_are_binds() -> None:
    assert bind_mounts(Kind.ACTIVE, Path("/n/1")) == [m.Mount("bind", "/n/1", ("rw", "rbind"))]
    assert bind_mounts(Kind.VIEW, Path("/n/1")) == [m.Mount("bind", "/n/1", ("ro", "rbind"))]


def test_options_over_a_page_are_refused_before_the_kernel_sees_them(tmp_path: Path) -> None:
    huge = m.Mount("overlay", "overlay", ("lowerdir=" + "x" * m.PAGE_SIZE,))
    with pytest.raises(InvalidArgument, match="too deep"):
        m.mount(huge, tmp_path)


@needs_root
def test_mounted_binds_read_only_and_cleans_up(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("data")
    with m.mounted([m.Mount("bind", str(source), ("ro", "rbind"))], tmp_path) as target:
        assert is_mounted(target)
        assert (target / "f").read_text() == "data"
        with pytest.raises(OSError):
            (target / "g").write_text("nope")
    assert not target.exists()


@needs_root
def test_mount_all_stacks_and_unmount_takes_all_off(tmp_path: Path) -> None:
    one, two, target = tmp_path / "one", tmp_path / "two", tmp_path / "t"
    for d in (one, two, target):
        d.mkdir()
    (two / "top").touch()
    m.mount_all(
        [m.Mount("bind", str(one), ("rw", "rbind")), m.Mount("bind", str(two), ("rw", "rbind"))],
        target,
    )
    try:
        assert (target / "top").exists()
    finally:
        m.unmount(target)
    assert not is_mounted(target)
    m.unmount(target)


@needs_root
def test_a_failed_mount_says_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(Internal, match="mount -t bind /nonexistent"):
        m.mount_all([m.Mount("bind", "/nonexistent/dir", ("rbind",))], tmp_path)
    assert not is_mounted(tmp_path)
