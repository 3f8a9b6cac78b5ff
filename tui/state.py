"""The console's model of one node: the rows it shows, keyed as the engine keys them.

`NodeState` holds namespaces by name, images by name, containers (with their
task) by id, snapshots by (snapshotter, key) and content by digest. Changes are
upserts and removals by key, and each records which table went dirty, so the
screen updates only the rows that changed and never rebuilds a table. What
keeps it current from an engine is `tui.syncer.Syncer`; tests fill it with fixed
data directly.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from core import status as engine_status

NAMESPACES = "namespaces"
IMAGES = "images"
CONTAINERS = "containers"
SNAPSHOTS = "snapshots"
CONTENT = "content"
TABLES = (NAMESPACES, IMAGES, CONTAINERS, SNAPSHOTS, CONTENT)
# Not a table: the namespaces whose counts an event in them made stale.
COUNTS = "counts"
# Not a table either: the engine's health went dirty (the top bar shows it).
ENGINE = "engine"


Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NamespaceRow:
    name: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    containers: int | None = None
    images: int | None = None


@dataclass(frozen=True)
class ImageRow:
    name: str
    digest: str
    media_type: str
    size: int | None = None
    platforms: str = ""
    created: datetime | None = None


@dataclass(frozen=True)
class ContainerRow:
    id: str
    image: str
    runtime: str
    snapshotter: str = ""
    snapshot_key: str = ""
    created: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    status: str = ""
    pid: int = 0
    exit_status: int | None = None
    started: datetime | None = None
    cpu: float | None = None
    memory: int | None = None
    # Why it stopped: OOM-killed (an event or the cgroup's counter), when, after how long.
    oom: bool = False
    oom_kills: int = 0
    exited_at: datetime | None = None
    # Seconds, not a timedelta: rows are recorded as JSON.
    ran_for: float | None = None


@dataclass(frozen=True)
class SnapshotRow:
    snapshotter: str
    key: str
    parent: str
    kind: str
    created: datetime | None = None


@dataclass(frozen=True)
class ContentRow:
    digest: str
    size: int
    created: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class LogLine:
    """One line of the event log: an engine event, a `ctr` teaching line, or a note."""

    time: datetime
    namespace: str
    topic: str
    detail: str
    kind: str = "event"
    # The node it came from, in a fleet console; "" when there is one node.
    node: str = ""


class NodeState:
    """Rows by key, with the set of tables changed since the screen last looked."""

    def __init__(self, namespace: str, address: str = "") -> None:
        self._namespace = namespace
        self.address = address
        self.version = ""
        self.connected = False
        self.engine: engine_status.EngineStatus | None = None
        self.snapshotters: list[str] = []
        self.unserved: set[str] = set()
        self.tables: dict[str, dict[Hashable, Any]] = {name: {} for name in TABLES}
        self.dirty: set[str] = set()
        # Called when the first table goes dirty after a `take_dirty`: the screen
        # schedules one repaint for the whole burst instead of polling.
        self.on_dirty: Callable[[], None] | None = None
        # Told of every row change, (table, key, the new row or None); a recorder listens here.
        self.on_change: Callable[[str, Hashable, Any], None] | None = None

    @property
    def namespace(self) -> str:
        return self._namespace

    @namespace.setter
    def namespace(self, name: str) -> None:
        # The namespaces pane marks the current one: a switch changes it even when no row did.
        if name != self._namespace:
            self._namespace = name
            self.mark(NAMESPACES)

    @property
    def namespaces(self) -> dict[Hashable, NamespaceRow]:
        return self.tables[NAMESPACES]

    @property
    def images(self) -> dict[Hashable, ImageRow]:
        return self.tables[IMAGES]

    @property
    def containers(self) -> dict[Hashable, ContainerRow]:
        return self.tables[CONTAINERS]

    @property
    def snapshots(self) -> dict[Hashable, SnapshotRow]:
        return self.tables[SNAPSHOTS]

    @property
    def content(self) -> dict[Hashable, ContentRow]:
        return self.tables[CONTENT]

    def upsert(self, table: str, key: Hashable, row: Any) -> None:
        rows = self.tables[table]
        if rows.get(key) != row:
            rows[key] = row
            self.mark(table)
            if self.on_change is not None:
                self.on_change(table, key, row)

    def remove(self, table: str, key: Hashable) -> None:
        if self.tables[table].pop(key, None) is not None:
            self.mark(table)
            if self.on_change is not None:
                self.on_change(table, key, None)

    def mark(self, table: str) -> None:
        first = not self.dirty
        self.dirty.add(table)
        if first and self.on_dirty is not None:
            self.on_dirty()

    def replace_all(self, table: str, rows: dict[Hashable, Any]) -> None:
        """Make a table equal to `rows`, touching only the keys that differ."""
        current = self.tables[table]
        for key in [k for k in current if k not in rows]:
            self.remove(table, key)
        for key, row in rows.items():
            self.upsert(table, key, row)

    def clear_namespaced(self) -> None:
        for table in (IMAGES, CONTAINERS, SNAPSHOTS, CONTENT):
            self.replace_all(table, {})

    def take_dirty(self) -> set[str]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    def update_container(self, container_id: str, **changes: Any) -> None:
        row = self.containers.get(container_id)
        if row is not None:
            self.upsert(CONTAINERS, container_id, replace(row, **changes))

    @property
    def running(self) -> int:
        return sum(1 for c in self.containers.values() if c.status == "RUNNING")


def age(since: datetime | None, now: datetime) -> str:
    """A short age like `3h02m`, `12s`, `4d`; `-` when unknown."""
    if since is None or since.year <= 1970:
        return "-"
    seconds = int((now - since) / timedelta(seconds=1))
    if seconds < 0:
        seconds = 0
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d"
