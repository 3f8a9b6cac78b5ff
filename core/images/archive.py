"""Image archives: export to and import from OCI image-layout and docker-archive tarballs.

This module owns the tarball formats `ctr image export` writes and `ctr image import` reads.
An export is an OCI image layout (`oci-layout`, `index.json` naming each image with
`io.containerd.image.name` and its tag as `org.opencontainers.image.ref.name`, and
`blobs/sha256/<hex>`), plus a docker-archive `manifest.json` (config, repo tags, layers) so
`docker load` reads it too; members are written in ctr's order with its modes and zero
mtimes, and streamed out as they are produced. An import reads either form: the layout's
index (or, without one, `manifest.json`, for which a Docker schema 2 manifest is made), stores
every blob it can reach (verified, under a lease, with the gc.ref labels a pull would set),
registers the images and unpacks them for the platform asked (the host's by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import queue
import tarfile
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core.content.store import ContentStore
from core.descriptor import Descriptor
from core.errors import CtrdeckError, FailedPrecondition, InvalidArgument, NotFound
from core.images import handlers, mediatypes, platforms
from core.images.blobs import Blobs, ref_kind
from core.images.platforms import Matcher
from core.images.records import ImageRecords
from core.images.reference import parse
from core.images.unpack import Unpacker, Unpackers
from core.metadata.content import ContentMetadata
from core.metadata.images import Image, ImageStore

CHUNK = 1 << 20
IMPORT_SPOOL = "io.containerd.grpc.v1.images.import"
"""Where, under the engine root, imported tarballs wait while they are read."""
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
_QUEUE_DEPTH = 8


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# -- export ------------------------------------------------------------------------------------


@dataclass
class _Exported:
    image: Image
    blobs: list[Descriptor]
    docker: dict[str, Any] | None


def _tag_of(name: str) -> str:
    try:
        return parse(name).tag
    except CtrdeckError:
        return ""


class _QueueFile(io.RawIOBase):
    """A write-only file handing what is written to a bounded queue, for streaming a tar."""

    def __init__(self, out: queue.Queue[bytes | BaseException | None], stop: threading.Event):
        self.out = out
        self.stop = stop
        self.pending = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.pending += data
        if len(self.pending) >= CHUNK:
            self.flush_pending()
        return len(data)

    def flush_pending(self) -> None:
        if self.pending:
            _put(self.out, self.stop, bytes(self.pending))
            self.pending.clear()


def _put(out: queue.Queue[Any], stop: threading.Event, item: Any) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            continue
    raise InterruptedError("the export's reader went away")


class Exporter:
    """Writes images of one namespace as a tarball stream."""

    def __init__(
        self, content: ContentStore, records: ContentMetadata, images: ImageStore, namespace: str
    ) -> None:
        self.content = content
        self.records = records
        self.images = images
        self.namespace = namespace

    def _read(self, desc: Descriptor) -> bytes:
        if not self.records.has(self.namespace, desc.digest):
            raise NotFound(f"content {desc.digest}")
        return self.content.path(desc.digest).read_bytes()

    def plan(self, names: list[str], platform: str, docker_manifest: bool) -> list[_Exported]:
        """What each image contributes: its blobs, and its docker-archive entry."""
        if not names:
            raise InvalidArgument("export needs at least one image name")
        matcher = platforms.only(platforms.parse(platform)) if platform else None
        out = []
        for name in names:
            image = self.images.get(self.namespace, name)
            blobs = self._blobs(image.target, matcher)
            docker = self._docker_entry(image, matcher) if docker_manifest else None
            out.append(_Exported(image, blobs, docker))
        return out

    def _blobs(self, root: Descriptor, matcher: Matcher | None) -> list[Descriptor]:
        found: list[Descriptor] = []
        meta = self.records

        def visit(desc: Descriptor, required: bool) -> None:
            if not meta.has(self.namespace, desc.digest):
                if required:
                    raise NotFound(f"content {desc.digest} of the image is not in the store")
                return
            found.append(desc)
            if not (
                mediatypes.is_index(desc.media_type) or mediatypes.is_manifest(desc.media_type)
            ):
                return
            data = self._read(desc)
            kids = handlers.children(desc, data)
            if mediatypes.is_index(desc.media_type):
                wanted = (
                    {d.digest for d in handlers.select_manifests(kids, matcher)}
                    if matcher
                    else None
                )
                for kid in kids:
                    chosen = wanted is None or kid.descriptor.digest in wanted
                    # Without a platform, every manifest present goes, and absent ones are
                    # simply not part of this node's content (as with ctr).
                    visit(kid.descriptor, required=chosen and matcher is not None)
            else:
                for kid in kids:
                    visit(kid.descriptor, required=True)

        visit(root, required=True)
        return found

    def _docker_entry(self, image: Image, matcher: Matcher | None) -> dict[str, Any] | None:
        desc = image.target
        if mediatypes.is_index(desc.media_type):
            kids = handlers.index_entries(self._read(desc), f"index {desc.digest}")
            present = [k for k in kids if self.records.has(self.namespace, k.descriptor.digest)]
            try:
                desc = handlers.select_manifests(
                    present, matcher or platforms.default_matcher(), 1
                )[0]
            except NotFound:
                return None
        if not mediatypes.is_manifest(desc.media_type):
            return None
        manifest = handlers.read_manifest(self._read(desc), f"manifest {desc.digest}")

        def path(d: Descriptor) -> str:
            return "blobs/sha256/" + d.digest.removeprefix("sha256:")

        return {
            "Config": path(manifest.config),
            "RepoTags": [image.name],
            "Layers": [path(layer) for layer in manifest.layers],
        }

    async def stream(
        self, names: list[str], platform: str = "", docker_manifest: bool = True
    ) -> AsyncIterator[bytes]:
        """The tarball, in chunks of about 1 MiB."""
        exported = self.plan(names, platform, docker_manifest)
        out: queue.Queue[bytes | BaseException | None] = queue.Queue(_QUEUE_DEPTH)
        stop = threading.Event()
        paths = {d.digest: self.content.path(d.digest) for e in exported for d in e.blobs}
        worker = threading.Thread(
            target=self._write, args=(exported, paths, out, stop), daemon=True, name="export"
        )
        worker.start()
        try:
            while True:
                item = await asyncio.to_thread(out.get)
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            await asyncio.to_thread(worker.join)

    def _write(
        self,
        exported: list[_Exported],
        paths: Mapping[str, Path],
        out: queue.Queue[bytes | BaseException | None],
        stop: threading.Event,
    ) -> None:
        sink = _QueueFile(out, stop)
        try:
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                _add_dir(tar, "blobs")
                _add_dir(tar, "blobs/sha256")
                for digest in sorted(paths):
                    path = paths[digest]
                    info = tarfile.TarInfo("blobs/sha256/" + digest.removeprefix("sha256:"))
                    info.size = path.stat().st_size
                    info.mode = 0o444
                    info.mtime = 0
                    with path.open("rb") as f:
                        tar.addfile(info, f)
                index = {
                    "schemaVersion": 2,
                    "manifests": [self._index_entry(e.image) for e in exported],
                }
                _add_bytes(tar, "index.json", _json(index), 0o644)
                docker = [e.docker for e in exported if e.docker is not None]
                if docker:
                    _add_bytes(tar, "manifest.json", _json(docker), 0o644)
                _add_bytes(tar, "oci-layout", OCI_LAYOUT, 0o444)
            sink.flush_pending()
            _put(out, stop, None)
        except InterruptedError:
            return
        except BaseException as exc:
            with contextlib.suppress(InterruptedError):
                _put(out, stop, exc)

    @staticmethod
    def _index_entry(image: Image) -> dict[str, Any]:
        annotations = {handlers.IMAGE_NAME_ANNOTATION: image.name}
        tag = _tag_of(image.name)
        if tag:
            annotations[handlers.REF_NAME_ANNOTATION] = tag
        desc = Descriptor(
            image.target.media_type,
            image.target.digest,
            image.target.size,
            {**image.target.annotations, **annotations},
        )
        return handlers.descriptor_to_json(desc)


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = 0
    tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


# -- import ------------------------------------------------------------------------------------


@dataclass
class ImportOptions:
    base_name: str = ""
    snapshotter: str = ""
    platform: str = ""
    unpack: bool = True
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class _Root:
    name: str
    desc: Descriptor


class _Archive:
    """Random access to the members of a spooled tarball (read in worker threads)."""

    def __init__(self, path: Path) -> None:
        try:
            self.tar = tarfile.open(path, mode="r:*")  # noqa: SIM115
            self.members = {
                m.name.removeprefix("./"): m for m in self.tar.getmembers() if m.isfile()
            }
        except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
            raise InvalidArgument(f"the archive is not a readable tarball: {exc}") from None

    def has(self, name: str) -> bool:
        return name in self.members

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(name)
        if member is None:
            raise NotFound(f"{name} is not in the archive")
        f = self.tar.extractfile(member)
        assert f is not None
        return f

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        if name in self.members and self.members[name].size > limit:
            raise InvalidArgument(f"{name} in the archive is over {limit} bytes")
        with self.open(name) as f:
            return f.read()

    def blob_name(self, digest: str) -> str:
        return "blobs/sha256/" + digest.removeprefix("sha256:")

    def close(self) -> None:
        self.tar.close()


class Importer:
    """Imports one spooled tarball into a namespace."""

    def __init__(
        self,
        blobs: Blobs,
        records: ImageRecords,
        unpackers: Unpackers,
        namespace: str,
        options: ImportOptions,
    ) -> None:
        self.blobs = blobs
        self.records = records
        self.unpackers = unpackers
        self.namespace = namespace
        self.options = options

    async def run(self, path: Path) -> list[Image]:
        archive = await asyncio.to_thread(_Archive, path)
        lease = self.records.new_lease(self.namespace)
        try:
            unpacker = (
                self.unpackers.open(self.namespace, lease, self.options.snapshotter)
                if self.options.unpack
                else None
            )
            if archive.has("index.json"):
                roots = await self._oci_roots(archive)
            elif archive.has("manifest.json"):
                roots = await self._docker_roots(archive, lease)
            else:
                raise InvalidArgument(
                    "the archive has neither index.json (OCI layout) nor manifest.json "
                    "(docker-archive)"
                )
            if not roots:
                raise InvalidArgument(
                    "the archive names no image; give a base name for images tagged only"
                )
            matcher = (
                platforms.only(platforms.parse(self.options.platform))
                if self.options.platform
                else platforms.default_matcher()
            )
            images = []
            for root in roots:
                await self._store_tree(archive, lease, root.desc)
                image = Image(name=root.name, target=root.desc, labels=dict(self.options.labels))
                images.append(self.records.register(self.namespace, image))
                if unpacker is not None:
                    await self._unpack(unpacker, root.desc, matcher)
        except BaseException:
            await self.records.drop_lease(self.namespace, lease, failed=True)
            raise
        finally:
            await asyncio.to_thread(archive.close)
        await self.records.drop_lease(self.namespace, lease, failed=False)
        return images

    def _name(self, annotations: Mapping[str, str]) -> str:
        name = annotations.get(handlers.IMAGE_NAME_ANNOTATION, "")
        if name:
            return name
        ref_name = annotations.get(handlers.REF_NAME_ANNOTATION, "")
        if not ref_name:
            return ""
        if "/" in ref_name:
            # A full reference in ref.name (as some tools write it).
            with contextlib.suppress(CtrdeckError):
                return str(parse(ref_name))
        if self.options.base_name:
            return str(parse(f"{self.options.base_name}:{ref_name}"))
        return ""

    async def _oci_roots(self, archive: _Archive) -> list[_Root]:
        data = await asyncio.to_thread(archive.read, "index.json")
        roots = []
        for entry in handlers.index_entries(data, "index.json of the archive"):
            name = self._name(entry.descriptor.annotations)
            if not name:
                continue
            desc = entry.descriptor
            if not desc.media_type:
                blob = await asyncio.to_thread(archive.read, archive.blob_name(desc.digest))
                desc.media_type = handlers.media_type_of(desc, blob)
            # The layout's annotations name the image; they are not part of its target.
            desc.annotations = {
                k: v
                for k, v in desc.annotations.items()
                if k not in (handlers.IMAGE_NAME_ANNOTATION, handlers.REF_NAME_ANNOTATION)
            }
            roots.append(_Root(name, desc))
        return roots

    async def _docker_roots(self, archive: _Archive, lease: str) -> list[_Root]:
        """docker-archive entries, each made into a Docker schema 2 manifest."""
        raw = await asyncio.to_thread(archive.read, "manifest.json")
        try:
            entries = json.loads(raw)
        except ValueError as exc:
            raise InvalidArgument(f"manifest.json of the archive is not JSON: {exc}") from None
        if not isinstance(entries, list):
            raise InvalidArgument("manifest.json of the archive is not a list")
        roots = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
                raise InvalidArgument(f"manifest.json entry {i} has no Config")
            config_bytes = await asyncio.to_thread(archive.read, entry["Config"])
            config = Descriptor(mediatypes.DOCKER_CONFIG, _sha256(config_bytes), len(config_bytes))
            layers = [
                await asyncio.to_thread(_describe_layer, archive, name)
                for name in entry.get("Layers") or []
            ]
            manifest = _json(
                {
                    "schemaVersion": 2,
                    "mediaType": mediatypes.DOCKER_MANIFEST,
                    "config": handlers.descriptor_to_json(config),
                    "layers": [handlers.descriptor_to_json(d) for d, _ in layers],
                }
            )
            desc = Descriptor(mediatypes.DOCKER_MANIFEST, _sha256(manifest), len(manifest))
            await self._store(lease, config, lambda b=config_bytes: io.BytesIO(b), {})
            for layer, member in layers:
                await self._store(lease, layer, lambda m=member: archive.open(m), {})
            kids = [handlers.Child(config), *(handlers.Child(d) for d, _ in layers)]
            await self._store(
                lease, desc, lambda b=manifest: io.BytesIO(b), handlers.gc_labels(kids)
            )
            tags = entry.get("RepoTags") or []
            for tag in tags:
                roots.append(_Root(str(parse(tag)), desc))
            if not tags and self.options.base_name:
                roots.append(_Root(str(parse(self.options.base_name)), desc))
        return roots

    async def _store_tree(self, archive: _Archive, lease: str, root: Descriptor) -> None:
        """Store every blob reachable from `root` that the archive holds, parents labelled."""
        stack = [(root, True)]
        seen: set[str] = set()
        while stack:
            desc, required = stack.pop()
            if desc.digest in seen:
                continue
            seen.add(desc.digest)
            member = archive.blob_name(desc.digest)
            if not archive.has(member):
                if required and not self.blobs.has(self.namespace, desc.digest):
                    raise NotFound(f"blob {desc.digest} is not in the archive")
                continue
            labels: dict[str, str] = {}
            if _is_document(desc):
                data = await asyncio.to_thread(archive.read, member)
                kids = handlers.children(desc, data)
                labels = handlers.gc_labels(kids)
                index = mediatypes.is_index(desc.media_type)
                stack.extend((k.descriptor, not index) for k in kids)
            await self._store(lease, desc, lambda m=member: archive.open(m), labels)

    async def _store(
        self,
        lease: str,
        desc: Descriptor,
        source: Callable[[], IO[bytes]],
        labels: Mapping[str, str],
    ) -> None:
        blobs, ns = self.blobs, self.namespace
        if blobs.own(ns, lease, desc, labels):
            return
        ref = f"import-{ref_kind(desc)}-{desc.digest}"
        writer = await blobs.open_ingest(ns, lease, ref, desc, labels)
        if writer is None:
            return
        try:
            if writer.offset:
                writer.truncate(0)
            await asyncio.to_thread(_copy, source, writer.write)
            await blobs.commit_ingest(ns, lease, ref, writer, desc, labels)
        except FailedPrecondition as exc:
            blobs.abort_ingest(ns, ref)
            raise FailedPrecondition(f"blob {desc.digest} in the archive: {exc.message}") from exc
        finally:
            writer.close()

    async def _unpack(self, unpacker: Unpacker, root: Descriptor, matcher: Matcher) -> None:
        desc = root
        content = self.blobs.content
        if mediatypes.is_index(desc.media_type):
            data = await asyncio.to_thread(content.path(desc.digest).read_bytes)
            kids = handlers.index_entries(data, f"index {desc.digest}")
            present = [k for k in kids if self.blobs.has(self.namespace, k.descriptor.digest)]
            try:
                desc = handlers.select_manifests(present, matcher, 1)[0]
            except NotFound:
                return  # nothing for this platform in the archive: stored, not unpacked
        if not mediatypes.is_manifest(desc.media_type):
            return
        data = await asyncio.to_thread(content.path(desc.digest).read_bytes)
        manifest = handlers.read_manifest(data, f"manifest {desc.digest}")
        config_data = await asyncio.to_thread(content.path(manifest.config.digest).read_bytes)
        config = handlers.read_config(config_data, f"config {manifest.config.digest}")
        if len(config.diff_ids) != len(manifest.layers):
            raise FailedPrecondition(
                f"manifest {desc.digest} has {len(manifest.layers)} layers but its config "
                f"lists {len(config.diff_ids)} diff IDs"
            )
        if not manifest.layers:
            return
        chains = handlers.chain_ids(config.diff_ids)
        for i, layer in enumerate(manifest.layers):
            await unpacker.layer(layer, config.diff_ids[i], chains[i], chains[i - 1] if i else "")
        await unpacker.finish(manifest.config, chains[-1])


def _is_document(desc: Descriptor) -> bool:
    return mediatypes.is_index(desc.media_type) or mediatypes.is_manifest(desc.media_type)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _describe_layer(archive: _Archive, name: str) -> tuple[Descriptor, str]:
    """A docker-archive layer's descriptor: digest and size of the file, type from its bytes."""
    hasher = hashlib.sha256()
    size = 0
    with archive.open(name) as f:
        head = f.read(4)
        hasher.update(head)
        size += len(head)
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    media_type = (
        mediatypes.DOCKER_LAYER_GZIP if head.startswith(b"\x1f\x8b") else mediatypes.DOCKER_LAYER
    )
    return Descriptor(media_type, "sha256:" + hasher.hexdigest(), size), name


