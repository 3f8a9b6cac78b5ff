"""The metadata store: every record the engine keeps, in one SQLite database.

`Metadata` opens the database and hands out one store per kind of record
(namespaces, images, containers, leases, content ownership). Stores validate
what they are given and raise typed errors from `core.errors`; they know nothing
of gRPC or events.
"""

from __future__ import annotations

from pathlib import Path

from core.metadata.containers import ContainerStore
from core.metadata.content import ContentMetadata
from core.metadata.db import Database
from core.metadata.images import ImageStore
from core.metadata.leases import LeaseStore
from core.metadata.namespaces import NamespaceStore


class Metadata:
    def __init__(self, path: Path) -> None:
        self.db = Database(path)
        self.namespaces = NamespaceStore(self.db)
        self.images = ImageStore(self.db, self.namespaces)
        self.containers = ContainerStore(self.db, self.namespaces)
        self.leases = LeaseStore(self.db, self.namespaces)
        self.content = ContentMetadata(self.db, self.namespaces, self.leases)

    def close(self) -> None:
        self.db.close()
