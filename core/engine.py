"""The engine's parts, built once from the config and shared by every service.

`Engine` opens the metadata database and the content store under `root`, makes
the events exchange, and records every part in the plugin registry with
containerd's plugin types and, as its `requires`, the types of the parts it was
built with. The concepts get only the parts they use (the differ, image pull,
import, export and push, the task manager), wired here once; services receive the
engine and use only the parts they serve.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import Config
from core.content.store import ContentStore
from core.content.write import Writes
from core.errors import FailedPrecondition, InvalidArgument
from core.events.exchange import Exchange
from core.gc import GarbageCollector
from core.images.blobs import Blobs
from core.images.records import ImageRecords
from core.metadata import Metadata
from core.metadata.containers import Container
from core.metadata.snapshots import SnapshotStore
from core.plugins import Plugin, Registry, absent_snapshotters
from core.runtime import cgroups
from core.runtime.runtimes import Runtimes
from core.runtime.tasks import DEFAULT_LOG_MAX, TASK_DIR, TaskManager
from core.snapshots import PLUGIN_TYPE as SNAPSHOTTER_PLUGIN
from core.snapshots import Snapshotter, unpack_target
from core.snapshots import load as load_snapshotters
from core.snapshots.mount import Mount

if TYPE_CHECKING:
    from core.diff.differ import Differ
    from core.images.archive import Exporter, Imports
    from core.images.pull import Puller, PullObserver
    from core.images.push import Pusher
    from core.images.unpack import Unpackers

log = logging.getLogger("ctrdeck.engine")

# httpx imports its command-line client when rich, click and pygments are installed (the
# console needs them): about half the registry client's import time, which a first pull
# now pays, and 4.5 MiB the engine never uses. None here makes that import fail, which
# httpx provides for (its `main` then says the CLI is unavailable).
sys.modules.setdefault("httpx._main", None)

IMPORT_SPOOL = "io.containerd.grpc.v1.images.import"
"""Where imports spool their tarballs (`core.images.archive.IMPORT_SPOOL`, which a test
pins to this): the engine looks there at start without importing the archive code."""


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
        self.plugins.add(Plugin("io.containerd.event.v1", "exchange"), self.events)

        content_root = self.root / "io.containerd.content.v1.content"
        self.content = ContentStore(content_root)
        self.plugins.add(
            Plugin("io.containerd.content.v1", "content", exports={"root": str(content_root)}),
            self.content,
        )

        meta_root = self.root / "io.containerd.metadata.v1.sqlite"
        self.metadata = Metadata(meta_root / "meta.db")
        # Snapshotters keep their records in the metadata database, and only
        # the ones that can run on this host serve requests.
        self.snapshot_records = SnapshotStore(
            self.metadata.db, self.metadata.namespaces, self.metadata.leases
        )
        self.plugins.add(
            Plugin("io.containerd.metadata.v1", "sqlite", exports={"root": str(meta_root)}),
            self.metadata,
            self.snapshot_records,
        )
        self.snapshotters: dict[str, Snapshotter] = {}
        for loaded in load_snapshotters(config, self.root, self.snapshot_records):
            self.plugins.add(
                Plugin(
                    SNAPSHOTTER_PLUGIN,
                    loaded.name,
                    requires=self.plugins.requires(self.snapshot_records),
                    exports={"root": str(loaded.root)},
                    platforms=True,
                    error=loaded.error,
                ),
                *([] if loaded.error else [loaded.snapshotter]),
            )
            if loaded.error:
                log.info("snapshotter %s not loaded: %s", loaded.name, loaded.error)
            else:
                self.snapshotters[loaded.name] = loaded.snapshotter
        for absent in absent_snapshotters(config.plugins, self.root):
            self.plugins.add(absent)
        self.uuid = self._server_uuid()
        # Told of every finished pull; the server adds its metrics here.
        self.pull_observers: list[PullObserver] = []
        gc_parts = (self.metadata, self.content, self.snapshot_records, self.snapshotters)
        self.gc = GarbageCollector(*gc_parts)
        self.plugins.add(
            Plugin("io.containerd.gc.v1", "scheduler", requires=self.plugins.requires(*gc_parts)),
            self.gc,
        )
        self.writes = Writes(self.content, self.metadata.content, self.gc)
        differ_parts = (self.content, self.metadata, self.gc, self.snapshotters)
        self.plugins.add(
            Plugin(
                "io.containerd.differ.v1", "walking", requires=self.plugins.requires(*differ_parts)
            )
        )
        self._build_images(config)
        self._build_tasks(config)

    def _build_images(self, config: Config) -> None:
        # Pull, import, export and push get only the parts they use, wired here once;
        # the parts below that carry the registry client, TLS, tar and the compressors
        # are built (and their modules imported) on first use, so an engine at rest
        # does not hold them in memory.
        self.blobs = Blobs(self.content, self.metadata, self.gc)
        self.image_records = ImageRecords(
            self.metadata.images, self.metadata.leases, self.gc, self.events.publish
        )

    @functools.cached_property
    def differ(self) -> Differ:
        from core.diff.differ import Differ  # on first use: tar and the compressors

        return Differ(self.content, self.metadata.content, self.gc, self.snapshotters)

    @functools.cached_property
    def unpackers(self) -> Unpackers:
        from core.images.unpack import Unpackers  # on first use: see differ

        return Unpackers(
            self.snapshotters,
            self.snapshot_records,
            self.metadata.namespaces,
            self.metadata.content,
            self.differ,
            self.events.publish,
            self.config.default_snapshotter,
        )

    def _unpack_snapshotter(self, namespace: str, asked: str) -> str:
        snapshotters, default = self.snapshotters, self.config.default_snapshotter
        return unpack_target(snapshotters, self.metadata.namespaces, default, namespace, asked)[0]

    @functools.cached_property
    def puller(self) -> Puller:
        from core.images.pull import Puller  # on first use: the registry client and TLS

        return Puller(
            self.blobs,
            self.image_records,
            lambda: self.unpackers,
            self._unpack_snapshotter,
            self.config.registry.config_path,
            self.pull_observers,
            auths=self.config.registry.auths,
        )

    @functools.cached_property
    def imports(self) -> Imports:
        from core.images.archive import Imports  # on first use: tar and gzip

        return Imports(self.blobs, self.image_records, self.unpackers, self.root / IMPORT_SPOOL)

    @functools.cached_property
    def exporter(self) -> Callable[[str], Exporter]:
        """Export works on one namespace at a time: this makes one for a namespace."""
        from core.images.archive import Exporter  # on first use: see imports

        return functools.partial(
            Exporter, self.content, self.metadata.content, self.metadata.images
        )

    @functools.cached_property
    def pusher(self) -> Callable[[str], Pusher]:
        """Push works on one namespace at a time: this makes one for a namespace."""
        from core.images.push import Pusher  # on first use: see puller

        return functools.partial(
            Pusher,
            self.content,
            self.metadata.content,
            self.metadata.images,
            self.config.registry.config_path,
            auths=self.config.registry.auths,
        )

    def requires(self, names: Iterable[str]) -> list[str]:
        """The plugin types of the engine's parts called `names`, for a plugin built with them."""
        return self.plugins.requires(*(getattr(self, name) for name in names))

    def facts(self) -> dict[str, str]:
        """The engine's own facts, which Introspection exports on its own plugin.

        A client learns them only through the API, and the protos have no field
        for them; containerd's clients show exports and act on none.
        """
        started_at = datetime.fromtimestamp(self.started, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {"started_at": started_at, "root": str(self.root), "state": str(self.state)}

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
                ),
                *([runtime] if runtime else []),
            )
        options = config.plugins.get("io.containerd.runtime.v2.task", {})
        log_max = options.get("log_size_max", DEFAULT_LOG_MAX)
        layout = cgroups.detect()
        # Task metrics come from cgroupfs; a host without it says so here.
        self.plugins.add(
            Plugin(
                "io.containerd.monitor.v1",
                "cgroups",
                error=f"cgroup statistics are unavailable: {layout.reason}"
                if layout.version == 0
                else "",
            ),
            layout,
        )
        self.tasks = TaskManager(
            self.state,
            self.runtimes,
            self.events.publish,
            log_max=log_max if isinstance(log_max, int) and log_max > 0 else DEFAULT_LOG_MAX,
            rootfs_lookup=self._snapshot_mounts,
            subscribers=lambda: self.events.subscriber_count,
            cgroups_layout=layout,
        )
        # A collection put off while tasks are created and started, or clients write
        # (a `ctr run`'s writes come just before its Tasks.Create): see `_until_quiet`.
        self.gc.quiet_for = lambda: min(self.tasks.quiet_for(), self.metadata.db.quiet_for())
        self.plugins.add(
            Plugin(
                "io.containerd.runtime.v2",
                "task",
                # What it is built with: the runtimes, the exchange it publishes
                # on, the snapshotters its rootfs lookup asks, the cgroups layout.
                requires=self.plugins.requires(
                    self.runtimes.available, self.events, self.snapshotters, layout
                ),
                exports={"root": str(self.root / TASK_DIR), "state": str(self.state / TASK_DIR)},
                platforms=True,
            ),
            self.tasks,
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
        if _has_entries(self.root / IMPORT_SPOOL):
            # Wiring the imports removes what a crashed engine left spooled.
            self.imports  # noqa: B018
        await self.tasks.restore()

    async def stop(self) -> None:
        """Stop watching tasks; containers and their monitors keep running."""
        await self.tasks.close()

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
        self.gc.close()
        self.metadata.close()


def _has_entries(directory: Path) -> bool:
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is not None
    except FileNotFoundError:
        return False
