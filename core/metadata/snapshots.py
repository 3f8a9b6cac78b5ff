"""Snapshot records: which snapshots each namespace has in each snapshotter.

A record is keyed by (namespace, snapshotter, key) and carries an internal
numeric id, the kind (view, active, committed), the parent it was made from,
labels, timestamps, the usage measured when it was committed, and the
directory (relative to the snapshotter's root) it owns on disk. Namespaces are
isolated: the same key in two namespaces is two snapshots, and a parent is
always looked up in the child's own namespace. Children point at their parent
by id, so the database itself refuses to drop a parent before its children.
This store only keeps records; the snapshotters in `core/snapshots` own the
directories and call in here inside their own transactions.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from core import filters
from core import labels as label_rules
from core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from core.metadata import masks
from core.metadata.db import Database, dump_labels, load_labels, now_us
from core.metadata.leases import LeaseStore, Resource
from core.metadata.namespaces import NamespaceStore


class Kind(enum.IntEnum):
    """containerd's snapshot kinds, with its wire numbers."""

    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3

    @property
    def word(self) -> str:
        """The lower-case name filters use (`kind==committed`)."""
        return self.name.lower()


@dataclass(frozen=True)
class Usage:
    size: int = 0
    inodes: int = 0


@dataclass
class SnapshotRecord:
    id: int
    namespace: str
    snapshotter: str
    key: str
    kind: Kind
    parent: str = ""
    parent_id: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    directory: str = ""
    usage: Usage = field(default_factory=Usage)
    created_at: int = 0
    updated_at: int = 0


# (kind, namespace, key) as core.gc names snapshot nodes; kind is "snapshots/<name>".
GcNode = tuple[str, str, str]

_SELECT = (
    "SELECT s.*, p.key AS parent_key FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id"
)


