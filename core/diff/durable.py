"""Making an applied layer durable before its snapshot is committed: exact fsyncs, or one syncfs.

A snapshot is committed in metadata (which is fsynced) only once the files of its layer are
on stable storage too; otherwise a crash soon after a pull can leave a committed snapshot of
empty files that no later pull repairs (containerd#5854, #8895). There are two ways to get
there, and each is the cheap one for some layers (measured on this project's 2-core VM, ext4,
a Debian layer of 4,075 entries, docs/benchmarks.md, "Pull, round three"):

* `syncfs(2)` of the target's filesystem covers everything the layer wrote in one call,
  symbolic links, device nodes and whiteouts included, with one cache flush (0.02-0.12 s for
  that layer on a quiet disk); but it also waits for every other process's dirty data on the
  filesystem, which on a busy disk cost a pull of four small layers about +1.3 s.
* `fsync(2)` of exactly the regular files and directories a layer wrote waits for nothing
  else, but every call flushes the device's cache: 2.0-6.9 s for that layer one by one,
  0.2-0.3 s from 16 threads, whose flushes the block layer merges.

So `Written` records, while a layer is applied, the paths it wrote, as long as every one can
be reached by an fsync and there are at most `EXACT_LIMIT`; then they are fsynced from a few
threads, directories included (their entries and the inodes' metadata). A layer that writes
more, or makes symbolic links, device nodes, FIFOs, whiteouts or hard links (whose inodes no
fsync of a path reaches), or removes anything (which could turn a recorded path into a link),
gives the record up and gets one syncfs. Application layers of a few large files thus never
wait for the rest of the disk, and a base layer of thousands of small files pays one flush.

A syncfs covers every layer whose data was written before it started, so calls on one
filesystem are shared (`_SyncfsGroup`): a layer takes a ticket when its data is written and
needs only a syncfs that started after that. A layer staged beside its parent (overlayfs,
`core/images/unpack.py`) cannot be committed before its parent anyway, so it defers its sync
(`Pending`) until just before its own commit; by then the parent's syncfs, begun after the
staged layer was written, has usually covered it, and no second flush is paid.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from core.errors import Internal

EXACT_LIMIT = 128
"""Most files and directories of a layer that are fsynced one by one instead of a syncfs."""
SYNC_THREADS = 8
"""fsyncs in flight at once: enough for the block layer to merge their cache flushes."""

_libc = ctypes.CDLL(None, use_errno=True)
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

RelPath = tuple[str, ...]


class Written:
    """The regular files and directories a layer wrote, below its root; or none, for a syncfs."""

    def __init__(self, limit: int = EXACT_LIMIT) -> None:
        self.limit = limit
        # Dicts as ordered sets; the root's own entries change with any top-level entry.
        self.files: dict[RelPath, None] | None = {}
        self.dirs: dict[RelPath, None] | None = {(): None}

    @property
    def exact(self) -> bool:
        """Whether fsyncs of the recorded paths make the layer durable (else: a syncfs)."""
        return self.files is not None

    def file(self, path: RelPath) -> None:
        if self.files is not None:
            self.files[path] = None
            self._bound()

    def dir(self, path: RelPath) -> None:
        if self.dirs is not None:
            self.dirs[path] = None
            self._bound()

    def give_up(self) -> None:
        """Something no fsync of a path covers was written: the layer gets a syncfs."""
        self.files = self.dirs = None

    def _bound(self) -> None:
        assert self.files is not None and self.dirs is not None
        if len(self.files) + len(self.dirs) > self.limit:
            self.give_up()


class _SyncfsGroup:
    """The syncfs calls on one filesystem: each covers every ticket issued before it started."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._issued = 0
        self._covered = 0
        self._running = False

    def ticket(self) -> int:
        """Taken once a layer's data is written: a syncfs that starts later covers it."""
        with self._cond:
            self._issued += 1
            return self._issued

    def wait(self, ticket: int, fd: int) -> None:
        """Return once a syncfs that started after `ticket` was taken has completed."""
        with self._cond:
            while self._covered < ticket:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                upto = self._issued
                self._cond.release()
                done = False
                try:
                    syncfs(fd)
                    done = True
                finally:
                    self._cond.acquire()
                    self._running = False
                    if done:
                        self._covered = max(self._covered, upto)
                    self._cond.notify_all()


_groups: dict[int, _SyncfsGroup] = {}
_groups_lock = threading.Lock()


def _group(fd: int) -> _SyncfsGroup:
    dev = os.fstat(fd).st_dev
    with _groups_lock:
        return _groups.setdefault(dev, _SyncfsGroup())


@dataclass(frozen=True)
class Pending:
    """A layer written but not yet durable: what `finish` needs to make it so."""

    written: Written
    ticket: int


def defer(root_fd: int, written: Written) -> Pending:
    """Note that a layer's data is written below `root_fd`; `finish` makes it durable later."""
    return Pending(written, 0 if written.exact else _group(root_fd).ticket())


def finish(pending: Pending, root: Path) -> None:
    """Make a deferred layer durable, its tree now at `root` (it may have been renamed)."""
    fd = os.open(root, _OPEN_FLAGS | os.O_DIRECTORY)
    try:
        if pending.written.exact:
            make_durable(fd, pending.written)
        else:
            _group(fd).wait(pending.ticket, fd)
    finally:
        os.close(fd)


def make_durable(root_fd: int, written: Written) -> None:
    """Put what a layer wrote below the directory `root_fd` on stable storage (see the doc)."""
    if written.files is None or written.dirs is None:
        group = _group(root_fd)
        group.wait(group.ticket(), root_fd)
        return
    # Files first in the list, so their data is on its way before the directories that name them.
    items = [(p, False) for p in written.files] + [(p, True) for p in written.dirs]
    if len(items) == 1:
        _fsync_at(root_fd, *items[0])
        return
    with ThreadPoolExecutor(min(SYNC_THREADS, len(items))) as pool:
        for future in [pool.submit(_fsync_at, root_fd, path, is_dir) for path, is_dir in items]:
            future.result()


def fsync_dirs(paths: Iterable[Path]) -> None:
    """fsync these directories (a rename into them, or their owner and mode, must last)."""
    for path in paths:
        try:
            fd = os.open(path, _OPEN_FLAGS | os.O_DIRECTORY)
        except OSError as exc:
            raise Internal(f"syncing {path}: {exc.strerror}") from None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def syncfs(fd: int) -> None:
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise Internal(f"syncing the unpacked layer: {os.strerror(err)}")


def _fsync_at(root_fd: int, path: RelPath, is_dir: bool) -> None:
    flags = _OPEN_FLAGS | (os.O_DIRECTORY if is_dir else 0)
    name = "/".join(path) or "."
    try:
        fd = os.open(name, flags, dir_fd=root_fd)
    except OSError as exc:
        raise Internal(f"syncing the unpacked layer's {name!r}: {exc.strerror}") from None
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
