"""Namespaces: their records and labels, and the rule that only empty ones go.

containerd creates a namespace the first time something is written in it, so the
other stores call `ensure()` inside their own transaction; `delete()` refuses while
any image, blob, container, lease or snapshot still lives in the namespace, and
says which kinds remain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from core import labels as label_rules
from core.errors import AlreadyExists, FailedPrecondition, NotFound
from core.metadata import masks
from core.metadata.db import Database, dump_labels, load_labels, now_us


@dataclass
class Namespace:
    name: str
    labels: dict[str, str] = field(default_factory=dict)


# (table, what containerd calls it in the "must be empty" message)
_OWNED = [
    ("images", "images"),
    ("content", "blobs"),
    ("containers", "containers"),
    ("leases", "leases"),
]


class NamespaceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def ensure(self, name: str) -> None:
        self.db.conn.execute(
            "INSERT OR IGNORE INTO namespaces(name, labels, created_at) VALUES (?, '{}', ?)",
            (name, now_us()),
        )

    def get(self, name: str) -> Namespace | None:
        row = self.db.conn.execute(
            "SELECT name, labels FROM namespaces WHERE name = ?", (name,)
        ).fetchone()
        return Namespace(row["name"], load_labels(row["labels"])) if row else None

    def list(self) -> list[Namespace]:
        rows = self.db.conn.execute("SELECT name, labels FROM namespaces ORDER BY name")
        return [Namespace(r["name"], load_labels(r["labels"])) for r in rows]

    def create(self, name: str, labels: Mapping[str, str]) -> Namespace:
        label_rules.validate_all(labels)
        with self.db.tx() as conn:
            if self.get(name) is not None:
                raise AlreadyExists(f'namespace "{name}"')
            conn.execute(
                "INSERT INTO namespaces(name, labels, created_at) VALUES (?, ?, ?)",
                (name, dump_labels(labels), now_us()),
            )
        return Namespace(name, dict(labels))

    def update(self, name: str, labels: Mapping[str, str], paths: Sequence[str]) -> Namespace:
        with self.db.tx() as conn:
            current = self.get(name)
            if current is None:
                raise NotFound(f'namespace "{name}"')
            if paths:
                masks.apply_paths(paths, {"labels": (current.labels, labels)}, "namespace")
            else:
                label_rules.validate_all(labels)
                current.labels = dict(labels)
            conn.execute(
                "UPDATE namespaces SET labels = ? WHERE name = ?",
                (dump_labels(current.labels), name),
            )
        return current

    def delete(self, name: str, extra_owners: Sequence[str] = ()) -> None:
        """Remove an empty namespace; `extra_owners` are kinds other stores still hold."""
        with self.db.tx() as conn:
            if self.get(name) is None:
                raise NotFound(f'namespace "{name}"')
            remaining = [
                label
                for table, label in _OWNED
                if conn.execute(
                    f"SELECT 1 FROM {table} WHERE namespace = ? LIMIT 1", (name,)
                ).fetchone()
            ]
            remaining.extend(extra_owners)
            if remaining:
                raise FailedPrecondition(
                    f'namespace "{name}" must be empty, but it still has {", ".join(remaining)}'
                )
            conn.execute("DELETE FROM namespaces WHERE name = ?", (name,))
