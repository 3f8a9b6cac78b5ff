"""Storing an image's blobs for a namespace: owning, ingesting and labelling them.

Pull and import both move blobs into the content store the same way, and this
module owns that way: a blob the store already holds becomes the namespace's
(attached to the work's lease, so it stays until the image record exists, as a
new one would); otherwise it is written under an ingest ref (waiting while
another pipeline holds the same one), committed through the garbage collector
once its size and digest are verified, and labelled. Bytes that fail
verification are thrown away, so no later attempt resumes from them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from core.content.store import ContentStore, Writer
from core.descriptor import Descriptor
from core.errors import AlreadyExists, CtrdeckError, FailedPrecondition, NotFound, Unavailable
from core.gc import GarbageCollector
from core.images import handlers, mediatypes
from core.metadata import Metadata
from core.metadata.content import ingest_key
from core.metadata.leases import Resource

LOCK_RETRY = 0.05


def ref_kind(desc: Descriptor) -> str:
    """The ingest ref kind ctr uses for a descriptor: index, manifest, config, layer, unknown."""
    media_type = desc.media_type
    if mediatypes.is_index(media_type):
        return "index"
    if mediatypes.is_manifest(media_type):
        return "manifest"
    if mediatypes.is_config(media_type):
        return "config"
    if mediatypes.is_layer(media_type):
        return "layer"
    return "unknown"


class Blobs:
    """The content store, content ownership and the collector, as pull and import use them."""

    def __init__(self, content: ContentStore, metadata: Metadata, gc: GarbageCollector) -> None:
        self.content = content
        self.metadata = metadata
        self.gc = gc

    def has(self, namespace: str, digest: str) -> bool:
        return self.metadata.content.has(namespace, digest)

    def labels(self, namespace: str, digest: str) -> dict[str, str]:
        """The labels of a blob the namespace owns."""
        return dict(self.metadata.content.get(namespace, digest).labels)

    def read(self, namespace: str, desc: Descriptor) -> bytes:
        """The bytes of a blob the namespace owns."""
        if not self.has(namespace, desc.digest):
            raise NotFound(f"content {desc.digest} is not in the store")
        return self.content.path(desc.digest).read_bytes()

    def set_labels(self, namespace: str, digest: str, labels: Mapping[str, str]) -> None:
        """Set these labels on a blob the namespace owns, leaving its other labels alone."""
        meta = self.metadata.content
        changes = handlers.label_updates(meta.get(namespace, digest).labels, labels)
        if changes:
            meta.update(namespace, digest, changes, [f"labels.{k}" for k in changes])

    def own(
        self, namespace: str, lease: str | None, desc: Descriptor, labels: Mapping[str, str]
    ) -> bool:
        """Make a blob the store already holds the namespace's; False if the store lacks it."""
        meta = self.metadata.content
        if meta.has(namespace, desc.digest):
            self._attach(namespace, lease, desc.digest)
            self.set_labels(namespace, desc.digest, labels)
            return True
        self.gc.pins.spare(desc.digest)
        if not self.content.exists(desc.digest):
            return False
        meta.add(namespace, desc.digest, self.content.info(desc.digest).size, labels, lease)
        self.set_labels(namespace, desc.digest, labels)
        return True

    def _attach(self, namespace: str, lease: str | None, digest: str) -> None:
        # A blob reused by this work must stay until the work's record exists, as a new one would.
        if lease:
            with self.metadata.db.tx():
                self.metadata.leases.attach(namespace, lease, Resource(digest, "content"))

    async def commit_bytes(
        self,
        namespace: str,
        lease: str | None,
        ref: str,
        desc: Descriptor,
        data: bytes,
        labels: Mapping[str, str],
    ) -> None:
        """Store a small verified document (index, manifest, config) under ingest `ref`."""
        if self.own(namespace, lease, desc, labels):
            return
        writer = await self.open_ingest(namespace, lease, ref, desc, labels)
        if writer is None:
            return
        try:
            if writer.offset:
                writer.truncate(0)
            await asyncio.to_thread(writer.write, data)
            await self.commit_ingest(namespace, lease, ref, writer, desc, labels)
        except FailedPrecondition:
            self.abort_ingest(namespace, ref)
            raise
        finally:
            writer.close()

    async def open_ingest(
        self,
        namespace: str,
        lease: str | None,
        ref: str,
        desc: Descriptor,
        labels: Mapping[str, str],
    ) -> Writer | None:
        """The ingest writer for `ref`, waiting while another pull holds it; None if it landed."""
        key = ingest_key(namespace, ref)
        while True:
            try:
                writer = await asyncio.to_thread(
                    self.content.open_writer, key, desc.size, desc.digest
                )
            except AlreadyExists:
                self.own(namespace, lease, desc, labels)
                return None
            except Unavailable:
                # Another pipeline is writing the same blob: wait for it to land (or give up).
                await asyncio.sleep(LOCK_RETRY)
                if self.own(namespace, lease, desc, labels):
                    return None
                continue
            self.metadata.content.begin_ingest(namespace, ref, desc.digest, lease)
            return writer

    async def commit_ingest(
        self,
        namespace: str,
        lease: str | None,
        ref: str,
        writer: Writer,
        desc: Descriptor,
        labels: Mapping[str, str],
    ) -> None:
        """Commit a fully written ingest, record it with its labels, and forget the ingest."""
        await self.gc.commit_blob(namespace, lease, writer, desc.size, desc.digest, labels, ref)
        self.set_labels(namespace, desc.digest, labels)

    def abort_ingest(self, namespace: str, ref: str) -> None:
        """Throw away an ingest whose bytes are wrong, so no later attempt resumes from them."""
        with contextlib.suppress(CtrdeckError):
            self.content.abort(ingest_key(namespace, ref))
        self.metadata.content.end_ingest(namespace, ref)
