"""Making a layer from two trees: the OCI tar of what changed from `lower` to `upper`.

This module owns the double walk containerd's walking differ does: both trees are
read side by side in name order; what is only in `upper`, or differs in type, mode,
owner, size, mtime, device, link target or extended attributes, is written with its
parent directories; what is only in `lower` becomes a `.wh.name` whiteout. Hard
links inside the diff stay hard links, and overlay whiteout devices met in `upper`
count as deletions. Links are never followed: every entry is read with lstat and
regular files are opened with O_NOFOLLOW.
"""

from __future__ import annotations

import os
import stat
import tarfile
import time
from pathlib import Path
from typing import BinaryIO

from core.diff.apply import WHITEOUT_PREFIX

_CHUNK = 1 << 20


def _is_whiteout_device(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _xattrs(path: Path) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in names:
        if name.startswith("trusted.overlay."):
            continue
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return out


def _same_content(a: Path, b: Path) -> bool:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    with open(os.open(a, flags), "rb") as fa, open(os.open(b, flags), "rb") as fb:
        while True:
            ca, cb = fa.read(_CHUNK), fb.read(_CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True


def same_entry(lower: Path, lst: os.stat_result, upper: Path, ust: os.stat_result) -> bool:
    """Whether an entry present in both trees is unchanged."""
    if stat.S_IFMT(lst.st_mode) != stat.S_IFMT(ust.st_mode):
        return False
    if (lst.st_mode, lst.st_uid, lst.st_gid) != (ust.st_mode, ust.st_uid, ust.st_gid):
        return False
    if lst.st_mtime_ns != ust.st_mtime_ns:
        return False
    is_device = stat.S_ISCHR(ust.st_mode) or stat.S_ISBLK(ust.st_mode)
    if is_device and lst.st_rdev != ust.st_rdev:
        return False
    if stat.S_ISLNK(ust.st_mode) and os.readlink(lower) != os.readlink(upper):
        return False
    if _xattrs(lower) != _xattrs(upper):
        return False
    if stat.S_ISREG(ust.st_mode):
        if lst.st_size != ust.st_size:
            return False
        # A filesystem that keeps whole seconds only cannot tell two edits in one second
        # apart by mtime, so the bytes decide.
        if ust.st_mtime_ns % 1_000_000_000 == 0:
            return _same_content(lower, upper)
    return True


class _DiffWriter:
    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.whiteout_time = int(time.time())
        self.pending: list[tuple[str, Path]] = []
        self.links: dict[tuple[int, int], str] = {}

    def walk(self, rel: str, lower: Path | None, upper: Path) -> None:
        uppers = {}
        with os.scandir(upper) as entries:
            for e in entries:
                st = e.stat(follow_symlinks=False)
                if not _is_whiteout_device(st):
                    uppers[e.name] = st
        lowers: dict[str, os.stat_result] = {}
        if lower is not None:
            with os.scandir(lower) as entries:
                lowers = {e.name: e.stat(follow_symlinks=False) for e in entries}
        for name in sorted(uppers.keys() | lowers.keys()):
            child = f"{rel}{name}"
            ust = uppers.get(name)
            lst = lowers.get(name)
            if ust is None:
                self._whiteout(rel, name)
                continue
            upath = upper / name
            if lst is None or lower is None:
                self._add_tree(child, upath, ust)
                continue
            lpath = lower / name
            changed = not same_entry(lpath, lst, upath, ust)
            if stat.S_ISDIR(ust.st_mode) and stat.S_ISDIR(lst.st_mode):
                if changed:
                    self._emit(child, upath, ust)
                else:
                    self.pending.append((child, upath))
                self.walk(child + "/", lpath, upath)
                if self.pending and self.pending[-1][0] == child:
                    self.pending.pop()
            elif changed:
                self._add_tree(child, upath, ust)

    def _add_tree(self, rel: str, path: Path, st: os.stat_result) -> None:
        self._emit(rel, path, st)
        if stat.S_ISDIR(st.st_mode):
            self.walk(rel + "/", None, path)

    def _flush_parents(self) -> None:
        for rel, path in self.pending:
            self._write(rel, path, path.lstat())
        self.pending.clear()

    def _whiteout(self, rel: str, name: str) -> None:
        self._flush_parents()
        info = tarfile.TarInfo(f"{rel}{WHITEOUT_PREFIX}{name}")
        info.mode = 0
        info.mtime = self.whiteout_time
        self.tar.addfile(info)

    def _emit(self, rel: str, path: Path, st: os.stat_result) -> None:
        self._flush_parents()
        self._write(rel, path, st)

    def _write(self, rel: str, path: Path, st: os.stat_result) -> None:
        info = tarfile.TarInfo(rel)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        info.pax_headers = {
            f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
            for k, v in _xattrs(path).items()
        }
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFDIR:
            info.type = tarfile.DIRTYPE
        elif kind == stat.S_IFLNK:
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            info.type = tarfile.CHRTYPE if kind == stat.S_IFCHR else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif kind == stat.S_IFIFO:
            info.type = tarfile.FIFOTYPE
        elif kind == stat.S_IFREG:
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.links:
                info.type = tarfile.LNKTYPE
                info.linkname = self.links[key]
                self.tar.addfile(info)
                return
            if st.st_nlink > 1:
                self.links[key] = rel
            info.size = st.st_size
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, "rb") as f:
                self.tar.addfile(info, f)
            return
        else:
            return  # sockets and the like are not part of a layer
        self.tar.addfile(info)


def write_diff(lower: Path | None, upper: Path, out: BinaryIO) -> None:
    """Write the uncompressed OCI layer of the changes from `lower` (None: empty) to `upper`."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        _DiffWriter(tar).walk("", lower, upper)
