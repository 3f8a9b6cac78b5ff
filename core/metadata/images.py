"""Image records: a name in a namespace pointing at a root descriptor.

The record is what keeps an image's blobs alive for garbage collection; the
blobs themselves live in the content store. Validation and update masks follow
containerd: names are free-form but not empty, the target must be a complete
descriptor, and the paths `labels[.k]`, `target`, `annotations[.k]` are the only
updatable ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core import filters
from core import labels as label_rules
from core.descriptor import Descriptor, validate_digest
from core.errors import AlreadyExists, InvalidArgument, NotFound
from core.metadata import masks
from core.metadata.db import Database, dump_labels, load_labels, now_after, now_us
from core.metadata.namespaces import NamespaceStore


@dataclass
class Image:
    name: str
    target: Descriptor
    labels: dict[str, str] = field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0


def image_adaptor(image: Image) -> filters.Adaptor:
    return filters.field_adaptor(
        {
            "name": image.name,
            "target.digest": image.target.digest,
            "target.mediatype": image.target.media_type,
        },
        {"labels": image.labels, "annotations": image.target.annotations},
    )


def _validate(image: Image) -> None:
    if not image.name:
        raise InvalidArgument("image name must not be empty")
    label_rules.validate_all(image.labels)
    if not image.target.media_type:
        raise InvalidArgument(f'image "{image.name}": target media type must be set')
    validate_digest(image.target.digest)
    if image.target.size <= 0:
        raise InvalidArgument(f'image "{image.name}": target size must be greater than zero')


def _from_row(row) -> Image:  # type: ignore[no-untyped-def]
    return Image(
        name=row["name"],
        target=Descriptor(
            row["media_type"], row["digest"], row["size"], load_labels(row["annotations"])
        ),
        labels=load_labels(row["labels"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class ImageStore:
    def __init__(self, db: Database, namespaces: NamespaceStore) -> None:
        self.db = db
        self.namespaces = namespaces

    def get(self, namespace: str, name: str) -> Image:
        row = self.db.conn.execute(
            "SELECT * FROM images WHERE namespace = ? AND name = ?", (namespace, name)
        ).fetchone()
        if row is None:
            raise NotFound(f'image "{name}"')
        return _from_row(row)

    def list(self, namespace: str, filter_strings: Sequence[str] = ()) -> list[Image]:
        match = filters.parse_all(filter_strings)
        rows = self.db.conn.execute(
            "SELECT * FROM images WHERE namespace = ? ORDER BY name", (namespace,)
        )
        images = [_from_row(r) for r in rows]
        return [i for i in images if match.match(image_adaptor(i))]

    def all_targets(self) -> list[tuple[str, str]]:
        """(namespace, target digest) of every image: roots for garbage collection."""
        rows = self.db.conn.execute("SELECT namespace, digest FROM images")
        return [(r[0], r[1]) for r in rows]

    def all_labels(self) -> list[tuple[str, dict[str, str]]]:
        rows = self.db.conn.execute("SELECT namespace, labels FROM images WHERE labels != '{}'")
        return [(r[0], load_labels(r[1])) for r in rows]

    def create(
        self, namespace: str, image: Image, check: Callable[[Image], None] | None = None
    ) -> Image:
        """Store a new image; `check` may still refuse the finished record."""
        _validate(image)
        now = now_us()
        image.created_at = image.updated_at = now
        if check is not None:
            check(image)
        with self.db.tx() as conn:
            self.namespaces.ensure(namespace)
            exists = conn.execute(
                "SELECT 1 FROM images WHERE namespace = ? AND name = ?", (namespace, image.name)
            ).fetchone()
            if exists:
                raise AlreadyExists(f'image "{image.name}"')
            self._write(conn, namespace, image, insert=True)
        return image

    def update(
        self,
        namespace: str,
        image: Image,
        paths: Sequence[str],
        check: Callable[[Image], None] | None = None,
    ) -> Image:
        if not image.name:
            raise InvalidArgument("image name must not be empty")
        with self.db.tx() as conn:
            current = self.get(namespace, image.name)
            if paths:
                rest = masks.apply_paths(
                    paths,
                    {
                        "labels": (current.labels, image.labels),
                        "annotations": (current.target.annotations, image.target.annotations),
                    },
                    "image",
                    others=("target",),
                )
                if "target" in rest:
                    current.target = image.target
            else:
                current.labels = dict(image.labels)
                current.target = image.target
            _validate(current)
            current.updated_at = now_after(current.updated_at)
            if check is not None:
                check(current)
            self._write(conn, namespace, current, insert=False)
        return current

    def delete(self, namespace: str, name: str) -> None:
        with self.db.tx() as conn:
            cur = conn.execute(
                "DELETE FROM images WHERE namespace = ? AND name = ?", (namespace, name)
            )
            if cur.rowcount == 0:
                raise NotFound(f'image "{name}"')

    def _write(self, conn, namespace: str, image: Image, *, insert: bool) -> None:  # type: ignore[no-untyped-def]
        values = (
            dump_labels(image.labels),
            image.target.media_type,
            image.target.digest,
            image.target.size,
            dump_labels(image.target.annotations),
            image.created_at,
            image.updated_at,
            namespace,
            image.name,
        )
        if insert:
            conn.execute(
                "INSERT INTO images(labels, media_type, digest, size, annotations, created_at,"
                " updated_at, namespace, name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        else:
            conn.execute(
                "UPDATE images SET labels = ?, media_type = ?, digest = ?, size = ?,"
                " annotations = ?, created_at = ?, updated_at = ? WHERE namespace = ? AND name = ?",
                values,
            )
