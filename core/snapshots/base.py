"""The snapshotter protocol and the flow every snapshotter shares.

`Snapshotter` gives containerd's operations (prepare, view, mounts, commit,
remove, stat, update, list, usage, cleanup) per namespace, keeps its records in
`core.metadata.snapshots`, and leaves only the disk work to a subclass: build
a snapshot directory from its parents, freeze one on commit if the filesystem
needs it, destroy one, and describe its mounts. Crash safety comes from the
order of steps: a new directory is built under `tmp/` and renamed into place
inside the transaction that records it, so a failed or interrupted prepare
leaves either nothing or an orphan (a btrfs commit makes its read-only
subvolume directly in the place only that record can own); a removal drops
the record first and then moves the directory to `trash/` before deleting it;
and `cleanup`, run at start-up and after garbage collection, deletes every
directory no record owns. Slow disk work runs in a worker thread; records are
touched only on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from core import labels as label_rules
from core.errors import FailedPrecondition
from core.metadata.snapshots import Kind, SnapshotRecord, SnapshotStore, Usage
from core.snapshots.mount import Mount

log = logging.getLogger("ctrdeck.snapshots")

T = TypeVar("T")

TMP = "tmp"
TRASH = "trash"


def disk_usage(path: Path) -> Usage:
    """Bytes allocated and inodes used under `path`, each hard-linked inode once."""
    seen: set[tuple[int, int]] = set()
    size = 0

    def visit(st: os.stat_result) -> None:
        nonlocal size
        ident = (st.st_dev, st.st_ino)
        if ident not in seen:
            seen.add(ident)
            size += st.st_blocks * 512

    try:
        visit(os.lstat(path))
    except FileNotFoundError:
        return Usage()
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                visit(entry.stat(follow_symlinks=False))
            except FileNotFoundError:
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
    return Usage(size, len(seen))


async def in_thread(fn: Callable[..., T], *args: Any, own_thread: bool = False) -> T:
    """Run blocking work in a thread, and see it finish even if the caller is cancelled.

    A cancelled call must not go on to clean up a directory a worker is still
    writing, so the cancellation is held until the worker is done. With
    `own_thread` the work gets a thread of its own, not one of the loop's default
    executor: for work that blocks until other work on that executor has run.
    """
    if own_thread:
        future = _on_new_thread(fn, args)
    else:
        future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future
        raise


def _on_new_thread(fn: Callable[..., T], args: tuple[Any, ...]) -> asyncio.Future[T]:
    """`fn(*args)` on a new daemon thread, in the caller's context; its outcome as a future."""
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
    outcome.set_running_or_notify_cancel()
    context = contextvars.copy_context()

    def run() -> None:
        try:
            outcome.set_result(context.run(fn, *args))
        except BaseException as exc:  # handed to the caller
            outcome.set_exception(exc)

    threading.Thread(target=run, name="in-own-thread", daemon=True).start()
    return asyncio.wrap_future(outcome)


