"""When a collection runs: a request made while a pass is under way is not lost.

A pass reads the records at its start; a delete that lands after that read
(while the pass unlinks blob files, say) must get a pass of its own. Real
SQLite metadata and a real content store in a temporary directory; the pass is
held inside its blob sweep so the delete lands there every time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.content.store import ContentStore
from core.gc import GarbageCollector, collector
from core.metadata import Metadata
from core.metadata.snapshots import SnapshotStore

ROOT = {"containerd.io/gc.root": "2026-12-02T00:00:00Z"}
NS = "default"


async def test_a_delete_during_a_pass_gets_a_pass_of_its_own(tmp_path: Path) -> None:
    metadata = Metadata(tmp_path / "meta.db")
    content = ContentStore(tmp_path / "content")
    gc = GarbageCollector(
        metadata, content, SnapshotStore(metadata.db, metadata.namespaces, metadata.leases), {}
    )
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
        metadata.close()


async def test_a_pass_asked_for_soon_waits_for_the_tasks_to_be_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pass runs while a task is being created, started or deleted, nor right after;
    one that would wait longer than PUT_OFF_MAX runs anyway."""
    metadata = Metadata(tmp_path / "meta.db")
    content = ContentStore(tmp_path / "content")
    gc = GarbageCollector(
        metadata, content, SnapshotStore(metadata.db, metadata.namespaces, metadata.leases), {}
    )
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
        metadata.close()
