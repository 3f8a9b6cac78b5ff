"""When a collection runs: a request made while a pass is under way is not lost.

A pass reads the records at its start; a delete that lands after that read
(while the pass unlinks blob files, say) must get a pass of its own. Real
SQLite metadata and a real content store in a temporary directory; the pass is
held inside its blob sweep so the delete lands there every time.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from core.content.store import ContentStore
from core.gc import GarbageCollector, collector
from core.metadata import Metadata
from core.metadata import db as dbmod
from core.metadata.snapshots import SnapshotStore

ROOT = {"containerd.io/gc.root": "2026-12-02T00:00:00Z"}
NS = "default"


def make_collector(tmp_path: Path) -> tuple[Metadata, ContentStore, GarbageCollector]:
    """A collector over real SQLite metadata and a real content store under `tmp_path`."""
    metadata = Metadata(tmp_path / "meta.db")
    content = ContentStore(tmp_path / "content")
    snapshots = SnapshotStore(metadata.db, metadata.namespaces, metadata.leases)
    return metadata, content, GarbageCollector(metadata, content, snapshots, {})


async def test_a_delete_during_a_pass_gets_a_pass_of_its_own(tmp_path: Path) -> None:
    metadata, _, gc = make_collector(tmp_path)
    try:
        metadata.content.add(NS, "sha256:" + "a" * 64, 1, ROOT, None)
        metadata.content.add(NS, "sha256:" + "b" * 64, 1, {}, None)

        inside, release = asyncio.Event(), asyncio.Event()
        sweep = gc.sweep_blobs

        async def held_sweep() -> int:
            inside.set()
            await release.wait()
            return await sweep()

        gc.sweep_blobs = held_sweep  # type: ignore[method-assign]
        gc.collect_soon()
        await asyncio.wait_for(inside.wait(), 5)
        assert [r.digest for r in metadata.content.list(NS)] == ["sha256:" + "a" * 64]

        # The pass has read and swept the records; now the root goes.
        metadata.content.update(NS, "sha256:" + "a" * 64, {}, ())
        gc.collect_soon()
        gc.sweep_blobs = sweep  # type: ignore[method-assign]
        release.set()
        assert gc._pending is not None
        await asyncio.wait_for(gc._pending, 5)
        assert metadata.content.list(NS) == []
        assert gc.runs == 2
    finally:
        gc.close()
        metadata.close()


async def test_a_pass_asked_for_soon_waits_for_the_tasks_to_be_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pass runs while a task is being created, started or deleted, nor right after;
    one that would wait longer than PUT_OFF_MAX runs anyway."""
    metadata, _, gc = make_collector(tmp_path)
    busy = True
    quiet_since = 0.0
    loop = asyncio.get_running_loop()

    def quiet_for() -> float:
        return 0.0 if busy else loop.time() - quiet_since

    gc.quiet_for = quiet_for
    try:
        metadata.content.add(NS, "sha256:" + "b" * 64, 1, {}, None)
        gc.collect_soon()
        for _ in range(6):
            await asyncio.sleep(collector.SOON)
            assert gc.runs == 0
        busy, quiet_since = False, loop.time()
        assert gc._pending is not None
        await asyncio.wait_for(gc._pending, 5)
        assert gc.runs == 1
        assert loop.time() - quiet_since >= collector.SOON
        assert metadata.content.list(NS) == []

        monkeypatch.setattr(collector, "PUT_OFF_MAX", 0.2)
        busy = True
        gc.collect_soon()
        await asyncio.wait_for(gc._pending, 5)
        assert gc.runs == 2
    finally:
        gc.close()
        metadata.close()


def stored_blob(content: ContentStore, i: int) -> tuple[str, int]:
    data = f"blob {i}".encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    writer = content.open_writer(f"schedule-{i}", len(data), digest)
    writer.write(data)
    writer.commit(len(data), digest)
    return digest, len(data)


class Counted:
    """How often the pass listed the blob directory and synced the log."""

    def __init__(self, gc: GarbageCollector, metadata: Metadata) -> None:
        self.listings = self.syncs = 0
        digests, sync = gc.content.digests, metadata.db.sync

        def counted_digests() -> list[str]:
            self.listings += 1
            return digests()

        def counted_sync() -> None:
            self.syncs += 1
            sync()

        gc.content.digests = counted_digests  # type: ignore[method-assign]
        metadata.db.sync = counted_sync  # type: ignore[method-assign]


