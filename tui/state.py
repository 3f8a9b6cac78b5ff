"""The console's model of one node: the rows it shows, keyed as the engine keys them.

`NodeState` holds namespaces by name, images by name, containers (with their
task) by id, snapshots by (snapshotter, key) and content by digest. Changes are
upserts and removals by key, and each records which table went dirty and, in
a short log, which key changed, so the screen remakes only the rows that
changed (`changed_since`) and never rebuilds a table. What keeps it current
from an engine is `tui.syncer.Syncer`; tests fill it with fixed data directly.
"""

from __future__ import annotations

import bisect
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
# Changes kept per table for `changed_since`; past this the older half goes, and a
# reader that far behind remakes the whole table (as it does after a resync that
# changed most rows: remaking them all is then no dearer than naming them).
CHANGE_LOG = 4096


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
        # Every row change is numbered: `seq` is the last number, each table logs
        # (number, key) of its recent changes, and a reader at a number below the
        # table's floor has missed changes the log no longer holds.
        self.seq = 0
        self._log: dict[str, list[tuple[int, Hashable]]] = {name: [] for name in TABLES}
        self._floor: dict[str, int] = dict.fromkeys(TABLES, 0)
        # Containers with a running task, counted as rows change: the top bar shows it on
        # every refresh.
        self._running = 0

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
        was = rows.get(key)
        # Identity first: a resync hands back the very rows the events kept current.
        if was is not row and was != row:
            rows[key] = row
            if table == CONTAINERS:
                self._running += _runs(row) - _runs(was)
            self._changed(table, key)
            if self.on_change is not None:
                self.on_change(table, key, row)

    def remove(self, table: str, key: Hashable) -> None:
        was = self.tables[table].pop(key, None)
        if was is not None:
            if table == CONTAINERS:
                self._running -= _runs(was)
            self._changed(table, key)
            if self.on_change is not None:
                self.on_change(table, key, None)

    def _changed(self, table: str, key: Hashable) -> None:
        self.seq += 1
        log = self._log[table]
        log.append((self.seq, key))
        if len(log) > CHANGE_LOG:
            half = len(log) // 2
            self._floor[table] = log[half - 1][0]
            del log[:half]
        self._dirty(table)

    def mark(self, table: str) -> None:
        """`table` went dirty as a whole: readers remake all its rows."""
        if table in self._floor:
            self.seq += 1
            self._floor[table] = self.seq
            self._log[table].clear()
        self._dirty(table)

    def _dirty(self, table: str) -> None:
        first = not self.dirty
        self.dirty.add(table)
        if first and self.on_dirty is not None:
            self.on_dirty()

    def changed_since(self, table: str, seq: int) -> set[Hashable] | None:
        """The keys of `table` changed (upserted or removed) after change number `seq`.

        None when the log no longer reaches back that far, or the table was
        marked dirty as a whole since: the reader must look at every row.
        """
        if seq < self._floor[table]:
            return None
        log = self._log[table]
        start = bisect.bisect_right(log, seq, key=lambda entry: entry[0])
        return {key for _, key in log[start:]}

    def replace_all(
        self, table: str, rows: dict[Hashable, Any], listed_at: int | None = None
    ) -> None:
        """Make a table equal to `rows`, touching only the keys that differ.

        `rows` from a listing asked for at change number `listed_at` may be older
        than what events did to some keys while it was under way (a container
        deleted after the engine listed it): those keys keep what the events made
        of them. A log that no longer reaches back that far lets the listing win.
        """
        current = self.tables[table]
        newer = set() if listed_at is None else self.changed_since(table, listed_at) or set()
        for key in [k for k in current if k not in rows and k not in newer]:
            self.remove(table, key)
        for key, row in rows.items():
            if key not in newer:
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
        return self._running


def _runs(row: ContainerRow | None) -> int:
    return 1 if row is not None and row.status == "RUNNING" else 0


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
