"""The server-side pull pipeline behind ctrdeck's `Images.Pull`, with its progress stream.

This module owns a pull from the moment a reference arrives to the image record: resolve the
reference with the registry client (hosts from `config.registry.config_path`, plain HTTP only
when asked), take a lease with `containerd.io/gc.expire`, fetch the index, the chosen
platform's manifest, then the config and the layers together into the content store (ingest
refs named as ctr names them, `layer-sha256:...`, resumed when one is left over, every byte
verified before the atomic commit), label the blobs exactly as ctr does (gc references,
distribution source, `containerd.io/uncompressed`, the config's snapshot reference), unpack
each layer as soon as the config, its bytes and the layer below are ready, create or update
the image record (publishing `/images/create` or `/images/update`), and drop the lease. A
failed pull deletes its lease and collects garbage before it reports, so nothing half-pulled
stays visible; an interrupted download keeps its ingest for the next attempt (one stopped
before its first byte leaves none). Concurrent pulls of the same request in the same
namespace share one pipeline, and each caller gets the progress: a snapshot of every layer's
bytes and state, sent on every state change and otherwise at most ten times a second.

Storing the blobs (`blobs.py`), the lease and the image record (`records.py`) and the progress
(`progress.py`) are rooms of their own, shared with import and push.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from core.descriptor import Descriptor
from core.errors import (
    CtrdeckError,
    FailedPrecondition,
    Internal,
    NotFound,
    Unavailable,
)
from core.images import handlers, mediatypes, platforms
from core.images.blobs import Blobs, ref_kind
from core.images.credentials import request_credentials, split_wire_user
from core.images.hosts import Hosts
from core.images.progress import (
    DOWNLOADED,
    DOWNLOADING,
    EXISTS,
    FAILED,
    UNPACKED,
    UNPACKING,
    LayerProgress,
    Progress,
    PullJob,
    PullRequest,
    Subscriber,
)
from core.images.records import ImageRecords
from core.images.reference import Reference, parse
from core.images.registry import RegistryClient
from core.metadata.images import Image

if TYPE_CHECKING:
    from core.images.unpack import Unpacker, Unpackers

log = logging.getLogger("ctrdeck.pull")

PROGRESS_INTERVAL = 0.1
"""Least time between two progress messages that carry only byte counts."""
MAX_INDEX_DEPTH = 4
"""Most levels of indexes above a manifest; deeper is a loop or an attack."""
TEE_LIMIT = 32 << 20
"""Most bytes of a layer held in memory for a streaming unpack."""


class StreamBroken(Exception):
    """A streamed unpack cannot go on: the download failed or started over."""


class LayerTee:
    """A layer's bytes handed from its download to a streaming unpack as they arrive.

    The download (on the event loop) `put`s chunks; the unpack (in a worker thread) `read`s
    them. Until an unpack attaches, at most `limit` bytes are kept, and beyond that, or once
    the download has ended, the tee gives up (the unpack then reads the blob from the store
    once it has landed); once one is attached, the download waits while `limit` bytes are
    unread.
    """

    def __init__(self, limit: int = TEE_LIMIT) -> None:
        self.limit = limit
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._position = 0
        self._eof = False
        self._error: str = ""
        self._attached = False
        self._dropped = False

    def put(self, at: int, chunk: bytes) -> None:
        with self._cond:
            if self._dropped or self._error:
                return
            if at != self._position:
                self._error = f"the download started over at byte {at}"
            else:
                self._chunks.append(chunk)
                self._buffered += len(chunk)
                self._position += len(chunk)
                if not self._attached and self._buffered > self.limit:
                    self._dropped = True
                    self._chunks.clear()
            self._cond.notify_all()

    def full(self) -> bool:
        with self._cond:
            return self._attached and not self._dropped and self._buffered > self.limit

    def wait_for_room(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(
                lambda: self._buffered <= self.limit or self._dropped or bool(self._error),
                timeout,
            )

    def finish(self) -> None:
        with self._cond:
            self._eof = True
            if not self._attached:
                # No unpack took the bytes as they came (the config or a slot was late):
                # it reads the landed blob instead, so they need not stay in memory.
                self._dropped = True
                self._chunks.clear()
                self._buffered = 0
            self._cond.notify_all()

    def fail(self, reason: str) -> None:
        with self._cond:
            if not self._eof:
                self._error = self._error or reason
            self._cond.notify_all()

    def attach(self) -> bool:
        """Become the reader; False if the tee already gave up."""
        with self._cond:
            if self._dropped or self._error:
                return False
            self._attached = True
            return True

    def detach(self) -> None:
        with self._cond:
            self._dropped = True
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify_all()

    def read(self, n: int = -1) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._chunks) or self._eof or bool(self._error))
            if self._chunks:
                chunk = self._chunks.popleft()
                if 0 < n < len(chunk):
                    self._chunks.appendleft(chunk[n:])
                    chunk = chunk[:n]
                self._buffered -= len(chunk)
                self._cond.notify_all()
                return chunk
            if self._error:
                raise StreamBroken(self._error)
            return b""


def first_error(exc: BaseException) -> BaseException:
    """The error to report from a task group: the first typed one, else the first."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = list(_leaves(exc))
        typed = [e for e in leaves if isinstance(e, CtrdeckError)]
        return (typed or leaves or [exc])[0]
    return exc


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:  # type: ignore[type-arg]
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


