"""What keeps a blob file from the sweep besides an owner: pins, claims and commits in flight.

A blob is renamed into place a moment before its owner row exists, and a
`Content.Write` that finds a blob stored claims it only at its COMMIT, so the
owner rows alone cannot tell the sweep what to leave. `BlobPins` keeps the rest
under one lock the sweep's worker thread takes for each unlink: the blobs
pinned until a write ends, the number of commits landing (any of them stops the
sweep), and the blobs the running sweep means to remove, from which a claim
takes its digest out before it records an owner.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable

from core.content.store import ContentStore
from core.errors import NotFound


class BlobPins:
    def __init__(self, content: ContentStore) -> None:
        self.content = content
        self.lock = threading.Lock()
        self.pinned: collections.Counter[str] = collections.Counter()
        self.commits = 0
        self.started = 0
        """Commits ever started: a blob the sweep has not seen may have come with each."""
        self.doomed: set[str] = set()

    def spare(self, digest: str) -> None:
        """Keep a running sweep from removing `digest`; call before claiming a stored blob.

        Check that the blob exists after this, and record the claim before the
        next await: from then on the owner row keeps it.
        """
        with self.lock:
            self.doomed.discard(digest)

    def pin(self, digest: str) -> bool:
        """Keep a stored blob from every sweep until `unpin`; False if it is not stored."""
        with self.lock:
            self.doomed.discard(digest)
            if not self.content.exists(digest):
                return False
            self.pinned[digest] += 1
            return True

    def unpin(self, digest: str) -> None:
        self.pinned[digest] -= 1
        if self.pinned[digest] <= 0:
            del self.pinned[digest]

    def commit_started(self) -> None:
        with self.lock:
            self.commits += 1
            self.started += 1

    def commit_finished(self) -> None:
        self.commits -= 1

    def doom(self, on_disk: set[str], owned: Callable[[], set[str]]) -> bool:
        """Name the blobs of `on_disk` nobody owns or pins; False while a commit is landing."""
        with self.lock:
            if self.commits:
                return False
            keep = owned() | set(self.pinned)
            self.doomed = {d for d in on_disk if d not in keep}
            return True

    def forget(self) -> None:
        with self.lock:
            self.doomed = set()

    def unlink_doomed(self) -> tuple[int, bool]:
        """(blobs removed, whether every doomed blob was handled); runs in a worker thread.

        Each unlink happens under the lock, so a claim either comes first and
        spares its blob, or comes after the blob is gone and sees it missing.
        """
        with self.lock:
            doomed = list(self.doomed)
        removed = 0
        for digest in doomed:
            with self.lock:
                if self.commits:
                    return removed, False
                if digest not in self.doomed:
                    continue
                with contextlib.suppress(NotFound):
                    self.content.delete(digest)
                    removed += 1
        return removed, True