class Snapshotter:
    """One snapshotter: containerd's operations over records and directories.

    Subclasses set `NAME` and `LAYOUT` (the subdirectories holding snapshot
    directories) and implement the disk hooks `_support`, `_build`,
    `_mounts`, and where needed `_directory_for`, `_freeze`, `_destroy` and
    `_usage_path`.
    """

    NAME: ClassVar[str] = ""
    LAYOUT: ClassVar[tuple[str, ...]] = ("snapshots",)
    OVERLAY_LOWERS: ClassVar[bool] = False
    """Its snapshots become overlay lower directories, so a layer applied into one
    needs overlay whiteouts even when it is mounted as a plain bind mount."""

    def __init__(self, root: Path, store: SnapshotStore) -> None:
        self.name = self.NAME
        self.root = root
        self.store = store
        # Directories being built or frozen, relative to the root: no record
        # owns them yet, and cleanup must leave them alone.
        self._protected: set[str] = set()
        self._trash_lock = asyncio.Lock()

    # -- lifecycle --------------------------------------------------------

    def open(self) -> str:
        """Make the directories, check the host, sweep what a crash left.

        Returns "" when the snapshotter can run, else the reason it cannot
        (prefixed "skip plugin: " when the host simply lacks the feature).
        """
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        reason = self._support()
        if reason:
            return reason
        for sub in (*self.LAYOUT, TMP, TRASH):
            (self.root / sub).mkdir(exist_ok=True, mode=0o700)
        for entry in (self.root / TMP).iterdir():
            self._to_trash(entry)
        orphans = self._scan() - self.store.directories(self.name)
        for relative in orphans:
            self._to_trash(self.root / relative)
        self._empty_trash_now()
        if orphans:
            log.info("%s: removed %d directories no snapshot owned", self.name, len(orphans))
        return ""

    # -- disk hooks -------------------------------------------------------

    def _support(self) -> str:
        return ""

    def _directory_for(self, snapshot_id: int, kind: Kind) -> str:
        return f"snapshots/{snapshot_id}"

    def _build(self, target: Path, kind: Kind, parents: Sequence[Path]) -> None:
        """Create the directory of a new snapshot at `target` (which does not exist)."""
        raise NotImplementedError

    def _freeze(self, source: Path, target: Path) -> None:
        """Make the committed form of `source` at `target`.

        Called only when `_directory_for` puts committed snapshots somewhere
        else than active ones.
        """
        raise NotImplementedError

    def _destroy(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def _mounts(self, record: SnapshotRecord, path: Path, parents: Sequence[Path]) -> list[Mount]:
        raise NotImplementedError

    def _usage_path(self, path: Path) -> Path:
        return path

    # -- operations -------------------------------------------------------

    async def prepare(
        self,
        namespace: str,
        key: str,
        parent: str = "",
        labels: Mapping[str, str] | None = None,
        lease: str | None = None,
    ) -> list[Mount]:
        """A new active snapshot on top of committed `parent`, and how to mount it."""
        return await self._create(namespace, Kind.ACTIVE, key, parent, labels or {}, lease)

    async def view(
        self,
        namespace: str,
        key: str,
        parent: str = "",
        labels: Mapping[str, str] | None = None,
        lease: str | None = None,
    ) -> list[Mount]:
        """A new read-only view of committed `parent`, and how to mount it."""
        return await self._create(namespace, Kind.VIEW, key, parent, labels or {}, lease)

    async def mounts(self, namespace: str, key: str) -> list[Mount]:
        record = self.store.get(namespace, self.name, key)
        if record.kind == Kind.COMMITTED:
            raise FailedPrecondition(f"requested snapshot {key} not active or view")
        return self._mounts(record, self.root / record.directory, self._parent_paths(record))

    async def commit(
        self,
        namespace: str,
        name: str,
        key: str,
        labels: Mapping[str, str] | None = None,
        lease: str | None = None,
    ) -> SnapshotRecord:
        """Turn active `key` into committed `name`; `key` stops existing."""
        label_rules.validate_all(labels or {})
        record = self.store.check_commit(namespace, self.name, name, key)
        path = self.root / record.directory
        usage = await in_thread(disk_usage, self._usage_path(path))
        directory = self._directory_for(record.id, Kind.COMMITTED)
        moves = directory != record.directory
        target = self.root / directory
        if moves:
            # The committed form is made in its final place (a read-only btrfs
            # subvolume cannot be renamed into another directory); only this
            # record can ever own that place, so anything there is an orphan
            # unless a commit of the same snapshot is making it right now.
            if directory in self._protected:
                raise FailedPrecondition(f"snapshot {key} is already being committed")
            self._protected.add(directory)
            self._to_trash(target)
        try:
            if moves:
                await in_thread(self._freeze, path, target)
            committed = self.store.commit(
                namespace,
                self.name,
                name,
                key,
                labels or {},
                lease,
                usage,
                expected_id=record.id,
                directory=directory,
            )
        except BaseException:
            if moves:
                await self._discard(target)
            raise
        finally:
            self._protected.discard(directory)
        if moves:
            await self._discard(path)
        return committed

    async def remove(self, namespace: str, key: str, lease: str | None = None) -> SnapshotRecord:
        """Drop `key`; refused while it has children."""
        record = self.store.remove(namespace, self.name, key, lease)
        await self._discard(self.root / record.directory)
        return record

    async def stat(self, namespace: str, key: str) -> SnapshotRecord:
        return self.store.get(namespace, self.name, key)

    async def update(
        self, namespace: str, key: str, labels: Mapping[str, str], paths: Sequence[str]
    ) -> SnapshotRecord:
        return self.store.update(namespace, self.name, key, labels, paths)

    async def list(self, namespace: str, filters: Sequence[str] = ()) -> list[SnapshotRecord]:
        return self.store.list(namespace, self.name, filters)

    async def usage(self, namespace: str, key: str) -> Usage:
        """Live usage of an active snapshot; what was measured at commit otherwise."""
        record = self.store.get(namespace, self.name, key)
        if record.kind != Kind.ACTIVE:
            return record.usage
        return await in_thread(disk_usage, self._usage_path(self.root / record.directory))

    async def cleanup(self) -> int:
        """Delete every directory no record owns; returns how many went."""
        present = await in_thread(self._scan)
        owned = self.store.directories(self.name)
        orphans = present - owned - self._protected
        for relative in orphans:
            self._to_trash(self.root / relative)
        await self._empty_trash()
        return len(orphans)

    # -- internals --------------------------------------------------------

    async def _create(
        self,
        namespace: str,
        kind: Kind,
        key: str,
        parent: str,
        labels: Mapping[str, str],
        lease: str | None,
    ) -> list[Mount]:
        # Everything that can be refused is refused before any disk work.
        label_rules.validate_all(labels)
        parent_record = self.store.check_new(namespace, self.name, key, parent)
        chain: list[SnapshotRecord] = []
        if parent_record is not None:
            chain = [parent_record, *self.store.parents(parent_record)]
        parent_paths = [self.root / p.directory for p in chain]
        target = self._new_tmp()
        try:
            await in_thread(self._build, target, kind, parent_paths)
            with self.store.db.tx():
                record = self.store.create(
                    namespace,
                    self.name,
                    key,
                    kind,
                    parent,
                    parent_record.id if parent_record else None,
                    labels,
                    lease,
                    lambda snapshot_id: self._directory_for(snapshot_id, kind),
                )
                self._move_into_place(target, self.root / record.directory)
        except BaseException:
            await self._discard(target)
            raise
        finally:
            self._protected.discard(f"{TMP}/{target.name}")
        return self._mounts(record, self.root / record.directory, parent_paths)

    def _parent_paths(self, record: SnapshotRecord) -> list[Path]:
        return [self.root / p.directory for p in self.store.parents(record)]

    def _new_tmp(self) -> Path:
        name = uuid.uuid4().hex
        self._protected.add(f"{TMP}/{name}")
        return self.root / TMP / name

    def _move_into_place(self, source: Path, target: Path) -> None:
        # A directory already at `target` is an orphan of a crash that reused
        # this id (its record was never committed), so it may go.
        if os.path.lexists(target):
            self._to_trash(target)
        os.rename(source, target)

    def _scan(self) -> set[str]:
        found: set[str] = set()
        for sub in (*self.LAYOUT, TMP):
            with contextlib.suppress(FileNotFoundError):
                found.update(f"{sub}/{entry.name}" for entry in os.scandir(self.root / sub))
        return found

    def _to_trash(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, self.root / TRASH / uuid.uuid4().hex)

    async def _discard(self, path: Path) -> None:
        self._to_trash(path)
        await self._empty_trash()

    async def _empty_trash(self) -> None:
        async with self._trash_lock:
            await in_thread(self._empty_trash_now)

    def _empty_trash_now(self) -> None:
        for entry in list((self.root / TRASH).iterdir()):
            try:
                self._destroy(entry)
            except Exception as exc:
                log.warning("%s: could not delete %s: %s", self.name, entry, exc)