# -- the pipeline ------------------------------------------------------------------------------


class _Pipeline:
    """One pull's work; all state the callers see goes through `job`."""

    def __init__(
        self,
        blobs: Blobs,
        records: ImageRecords,
        unpackers: Callable[[], Unpackers],
        choose_snapshotter: Callable[[str, str], str],
        job: PullJob,
        lease: str,
        client: RegistryClient,
    ) -> None:
        self.blobs = blobs
        self.records = records
        self.unpackers = unpackers
        self.choose_snapshotter = choose_snapshotter
        self.client = client
        self.job = job
        self.ns = job.namespace
        self.lease = lease
        self.request = job.request
        self.ref: Reference = parse(job.request.ref)
        source_key, repo = handlers.source_label(self.ref)
        self.source_key = source_key
        self.repo = repo

    def _source(self, digest: str) -> dict[str, str]:
        existing = ""
        if self.blobs.has(self.ns, digest):
            existing = self.blobs.labels(self.ns, digest).get(self.source_key, "")
        return {self.source_key: handlers.merge_source(existing, self.repo)}

    async def run(self) -> Image:
        request = self.request
        # A fresh engine's first pull loads the unpacker's modules (the applier, tar, the
        # compressors) in a worker thread while the registry answers and the blobs download.
        loading = (
            asyncio.get_running_loop().run_in_executor(None, self.unpackers)
            if request.unpack
            else None
        )
        try:
            return await self._run(loading)
        finally:
            if loading is not None:
                await loading

    async def _run(self, loading: asyncio.Future[Unpackers] | None) -> Image:
        request = self.request
        matcher = (
            platforms.only(platforms.parse(request.platform))
            if request.platform
            else platforms.default_matcher()
        )
        client = self.client
        root = await client.resolve(self.ref)
        self.job.set_phase("fetching", f"resolved {self.ref} to {root.digest}")
        data = await client.fetch_manifest(self.ref, root)
        # Nothing is stored before the snapshotter is known to be there.
        snapshotter = (
            self.choose_snapshotter(self.ns, request.snapshotter) if loading is not None else ""
        )
        manifest_desc = root
        depth = 0
        others: list[Descriptor] = []
        while mediatypes.is_index(manifest_desc.media_type):
            # Nested indexes are followed to the platform's manifest, as containerd does.
            depth += 1
            if depth > MAX_INDEX_DEPTH:
                raise FailedPrecondition(
                    f"{self.ref}: image indexes nested more than {MAX_INDEX_DEPTH} deep "
                    f"(at {manifest_desc.digest})"
                )
            entries = handlers.index_entries(data, f"index {manifest_desc.digest}")
            labels = handlers.gc_labels(entries) | self._source(manifest_desc.digest)
            await self.blobs.commit_bytes(
                self.ns, self.lease, f"index-{manifest_desc.digest}", manifest_desc, data, labels
            )
            manifest_desc = handlers.select_manifests(entries, matcher, 1)[0]
            if request.all_platforms:
                others += [e.descriptor for e in entries if e.descriptor != manifest_desc]
            data = await client.fetch_manifest(self.ref, manifest_desc)
        manifest = handlers.read_manifest(data, f"manifest {manifest_desc.digest}")
        kids = handlers.children(manifest_desc, data)
        await self.blobs.commit_bytes(
            self.ns,
            self.lease,
            f"manifest-{manifest_desc.digest}",
            manifest_desc,
            data,
            handlers.gc_labels(kids) | self._source(manifest_desc.digest),
        )
        for layer in manifest.layers:
            self.job.layers.setdefault(
                layer.digest, LayerProgress(layer.digest, layer.media_type, layer.size)
            )
        self.job.changed(urgent=True)

        async def fetch_config() -> handlers.Config:
            # Every unpack waits for the config, so it takes no download slot from a layer.
            await self._fetch_blob(client, manifest.config, slot=False)
            config_path = self.blobs.content.path(manifest.config.digest)
            config = handlers.read_config(
                await asyncio.to_thread(config_path.read_bytes),
                f"config {manifest.config.digest}",
            )
            if (
                request.platform
                and manifest_desc is root
                and config.platform.os
                and not matcher.match(config.platform)
            ):
                raise NotFound(
                    f"{self.ref} is an image for {config.platform}, not {request.platform}"
                )
            if loading is not None and len(config.diff_ids) != len(manifest.layers):
                raise FailedPrecondition(
                    f"manifest {manifest_desc.digest} has {len(manifest.layers)} layers but its "
                    f"config lists {len(config.diff_ids)} diff IDs"
                )
            return config

        config, unpacker = await self._layers(client, manifest, fetch_config, loading, snapshotter)
        for other in others:
            await self._fetch_content(client, other, depth)
        if unpacker is not None and manifest.layers:
            chains = handlers.chain_ids(config.diff_ids)
            await unpacker.finish(manifest.config, chains[-1])
        image = Image(name=str(self.ref), target=root, labels=dict(request.labels))
        return self.records.register(self.ns, image)

    async def _layers(
        self,
        client: RegistryClient,
        manifest: handlers.Manifest,
        fetch_config: Callable[[], Awaitable[handlers.Config]],
        loading: asyncio.Future[Unpackers] | None,
        snapshotter: str,
    ) -> tuple[handlers.Config, Unpacker | None]:
        """Fetch the config and the layers together, and unpack each layer once the config
        (its diff ID) and the layer's bytes are there; the config and the unpacker used."""
        ready = [asyncio.Event() for _ in manifest.layers]
        # A layer whose turn to unpack comes while it is still downloading is applied
        # from the download as the bytes arrive, so extraction overlaps the transfer. The
        # bytes that come before the config are held until its unpack attaches.
        tees = {layer.digest: LayerTee() for layer in manifest.layers if loading is not None}
        count = len(manifest.layers)
        # Set once a layer's snapshot is there; a layer starts once the one `parallel` below
        # it is done, and goes onto its parent once that one is (see core/images/unpack.py).
        done = [asyncio.Event() for _ in manifest.layers]

        async def fetch(i: int, layer: Descriptor) -> None:
            await self._fetch_blob(
                client, layer, track=True, tee=tees.get(layer.digest), priority=i
            )
            ready[i].set()

        loop = asyncio.get_running_loop()

        def applied(digest: str) -> Callable[[int], None]:
            # The apply runs in a worker thread; the job lives on the loop.
            def report(n: int) -> None:
                loop.call_soon_threadsafe(self.job.set_applied, digest, n)

            return report

        async def config_then_unpack(
            group: asyncio.TaskGroup,
        ) -> tuple[handlers.Config, Unpacker | None]:
            config = await fetch_config()
            unpacker = None
            if loading is not None:
                unpacker = (await loading).open(self.ns, self.lease, snapshotter)
                chains = handlers.chain_ids(config.diff_ids)
                for i, layer in enumerate(manifest.layers):
                    group.create_task(unpack(unpacker, chains, config.diff_ids, i, layer))
            return config, unpacker

        async def unpack(
            unpacker: Unpacker, chains: list[str], diff_ids: list[str], i: int, layer: Descriptor
        ) -> None:
            if i >= unpacker.parallel:
                await done[i - unpacker.parallel].wait()
            below = done[i - 1].wait if i else None
            await unpack_one(unpacker, chains, diff_ids, i, layer, below)
            done[i].set()

        async def unpack_one(
            unpacker: Unpacker,
            chains: list[str],
            diff_ids: list[str],
            i: int,
            layer: Descriptor,
            below: Callable[[], Awaitable[object]] | None,
        ) -> None:
            parent = chains[i - 1] if i else ""
            tee = tees.get(layer.digest)
            if all(r.is_set() for r in ready):
                self.job.set_phase("unpacking", f"layer {i + 1} of {count}")
            else:
                self.job.set_phase(
                    "fetching", f"unpacking layer {i + 1} of {count} as the rest download"
                )
            streaming = (
                not ready[i].is_set()
                and not unpacker.exists(chains[i])
                and tee is not None
                and tee.attach()
            )
            if streaming:
                assert tee is not None
                self.job.set_state(layer.digest, UNPACKING)
                try:
                    await unpacker.layer(
                        layer, diff_ids[i], chains[i], parent, below=below,
                        stream=tee, landed=ready[i].wait, progress=applied(layer.digest),
                    )  # fmt: skip
                except StreamBroken:
                    # The download starts over or failed: unpack from the store instead.
                    streaming = False
                finally:
                    tee.detach()
            if not streaming:
                await ready[i].wait()
                if unpacker.exists(chains[i]):
                    await unpacker.layer(layer, diff_ids[i], chains[i], parent)
                    if self.job.layers[layer.digest].state != EXISTS:
                        self.job.set_state(layer.digest, UNPACKED)
                    return
                self.job.set_state(layer.digest, UNPACKING)
                await unpacker.layer(
                    layer, diff_ids[i], chains[i], parent, below=below,
                    progress=applied(layer.digest),
                )  # fmt: skip
            self.job.set_state(layer.digest, UNPACKED)

        try:
            async with asyncio.TaskGroup() as group:
                configuring = group.create_task(config_then_unpack(group))
                seen: set[str] = set()
                for i, layer in enumerate(manifest.layers):
                    if layer.digest in seen:
                        # The same blob twice in one image: fetched once, ready for both.
                        group.create_task(self._after(ready, manifest.layers, i))
                        continue
                    seen.add(layer.digest)
                    group.create_task(fetch(i, layer))
        except BaseExceptionGroup as group_error:
            raise first_error(group_error) from None
        return configuring.result()

    async def _fetch_content(self, client: RegistryClient, desc: Descriptor, depth: int) -> None:
        """Fetch, without unpacking, everything under another platform's index entry."""
        data = await client.fetch_manifest(self.ref, desc)
        if mediatypes.is_index(desc.media_type):
            if depth >= MAX_INDEX_DEPTH:
                raise FailedPrecondition(
                    f"{self.ref}: image indexes nested more than {MAX_INDEX_DEPTH} deep "
                    f"(at {desc.digest})"
                )
            entries = handlers.index_entries(data, f"index {desc.digest}")
            labels = handlers.gc_labels(entries) | self._source(desc.digest)
        else:
            manifest = handlers.read_manifest(data, f"manifest {desc.digest}")
            labels = handlers.gc_labels(handlers.children(desc, data)) | self._source(desc.digest)
            for layer in manifest.layers:
                self.job.layers.setdefault(
                    layer.digest, LayerProgress(layer.digest, layer.media_type, layer.size)
                )
            self.job.changed(urgent=True)
        kind = "index" if mediatypes.is_index(desc.media_type) else "manifest"
        await self.blobs.commit_bytes(
            self.ns, self.lease, f"{kind}-{desc.digest}", desc, data, labels
        )
        if mediatypes.is_index(desc.media_type):
            for entry in entries:
                await self._fetch_content(client, entry.descriptor, depth + 1)
            return
        await self._fetch_blob(client, manifest.config, slot=False)
        try:
            async with asyncio.TaskGroup() as group:
                for digest in dict.fromkeys(layer.digest for layer in manifest.layers):
                    layer = next(d for d in manifest.layers if d.digest == digest)
                    group.create_task(self._fetch_blob(client, layer, track=True))
        except BaseExceptionGroup as group_error:
            raise first_error(group_error) from None

    @staticmethod
    async def _after(ready: list[asyncio.Event], layers: list[Descriptor], i: int) -> None:
        first = next(j for j, layer in enumerate(layers) if layer.digest == layers[i].digest)
        await ready[first].wait()
        ready[i].set()

    async def _fetch_blob(
        self,
        client: RegistryClient,
        desc: Descriptor,
        *,
        track: bool = False,
        tee: LayerTee | None = None,
        priority: int = 0,
        slot: bool = True,
    ) -> None:
        blobs, ns = self.blobs, self.ns
        labels = self._source(desc.digest)
        if blobs.own(ns, self.lease, desc, labels):
            if tee is not None:
                tee.fail("the blob is already stored")
            if track:
                self.job.set_state(desc.digest, EXISTS)
            return
        ref = f"{ref_kind(desc)}-{desc.digest}"
        writer = await blobs.open_ingest(ns, self.lease, ref, desc, labels)
        if writer is None:
            if tee is not None:
                tee.fail("the blob is already stored")
            if track:
                self.job.set_state(desc.digest, EXISTS)
            return
        try:
            if desc.size and writer.offset > desc.size:
                writer.truncate(0)
            held = writer.offset
            if held and tee is not None:
                tee.fail("the download resumes a previous one")
            if track:
                self.job.set_state(desc.digest, DOWNLOADING)
                self.job.set_offset(desc.digest, held)
            # The writer hashes every byte it stores to verify its commit; the registry client
            # checks the download against that digest rather than hashing the stream again.
            chunks = client.blob_chunks(
                self.ref,
                desc,
                offset=held,
                held_digest=writer.digest,
                priority=priority,
                slot=slot,
            )
            async with contextlib.aclosing(chunks) as stream:
                async for at, chunk in stream:
                    await asyncio.to_thread(writer.write, chunk, at)
                    if tee is not None:
                        tee.put(at, chunk)
                        while tee.full():
                            await asyncio.to_thread(tee.wait_for_room, 0.1)
                    if track:
                        self.job.set_offset(desc.digest, at + len(chunk))
            if tee is not None:
                tee.finish()
            await blobs.commit_ingest(ns, self.lease, ref, writer, desc, labels)
        except CtrdeckError as exc:
            if tee is not None:
                tee.fail(exc.message)
            if isinstance(exc, FailedPrecondition) or not writer.offset:
                # Bytes that do not hash to the digest must not be resumed from, and an
                # ingest without bytes has nothing to resume.
                blobs.abort_ingest(ns, ref)
            if track:
                self.job.set_state(desc.digest, FAILED)
            where = (
                f"fetching {ref_kind(desc)} {desc.digest} at byte {writer.offset} of {desc.size}"
            )
            raise type(exc)(f"{where}: {exc.message}") from exc
        except BaseException as exc:
            if tee is not None:
                tee.fail(f"the download stopped: {exc!r}")
            if not writer.offset:
                # Stopped before its first byte (the config or another layer failed).
                blobs.abort_ingest(ns, ref)
            if track:
                self.job.set_state(desc.digest, FAILED)
            raise
        finally:
            writer.close()
        if track:
            self.job.set_state(desc.digest, DOWNLOADED)