def _copy(source: Callable[[], IO[bytes]], write: Callable[[bytes], int]) -> None:
    with source() as f:
        while chunk := f.read(CHUNK):
            write(chunk)


class Imports:
    """Imports tarball streams: each is spooled to a file under `spool_dir`, then read.

    The spool lives under the engine root, on disk rather than in the state
    tmpfs, since a tarball may be large; the file goes once the import ends.
    """

    def __init__(
        self, blobs: Blobs, records: ImageRecords, unpackers: Unpackers, spool_dir: Path
    ) -> None:
        self.blobs = blobs
        self.records = records
        self.unpackers = unpackers
        self.spool_dir = spool_dir

    async def run(
        self, namespace: str, chunks: AsyncIterator[bytes], options: ImportOptions
    ) -> list[Image]:
        path = await spool(chunks, self.spool_dir)
        try:
            importer = Importer(self.blobs, self.records, self.unpackers, namespace, options)
            return await importer.run(path)
        finally:
            path.unlink(missing_ok=True)


async def spool(chunks: AsyncIterator[bytes], directory: Path) -> Path:
    """Write a streamed tarball to a temporary file under `directory` (the caller removes it)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="import-", suffix=".tar", dir=directory)
    path = Path(name)
    try:
        with open(fd, "wb") as f:
            async for chunk in chunks:
                await asyncio.to_thread(f.write, chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
