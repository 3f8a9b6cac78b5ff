"""Garbage collection's schedule: when to collect, and how without stalling the loop.

`GarbageCollector` is the one place that removes anything nobody needs. A
delete asks for a collection soon (bursts coalesce into one pass) or now (a
`sync` delete, a failed pull). A pass marks in a worker thread on a connection
of its own (`Marker.mark`), sweeps the metadata on the loop in steps only while
no other write lands, has the snapshotters remove the directories of swept
snapshots, and unlinks the blob files nobody owns in a worker, never while a
commit is landing: blob commits go through `commit_blob`, and whatever claims a
stored blob pins or spares it first (`BlobPins`). It counts its passes and what
they removed for the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable, Mapping

from core.content.store import ContentStore, Writer
from core.errors import AlreadyExists
from core.gc.mark import Marker, Plan, Result
from core.gc.pins import BlobPins
from core.metadata import Metadata
from core.metadata.snapshots import SnapshotStore
from core.snapshots import Snapshotter

log = logging.getLogger("ctrdeck.gc")

MARK_ATTEMPTS = 3
"""Marks tried in a worker before one runs on the loop, when writes keep landing meanwhile."""
SWEEP_STEP = 200
"""Content records a sweep removes per transaction before it lets other work run."""
SOON = 0.05
"""Seconds a collection asked for soon waits, so a burst of deletes shares one pass."""
PUT_OFF_MAX = 2.0
"""Seconds at most a collection asked for soon also waits for the tasks to be quiet."""


class GarbageCollector:
    def __init__(
        self,
        metadata: Metadata,
        content: ContentStore,
        snapshot_records: SnapshotStore,
        snapshotters: Mapping[str, Snapshotter],
    ) -> None:
        self.metadata = metadata
        self.content = content
        self.snapshotters = snapshotters
        self.marker = Marker(metadata)
        self.marker.snapshot_graph = lambda md: SnapshotStore(
            md.db, md.namespaces, md.leases
        ).graph(snapshotters)
        self.marker.remove_snapshots = snapshot_records.remove_many
        self.pins = BlobPins(content)
        self.runs = 0
        self.removed = {"content": 0, "snapshots": 0}
        self._pending: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._sweep_skipped = False
        self._swept_at: tuple[int, int] | None = None
        """`_blob_epoch` when the last blob sweep that finished began; None before the first."""
        self._again = False
        self._reader: Metadata | None = None
        self._reader_lock = threading.Lock()
        self.quiet_for: Callable[[], float] = lambda: math.inf
        """Seconds since the tasks were last busy (0 while they are); the engine wires it."""

    async def collect(self, *, wait: bool) -> Result | None:
        """Collect now (`wait`), or soon, coalescing bursts of deletes into one pass."""
        if wait:
            return await self._collect()
        self.collect_soon()
        return None

    def collect_soon(self) -> None:
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._collect_soon())
        else:
            # The pending pass may already be past the point where it reads what
            # this request deleted; it goes round once more rather than lose it.
            self._again = True

    async def _collect_soon(self) -> None:
        while True:
            await asyncio.sleep(SOON)
            await self._until_quiet()
            self._again = False
            await self._collect()
            if not self._again:
                return

    async def _until_quiet(self) -> None:
        """Wait until `quiet_for` says SOON have passed, PUT_OFF_MAX at most.

        The engine counts a task created, started or deleted and a metadata commit as
        busy. A task's create or start is its runtime's CPU-bound work on a small host,
        and a pass's mark takes the engine's interpreter besides: put off, the pass
        lands after `ctr run` returns instead of in its Tasks.Create.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUT_OFF_MAX
        while (quiet := self.quiet_for()) < SOON and (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(SOON - quiet, left))

    async def _collect(self) -> Result:
        async with self._lock:
            result = await self._collect_metadata()
            self.runs += 1
            self.removed["content"] += len(result.content_removed)
            self.removed["snapshots"] += len(result.snapshots_removed)
            if result.snapshots_removed:
                # The records went in the collection's transaction (children
                # first); the directories they owned go now.
                for snapshotter in self.snapshotters.values():
                    await snapshotter.cleanup()
            if self._sweep_skipped or self._swept_at != self._blob_epoch():
                await self.sweep_blobs()
            return result

    def _blob_epoch(self) -> tuple[int, int]:
        """What moves whenever a blob file may have lost its last owner or come unowned.

        A blob loses an owner only with a row of the content table (deleted, cascaded
        or swept: `content_generation` counts them all) and arrives only through
        `commit_blob` (`BlobPins.started`); while neither moved, a sweep of the blob
        directory finds nothing the last finished one did not remove.
        """
        return self.metadata.db.content_generation, self.pins.started

    async def _collect_metadata(self) -> Result:
        """Mark in a worker thread, then sweep on the loop in steps, if nothing else wrote.

        Every write goes through the loop's connection, so an unchanged
        `total_changes` means the mark read the state the sweep changes, and
        each step of the sweep only removes what was already unreachable. A
        write landing in between sends the collection back to marking; if writes
        keep landing, the last pass marks and sweeps on the loop in one step.
        """
        result = Result()
        conn = self.metadata.db.conn
        for _ in range(MARK_ATTEMPTS):
            before = conn.total_changes
            plan = await asyncio.to_thread(self._mark_apart)
            if conn.total_changes != before:
                continue
            if not plan.dead_content and not plan.dead_snapshots:
                # Nothing to remove, so nothing to make durable; the log is still
                # folded in on schedule, or a client's commit would do it on the loop.
                if self.metadata.db.checkpoint_due():
                    await asyncio.to_thread(self.metadata.db.sync)
                return result
            if await self._sweep_in_steps(plan, result):
                return result
        result.add(self.marker.collect())
        return result

    async def _sweep_in_steps(self, plan: Plan, result: Result) -> bool:
        """Sweep `plan` a step at a time into `result`; False if another write came between."""
        conn = self.metadata.db.conn
        steps = [Plan(dead_snapshots=plan.dead_snapshots)] + [
            Plan(dead_content=plan.dead_content[at : at + SWEEP_STEP])
            for at in range(0, len(plan.dead_content), SWEEP_STEP)
        ]
        try:
            for step in steps:
                # A removal lost in a crash is only garbage found again, so the steps
                # skip their fsyncs and one in a worker covers them all at the end.
                with self.metadata.db.deferred_sync():
                    result.add(self.marker.sweep(step))
                ours = conn.total_changes
                await asyncio.sleep(0)
                if conn.total_changes != ours:
                    return False
            return True
        finally:
            await asyncio.to_thread(self.metadata.db.sync)

    def _mark_apart(self) -> Plan:
        """The mark, on a read transaction of a connection of its own (WAL lets it read).

        The connection stays open between passes (one at a time, under `_lock`):
        opening it took twice the CPU of a mark of a small store. Between marks it
        holds no transaction, so it keeps no checkpoint from folding the log.
        """
        with self._reader_lock:
            if self._reader is None:
                self._reader = Metadata(self.metadata.db.path)
            reader = self._reader
            try:
                reader.db.conn.execute("BEGIN")
                try:
                    return self.marker.mark(reader)
                finally:
                    reader.db.conn.execute("ROLLBACK")
            except BaseException:
                # A connection left in an unknown state is not the next pass's.
                self._reader = None
                reader.close()
                raise

    def close(self) -> None:
        """Close the mark's connection; before the metadata's, whose close then folds the log."""
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    async def sweep_blobs(self) -> int:
        """Remove blob files no namespace owns, in a worker; put off while a commit is landing.

        The directory is listed in a worker, the blobs nobody owns or pins are
        named on the loop, and a worker unlinks them one at a time under the
        pins' lock, leaving any that something claimed meanwhile (`BlobPins.spare`,
        `BlobPins.pin`). A commit starting stops it; it starts over once the
        commits are done (`commit_blob` sees `_sweep_skipped`).
        """
        removed = 0
        while True:
            if self.pins.commits:
                self._sweep_skipped = True
                break
            epoch = self._blob_epoch()
            on_disk = await asyncio.to_thread(self.content.digests)
            if not self.pins.doom(on_disk, self.metadata.content.owned_digests):
                continue
            self._sweep_skipped = False
            try:
                gone, finished = await asyncio.to_thread(self.pins.unlink_doomed)
            finally:
                self.pins.forget()
            removed += gone
            if finished:
                self._swept_at = epoch
                break
        if removed:
            log.info("garbage collection removed %d blobs", removed)
        return removed

    async def commit_blob(
        self,
        namespace: str,
        lease: str | None,
        writer: Writer,
        size: int,
        expected: str,
        labels: Mapping[str, str],
        ref: str,
    ) -> str:
        """Commit a fully written ingest, record the namespace as its owner, end the ingest.

        Once the commit's rename may have happened the owner must be recorded too,
        or the blob would sit on disk owned by nobody, so a cancellation waits for
        all three; the blob sweep waits while any commit is in flight. A blob
        another namespace committed first only needs owning. Returns the digest.
        """

        async def commit() -> str:
            self.pins.commit_started()
            try:
                try:
                    digest = await asyncio.to_thread(writer.commit, size, expected)
                except AlreadyExists:
                    digest = expected or writer.digest()
                self.metadata.content.add(namespace, digest, size or writer.offset, labels, lease)
                self.metadata.content.end_ingest(namespace, ref)
                return digest
            finally:
                self.pins.commit_finished()
                if not self.pins.commits and self._sweep_skipped:
                    self.collect_soon()

        task = asyncio.ensure_future(commit())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await task
            raise
