"""Leases: named sets of resources that garbage collection must not take.

A client takes a lease, does its work under the `containerd-lease` header, and
every blob, ingest or snapshot made meanwhile is attached to the lease until the
record that keeps it for good (an image, a container) exists. A lease whose
`containerd.io/gc.expire` time has passed protects nothing.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from core import filters
from core import labels as label_rules
from core.descriptor import validate_digest
from core.errors import AlreadyExists, InvalidArgument, NotFound, NotImplementedYet
from core.metadata.db import Database, dump_labels, load_labels, now_us
from core.metadata.namespaces import NamespaceStore

EXPIRE_LABEL = "containerd.io/gc.expire"
FLAT_LABEL = "containerd.io/gc.flat"
# Whether a lease holds anything besides snapshots that a container of its namespace
# holds too. A container is a root of its snapshot and of all under it, as the lease
# was, so losing such a lease leaves nothing unreachable.
HOLDS_MORE_THAN_CONTAINERS = """
    SELECT EXISTS (
        SELECT 1 FROM lease_resources r
        WHERE r.namespace = ? AND r.lease_id = ?
        AND NOT (substr(r.type, 1, 10) = 'snapshots/' AND EXISTS (
            SELECT 1 FROM containers c
            WHERE c.namespace = r.namespace AND c.snapshotter = substr(r.type, 11)
            AND c.snapshot_key = r.resource_id
        ))
    )
"""


@dataclass
class Lease:
    id: str
    labels: dict[str, str] = field(default_factory=dict)
    created_at: int = 0

    def expired(self, now: datetime | None = None) -> bool:
        value = self.labels.get(EXPIRE_LABEL)
        if not value:
            return False
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return False
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when <= (now or datetime.now(UTC))


@dataclass(frozen=True)
class Resource:
    id: str
    type: str


def new_lease_id() -> str:
    """The id shape containerd and ctr use: `<nanoseconds>-<6 base64url characters>`."""
    suffix = base64.urlsafe_b64encode(os.urandom(6)).decode()[:6]
    return f"{time.time_ns() % 10**9}-{suffix}"


def validate_resource(resource: Resource) -> None:
    if not resource.id:
        raise InvalidArgument("lease resource id must not be empty")
    if resource.type == "content":
        validate_digest(resource.id)
    elif resource.type == "ingests" or resource.type.startswith("snapshots/"):
        if resource.type == "snapshots/":
            raise InvalidArgument("lease resource type snapshots/ needs a snapshotter name")
    else:
        raise NotImplementedYet(f"unsupported lease resource type {resource.type!r}")


class LeaseStore:
    def __init__(self, db: Database, namespaces: NamespaceStore) -> None:
        self.db = db
        self.namespaces = namespaces

    def _require(self, namespace: str, lease_id: str) -> None:
        if not self.db.conn.execute(
            "SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (namespace, lease_id)
        ).fetchone():
            raise NotFound(f'lease "{lease_id}"')

    def create(self, namespace: str, lease_id: str, labels: Mapping[str, str]) -> Lease:
        label_rules.validate_all(labels)
        lease = Lease(lease_id or new_lease_id(), dict(labels), now_us())
        with self.db.tx() as conn:
            self.namespaces.ensure(namespace)
            if conn.execute(
                "SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (namespace, lease.id)
            ).fetchone():
                raise AlreadyExists(f'lease "{lease.id}"')
            conn.execute(
                "INSERT INTO leases(namespace, id, labels, created_at) VALUES (?, ?, ?, ?)",
                (namespace, lease.id, dump_labels(lease.labels), lease.created_at),
            )
        return lease

    def delete(self, namespace: str, lease_id: str) -> bool:
        """Delete a lease; whether what it held may now be garbage.

        It may not when it held nothing, or only snapshots containers hold too: the
        lease `ctr run` (and any client creating a container) drops once its container
        exists, which leaves a collection nothing to find.
        """
        with self.db.tx() as conn:
            holds_more = conn.execute(HOLDS_MORE_THAN_CONTAINERS, (namespace, lease_id))
            may_free = bool(holds_more.fetchone()[0])
            cur = conn.execute(
                "DELETE FROM leases WHERE namespace = ? AND id = ?", (namespace, lease_id)
            )
            if cur.rowcount == 0:
                raise NotFound(f'lease "{lease_id}"')
        return may_free

    def list(self, namespace: str, filter_strings: Sequence[str] = ()) -> list[Lease]:
        match = filters.parse_all(filter_strings)
        rows = self.db.conn.execute(
            "SELECT id, labels, created_at FROM leases WHERE namespace = ? ORDER BY created_at",
            (namespace,),
        )
        leases = [Lease(r["id"], load_labels(r["labels"]), r["created_at"]) for r in rows]
        return [
            lease
            for lease in leases
            if match.match(filters.field_adaptor({"id": lease.id}, {"labels": lease.labels}))
        ]

    def all(self) -> list[tuple[str, Lease]]:
        rows = self.db.conn.execute("SELECT namespace, id, labels, created_at FROM leases")
        return [(r[0], Lease(r[1], load_labels(r[2]), r[3])) for r in rows]

    def add_resource(self, namespace: str, lease_id: str, resource: Resource) -> None:
        validate_resource(resource)
        with self.db.tx() as conn:
            self._require(namespace, lease_id)
            conn.execute(
                "INSERT OR IGNORE INTO lease_resources(namespace, lease_id, type, resource_id)"
                " VALUES (?, ?, ?, ?)",
                (namespace, lease_id, resource.type, resource.id),
            )

    def delete_resource(self, namespace: str, lease_id: str, resource: Resource) -> None:
        validate_resource(resource)
        with self.db.tx() as conn:
            self._require(namespace, lease_id)
            conn.execute(
                "DELETE FROM lease_resources WHERE namespace = ? AND lease_id = ? AND type = ?"
                " AND resource_id = ?",
                (namespace, lease_id, resource.type, resource.id),
            )

    def list_resources(self, namespace: str, lease_id: str) -> list[Resource]:
        self._require(namespace, lease_id)
        rows = self.db.conn.execute(
            "SELECT resource_id, type FROM lease_resources WHERE namespace = ? AND lease_id = ?"
            " ORDER BY type, resource_id",
            (namespace, lease_id),
        )
        return [Resource(r[0], r[1]) for r in rows]

    def resources_of(self, namespace: str, lease_id: str) -> list[Resource]:
        rows = self.db.conn.execute(
            "SELECT resource_id, type FROM lease_resources WHERE namespace = ? AND lease_id = ?",
            (namespace, lease_id),
        )
        return [Resource(r[0], r[1]) for r in rows]

    def attach(self, namespace: str, lease_id: str | None, resource: Resource) -> None:
        """Attach work done under a lease header; inside the caller's transaction."""
        if not lease_id:
            return
        self._require(namespace, lease_id)
        self.db.conn.execute(
            "INSERT OR IGNORE INTO lease_resources(namespace, lease_id, type, resource_id)"
            " VALUES (?, ?, ?, ?)",
            (namespace, lease_id, resource.type, resource.id),
        )