async def test_a_pass_that_finds_nothing_writes_syncs_and_lists_nothing(tmp_path: Path) -> None:
    """`ctr rm` then `ctr run`: the pass the removal asked for lands in the next run's
    first calls, and there it only marks; what it did besides (an empty commit, a
    sync of the log, a listing of the blob directory) freed nothing."""
    metadata, content, gc = make_collector(tmp_path)
    try:
        digest, size = stored_blob(content, 1)
        metadata.content.add(NS, digest, size, ROOT, None)
        counted = Counted(gc, metadata)
        await gc.collect(wait=True)
        assert counted.listings == 1, "the first pass looks at the blobs"
        commits, changes = metadata.db.commits, metadata.db.conn.total_changes
        for _ in range(3):
            await gc.collect(wait=True)
        assert (counted.listings, counted.syncs) == (1, 0)
        assert (metadata.db.commits, metadata.db.conn.total_changes) == (commits, changes)
        assert gc.runs == 4 and content.exists(digest)
    finally:
        gc.close()
        metadata.close()


async def test_a_blob_that_lost_its_owner_or_came_unowned_is_still_swept(tmp_path: Path) -> None:
    """The mark finds nothing dead when the owner row was deleted by the client
    (Content.Delete) or never written after a commit; the blob file goes all the same."""
    metadata, content, gc = make_collector(tmp_path)
    try:
        deleted, size = stored_blob(content, 1)
        metadata.content.add(NS, deleted, size, ROOT, None)
        await gc.collect(wait=True)
        assert content.exists(deleted)
        metadata.content.delete(NS, deleted)
        await gc.collect(wait=True)
        assert not content.exists(deleted)

        # A commit whose owner row did not follow (the engine's commit_blob failed after
        # the rename): only the count of commits started tells.
        gc.pins.commit_started()
        unowned, _ = stored_blob(content, 2)
        gc.pins.commit_finished()
        await gc.collect(wait=True)
        assert not content.exists(unowned)
    finally:
        gc.close()
        metadata.close()


async def test_passes_that_find_nothing_still_fold_the_log_on_schedule(tmp_path: Path) -> None:
    """Without the collection's checkpoint a client's commit on the loop would make it,
    once the log reached SQLite's autocheckpoint."""
    metadata, _, gc = make_collector(tmp_path)
    try:
        counted = Counted(gc, metadata)
        for i in range(dbmod.CHECKPOINT_EVERY):
            metadata.leases.create(NS, f"l{i}", {})
        assert metadata.db.checkpoint_due()
        await gc.collect(wait=True)
        assert counted.syncs == 1 and not metadata.db.checkpoint_due()
    finally:
        gc.close()
        metadata.close()


async def test_the_mark_keeps_its_connection_and_reads_every_write_since(tmp_path: Path) -> None:
    """One connection for every mark, each mark on a fresh read; closed before the
    metadata's, whose close then folds and removes the log as before."""
    metadata, content, gc = make_collector(tmp_path)
    digests = []
    for i in range(3):
        digest, size = stored_blob(content, i)
        metadata.content.add(NS, digest, size, ROOT, None)
        digests.append(digest)
    await gc.collect(wait=True)
    reader = gc._reader
    assert reader is not None
    for digest in digests:
        metadata.content.update(NS, digest, {}, ())
        await gc.collect(wait=True)
        assert gc._reader is reader
        assert not content.exists(digest)
    assert metadata.content.list(NS) == []
    gc.close()
    assert gc._reader is None
    metadata.close()
    assert not (tmp_path / "meta.db-wal").exists()


async def test_a_mark_that_failed_leaves_its_connection_to_no_later_pass(tmp_path: Path) -> None:
    metadata, content, gc = make_collector(tmp_path)
    mark = gc.marker.mark

    def failing(md: Metadata) -> collector.Plan:
        md.db.conn.execute("SELECT 1 FROM content")
        raise RuntimeError("the mark failed")

    try:
        digest, size = stored_blob(content, 1)
        metadata.content.add(NS, digest, size, {}, None)
        gc.marker.mark = failing  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            await gc.collect(wait=True)
        assert gc._reader is None
        gc.marker.mark = mark  # type: ignore[method-assign]
        await gc.collect(wait=True)
        assert metadata.content.list(NS) == [] and not content.exists(digest)
    finally:
        gc.close()
        metadata.close()
