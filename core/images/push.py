"""Pushing a local image to a registry, with progress in the pull stream's shape.

This module owns the order and choice of a push: walk the image from its target (narrowed to
one platform when asked, in which case that platform's manifest is pushed as the image), send
every layer and config blob the registry lacks (mounting from another repository of the same
registry when the blob's `containerd.io/distribution.source.<host>` label names one), then
the manifests by digest, and finally the root under the reference's tag. An index whose
manifests are not all present is refused rather than pushed broken. Each blob's bytes are read
from the content store as they are sent; the progress lists every non-document blob with the
bytes sent and its state (waiting, uploading, uploaded, exists).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from core.content.store import ContentStore
from core.descriptor import Descriptor
from core.errors import CtrdeckError, FailedPrecondition, InvalidArgument, NotFound
from core.images import handlers, mediatypes, platforms
from core.images.hosts import Hosts
from core.images.progress import LayerProgress, Progress, PullJob, PullRequest
from core.images.reference import Reference, parse
from core.images.registry import RegistryClient
from core.metadata.content import ContentMetadata
from core.metadata.images import Image, ImageStore

CHUNK = 1 << 20


class Pusher:
    """Pushes images of one namespace, reaching registries as the hosts directory says."""

    def __init__(
        self,
        content: ContentStore,
        records: ContentMetadata,
        images: ImageStore,
        hosts_dir: str,
        namespace: str,
    ) -> None:
        self.content = content
        self.records = records
        self.images = images
        self.hosts_dir = hosts_dir
        self.namespace = namespace

    def _read(self, desc: Descriptor) -> bytes:
        if not self.records.has(self.namespace, desc.digest):
            raise NotFound(f"content {desc.digest} of the image is not in the store")
        return self.content.path(desc.digest).read_bytes()

    def plan(self, image: Image, platform: str) -> tuple[Descriptor, list[Descriptor]]:
        """The root to push and every descriptor under it, children before parents."""
        root = image.target
        if platform and mediatypes.is_index(root.media_type):
            kids = handlers.index_entries(self._read(root), f"index {root.digest}")
            root = handlers.select_manifests(kids, platforms.only(platforms.parse(platform)), 1)[0]
        order: list[Descriptor] = []
        for desc, kids in handlers.walk(root, self._read):
            order.append(desc)
            if mediatypes.is_index(desc.media_type):
                missing = [
                    k.descriptor.digest
                    for k in kids
                    if not self.records.has(self.namespace, k.descriptor.digest)
                ]
                if missing:
                    raise FailedPrecondition(
                        f"image {image.name} lists manifests that are not in the store "
                        f"({', '.join(missing)}); push one platform with --platform"
                    )
        for desc in order:
            if not self.records.has(self.namespace, desc.digest):
                raise NotFound(f"content {desc.digest} of image {image.name} is not in the store")
        return root, list(reversed(order))

    async def push(
        self, name: str, remote: str = "", platform: str = "", *, plain_http: bool = False,
        user: str = "",
    ) -> AsyncIterator[Progress]:  # fmt: skip
        image = self.images.get(self.namespace, name)
        ref = parse(remote or name)
        root, order = self.plan(image, platform)
        credentials: Callable[[str], tuple[str, str] | None] | None = None
        if user:
            username, sep, secret = user.partition(":")
            if not sep:
                raise InvalidArgument("user must be USERNAME:SECRET")
            credentials = lambda _host: (username, secret)  # noqa: E731
        job = PullJob(self.namespace, PullRequest(ref=str(ref)), phase="pushing")
        blobs = [d for d in order if not _is_document(d)]
        for d in blobs:
            job.layers[d.digest] = LayerProgress(d.digest, d.media_type, d.size)
        hosts = Hosts(self.hosts_dir, plain_http=plain_http)
        queue: asyncio.Queue[Progress | BaseException | None] = asyncio.Queue()

        async def work() -> None:
            async with RegistryClient(hosts, credentials=credentials) as client:
                async with asyncio.TaskGroup() as group:
                    for d in blobs:
                        group.create_task(self._blob(client, ref, d, job, queue))
                for d in order:
                    if _is_document(d):
                        body = await asyncio.to_thread(self._read, d)
                        tag = ref.tag if d.digest == root.digest and not ref.digest else d.digest
                        await client.push_manifest(ref, d, body, tag=tag or d.digest)

        task = asyncio.create_task(work())
        task.add_done_callback(
            lambda t: queue.put_nowait(
                t.exception() if not t.cancelled() and t.exception() is not None else None
            )
        )
        try:
            yield job.snapshot()
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise _first(item)
                yield item
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        job.phase, job.message = "done", f"pushed {ref}"
        yield job.snapshot()

    async def _blob(
        self,
        client: RegistryClient,
        ref: Reference,
        desc: Descriptor,
        job: PullJob,
        queue: asyncio.Queue[Progress | BaseException | None],
    ) -> None:
        path = self.content.path(desc.digest)
        labels = self.records.get(self.namespace, desc.digest).labels
        key, _ = handlers.source_label(ref)
        sources = [r for r in labels.get(key, "").split(",") if r and r != ref.path]

        async def stream() -> AsyncIterator[bytes]:
            with path.open("rb") as f:
                while chunk := await asyncio.to_thread(f.read, CHUNK):
                    yield chunk

        def sent(n: int) -> None:
            job.layers[desc.digest].offset = n
            queue.put_nowait(job.snapshot())

        job.layers[desc.digest].state = "uploading"
        queue.put_nowait(job.snapshot())
        uploaded = await client.push_blob(
            ref, desc, stream, mount_from=sources[0] if sources else "", progress=sent
        )
        layer = job.layers[desc.digest]
        layer.state, layer.offset = ("uploaded" if uploaded else "exists"), desc.size
        queue.put_nowait(job.snapshot())


def _is_document(desc: Descriptor) -> bool:
    return mediatypes.is_index(desc.media_type) or mediatypes.is_manifest(desc.media_type)


def _first(exc: BaseException) -> BaseException:
    if isinstance(exc, BaseExceptionGroup):
        for leaf in exc.exceptions:
            found = _first(leaf)
            if isinstance(found, CtrdeckError):
                return found
        return _first(exc.exceptions[0])
    return exc
