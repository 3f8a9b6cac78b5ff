"""Which blobs each namespace owns, with their labels, and which ingests it runs.

The content store on disk is shared by all namespaces; a blob is visible in a
namespace only while this table says the namespace owns it. Labels (including
the `containerd.io/gc.ref.*` references garbage collection follows) live here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from core import filters
from core import labels as label_rules
from core.errors import NotFound
from core.metadata import masks
from core.metadata.db import Database, dump_labels, load_labels, now_us
from core.metadata.leases import LeaseStore, Resource
from core.metadata.namespaces import NamespaceStore


@dataclass
class ContentRecord:
    digest: str
    size: int
    labels: dict[str, str] = field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0


def ingest_key(namespace: str, ref: str) -> str:
    """The content store's key for a namespace's ingest ref (refs are private to a namespace)."""
    return f"{namespace}/{ref}"


def content_adaptor(record: ContentRecord) -> filters.Adaptor:
    return filters.field_adaptor({"digest": record.digest}, {"labels": record.labels})


def _from_row(row) -> ContentRecord:  # type: ignore[no-untyped-def]
    return ContentRecord(
        row["digest"], row["size"], load_labels(row["labels"]), row["created_at"], row["updated_at"]
    )


class ContentMetadata:
    def __init__(self, db: Database, namespaces: NamespaceStore, leases: LeaseStore) -> None:
        self.db = db
        self.namespaces = namespaces
        self.leases = leases

    def get(self, namespace: str, digest: str) -> ContentRecord:
        row = self.db.conn.execute(
            "SELECT * FROM content WHERE namespace = ? AND digest = ?", (namespace, digest)
        ).fetchone()
        if row is None:
            raise NotFound(f"content {digest}")
        return _from_row(row)

    def has(self, namespace: str, digest: str) -> bool:
        return (
            self.db.conn.execute(
                "SELECT 1 FROM content WHERE namespace = ? AND digest = ?", (namespace, digest)
            ).fetchone()
            is not None
        )

    def list(self, namespace: str, filter_strings: Sequence[str] = ()) -> list[ContentRecord]:
        match = filters.parse_all(filter_strings)
        rows = self.db.conn.execute(
            "SELECT * FROM content WHERE namespace = ? ORDER BY digest", (namespace,)
        )
        records = [_from_row(r) for r in rows]
        return [r for r in records if match.match(content_adaptor(r))]

    def add(
        self, namespace: str, digest: str, size: int, labels: Mapping[str, str], lease: str | None
    ) -> ContentRecord:
        """Record ownership of a committed blob (and attach it to the lease, if any)."""
        label_rules.validate_all(labels)
        now = now_us()
        with self.db.tx() as conn:
            self.namespaces.ensure(namespace)
            self.leases.attach(namespace, lease, Resource(digest, "content"))
            conn.execute(
                "INSERT INTO content(namespace, digest, size, labels, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(namespace, digest) DO NOTHING",
                (namespace, digest, size, dump_labels(labels), now, now),
            )
        return self.get(namespace, digest)

    def update(
        self, namespace: str, digest: str, labels: Mapping[str, str], paths: Sequence[str]
    ) -> ContentRecord:
        with self.db.tx() as conn:
            record = self.get(namespace, digest)
            if paths:
                masks.apply_paths(paths, {"labels": (record.labels, labels)}, "content")
            else:
                label_rules.validate_all(labels)
                record.labels = dict(labels)
            record.updated_at = now_us()
            conn.execute(
                "UPDATE content SET labels = ?, updated_at = ? WHERE namespace = ? AND digest = ?",
                (dump_labels(record.labels), record.updated_at, namespace, digest),
            )
        return record

    def delete(self, namespace: str, digest: str) -> bool:
        """Drop a namespace's ownership; True if no namespace owns the blob any more."""
        with self.db.tx() as conn:
            cur = conn.execute(
                "DELETE FROM content WHERE namespace = ? AND digest = ?", (namespace, digest)
            )
            if cur.rowcount == 0:
                raise NotFound(f"content {digest}")
            return self.unowned(digest)

    def unowned(self, digest: str) -> bool:
        return (
            self.db.conn.execute(
                "SELECT 1 FROM content WHERE digest = ? LIMIT 1", (digest,)
            ).fetchone()
            is None
        )

    def owned_digests(self) -> set[str]:
        return {r[0] for r in self.db.conn.execute("SELECT DISTINCT digest FROM content")}

    def all(self) -> list[tuple[str, ContentRecord]]:
        rows = self.db.conn.execute("SELECT * FROM content")
        return [(r["namespace"], _from_row(r)) for r in rows]

    def remove_many(self, pairs: Sequence[tuple[str, str]]) -> None:
        with self.db.tx() as conn:
            conn.executemany("DELETE FROM content WHERE namespace = ? AND digest = ?", pairs)

    # Ingests: a ref is private to the namespace that started it.

    def begin_ingest(self, namespace: str, ref: str, expected: str, lease: str | None) -> None:
        with self.db.tx() as conn:
            self.leases.attach(namespace, lease, Resource(ref, "ingests"))
            conn.execute(
                "INSERT INTO ingests(namespace, ref, expected, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(namespace, ref) DO UPDATE SET expected = excluded.expected",
                (namespace, ref, expected, now_us()),
            )

    def end_ingest(self, namespace: str, ref: str) -> None:
        """Forget a finished or aborted ingest, and drop it from any lease that held it."""
        with self.db.tx() as conn:
            conn.execute("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (namespace, ref))
            conn.execute(
                "DELETE FROM lease_resources WHERE namespace = ? AND type = 'ingests'"
                " AND resource_id = ?",
                (namespace, ref),
            )

    def ingest_refs(self, namespace: str) -> list[str]:
        rows = self.db.conn.execute(
            "SELECT ref FROM ingests WHERE namespace = ? ORDER BY ref", (namespace,)
        )
        return [r[0] for r in rows]
