"""The records image work leaves: its lease while it runs, and the image at the end.

Pull and import hold their blobs and snapshots under a lease that expires by
itself (`containerd.io/gc.expire`), so a crashed engine leaves nothing for
good; the work ends by dropping it and having the collector run (waiting for
it after a failure, so nothing half-stored is visible when the caller hears).
The image record is created as `Images.Create` would, or fully updated when
the name exists (as ctr does), with the event either one publishes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import betterproto2

from core.api.containerd.services.images import v1 as images_api
from core.errors import AlreadyExists, CtrdeckError
from core.gc import GarbageCollector
from core.metadata.images import Image, ImageStore
from core.metadata.leases import EXPIRE_LABEL, LeaseStore

LEASE_TTL = timedelta(hours=24)

Publish = Callable[[str, str, betterproto2.Message], None]


class ImageRecords:
    """Images and leases for pull and import, with the events an image record publishes."""

    def __init__(
        self, images: ImageStore, leases: LeaseStore, gc: GarbageCollector, publish: Publish
    ) -> None:
        self.images = images
        self.leases = leases
        self.gc = gc
        self.publish = publish

    def new_lease(self, namespace: str) -> str:
        until = (datetime.now(UTC) + LEASE_TTL).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self.leases.create(namespace, "", {EXPIRE_LABEL: until}).id

    async def drop_lease(self, namespace: str, lease: str, *, failed: bool) -> None:
        """End the work's lease; after a failure, what it stored goes before this returns."""
        with contextlib.suppress(CtrdeckError):
            self.leases.delete(namespace, lease)
        await self.gc.collect(wait=failed)

    def register(self, namespace: str, image: Image) -> Image:
        """Images.Create, falling back to a full Update when the name exists (as ctr does)."""
        try:
            created = self.images.create(namespace, image)
        except AlreadyExists:
            updated = self.images.update(namespace, image, [])
            self.publish(
                namespace,
                "/images/update",
                images_api.ImageUpdate(name=updated.name, labels=updated.labels),
            )
            return updated
        event = images_api.ImageCreate(name=created.name, labels=created.labels)
        self.publish(namespace, "/images/create", event)
        return created
