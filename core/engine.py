"""The engine's parts, built once from the config and shared by every service.

`Engine` opens the metadata database and the content store under `root`, makes
the events exchange, and records every part in the plugin registry with
containerd's plugin types. Services receive the engine and use only the parts
they serve.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path

from core.config import Config
from core.content.store import ContentStore
from core.errors import NotFound
from core.events.exchange import Exchange
from core.gc import Collector, Result
from core.metadata import Metadata
from core.plugins import Plugin, Registry

log = logging.getLogger("ctrdeck.engine")

GRPC_SERVICES = [
    "containers",
    "content",
    "events",
    "healthcheck",
    "images",
    "introspection",
    "leases",
    "namespaces",
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
        self.plugins.add(
            Plugin("io.containerd.gc.v1", "scheduler", requires=["io.containerd.metadata.v1"])
        )
        self.gc_runs = 0
        self.gc_removed = {"content": 0, "snapshots": 0}
        self._gc_pending: asyncio.Task[None] | None = None
        # Content commits in flight: the file sweep waits for them, because a
        # blob is renamed into place a moment before its owner is recorded.
        self.commits_in_flight = 0
        for name in GRPC_SERVICES:
            self.plugins.add(
                Plugin(
                    "io.containerd.grpc.v1",
                    name,
                    requires=["io.containerd.metadata.v1", "io.containerd.event.v1"],
                )
            )

    def namespace_owners(self, namespace: str) -> list[str]:
        """Kinds of resource outside the metadata tables that keep a namespace alive."""
        return []

    def check_container_deletable(self, namespace: str, container_id: str) -> None:
        """Refuse to delete a container whose task still exists (tasks arrive later)."""

    async def collect_garbage(self, *, wait: bool) -> Result | None:
        """Collect now (`wait`), or soon, coalescing bursts of deletes into one pass."""
        if wait:
            return await self._collect()
        if self._gc_pending is None or self._gc_pending.done():
            self._gc_pending = asyncio.create_task(self._collect_soon())
        return None

    async def _collect_soon(self) -> None:
        await asyncio.sleep(0.05)
        await self._collect()

    async def _collect(self) -> Result:
        result = self.collector.collect()
        self.gc_runs += 1
        self.gc_removed["content"] += len(result.content_removed)
        self.gc_removed["snapshots"] += len(result.snapshots_removed)
        await self.sweep_blobs()
        return result

    async def sweep_blobs(self) -> int:
        """Remove blob files no namespace owns; skipped while a commit is landing."""
        if self.commits_in_flight:
            return 0
        owned = self.metadata.content.owned_digests()
        orphans = [b.digest for b in self.content.walk() if b.digest not in owned]

        def remove() -> int:
            removed = 0
            for digest in orphans:
                try:
                    self.content.delete(digest)
                    removed += 1
                except NotFound:
                    pass
            return removed

        removed = await asyncio.to_thread(remove)
        if removed:
            log.info("garbage collection removed %d blobs", removed)
        return removed

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
