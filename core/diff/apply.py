"""Unpacking a layer's tar stream onto a directory, with OCI whiteouts and nothing outside it.

This module owns how a layer changes a tree. In `overlay` mode the result is a valid
overlayfs upper (or lower) directory: `.wh.name` becomes a 0:0 character device
`name`, and `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory. In
`delete` mode (native and btrfs snapshots, which hold a full copy of the tree) a
whiteout removes `name`, and an opaque marker removes every child of its directory
that this layer did not itself write. Ownership, modes (setuid, sticky), PAX
`SCHILY.xattr.*` attributes, hard and symbolic links, device nodes, FIFOs and mtimes
(of directories, after their children) are kept.

Every path is resolved from an open descriptor of the target, one component at a
time, without following a symbolic link out: absolute names, `..`, links that point
outside the target or whose target is absolute, and hard links to anything missing
or outside are refused with InvalidArgument naming the entry, and the apply stops
there (the caller throws the half-written snapshot away). The uncompressed stream is
hashed as it is read, giving the layer's diff ID and size. Before `apply_tar` returns, what
the layer wrote is on stable storage, so a caller may commit it: exactly its files and
directories are fsynced when they are few and all reachable, else one `syncfs` of the
target's filesystem covers it (`core/diff/durable.py` says when which, and why).
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from core.diff import tarstream
from core.diff.compression import DECOMPRESSION_ERRORS, HashingReader, Prefetcher, open_layer
from core.diff.durable import Pending, Written, defer, make_durable
from core.diff.tarstream import Entry, TarError, TarReader
from core.errors import CtrdeckError, DataLoss, Internal, InvalidArgument

log = logging.getLogger("ctrdeck.diff")
_T = TypeVar("_T")

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"

# As the kernel's limit on symbolic links followed in one path lookup.
MAX_LINKS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Directory descriptors an applier keeps open; tar streams list a directory's entries
# together, so a small cache spares nearly every per-component open.
_MAX_CACHED_DIRS = 128


class Mode(enum.StrEnum):
    OVERLAY = "overlay"
    DELETE = "delete"


@dataclass(frozen=True)
class Applied:
    """What was applied: the diff ID (sha256 of the uncompressed tar) and its size.

    `implied` are the directories the layer needed but did not list, parents first, as
    paths below the root: their owner and mode came from `lowers` (or 0:0 0755 without).
    `pending` is set when the caller deferred the sync: `durable.finish` is then its to do.
    """

    digest: str
    size: int
    implied: tuple[tuple[str, ...], ...] = ()
    pending: Pending | None = None


def apply_layer(
    blob: BinaryIO,
    media_type: str,
    root: Path,
    mode: Mode,
    *,
    lowers: Sequence[Path] = (),
    expected_diff_id: str = "",
    defer_sync: bool = False,
) -> Applied:
    """Decompress a layer blob and apply it onto `root`; DataLoss if its diff ID is not expected.

    `lowers` are the directories under an overlay upper directory, topmost first; a
    parent directory the layer implies but does not list takes its owner and mode
    from there, as a copy-up would. See `apply_tar` for `defer_sync`.
    """
    stream = Prefetcher(open_layer(blob, media_type))
    try:
        applied = _apply(stream, root, mode, lowers, defer_sync)
    except DECOMPRESSION_ERRORS as exc:
        raise InvalidArgument(f"layer of type {media_type} cannot be decompressed: {exc}") from None
    finally:
        stream.close()
    if expected_diff_id and applied.digest != expected_diff_id:
        raise DataLoss(
            f"layer unpacked to diff ID {applied.digest}, but the image says {expected_diff_id}"
        )
    return applied


def apply_tar(
    stream: BinaryIO,
    root: Path,
    mode: Mode,
    *,
    lowers: Sequence[Path] = (),
    defer_sync: bool = False,
) -> Applied:
    """Apply an uncompressed tar stream onto the existing directory `root`.

    The layer is durable when this returns, unless `defer_sync`: then the result's
    `pending` must go to `durable.finish` before anything commits the layer (for a tree
    that stays a plain directory until then, such as a staged layer's).
    """
    return _apply(HashingReader(stream), root, mode, lowers, defer_sync)


class _Chunks(Protocol):
    """An uncompressed stream in pieces, hashed as they are read."""

    size: int

    def chunk(self) -> bytes: ...

    def digest(self) -> str: ...


def _apply(
    source: _Chunks, root: Path, mode: Mode, lowers: Sequence[Path], defer_sync: bool
) -> Applied:
    root_fd = os.open(root, _DIR_FLAGS)
    applier = _Applier(root_fd, mode, [Path(p) for p in lowers])
    try:
        reader = TarReader(source.chunk)
        applier.run(reader)
        # The digest covers the padding after the archive's end marker too.
        reader.drain()
        if defer_sync:
            pending = defer(root_fd, applier.written)
        else:
            make_durable(root_fd, applier.written)
            pending = None
    finally:
        os.close(root_fd)
    return Applied(source.digest(), source.size, tuple(applier.implied), pending)


def copy_up_implied(root: Path, implied: Sequence[tuple[str, ...]], lowers: Sequence[Path]) -> None:
    """Give directories a layer implied the owner and mode they have in `lowers` (topmost first).

    For a layer applied before its lowers were complete: what `apply_tar` does with lowers
    at hand, done afterwards, and as durable when it returns. Paths are walked without
    following links; a path that is no longer a directory is left alone.
    """
    for path in implied:
        found = next((st for st in (_lstat_below(lower, path) for lower in lowers) if st), None)
        if found is None or not stat.S_ISDIR(found.st_mode):
            continue
        fd = _open_below(root, path)
        if fd is None:
            continue
        try:
            os.fchown(fd, found.st_uid, found.st_gid)
            os.fchmod(fd, stat.S_IMODE(found.st_mode))
            os.fsync(fd)
        finally:
            os.close(fd)


def _open_below(root: Path, path: tuple[str, ...]) -> int | None:
    """The directory `path` below `root`, every component opened without following links."""
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError:
        return None
    for part in path:
        try:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = child
    return fd


def _lstat_below(root: Path, path: tuple[str, ...]) -> os.stat_result | None:
    fd = _open_below(root, path[:-1])
    if fd is None:
        return None
    try:
        return os.lstat(path[-1], dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def split_name(name: str) -> list[str]:
    """The components of a tar entry's name; InvalidArgument for absolute names and `..`."""
    if name.startswith("/"):
        raise InvalidArgument(f"layer entry {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"layer entry {name!r} has a '..' component")
    return parts


def _at(dir_fd: int, name: str) -> str:
    # A path through the descriptor's magic link reaches `name` in exactly that directory,
    # for the calls (xattrs) that take no dir_fd.
    return f"/proc/self/fd/{dir_fd}/{name}"


def _xattrs(entry: Entry) -> Iterator[tuple[str, bytes]]:
    for name, value in entry.xattrs:
        # Overlay's own attributes (redirects, metacopy) would let a layer steer the kernel
        # to other files; only the opaque marker, from `.wh..wh..opq`, is ever set.
        if not name.startswith("trusted.overlay."):
            yield name, value


class _Applier:
    def __init__(self, root_fd: int, mode: Mode, lowers: list[Path]) -> None:
        self.root_fd = root_fd
        self.mode = mode
        self.lowers = lowers
        # Resolved paths this layer wrote, and their ancestors: an opaque marker keeps them.
        self.unpacked: set[tuple[str, ...]] = set()
        self.dirs: list[tuple[str, tuple[str, ...], int]] = []
        # Open descriptors of directories below the root, by their resolved path.
        self.fds: dict[tuple[str, ...], int] = {}
        self.stale: list[int] = []
        # Directories made because an entry needed them, until the layer lists them itself.
        self.implied: dict[tuple[str, ...], None] = {}
        # What must reach stable storage before the layer may be committed.
        self.written = Written()
        # The owner a file made in a directory gets, learnt from the first one made there:
        # the process's, or the directory's group if it is setgid or the filesystem says so.
        # A file whose entry wants exactly that needs no chown.
        self.new_owner: dict[tuple[str, ...], tuple[int, int]] = {}

    def run(self, reader: TarReader) -> None:
        try:
            self._run(reader)
        finally:
            self.forget()
            self._close_stale()

    def _run(self, reader: TarReader) -> None:
        name = None
        while True:
            try:
                entry = reader.next()
                if entry is None:
                    break
                name = entry.name
                self._entry(reader, entry)
                if self.stale:
                    self._close_stale()
            except (CtrdeckError, *DECOMPRESSION_ERRORS):
                raise
            except TarError as exc:
                if name is None:
                    raise InvalidArgument(f"layer is not a tar stream: {exc}") from None
                raise InvalidArgument(
                    f"layer is not a valid tar stream at {name!r}: {exc}"
                ) from None
            except OSError as exc:
                raise Internal(f"applying layer entry {name!r}: {exc}") from None
        for name, parts, mtime_ns in reversed(self.dirs):
            fd = self._open_dir(name, list(parts), create=False)
            if fd is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            if self.stale:
                self._close_stale()

    # -- resolving paths -----------------------------------------------------------------------

    def _open_dir(self, name: str, parts: list[str], *, create: bool) -> int | None:
        """The directory `parts` below the root, following only links that stay inside.

        Missing directories are made when `create` is set, else None is returned. The
        descriptor belongs to the applier's cache: the caller must not close it.
        """
        fd, _ = self._resolve(name, parts, create=create)
        return fd

    def _resolve(
        self, name: str, parts: list[str], *, create: bool
    ) -> tuple[int | None, tuple[str, ...]]:
        fds = self.fds
        # Cached keys are resolved paths, each component a directory when it was cached (a
        # removal empties the cache), so a name that is one needs no walk.
        whole = tuple(parts)
        cached = fds.get(whole)
        if cached is not None:
            return cached, whole
        pending = list(reversed(parts))
        resolved: tuple[str, ...] = ()
        links = 0
        fd = self.root_fd
        while pending:
            part = pending.pop()
            if part == "..":
                if not resolved:
                    raise InvalidArgument(
                        f"layer entry {name!r} resolves through a symbolic link "
                        "that points outside the root"
                    )
                pending.extend(reversed(resolved[:-1]))
                resolved, fd = (), self.root_fd
                continue
            path = (*resolved, part)
            child = fds.get(path)
            if child is None:
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        return None, ()
                    self._make_implied_dir(fd, part, path)
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.lstat(part, dir_fd=fd)
                    if not stat.S_ISLNK(st.st_mode):
                        raise InvalidArgument(
                            f"layer entry {name!r} needs {'/'.join(path)!r} "
                            "to be a directory, but it is not one"
                        ) from None
                    target = os.readlink(part, dir_fd=fd)
                    links += 1
                    if target.startswith("/"):
                        raise InvalidArgument(
                            f"layer entry {name!r} would be written through the symbolic link "
                            f"{'/'.join(path)!r} to the absolute path {target!r}"
                        ) from None
                    if links > MAX_LINKS:
                        raise InvalidArgument(
                            f"layer entry {name!r} resolves through too many symbolic links"
                        ) from None
                    pending.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
                    continue
                if len(fds) >= _MAX_CACHED_DIRS:
                    self.forget()
                fds[path] = child
            fd = child
            resolved = path
        return fd, resolved

    def forget(self) -> None:
        """Drop every cached directory descriptor; they are closed after the current entry.

        Called whenever the layer removes a directory (a cached descriptor may then name a
        directory that is gone) and when the cache is full. The entry being applied may
        still hold one of them, so closing waits until it is done.
        """
        self.stale.extend(self.fds.values())
        self.fds = {}

    def _close_stale(self) -> None:
        stale, self.stale = self.stale, []
        for fd in stale:
            os.close(fd)

    def _make_implied_dir(self, parent_fd: int, part: str, resolved: tuple[str, ...]) -> None:
        mode, uid, gid = 0o755, 0, 0
        for lower in self.lowers:
            try:
                st = os.lstat(lower.joinpath(*resolved))
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
            break
        os.mkdir(part, 0o700, dir_fd=parent_fd)
        os.chown(part, uid, gid, dir_fd=parent_fd, follow_symlinks=False)
        os.chmod(part, mode, dir_fd=parent_fd)
        self.implied[resolved] = None
        self.new_owner.pop(resolved, None)
        self.written.dir(resolved[:-1])
        self.written.dir(resolved)

    def _remove(self, parent_fd: int, name: str) -> None:
        try:
            st = os.lstat(name, dir_fd=parent_fd)
        except FileNotFoundError:
            return
        # What is left may now name something else: no recorded path is to be trusted.
        self.written.give_up()
        if stat.S_ISDIR(st.st_mode):
            self.forget()
            self.new_owner.clear()
            shutil.rmtree(name, dir_fd=parent_fd)
        else:
            os.unlink(name, dir_fd=parent_fd)

    # -- entries ---------------------------------------------------------------------------------

    def _entry(self, reader: TarReader, entry: Entry) -> None:
        name = entry.name
        parts = split_name(name)
        if not parts:
            return  # the root itself: its owner and mode belong to the snapshot
        base = parts[-1]
        if WHITEOUT_META_PREFIX in name:
            if any(p.startswith(WHITEOUT_META_PREFIX) for p in parts[:-1]):
                return
            if base.startswith(WHITEOUT_META_PREFIX) and base != OPAQUE_MARKER:
                return  # AUFS bookkeeping, never part of the tree
        # In delete mode a whiteout of something that is not there changes nothing, and
        # must not leave behind the directories on its way.
        is_whiteout = base.startswith(WHITEOUT_PREFIX)
        is_removal = is_whiteout and self.mode is Mode.DELETE
        parent_fd, parent = self._resolve(name, parts[:-1], create=not is_removal)
        if parent_fd is None:
            return
        self.written.dir(parent)
        if base == OPAQUE_MARKER:
            self._opaque(parent_fd, parent)
        elif is_whiteout:
            self._whiteout(parent_fd, base[len(WHITEOUT_PREFIX) :], entry)
        else:
            self._create(reader, entry, parent_fd, parent, base)
            if self.mode is Mode.DELETE:
                # Only an opaque marker in delete mode asks what this layer wrote.
                path = (*parent, base)
                for i in range(1, len(path) + 1):
                    self.unpacked.add(path[:i])

    def _opaque(self, dir_fd: int, path: tuple[str, ...]) -> None:
        if self.mode is Mode.OVERLAY:
            os.setxattr(dir_fd, OPAQUE_XATTR, b"y")
        else:
            self.written.give_up()
            self._clear_lower(dir_fd, path)

    def _clear_lower(self, dir_fd: int, path: tuple[str, ...]) -> None:
        with os.scandir(dir_fd) as entries:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for child, is_dir in children:
            child_path = (*path, child)
            if child_path not in self.unpacked:
                self._remove(dir_fd, child)
            elif is_dir:
                fd = os.open(child, _DIR_FLAGS, dir_fd=dir_fd)
                try:
                    self._clear_lower(fd, child_path)
                finally:
                    os.close(fd)

    def _whiteout(self, dir_fd: int, target: str, entry: Entry) -> None:
        if target in ("", ".", ".."):
            raise InvalidArgument(f"layer entry {entry.name!r} is not a valid whiteout")
        self._remove(dir_fd, target)
        if self.mode is Mode.OVERLAY:
            self.written.give_up()
            os.mknod(target, stat.S_IFCHR, os.makedev(0, 0), dir_fd=dir_fd)
            os.chown(target, entry.uid, entry.gid, dir_fd=dir_fd, follow_symlinks=False)

    def _create(
        self,
        reader: TarReader,
        entry: Entry,
        parent_fd: int,
        parent: tuple[str, ...],
        base: str,
    ) -> None:
        kind = entry.type
        if kind == tarstream.REGULAR:
            self._write_file(reader, entry, parent_fd, parent, base)
            self.written.file((*parent, base))
            return
        if kind == tarstream.DIRECTORY:
            try:
                os.mkdir(base, 0o700, dir_fd=parent_fd)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(base, dir_fd=parent_fd).st_mode):
                    self._remove(parent_fd, base)
                    os.mkdir(base, 0o700, dir_fd=parent_fd)
            path = (*parent, base)
            fd = self.fds.get(path)
            if fd is None:
                fd = os.open(base, _DIR_FLAGS, dir_fd=parent_fd)
                if len(self.fds) >= _MAX_CACHED_DIRS:
                    self.forget()
                self.fds[path] = fd
            self._set_fd_metadata(fd, entry)
            self.new_owner.pop(path, None)
            self.implied.pop(path, None)
            self.dirs.append((entry.name, path, entry.mtime_ns))
            self.written.dir(path)
            return
        if kind == tarstream.SYMLINK:
            self._replacing(
                parent_fd, base, lambda: os.symlink(entry.linkname, base, dir_fd=parent_fd)
            )
            self._set_path_metadata(parent_fd, base, entry, chmod=False)
        elif kind == tarstream.HARD_LINK:
            self._hard_link(entry, parent_fd, base)
        elif kind in (tarstream.CHAR, tarstream.BLOCK_DEVICE, tarstream.FIFO):
            if kind == tarstream.FIFO:
                node, device = stat.S_IFIFO, 0
            else:
                node = stat.S_IFCHR if kind == tarstream.CHAR else stat.S_IFBLK
                device = os.makedev(entry.devmajor, entry.devminor)
            self._replacing(
                parent_fd, base, lambda: os.mknod(base, node | 0o600, device, dir_fd=parent_fd)
            )
            self._set_path_metadata(parent_fd, base, entry, chmod=True)
        else:
            raise InvalidArgument(f"layer entry {entry.name!r} has unsupported tar type {kind!r}")
        # Links, device nodes and FIFOs: no fsync of a path reaches their inodes.
        self.written.give_up()

    def _replacing(self, parent_fd: int, base: str, make: Callable[[], _T]) -> _T:
        """`make()` the entry; if something is already there, remove it and make it again.

        A fresh snapshot rarely holds the name already, so trying first spares a stat.
        """
        try:
            return make()
        except FileExistsError:
            self._remove(parent_fd, base)
            return make()

    def _write_file(
        self, reader: TarReader, entry: Entry, parent_fd: int, parent: tuple[str, ...], base: str
    ) -> None:
        # As `_replacing`, spelt out: this is the path of nearly every entry.
        try:
            fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=parent_fd)
        except FileExistsError:
            self._remove(parent_fd, base)
            fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=parent_fd)
        try:
            owner = self.new_owner.get(parent)
            if owner is None:
                st = os.fstat(fd)
                owner = self.new_owner[parent] = (st.st_uid, st.st_gid)
            if entry.sparse is None:
                reader.write_to(fd, entry.size)
            else:
                reader.write_sparse(fd, entry)
            self._set_fd_metadata(fd, entry, chown=owner != (entry.uid, entry.gid))
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)

    def _hard_link(self, entry: Entry, parent_fd: int, base: str) -> None:
        try:
            target = split_name(entry.linkname)
        except InvalidArgument:
            raise InvalidArgument(
                f"layer entry {entry.name!r} is a hard link to {entry.linkname!r}, "
                "which is outside the root"
            ) from None
        if not target:
            raise InvalidArgument(f"layer entry {entry.name!r} is a hard link to the root")
        target_fd = self._open_dir(entry.name, target[:-1], create=False)
        if target_fd is None:
            raise InvalidArgument(
                f"layer entry {entry.name!r} is a hard link to {entry.linkname!r}, "
                "which does not exist"
            )

        def link() -> None:
            try:
                st = os.lstat(target[-1], dir_fd=target_fd)
            except FileNotFoundError:
                raise InvalidArgument(
                    f"layer entry {entry.name!r} is a hard link to {entry.linkname!r}, "
                    "which does not exist"
                ) from None
            if stat.S_ISDIR(st.st_mode):
                raise InvalidArgument(
                    f"layer entry {entry.name!r} is a hard link to the directory {entry.linkname!r}"
                )
            os.link(
                target[-1],
                base,
                src_dir_fd=target_fd,
                dst_dir_fd=parent_fd,
                follow_symlinks=False,
            )

        self._replacing(parent_fd, base, link)

    # -- metadata --------------------------------------------------------------------------------

    def _set_fd_metadata(self, fd: int, entry: Entry, *, chown: bool = True) -> None:
        # chown clears setuid and setgid, so the mode goes last.
        if chown:
            os.fchown(fd, entry.uid, entry.gid)
        if entry.xattrs:
            for key, value in _xattrs(entry):
                self._setxattr(entry, lambda k=key, v=value: os.setxattr(fd, k, v))
        os.fchmod(fd, stat.S_IMODE(entry.mode))

    def _set_path_metadata(self, parent_fd: int, base: str, entry: Entry, *, chmod: bool) -> None:
        os.chown(base, entry.uid, entry.gid, dir_fd=parent_fd, follow_symlinks=False)
        for key, value in _xattrs(entry):
            self._setxattr(
                entry,
                lambda k=key, v=value: os.setxattr(
                    _at(parent_fd, base), k, v, follow_symlinks=False
                ),
            )
        if chmod:
            # The entry was just made by us and is not a link, so following it is safe.
            os.chmod(base, stat.S_IMODE(entry.mode), dir_fd=parent_fd)
        mtime = entry.mtime_ns
        os.utime(base, ns=(mtime, mtime), dir_fd=parent_fd, follow_symlinks=False)

    def _setxattr(self, entry: Entry, set_it: Callable[[], None]) -> None:
        try:
            set_it()
        except OSError as exc:
            # Filesystems without xattrs, and user.* on links and devices, cannot hold them;
            # containerd skips these too rather than failing the whole layer.
            if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                raise
            log.warning("layer entry %r: extended attribute not kept: %s", entry.name, exc)
