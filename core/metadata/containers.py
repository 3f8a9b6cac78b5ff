"""Container records: the metadata of a container, not its running task.

A container is an id in a namespace with its image name, runtime, OCI spec,
snapshot and extensions. The spec, runtime options and extensions are opaque
`Any` payloads kept byte for byte, because `ctr` decodes them again. The rules
follow containerd: the id is an identifier, a runtime name and a spec are
required, a snapshot key needs a snapshotter, and the snapshotter and runtime
name never change after creation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core import filters, identifiers
from core import labels as label_rules
from core.errors import AlreadyExists, InvalidArgument, NotFound
from core.metadata import masks
from core.metadata.db import Database, dump_labels, load_labels, now_after, now_us
from core.metadata.namespaces import NamespaceStore


@dataclass
class AnyValue:
    """A protobuf Any as stored: its type URL and its bytes, never reinterpreted."""

    type_url: str
    value: bytes


@dataclass
class Container:
    id: str
    runtime_name: str = ""
    runtime_options: AnyValue | None = None
    spec: AnyValue | None = None
    image: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    snapshotter: str = ""
    snapshot_key: str = ""
    extensions: dict[str, AnyValue] = field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0


def container_adaptor(c: Container) -> filters.Adaptor:
    return filters.field_adaptor(
        {"id": c.id, "image": c.image, "runtime.name": c.runtime_name},
        {"labels": c.labels},
    )


def _validate(c: Container) -> None:
    identifiers.validate(c.id)
    label_rules.validate_all(c.labels)
    for key in c.extensions:
        if not key:
            raise InvalidArgument(f'container "{c.id}": extension key must not be empty')
    if not c.runtime_name:
        raise InvalidArgument(f'container "{c.id}": runtime name must be set')
    if c.spec is None:
        raise InvalidArgument(f'container "{c.id}": a spec is required')
    if c.snapshot_key and not c.snapshotter:
        raise InvalidArgument(
            f'container "{c.id}": snapshot key "{c.snapshot_key}" needs a snapshotter'
        )


def _any(type_url: str | None, value: bytes | None) -> AnyValue | None:
    return None if type_url is None else AnyValue(type_url, bytes(value or b""))


class ContainerStore:
    def __init__(self, db: Database, namespaces: NamespaceStore) -> None:
        self.db = db
        self.namespaces = namespaces

    def _row_to_container(self, namespace: str, row) -> Container:  # type: ignore[no-untyped-def]
        ext_rows = self.db.conn.execute(
            "SELECT name, type_url, value FROM container_extensions"
            " WHERE namespace = ? AND container_id = ?",
            (namespace, row["id"]),
        )
        return Container(
            id=row["id"],
            runtime_name=row["runtime_name"],
            runtime_options=_any(row["runtime_options_type"], row["runtime_options"]),
            spec=_any(row["spec_type"], row["spec"]),
            image=row["image"],
            labels=load_labels(row["labels"]),
            snapshotter=row["snapshotter"],
            snapshot_key=row["snapshot_key"],
            extensions={e["name"]: AnyValue(e["type_url"], bytes(e["value"])) for e in ext_rows},
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def get(self, namespace: str, container_id: str) -> Container:
        row = self.db.conn.execute(
            "SELECT * FROM containers WHERE namespace = ? AND id = ?", (namespace, container_id)
        ).fetchone()
        if row is None:
            raise NotFound(f'container "{container_id}" in namespace "{namespace}"')
        return self._row_to_container(namespace, row)

    def list(self, namespace: str, filter_strings: Sequence[str] = ()) -> list[Container]:
        match = filters.parse_all(filter_strings)
        rows = self.db.conn.execute(
            "SELECT * FROM containers WHERE namespace = ? ORDER BY id", (namespace,)
        ).fetchall()
        out = []
        for row in rows:
            c = self._row_to_container(namespace, row)
            if match.match(container_adaptor(c)):
                out.append(c)
        return out

    def all_snapshots(self) -> list[tuple[str, str, str]]:
        """(namespace, snapshotter, key) each container holds: roots for garbage collection."""
        rows = self.db.conn.execute(
            "SELECT namespace, snapshotter, snapshot_key FROM containers WHERE snapshot_key != ''"
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def all_labels(self) -> list[tuple[str, dict[str, str]]]:
        rows = self.db.conn.execute("SELECT namespace, labels FROM containers WHERE labels != '{}'")
        return [(r[0], load_labels(r[1])) for r in rows]

    def create(
        self, namespace: str, c: Container, check: Callable[[Container], None] | None = None
    ) -> Container:
        """Store a new container; `check` may still refuse the finished record."""
        _validate(c)
        c.created_at = c.updated_at = now_us()
        if check is not None:
            check(c)
        with self.db.tx() as conn:
            self.namespaces.ensure(namespace)
            if conn.execute(
                "SELECT 1 FROM containers WHERE namespace = ? AND id = ?", (namespace, c.id)
            ).fetchone():
                raise AlreadyExists(f'container "{c.id}"')
            self._write(conn, namespace, c, insert=True)
        return c

    def update(
        self,
        namespace: str,
        c: Container,
        paths: Sequence[str],
        check: Callable[[Container], None] | None = None,
    ) -> Container:
        if not c.id:
            raise InvalidArgument("container id must not be empty")
        with self.db.tx() as conn:
            cur = self.get(namespace, c.id)
            if not paths:
                if c.snapshotter != cur.snapshotter:
                    raise InvalidArgument(f'container "{c.id}": snapshotter field is immutable')
                if c.runtime_name != cur.runtime_name:
                    raise InvalidArgument(f'container "{c.id}": runtime.name field is immutable')
                paths = ["labels", "spec", "extensions", "image", "snapshotkey"]
            rest = masks.apply_paths(
                paths,
                {"labels": (cur.labels, c.labels), "extensions": (cur.extensions, c.extensions)},
                f'container "{c.id}"',
                others=("spec", "image", "snapshotkey", "snapshotter", "runtime.name"),
            )
            for path in rest:
                if path == "spec":
                    cur.spec = c.spec
                elif path == "image":
                    cur.image = c.image
                elif path == "snapshotkey":
                    cur.snapshot_key = c.snapshot_key
                else:
                    raise InvalidArgument(f'container "{c.id}": {path} field is immutable')
            _validate(cur)
            cur.updated_at = now_after(cur.updated_at)
            if check is not None:
                check(cur)
            self._write(conn, namespace, cur, insert=False)
        return cur

    def delete(self, namespace: str, container_id: str) -> None:
        with self.db.tx() as conn:
            cur = conn.execute(
                "DELETE FROM containers WHERE namespace = ? AND id = ?", (namespace, container_id)
            )
            if cur.rowcount == 0:
                raise NotFound(f'container "{container_id}" in namespace "{namespace}"')

    def _write(self, conn, namespace: str, c: Container, *, insert: bool) -> None:  # type: ignore[no-untyped-def]
        opts = c.runtime_options
        values = (
            dump_labels(c.labels),
            c.image,
            c.runtime_name,
            opts.type_url if opts else None,
            opts.value if opts else None,
            c.spec.type_url if c.spec else None,
            c.spec.value if c.spec else None,
            c.snapshotter,
            c.snapshot_key,
            c.created_at,
            c.updated_at,
            namespace,
            c.id,
        )
        if insert:
            conn.execute(
                "INSERT INTO containers(labels, image, runtime_name, runtime_options_type,"
                " runtime_options, spec_type, spec, snapshotter, snapshot_key, created_at,"
                " updated_at, namespace, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        else:
            conn.execute(
                "UPDATE containers SET labels = ?, image = ?, runtime_name = ?,"
                " runtime_options_type = ?, runtime_options = ?, spec_type = ?, spec = ?,"
                " snapshotter = ?, snapshot_key = ?, created_at = ?, updated_at = ?"
                " WHERE namespace = ? AND id = ?",
                values,
            )
            conn.execute(
                "DELETE FROM container_extensions WHERE namespace = ? AND container_id = ?",
                (namespace, c.id),
            )
        conn.executemany(
            "INSERT INTO container_extensions(namespace, container_id, name, type_url, value)"
            " VALUES (?, ?, ?, ?, ?)",
            [(namespace, c.id, k, v.type_url, v.value) for k, v in c.extensions.items()],
        )
