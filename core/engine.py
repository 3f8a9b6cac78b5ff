"""The engine's parts, built once from the config and shared by every service.

`Engine` opens the metadata database and the content store under `root`, makes
the events exchange, and records every part in the plugin registry with
containerd's plugin types. Services receive the engine and use only the parts
they serve.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from core.config import Config
from core.content.store import ContentStore, Writer
from core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from core.events.exchange import Exchange
from core.gc import Collector, Plan, Result
from core.images import registry
from core.metadata import Metadata
from core.metadata.containers import Container
from core.metadata.snapshots import SnapshotStore
from core.plugins import Plugin, Registry, absent_snapshotters
from core.runtime import cgroups
from core.runtime.runtimes import Runtimes
from core.runtime.tasks import DEFAULT_LOG_MAX, TASK_DIR, TaskManager
from core.snapshots import PLUGIN_TYPE as SNAPSHOTTER_PLUGIN
from core.snapshots import Snapshotter
from core.snapshots import load as load_snapshotters
from core.snapshots.mount import Mount

log = logging.getLogger("ctrdeck.engine")

GC_MARK_ATTEMPTS = 3
"""Marks tried in a worker before one runs on the loop, when writes keep landing meanwhile."""
GC_SWEEP_STEP = 200
"""Content records a sweep removes per transaction before it lets other work run."""

GRPC_SERVICES = [
    "containers",
    "content",
    "diff",
    "events",
    "healthcheck",
    "images",
    "introspection",
    "leases",
    "namespaces",
    "snapshots",
    "tasks",
    "version",
]


class Engine:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.started = time.time()
        self.root = Path(config.root)
        self.state = Path(config.state)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.state.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.plugins = Registry()
        self.events = Exchange()
        self.plugins.add(Plugin("io.containerd.event.v1", "exchange"))

        content_root = self.root / "io.containerd.content.v1.content"
        self.content = ContentStore(content_root)
        self.plugins.add(
            Plugin("io.containerd.content.v1", "content", exports={"root": str(content_root)})
        )

        meta_root = self.root / "io.containerd.metadata.v1.sqlite"
        self.metadata = Metadata(meta_root / "meta.db")
        # Snapshotters keep their records in the metadata database, and only
        # the ones that can run on this host serve requests.
        self.snapshot_records = SnapshotStore(
            self.metadata.db, self.metadata.namespaces, self.metadata.leases
        )
        self.snapshotters: dict[str, Snapshotter] = {}
        for loaded in load_snapshotters(config, self.root, self.snapshot_records):
            self.plugins.add(
                Plugin(
                    SNAPSHOTTER_PLUGIN,
                    loaded.name,
                    exports={"root": str(loaded.root)},
                    platforms=True,
                    error=loaded.error,
                )
            )
            if loaded.error:
                log.info("snapshotter %s not loaded: %s", loaded.name, loaded.error)
            else:
                self.snapshotters[loaded.name] = loaded.snapshotter
        for absent in absent_snapshotters(config.plugins, self.root):
            self.plugins.add(absent)
        self.plugins.add(
            Plugin(
                "io.containerd.metadata.v1",
                "sqlite",
                requires=["io.containerd.content.v1", "io.containerd.snapshotter.v1"],
                exports={"root": str(meta_root)},
            )
        )
        self.uuid = self._server_uuid()
        self.collector = Collector(self.metadata)
        self.collector.snapshot_graph = lambda md: SnapshotStore(
            md.db, md.namespaces, md.leases
        ).graph(self.snapshotters)
        self.collector.remove_snapshots = self.snapshot_records.remove_many
        self.plugins.add(
            Plugin("io.containerd.gc.v1", "scheduler", requires=["io.containerd.metadata.v1"])
        )
        self.gc_runs = 0
        self.gc_removed = {"content": 0, "snapshots": 0}
        self._gc_pending: asyncio.Task[None] | None = None
        self._gc_lock = asyncio.Lock()
        # Content commits in flight: the file sweep waits for them, because a
        # blob is renamed into place a moment before its owner is recorded.
        self.commits_in_flight = 0
        # Blobs a Content.Write stream found already stored and will only claim
        # at its COMMIT: nobody owns them yet, so the sweep must leave them.
        self.pinned_blobs: collections.Counter[str] = collections.Counter()
        self._sweep_skipped = False
        # The blob files a sweep's worker thread is removing. The worker unlinks
        # each under `_blob_lock`, and whatever claims a stored blob takes the
        # lock first and spares it (`spare_blob`, `pin_blob`, a commit starting).
        self._blob_lock = threading.Lock()
        self._doomed: set[str] = set()
        self.plugins.add(
            Plugin("io.containerd.differ.v1", "walking", requires=["io.containerd.metadata.v1"])
        )
        self._build_tasks(config)
        for name in GRPC_SERVICES:
            self.plugins.add(
                Plugin(
                    "io.containerd.grpc.v1",
                    name,
                    requires=["io.containerd.metadata.v1", "io.containerd.event.v1"],
                )
            )
        self._export_engine_facts()

    def _export_engine_facts(self) -> None:
        # A client learns the engine's own facts only through the API, and the
        # protos have no field for them: Introspection's exports carry them to
        # `core.status`; containerd's clients show exports and act on none.
        started_at = datetime.fromtimestamp(self.started, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for plugin in self.plugins.plugins:
            if (plugin.type, plugin.id) == ("io.containerd.grpc.v1", "introspection"):
                plugin.exports.update(
                    {"started_at": started_at, "root": str(self.root), "state": str(self.state)}
                )

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
            with self._blob_lock:
                self.commits_in_flight += 1
            try:
                try:
                    digest = await asyncio.to_thread(writer.commit, size, expected)
                except AlreadyExists:
                    digest = expected or writer.digest()
                self.metadata.content.add(namespace, digest, size or writer.offset, labels, lease)
                self.metadata.content.end_ingest(namespace, ref)
                return digest
            finally:
                self.commits_in_flight -= 1
                if not self.commits_in_flight and self._sweep_skipped:
                    self.collect_soon()

        task = asyncio.ensure_future(commit())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await task
            raise

    def spare_blob(self, digest: str) -> None:
        """Keep a running sweep from removing `digest`; call before claiming a stored blob.

        Check that the blob exists after this, and record the claim before the
        next await: from then on the owner row keeps it.
        """
        with self._blob_lock:
            self._doomed.discard(digest)

    def pin_blob(self, digest: str) -> bool:
        """Keep a stored blob from every sweep until `unpin_blob`; False if it is not stored."""
        with self._blob_lock:
            self._doomed.discard(digest)
            if not self.content.exists(digest):
                return False
            self.pinned_blobs[digest] += 1
            return True

    def unpin_blob(self, digest: str) -> None:
        self.pinned_blobs[digest] -= 1
        if self.pinned_blobs[digest] <= 0:
            del self.pinned_blobs[digest]

    def namespace_owners(self, namespace: str) -> list[str]:
        """Kinds of resource outside the metadata tables that keep a namespace alive."""
        return [
            f'snapshots on "{name}" snapshotter'
            for name in self.snapshot_records.snapshotters_in(namespace)
        ] + (["tasks"] if namespace in self.tasks.namespaces() else [])

    def check_container_deletable(self, namespace: str, container_id: str) -> None:
        """Refuse to delete a container whose task still exists."""
        if self.tasks.exists(namespace, container_id):
            raise FailedPrecondition(
                f'cannot delete container "{container_id}": its task still exists; '
                "delete the task first"
            )

    def _build_tasks(self, config: Config) -> None:
        # Each configured runtime is a plugin of its own, so Introspection
        # names a runtime whose binary is missing (kata, firecracker...).
        self.runtimes = Runtimes(config)
        for name, rc in config.runtimes.items():
            runtime = self.runtimes.available.get(name)
            self.plugins.add(
                Plugin(
                    "io.containerd.runtime.v2",
                    f"runtime.{name}",
                    exports={"runtime_type": rc.runtime_type}
                    | ({"binary": runtime.binary} if runtime else {}),
                    error=f"skip plugin: {self.runtimes.missing[name]}"
                    if name in self.runtimes.missing
                    else "",
                )
            )
        options = config.plugins.get("io.containerd.runtime.v2.task", {})
        log_max = options.get("log_size_max", DEFAULT_LOG_MAX)
        layout = cgroups.detect()
        self.tasks = TaskManager(
            self.state,
            self.runtimes,
            self.events.publish,
            log_max=log_max if isinstance(log_max, int) and log_max > 0 else DEFAULT_LOG_MAX,
            rootfs_lookup=self._snapshot_mounts,
            subscribers=lambda: self.events.subscriber_count,
            cgroups_layout=layout,
        )
        self.plugins.add(
            Plugin(
                "io.containerd.runtime.v2",
                "task",
                requires=["io.containerd.event.v1", "io.containerd.metadata.v1"],
                exports={"root": str(self.root / TASK_DIR), "state": str(self.state / TASK_DIR)},
                platforms=True,
            )
        )
        # Task metrics come from cgroupfs; a host without it says so here.
        self.plugins.add(
            Plugin(
                "io.containerd.monitor.v1",
                "cgroups",
                error=f"cgroup statistics are unavailable: {layout.reason}"
                if layout.version == 0
                else "",
            )
        )

    async def _snapshot_mounts(self, namespace: str, container: Container) -> list[Mount]:
        snapshotter = self.snapshotters.get(container.snapshotter)
        if snapshotter is None:
            raise InvalidArgument(
                f'container "{container.id}" uses snapshotter "{container.snapshotter}", '
                "which is not loaded"
            )
        return await snapshotter.mounts(namespace, container.snapshot_key)

    async def start(self) -> None:
        """Find the tasks a previous run left running (the event loop is up now)."""
        self._warm_up = asyncio.create_task(asyncio.to_thread(registry.warm_up))
        # Counted once here, off the loop; the metrics gauge reads the count after.
        counting = asyncio.create_task(asyncio.to_thread(self.content.total_bytes))
        await self.tasks.restore()
        await counting

    async def stop(self) -> None:
        """Stop watching tasks; containers and their monitors keep running."""
        await self.tasks.close()

    async def collect_garbage(self, *, wait: bool) -> Result | None:
        """Collect now (`wait`), or soon, coalescing bursts of deletes into one pass."""
        if wait:
            return await self._collect()
        self.collect_soon()
        return None

    def collect_soon(self) -> None:
        if self._gc_pending is None or self._gc_pending.done():
            self._gc_pending = asyncio.create_task(self._collect_soon())

    async def _collect_soon(self) -> None:
        await asyncio.sleep(0.05)
        await self._collect()

    async def _collect(self) -> Result:
        async with self._gc_lock:
            result = await self._collect_metadata()
            self.gc_runs += 1
            self.gc_removed["content"] += len(result.content_removed)
            self.gc_removed["snapshots"] += len(result.snapshots_removed)
            if result.snapshots_removed:
                # The records went in the collection's transaction (children
                # first); the directories they owned go now.
                for snapshotter in self.snapshotters.values():
                    await snapshotter.cleanup()
            await self.sweep_blobs()
            return result

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
        for _ in range(GC_MARK_ATTEMPTS):
            before = conn.total_changes
            plan = await asyncio.to_thread(self._mark_apart)
            if conn.total_changes == before and await self._sweep_in_steps(plan, result):
                return result
        result.add(self.collector.collect())
        return result

    async def _sweep_in_steps(self, plan: Plan, result: Result) -> bool:
        """Sweep `plan` a step at a time into `result`; False if another write came between."""
        conn = self.metadata.db.conn
        steps = [Plan(dead_snapshots=plan.dead_snapshots)] + [
            Plan(dead_content=plan.dead_content[at : at + GC_SWEEP_STEP])
            for at in range(0, len(plan.dead_content), GC_SWEEP_STEP)
        ]
        try:
            for step in steps:
                # A removal lost in a crash is only garbage found again, so the steps
                # skip their fsyncs and one in a worker covers them all at the end.
                with self.metadata.db.deferred_sync():
                    result.add(self.collector.sweep(step))
                ours = conn.total_changes
                await asyncio.sleep(0)
                if conn.total_changes != ours:
                    return False
            return True
        finally:
            await asyncio.to_thread(self.metadata.db.sync)

    def _mark_apart(self) -> Plan:
        """The mark, on a read transaction of a connection of its own (WAL lets it read)."""
        reader = Metadata(self.metadata.db.path)
        try:
            reader.db.conn.execute("BEGIN")
            try:
                return self.collector.mark(reader)
            finally:
                reader.db.conn.execute("ROLLBACK")
        finally:
            reader.close()

    async def sweep_blobs(self) -> int:
        """Remove blob files no namespace owns, in a worker; put off while a commit is landing.

        The directory is listed in a worker, the blobs nobody owns or pins are
        named on the loop, and a worker unlinks them one at a time under
        `_blob_lock`, leaving any that something claimed meanwhile
        (`spare_blob`, `pin_blob`). A commit starting stops it; it starts over
        once the commits are done (`commit_blob` sees `_sweep_skipped`).
        """
        removed = 0
        while True:
            if self.commits_in_flight:
                self._sweep_skipped = True
                break
            on_disk = await asyncio.to_thread(self.content.digests)
            with self._blob_lock:
                if self.commits_in_flight:
                    continue
                keep = self.metadata.content.owned_digests() | set(self.pinned_blobs)
                self._doomed = {d for d in on_disk if d not in keep}
            self._sweep_skipped = False
            try:
                gone, finished = await asyncio.to_thread(self._unlink_doomed)
            finally:
                with self._blob_lock:
                    self._doomed = set()
            removed += gone
            if finished:
                break
        if removed:
            log.info("garbage collection removed %d blobs", removed)
        return removed

    def _unlink_doomed(self) -> tuple[int, bool]:
        """(blobs removed, whether the sweep finished) — runs in a worker thread."""
        with self._blob_lock:
            doomed = list(self._doomed)
        removed = 0
        for digest in doomed:
            with self._blob_lock:
                if self.commits_in_flight:
                    return removed, False
                if digest not in self._doomed:
                    continue
                with contextlib.suppress(NotFound):
                    self.content.delete(digest)
                    removed += 1
        return removed, True

    def _server_uuid(self) -> str:
        path = self.root / "io.containerd.grpc.v1.introspection" / "uuid"
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        value = str(uuid.uuid4())
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value)
        tmp.replace(path)
        return value

    def close(self) -> None:
        self.metadata.close()
