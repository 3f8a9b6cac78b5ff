"""The overlayfs snapshotter (`overlayfs`, the default), laid out as containerd's.

Each snapshot owns `snapshots/<id>/fs` (its upper layer) and, when active,
`snapshots/<id>/work` (overlay's work directory). Mounts are containerd's: a
parentless snapshot is a bind mount of its `fs`; a view of a single committed
parent is a read-only bind of the parent's `fs`; anything else is an overlay
mount with `lowerdir` listing the parents nearest first. At start-up the
snapshotter checks that its filesystem reports file types in directory entries
(overlayfs needs d_type) and that an overlay with two lower layers mounts here.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from core.errors import CtrdeckError
from core.metadata.snapshots import Kind, SnapshotRecord
from core.snapshots.base import Snapshotter
from core.snapshots.mount import Mount, mount, unmount

DT_UNKNOWN = 0
DT_REG = 8


class _Dirent(ctypes.Structure):
    # glibc's struct dirent on 64-bit Linux (identical to dirent64).
    _fields_ = [
        ("d_ino", ctypes.c_uint64),
        ("d_off", ctypes.c_int64),
        ("d_reclen", ctypes.c_ushort),
        ("d_type", ctypes.c_ubyte),
        ("d_name", ctypes.c_char * 256),
    ]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.opendir.restype = ctypes.c_void_p
    libc.opendir.argtypes = [ctypes.c_char_p]
    libc.readdir.restype = ctypes.POINTER(_Dirent)
    libc.readdir.argtypes = [ctypes.c_void_p]
    libc.closedir.argtypes = [ctypes.c_void_p]
    return libc


_LIBC = _libc()


def entry_types(directory: Path) -> dict[str, int]:
    """The d_type readdir(3) reports for each entry of `directory`."""
    handle = _LIBC.opendir(str(directory).encode())
    if not handle:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(directory))
    try:
        types: dict[str, int] = {}
        while True:
            entry = _LIBC.readdir(handle)
            if not entry:
                return types
            types[entry.contents.d_name.decode(errors="replace")] = entry.contents.d_type
    finally:
        _LIBC.closedir(handle)


def supports_d_type(directory: Path) -> bool:
    with tempfile.TemporaryDirectory(dir=directory, prefix="d_type-") as probe:
        Path(probe, "file").touch()
        return entry_types(Path(probe)).get("file", DT_UNKNOWN) == DT_REG


def overlay_mounts(
    kind: Kind, path: Path, parents: Sequence[Path], index_off: bool = True
) -> list[Mount]:
    """containerd's overlayfs mounts for a snapshot at `path` over `parents` (nearest first)."""
    if not parents:
        mode = "ro" if kind == Kind.VIEW else "rw"
        return [Mount("bind", str(path / "fs"), (mode, "rbind"))]
    options: list[str] = ["index=off"] if index_off else []
    if kind == Kind.ACTIVE:
        options += [f"workdir={path / 'work'}", f"upperdir={path / 'fs'}"]
    elif len(parents) == 1:
        return [Mount("bind", str(parents[0] / "fs"), ("ro", "rbind"))]
    else:
        options.append("ro")
    options.append("lowerdir=" + ":".join(str(p / "fs") for p in parents))
    return [Mount("overlay", "overlay", tuple(options))]


class OverlaySnapshotter(Snapshotter):
    NAME = "overlayfs"
    OVERLAY_LOWERS = True

    def _support(self) -> str:
        try:
            if not supports_d_type(self.root):
                return (
                    f"skip plugin: overlayfs needs d_type support, and the filesystem of "
                    f"{self.root} does not report file types in directory entries"
                )
        except OSError as exc:
            return f"cannot check d_type support on {self.root}: {exc.strerror}"
        return self._probe_mount()

    def _probe_mount(self) -> str:
        probe = Path(tempfile.mkdtemp(dir=self.root, prefix="overlay-check-"))
        try:
            for name in ("lower1", "lower2", "upper", "work", "merged"):
                (probe / name).mkdir()
            options = (
                "index=off",
                f"workdir={probe / 'work'}",
                f"upperdir={probe / 'upper'}",
                f"lowerdir={probe / 'lower2'}:{probe / 'lower1'}",
            )
            try:
                mount(Mount("overlay", "overlay", options), probe / "merged")
            except CtrdeckError as exc:
                return f"skip plugin: overlayfs does not mount on {self.root}: {exc.message}"
            unmount(probe / "merged")
            return ""
        finally:
            with contextlib.suppress(CtrdeckError):
                unmount(probe / "merged")
            shutil.rmtree(probe, ignore_errors=True)

    def _build(self, target: Path, kind: Kind, parents: Sequence[Path]) -> None:
        target.mkdir(mode=0o700)
        fs = target / "fs"
        fs.mkdir(mode=0o755)
        if kind == Kind.ACTIVE:
            (target / "work").mkdir(mode=0o711)
        if parents:
            # The upper layer's root is the container's root directory: it
            # must belong to whoever owns the parent's, or the merged root
            # changes owner as soon as anything is written.
            st = os.stat(parents[0] / "fs")
            os.chown(fs, st.st_uid, st.st_gid)

    def _mounts(self, record: SnapshotRecord, path: Path, parents: Sequence[Path]) -> list[Mount]:
        return overlay_mounts(record.kind, path, parents)

    def _usage_path(self, path: Path) -> Path:
        return path / "fs"