PullObserver = Callable[[str, float], None]
"""Told of each finished pull: its namespace and its duration in seconds."""


class Puller:
    """Runs pulls and lets concurrent callers of the same pull share it.

    It stores blobs through `blobs`, keeps its lease and image record through
    `records`, unpacks through what `unpackers()` returns (called in a worker thread as a
    pull starts: the first call imports the unpacker) into the snapshotter that
    `choose_snapshotter(namespace, asked)` names (or refuses, before anything is stored,
    without that import), and reaches registries as the hosts
    directory `hosts_dir` says, with the request's credentials for its registry
    and `auths` (the engine's per-host entries) elsewhere. Each pull that stores
    its image is reported to every one of `observers` (`engine.pull_observers`,
    where the server adds its metrics), so the pipeline imports no observer.
    """

    def __init__(
        self,
        blobs: Blobs,
        records: ImageRecords,
        unpackers: Callable[[], Unpackers],
        choose_snapshotter: Callable[[str, str], str],
        hosts_dir: str,
        observers: Sequence[PullObserver] = (),
        auths: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self.blobs = blobs
        self.records = records
        self.unpackers = unpackers
        self.choose_snapshotter = choose_snapshotter
        self.hosts_dir = hosts_dir
        self.observers = observers
        # The engine's registry.configs."<host>".auth entries, for hosts a pull names no user for.
        self.auths = auths or {}
        self._jobs: dict[tuple[str, PullRequest], PullJob] = {}
        # One client per way of reaching registries, kept across pulls: its connections,
        # tokens and TLS setup (tens of milliseconds) are reused.
        self._clients: dict[tuple[str, bool], RegistryClient] = {}

    def client(self, plain_http: bool) -> RegistryClient:
        config_path = self.hosts_dir
        key = (config_path, plain_http)
        if key not in self._clients:
            self._clients[key] = RegistryClient(Hosts(config_path, plain_http=plain_http))
        return self._clients[key]

    def client_for(self, request: PullRequest) -> RegistryClient:
        """The shared client, seen with this request's credentials (kept for it alone)."""
        shared = self.client(request.plain_http)
        ref = parse(request.ref)
        upstream = {ref.registry_host, shared.hosts.endpoints(ref.domain)[-1].host}
        return shared.with_credentials(request_credentials(upstream, request.user, self.auths))

    async def pull(self, namespace: str, request: PullRequest) -> AsyncIterator[Progress]:
        """Progress of the pull of `request`, starting it unless the same one is running.

        The last message has phase `done` and the image; a failure is raised after the
        progress that shows it. When every caller has gone, the pull is cancelled.
        """
        parse(request.ref)
        split_wire_user(request.user)
        if request.platform:
            platforms.parse(request.platform)
        key = (namespace, request)
        job = self._jobs.get(key)
        if job is None:
            job = PullJob(namespace, request)
            self._jobs[key] = job
            job.task = asyncio.create_task(self._run(key, job))
        sub = Subscriber()
        job.subscribers.append(sub)
        last = 0.0
        try:
            while True:
                await sub.event.wait()
                if not sub.urgent and not job.done:
                    wait = last + PROGRESS_INTERVAL - time.monotonic()
                    if wait > 0:
                        # An urgent change (a state, a phase, the end) cuts the wait short.
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(wait):
                                await sub.hurry.wait()
                sub.event.clear()
                sub.hurry.clear()
                sub.urgent = False
                last = time.monotonic()
                if job.done:
                    if job.error is not None:
                        raise job.error
                    yield job.snapshot()
                    return
                yield job.snapshot()
        finally:
            job.subscribers.remove(sub)
            if not job.subscribers and not job.done and job.task is not None:
                job.task.cancel()

    async def _run(self, key: tuple[str, PullRequest], job: PullJob) -> None:
        ns = job.namespace
        started = time.monotonic()
        lease = self.records.new_lease(ns)
        try:
            client = self.client_for(job.request)
            image = await _Pipeline(
                self.blobs,
                self.records,
                self.unpackers,
                self.choose_snapshotter,
                job,
                lease,
                client,
            ).run()
        except BaseException as exc:
            error = first_error(exc)
            if isinstance(error, asyncio.CancelledError):
                job.error = Unavailable(f"pull of {job.request.ref} was cancelled")
            elif isinstance(error, CtrdeckError):
                job.error = type(error)(f"pull {job.request.ref}: {error.message}")
            else:
                log.exception("pull of %s failed", job.request.ref)
                job.error = Internal(f"pull {job.request.ref}: {error}")
            job.phase, job.message = FAILED, str(job.error)
            await self.records.drop_lease(ns, lease, failed=True)
        else:
            job.image = image
            job.phase, job.message = "done", f"pulled {image.name}"
            await self.records.drop_lease(ns, lease, failed=False)
            took = time.monotonic() - started
            for observe in self.observers:
                observe(ns, took)
        finally:
            job.done = True
            self._jobs.pop(key, None)
            job.changed(urgent=True)


def request_from(
    ref: str,
    snapshotter: str = "",
    platform: str = "",
    *,
    unpack: bool = True,
    labels: Mapping[str, str] | None = None,
    plain_http: bool = False,
    user: str = "",
    all_platforms: bool = False,
) -> PullRequest:
    return PullRequest(
        ref=ref,
        snapshotter=snapshotter,
        platform=platform,
        unpack=unpack,
        labels=tuple(sorted((labels or {}).items())),
        plain_http=plain_http,
        user=user,
        all_platforms=all_platforms,
    )
