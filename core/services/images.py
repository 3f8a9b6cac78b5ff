"""Images: named references to root descriptors, with their events.

The image record is the root that keeps an image's blobs and snapshots from
garbage collection; `Delete` with `sync` collects before it returns. `Pull`
(ctrdeck's own) streams the progress of the server-side pull pipeline; `Import`,
`Export` and `Push` (also ctrdeck's own) move images in and out as tarballs and
to registries. The work is `core/images`' (the engine's puller, imports,
exporter and pusher); this module turns messages into their calls and their
results into messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from core import context
from core.api.containerd.services.images import v1 as api
from core.api.google.protobuf import Empty
from core.engine import Engine
from core.images.progress import Progress
from core.metadata.images import Image
from core.services.codec import EncodingCache, Preencoded, check_sendable, repeated
from core.services.convert import descriptor_in, descriptor_out, ts
from core.services.replies import ReplyCache


def image_out(image: Image) -> api.Image:
    return api.Image(
        name=image.name,
        labels=image.labels,
        target=descriptor_out(image.target),
        created_at=ts(image.created_at),
        updated_at=ts(image.updated_at),
    )


def progress_out(progress: Progress) -> api.PullImageProgress:
    return api.PullImageProgress(
        phase=progress.phase,
        layers=[
            api.LayerProgress(
                digest=layer.digest,
                media_type=layer.media_type,
                size=layer.size,
                offset=layer.offset,
                state=layer.state,
                applied=layer.applied,
            )
            for layer in progress.layers
        ],
        image=image_out(progress.image) if progress.image is not None else None,
        message=progress.message,
    )


def image_in(message: api.Image | None) -> Image:
    message = message or api.Image()
    return Image(name=message.name, target=descriptor_in(message.target), labels=message.labels)


class ImagesService(api.ImagesBase):
    PARTS: tuple[str, ...] = (
        "metadata",
        "content",
        "events",
        "gc",
        "snapshot_records",
        "snapshotters",
    )
    """The engine's parts it uses: Introspection lists their types as its `requires`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.metadata.images
        self.encoded = EncodingCache()
        db = engine.metadata.db
        self.replies = ReplyCache(lambda: db.generation)

    def _sendable(self, ns: str, image: Image) -> None:
        # A GetImageResponse: the image as field 1, as in Create's and Update's replies.
        check_sendable(
            repeated(1, [self._encoded(ns, image)]),
            self.engine.config.grpc.max_send_message_size,
            f'image "{image.name}"',
        )

    def _encoded(self, ns: str, image: Image) -> bytes:
        # The record's update time is part of the key, so an update never serves stale bytes.
        return self.encoded.get((ns, image.name, image.updated_at), lambda: image_out(image))

    async def get(self, message: api.GetImageRequest) -> api.GetImageResponse:
        ns = context.namespace()
        image = self.store.get(ns, message.name)
        return Preencoded(repeated(1, [self._encoded(ns, image)]))  # type: ignore[return-value]

    async def list(self, message: api.ListImagesRequest) -> api.ListImagesResponse:
        ns = context.namespace()
        filters = tuple(message.filters)
        data = self.replies.get((ns, filters), lambda: self._encoded_list(ns, filters))
        return Preencoded(data)  # type: ignore[return-value]

    def _encoded_list(self, ns: str, filters: tuple[str, ...]) -> bytes:
        images = self.store.list(ns, list(filters))
        return repeated(1, (self._encoded(ns, i) for i in images))

    async def create(self, message: api.CreateImageRequest) -> api.CreateImageResponse:
        ns = context.namespace()
        image = self.store.create(
            ns, image_in(message.image), lambda image: self._sendable(ns, image)
        )
        self.engine.events.publish(
            ns, "/images/create", api.ImageCreate(name=image.name, labels=image.labels)
        )
        return Preencoded(repeated(1, [self._encoded(ns, image)]))  # type: ignore[return-value]

    async def update(self, message: api.UpdateImageRequest) -> api.UpdateImageResponse:
        ns = context.namespace()
        paths = list(message.update_mask.paths) if message.update_mask else []
        image = self.store.update(
            ns, image_in(message.image), paths, lambda image: self._sendable(ns, image)
        )
        self.engine.events.publish(
            ns, "/images/update", api.ImageUpdate(name=image.name, labels=image.labels)
        )
        return Preencoded(repeated(1, [self._encoded(ns, image)]))  # type: ignore[return-value]

    async def delete(self, message: api.DeleteImageRequest) -> Empty:
        ns = context.namespace()
        self.store.delete(ns, message.name)
        self.engine.events.publish(ns, "/images/delete", api.ImageDelete(name=message.name))
        await self.engine.gc.collect(wait=message.sync)
        return Empty()

    async def pull(self, message: api.PullImageRequest) -> AsyncIterator[api.PullImageProgress]:
        from core.images.pull import request_from  # on first pull: the registry client, TLS

        request = request_from(
            message.ref,
            message.snapshotter,
            message.platform,
            unpack=not message.skip_unpack,
            labels=message.labels,
            plain_http=message.plain_http,
            user=message.user,
            all_platforms=message.all_platforms,
        )
        async for progress in self.engine.puller.pull(context.namespace(), request):
            yield progress_out(progress)

    async def import_(
        self, messages: AsyncIterator[api.ImportImageRequest]
    ) -> api.ImportImageResponse:
        from core.images.archive import ImportOptions  # on first import: tar, gzip

        # The first message carries the options; every message may carry tarball bytes.
        first = await anext(aiter(messages), None) or api.ImportImageRequest()
        options = ImportOptions(
            base_name=first.base_name,
            snapshotter=first.snapshotter,
            platform=first.platform,
            unpack=not first.skip_unpack,
            labels=dict(first.labels),
        )

        async def chunks() -> AsyncIterator[bytes]:
            if first.data:
                yield bytes(first.data)
            async for message in messages:
                if message.data:
                    yield bytes(message.data)

        images = await self.engine.imports.run(context.namespace(), chunks(), options)
        return api.ImportImageResponse(images=[image_out(i) for i in images])

    async def export(self, message: api.ExportImageRequest) -> AsyncIterator[api.ExportImageChunk]:
        exporter = self.engine.exporter(context.namespace())
        async for chunk in exporter.stream(
            list(message.names), message.platform, not message.skip_docker_manifest
        ):
            yield api.ExportImageChunk(data=chunk)

    async def push(self, message: api.PushImageRequest) -> AsyncIterator[api.PullImageProgress]:
        pusher = self.engine.pusher(context.namespace())
        async for progress in pusher.push(
            message.name,
            message.ref,
            message.platform,
            plain_http=message.plain_http,
            user=message.user,
        ):
            yield progress_out(progress)
