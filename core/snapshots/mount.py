"""Mounts: the (type, source, options) records snapshotters hand out, and mounting them.

A snapshotter never mounts anything itself; it returns `Mount` records the way
containerd does, and whoever needs the file tree (the diff applier, the pull
pipeline, a test, `ctr` on the client side) mounts them. `mount_all` mounts a
list onto one target in order with the mount(2) system call, reading the
options as containerd's mount package does (flag words become mount flags,
propagation words a second call, the rest the filesystem's data string, and a
read-only bind is remounted read-only because the kernel ignores MS_RDONLY on
the first bind call). `unmount` takes every mount off a target; `mounted` does
both around a block on a fresh temporary directory. These calls block only for
the system calls themselves.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import Internal, InvalidArgument

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MNT_DETACH = 0x2

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# word -> (clears the flag instead of setting it, flag)
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC),
    "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}

_PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}


@dataclass(frozen=True)
class Mount:
    """One mount(8)-style mount, as containerd's `types.Mount`."""

    type: str
    source: str
    options: tuple[str, ...] = field(default_factory=tuple)
    target: str = ""

    def command(self, target: str) -> str:
        """The mount(8) line that does the same, for logs and error messages."""
        opts = f" -o {','.join(self.options)}" if self.options else ""
        return f"mount -t {self.type} {self.source} {target}{opts}"


@dataclass(frozen=True)
class ParsedOptions:
    flags: int
    propagation: int
    data: str


def parse_options(options: Sequence[str]) -> ParsedOptions:
    """Split mount options into flags, propagation flags and the data string."""
    flags = 0
    propagation = 0
    data: list[str] = []
    for option in options:
        if option in _FLAGS:
            clear, flag = _FLAGS[option]
            flags = flags & ~flag if clear else flags | flag
        elif option in _PROPAGATION:
            propagation |= _PROPAGATION[option]
        else:
            data.append(option)
    return ParsedOptions(flags, propagation, ",".join(data))


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


_LIBC = _libc()


def _sys_mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    rc = _LIBC.mount(
        source.encode() if source else None,
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def mount(m: Mount, target: str | Path) -> None:
    """Mount one record on `target`."""
    where = str(target)
    opts = parse_options(m.options)
    if len(opts.data) >= PAGE_SIZE:
        raise InvalidArgument(
            f"mount options of {m.type} {m.source} are {len(opts.data)} bytes, over the "
            f"kernel's limit of {PAGE_SIZE - 1}; the snapshot chain is too deep to mount"
        )
    try:
        _sys_mount(m.source, where, m.type, opts.flags, opts.data)
    except OSError as exc:
        raise Internal(f"{m.command(where)} failed: {exc.strerror}") from None
    try:
        if opts.propagation:
            _sys_mount("", where, "", opts.propagation, "")
        if opts.flags & (MS_BIND | MS_RDONLY) == MS_BIND | MS_RDONLY:
            _sys_mount("", where, "", opts.flags | MS_REMOUNT, "")
    except OSError as exc:
        # Half a mount (writable where read-only was asked) must not stay.
        _LIBC.umount2(where.encode(), MNT_DETACH)
        raise Internal(f"{m.command(where)} failed: {exc.strerror}") from None


def mount_all(mounts: Sequence[Mount], target: str | Path) -> None:
    """Mount each record on `target` in order; on failure nothing stays mounted."""
    done = 0
    try:
        for m in mounts:
            mount(m, target)
            done += 1
    except BaseException:
        if done:
            unmount(target)
        raise


def unmount(target: str | Path) -> None:
    """Take every mount off `target`; a target that is not mounted is fine."""
    path = str(target).encode()
    while True:
        if _LIBC.umount2(path, 0) == 0:
            continue
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return
        if err == errno.EBUSY:
            # Something still has a file open in the tree; detach it so the
            # path is free now and the kernel finishes when the last user goes.
            if _LIBC.umount2(path, MNT_DETACH) == 0:
                continue
            err = ctypes.get_errno()
        raise Internal(f"unmount {target} failed: {os.strerror(err)}")


@contextlib.contextmanager
def mounted(mounts: Sequence[Mount], parent: str | Path | None = None) -> Iterator[Path]:
    """Mount `mounts` on a new temporary directory for the length of the block."""
    target = Path(tempfile.mkdtemp(prefix="ctrdeck-mount-", dir=parent))
    try:
        mount_all(mounts, target)
        try:
            yield target
        finally:
            unmount(target)
    finally:
        # rmdir, never a recursive delete: if the unmount failed, the tree
        # under the target is the snapshot's own content.
        with contextlib.suppress(OSError):
            target.rmdir()
