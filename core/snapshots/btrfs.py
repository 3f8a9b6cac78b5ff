"""The btrfs snapshotter (`btrfs`): every snapshot is a btrfs subvolume.

Laid out as containerd's: `active/<id>`, `view/<id>` and `snapshots/<id>`
(committed). A parentless snapshot is a new empty subvolume; one with a parent
is a writable snapshot of the parent's subvolume, which costs nothing until
blocks change. Commit takes a read-only snapshot of the active subvolume into
`snapshots/` and deletes the active one. Mounts are bind mounts of the
subvolume directory (read-only for views), which any root process on the host
can mount without knowing the backing device. It runs only when its root is on
btrfs and the `btrfs` tool is installed; otherwise it is registered skipped.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import shutil
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

from core.errors import Internal
from core.metadata.snapshots import Kind, SnapshotRecord
from core.snapshots.base import Snapshotter
from core.snapshots.mount import Mount
from core.snapshots.native import bind_mounts

BTRFS_SUPER_MAGIC = 0x9123683E
# The root directory of every btrfs subvolume has this inode number.
SUBVOLUME_INODE = 256
# ioctls on a subvolume's directory: read and write its flags (a u64).
BTRFS_IOC_SUBVOL_GETFLAGS = 0x80089419
BTRFS_IOC_SUBVOL_SETFLAGS = 0x4008941A
BTRFS_SUBVOL_RDONLY = 1 << 1

_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_LIBC.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]


def filesystem_magic(path: Path) -> int:
    """statfs(2)'s f_type for `path` (the first field of struct statfs)."""
    buf = ctypes.create_string_buffer(512)
    if _LIBC.statfs(str(path).encode(), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def btrfs(*args: str) -> None:
    done = subprocess.run(
        ["btrfs", *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise Internal(f"btrfs {' '.join(args)} failed: {done.stderr.strip()}")


def is_subvolume(path: Path) -> bool:
    st = os.lstat(path)
    return st.st_ino == SUBVOLUME_INODE and os.path.isdir(path)


def make_writable(path: Path) -> None:
    """Clear a subvolume's read-only flag (a read-only one cannot change directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        raw = fcntl.ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, bytes(8))
        flags = struct.unpack("=Q", raw)[0]
        if flags & BTRFS_SUBVOL_RDONLY:
            fcntl.ioctl(
                fd, BTRFS_IOC_SUBVOL_SETFLAGS, struct.pack("=Q", flags & ~BTRFS_SUBVOL_RDONLY)
            )
    finally:
        os.close(fd)


class BtrfsSnapshotter(Snapshotter):
    NAME = "btrfs"
    LAYOUT = ("active", "view", "snapshots")

    def _support(self) -> str:
        if shutil.which("btrfs") is None:
            return "skip plugin: the btrfs tool (btrfs-progs) is not installed"
        try:
            magic = filesystem_magic(self.root)
        except OSError as exc:
            return f"cannot check the filesystem of {self.root}: {exc.strerror}"
        if magic != BTRFS_SUPER_MAGIC:
            return (
                f"skip plugin: path {self.root} must be a btrfs filesystem to be used with "
                "the btrfs snapshotter"
            )
        return ""

    def _directory_for(self, snapshot_id: int, kind: Kind) -> str:
        sub = {Kind.ACTIVE: "active", Kind.VIEW: "view", Kind.COMMITTED: "snapshots"}[kind]
        return f"{sub}/{snapshot_id}"

    def _build(self, target: Path, kind: Kind, parents: Sequence[Path]) -> None:
        if parents:
            btrfs("subvolume", "snapshot", str(parents[0]), str(target))
        else:
            btrfs("subvolume", "create", str(target))

    def _freeze(self, source: Path, target: Path) -> None:
        btrfs("subvolume", "snapshot", "-r", str(source), str(target))

    def _to_trash(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            if is_subvolume(path):
                make_writable(path)
        super()._to_trash(path)

    def _destroy(self, path: Path) -> None:
        if not os.path.lexists(path):
            return
        if is_subvolume(path):
            btrfs("subvolume", "delete", str(path))
        else:
            shutil.rmtree(path, ignore_errors=True)

    def _mounts(self, record: SnapshotRecord, path: Path, parents: Sequence[Path]) -> list[Mount]:
        return bind_mounts(record.kind, path)