def _from_row(row: sqlite3.Row) -> SnapshotRecord:
    return SnapshotRecord(
        id=row["id"],
        namespace=row["namespace"],
        snapshotter=row["snapshotter"],
        key=row["key"],
        kind=Kind(row["kind"]),
        parent=row["parent_key"] or "",
        parent_id=row["parent_id"],
        labels=load_labels(row["labels"]),
        directory=row["directory"],
        usage=Usage(row["size"], row["inodes"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def snapshot_adaptor(record: SnapshotRecord) -> filters.Adaptor:
    """The filter fields containerd offers on snapshots: kind, name, parent, labels."""
    return filters.field_adaptor(
        {"kind": record.kind.word, "name": record.key, "parent": record.parent},
        {"labels": record.labels},
    )


def not_found(key: str) -> NotFound:
    return NotFound(f"snapshot {key} does not exist")


def lease_type(snapshotter: str) -> str:
    return f"snapshots/{snapshotter}"


class SnapshotStore:
    def __init__(self, db: Database, namespaces: NamespaceStore, leases: LeaseStore) -> None:
        self.db = db
        self.namespaces = namespaces
        self.leases = leases

    def find(self, namespace: str, snapshotter: str, key: str) -> SnapshotRecord | None:
        row = self.db.conn.execute(
            _SELECT + " WHERE s.namespace = ? AND s.snapshotter = ? AND s.key = ?",
            (namespace, snapshotter, key),
        ).fetchone()
        return _from_row(row) if row else None

    def get(self, namespace: str, snapshotter: str, key: str) -> SnapshotRecord:
        record = self.find(namespace, snapshotter, key)
        if record is None:
            raise not_found(key)
        return record

    def by_id(self, snapshot_id: int) -> SnapshotRecord:
        row = self.db.conn.execute(_SELECT + " WHERE s.id = ?", (snapshot_id,)).fetchone()
        if row is None:
            raise NotFound(f"snapshot with internal id {snapshot_id} does not exist")
        return _from_row(row)

    def parents(self, record: SnapshotRecord) -> list[SnapshotRecord]:
        """The record's ancestors, nearest first."""
        chain: list[SnapshotRecord] = []
        parent_id = record.parent_id
        while parent_id is not None:
            parent = self.by_id(parent_id)
            chain.append(parent)
            parent_id = parent.parent_id
        return chain

    def check_new(
        self, namespace: str, snapshotter: str, key: str, parent: str
    ) -> SnapshotRecord | None:
        """Refuse a new snapshot the way containerd does; return its parent record."""
        if not key:
            raise InvalidArgument("snapshot key must not be empty")
        if self.find(namespace, snapshotter, key) is not None:
            raise AlreadyExists(f'snapshot "{key}"')
        if not parent:
            return None
        record = self.find(namespace, snapshotter, parent)
        if record is None:
            raise NotFound(f"parent snapshot {parent} does not exist")
        if record.kind != Kind.COMMITTED:
            raise InvalidArgument(f'parent "{parent}" is not committed snapshot')
        return record

    def create(
        self,
        namespace: str,
        snapshotter: str,
        key: str,
        kind: Kind,
        parent: str,
        parent_id: int | None,
        labels: Mapping[str, str],
        lease: str | None,
        directory_for: Callable[[int], str],
    ) -> SnapshotRecord:
        """Insert a view or active record; `parent_id` is the parent the caller built on.

        Joins the caller's transaction, so the caller can move the snapshot's
        directory into place before the record becomes visible.
        """
        label_rules.validate_all(labels)
        now = now_us()
        with self.db.tx() as conn:
            found = self.check_new(namespace, snapshotter, key, parent)
            if (found.id if found else None) != parent_id:
                raise NotFound(f"parent snapshot {parent} was removed while {key} was prepared")
            self.namespaces.ensure(namespace)
            self.leases.attach(namespace, lease, Resource(key, lease_type(snapshotter)))
            cur = conn.execute(
                "INSERT INTO snapshots(namespace, snapshotter, key, kind, parent_id, labels,"
                " directory, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, '', ?, ?)",
                (namespace, snapshotter, key, int(kind), parent_id, dump_labels(labels), now, now),
            )
            snapshot_id = cur.lastrowid
            assert snapshot_id is not None
            conn.execute(
                "UPDATE snapshots SET directory = ? WHERE id = ?",
                (directory_for(snapshot_id), snapshot_id),
            )
            return self.by_id(snapshot_id)

    def check_commit(self, namespace: str, snapshotter: str, name: str, key: str) -> SnapshotRecord:
        """The active record `key` that may become committed `name`."""
        if not name:
            raise InvalidArgument("committed snapshot name must not be empty")
        record = self.get(namespace, snapshotter, key)
        if record.kind != Kind.ACTIVE:
            raise FailedPrecondition(f'snapshot "{key}" is not active')
        if self.find(namespace, snapshotter, name) is not None:
            raise AlreadyExists(f'snapshot "{name}"')
        return record

    def commit(
        self,
        namespace: str,
        snapshotter: str,
        name: str,
        key: str,
        labels: Mapping[str, str],
        lease: str | None,
        usage: Usage,
        expected_id: int,
        directory: str,
    ) -> SnapshotRecord:
        """Turn active `key` into committed `name`; its labels are replaced, as containerd's are.

        `expected_id` is the record the caller measured (and, for btrfs, froze):
        if `key` was removed and made again meanwhile, the commit is refused.
        """
        label_rules.validate_all(labels)
        now = now_us()
        with self.db.tx() as conn:
            record = self.check_commit(namespace, snapshotter, name, key)
            if record.id != expected_id:
                raise FailedPrecondition(f"snapshot {key} was replaced while it was committed")
            conn.execute(
                "UPDATE snapshots SET key = ?, kind = ?, labels = ?, directory = ?, size = ?,"
                " inodes = ?, created_at = ?, updated_at = ? WHERE id = ?",
                (
                    name,
                    int(Kind.COMMITTED),
                    dump_labels(labels),
                    directory,
                    usage.size,
                    usage.inodes,
                    now,
                    now,
                    record.id,
                ),
            )
            self._detach(namespace, lease, snapshotter, key)
            self.leases.attach(namespace, lease, Resource(name, lease_type(snapshotter)))
            return self.by_id(record.id)

    def remove(
        self, namespace: str, snapshotter: str, key: str, lease: str | None
    ) -> SnapshotRecord:
        with self.db.tx() as conn:
            record = self.get(namespace, snapshotter, key)
            if self._has_children(record.id):
                raise FailedPrecondition(f"cannot remove snapshot {key} with child")
            conn.execute("DELETE FROM snapshots WHERE id = ?", (record.id,))
            self._detach(namespace, lease, snapshotter, key)
            return record

    def update(
        self,
        namespace: str,
        snapshotter: str,
        key: str,
        labels: Mapping[str, str],
        paths: Sequence[str],
    ) -> SnapshotRecord:
        if not key:
            raise InvalidArgument("snapshot name must not be empty")
        with self.db.tx() as conn:
            record = self.get(namespace, snapshotter, key)
            if paths:
                masks.apply_paths(paths, {"labels": (record.labels, labels)}, "snapshot")
            else:
                label_rules.validate_all(labels)
                record.labels = dict(labels)
            record.updated_at = now_us()
            conn.execute(
                "UPDATE snapshots SET labels = ?, updated_at = ? WHERE id = ?",
                (dump_labels(record.labels), record.updated_at, record.id),
            )
            return record

    def list(
        self, namespace: str, snapshotter: str, filter_strings: Sequence[str] = ()
    ) -> list[SnapshotRecord]:
        match = filters.parse_all(filter_strings)
        rows = self.db.conn.execute(
            _SELECT + " WHERE s.namespace = ? AND s.snapshotter = ? ORDER BY s.key",
            (namespace, snapshotter),
        )
        records = [_from_row(r) for r in rows]
        return [r for r in records if match.match(snapshot_adaptor(r))]

    def directories(self, snapshotter: str) -> set[str]:
        """Every directory a record of this snapshotter owns."""
        rows = self.db.conn.execute(
            "SELECT directory FROM snapshots WHERE snapshotter = ?", (snapshotter,)
        )
        return {r[0] for r in rows}

    def snapshotters_in(self, namespace: str) -> list[str]:
        rows = self.db.conn.execute(
            "SELECT DISTINCT snapshotter FROM snapshots WHERE namespace = ? ORDER BY snapshotter",
            (namespace,),
        )
        return [r[0] for r in rows]

    def counts(self) -> dict[str, int]:
        """How many snapshot records each snapshotter has, over every namespace."""
        rows = self.db.conn.execute(
            "SELECT snapshotter, COUNT(*) FROM snapshots GROUP BY snapshotter"
        )
        return {snapshotter: count for snapshotter, count in rows}

    def graph(
        self, snapshotters: Iterable[str]
    ) -> Iterator[tuple[str, str, str, str, dict[str, str]]]:
        """(namespace, snapshotter, key, parent, labels) of each record, for core.gc."""
        wanted = set(snapshotters)
        for row in self.db.conn.execute(_SELECT):
            if row["snapshotter"] in wanted:
                yield (
                    row["namespace"],
                    row["snapshotter"],
                    row["key"],
                    row["parent_key"] or "",
                    load_labels(row["labels"]),
                )

    def remove_many(self, nodes: Iterable[GcNode]) -> None:
        """Drop the records garbage collection found dead, children before parents.

        The directories stay behind until each snapshotter's cleanup pass.
        """
        ids: set[int] = set()
        for kind, namespace, key in nodes:
            record = self.find(namespace, kind.split("/", 1)[1], key)
            if record is not None:
                ids.add(record.id)
        with self.db.tx() as conn:
            while ids:
                leaves = [i for i in ids if not self._has_children(i)]
                if not leaves:
                    # A dead snapshot under a live child cannot be: the mark follows parents.
                    raise FailedPrecondition(
                        "garbage collection found a dead parent of a live child"
                    )
                conn.executemany("DELETE FROM snapshots WHERE id = ?", [(i,) for i in leaves])
                ids.difference_update(leaves)

    def _has_children(self, snapshot_id: int) -> bool:
        return (
            self.db.conn.execute(
                "SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1", (snapshot_id,)
            ).fetchone()
            is not None
        )

    def _detach(self, namespace: str, lease: str | None, snapshotter: str, key: str) -> None:
        # As containerd: a key that stops existing leaves the lease it was made under.
        if lease:
            self.db.conn.execute(
                "DELETE FROM lease_resources WHERE namespace = ? AND lease_id = ? AND type = ?"
                " AND resource_id = ?",
                (namespace, lease, lease_type(snapshotter), key),
            )
