"""The walking differ: layers from the content store onto mounts, and diffs of mounts into it.

This module owns where a layer is written for a given list of mounts, and in which
whiteout mode. A single overlay mount is applied to its upper directory (never through
the overlay itself) in overlay mode, with its lower directories for the metadata of
implied parent directories. A single bind mount is applied straight into its source,
in overlay mode when the source lies under the root of a snapshotter it was given whose
snapshots become overlay lower directories (`Snapshotter.OVERLAY_LOWERS`, or any
`io.containerd.snapshotter.v1.overlayfs` directory), since a parentless snapshot there
becomes a lower directory later and its whiteouts must be overlay ones, and
in delete mode otherwise (native snapshots hold a full copy of the tree). Anything
else (btrfs subvolumes, several mounts) is mounted on a temporary directory and
applied through it in delete mode. The uncompressed digest is checked against the
diff ID the caller expects, or else the blob's `containerd.io/uncompressed` label.

For a diff, both sides are read through read-only forms of their mounts, and the tar
is compressed as the media type asks (gzip by default), written into the content
store, and owned by the namespace under the call's lease with the
`containerd.io/uncompressed` label. The heavy work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core.content.store import ContentStore, Writer
from core.descriptor import Descriptor, validate_digest
from core.diff import compression
from core.diff.apply import Applied, Mode, apply_layer
from core.diff.compression import Compressor, HashingWriter
from core.diff.walk import write_diff
from core.errors import FailedPrecondition, InvalidArgument, NotFound
from core.gc import GarbageCollector
from core.metadata.content import ContentMetadata, ingest_key
from core.snapshots.base import Snapshotter
from core.snapshots.mount import Mount, mounted

OVERLAYFS_ROOT = "io.containerd.snapshotter.v1.overlayfs"
UNCOMPRESSED_LABEL = "containerd.io/uncompressed"

DIFF_MEDIA_TYPES = {
    compression.OCI_LAYER: compression.PLAIN,
    compression.OCI_LAYER_GZIP: compression.GZIP,
    compression.OCI_LAYER_ZSTD: compression.ZSTD,
    compression.DOCKER_LAYER: compression.PLAIN,
    compression.DOCKER_LAYER_GZIP: compression.GZIP,
}


@dataclass(frozen=True)
class Target:
    """Where a layer goes: the directory, the whiteout mode, and an overlay's lower dirs."""

    root: Path
    mode: Mode
    lowers: tuple[Path, ...] = ()


def is_bind(m: Mount) -> bool:
    return m.type == "bind" or "bind" in m.options or "rbind" in m.options


def option(m: Mount, key: str) -> str | None:
    """The value of a mount's `key=value` option, or None."""
    prefix = key + "="
    for opt in m.options:
        if opt.startswith(prefix):
            return opt[len(prefix) :]
    return None


def overlay_dirs(m: Mount) -> tuple[Path | None, list[Path]]:
    """An overlay mount's upper directory (None for a read-only view) and lowers, topmost first."""
    upper = option(m, "upperdir")
    lowers = option(m, "lowerdir") or ""
    return (Path(upper) if upper else None), [Path(p) for p in lowers.split(":") if p]


def read_only(m: Mount) -> Mount:
    """The mount as a read-only view that leaves an overlay's upper and work directories alone."""
    if m.type == "overlay":
        upper, lowers = overlay_dirs(m)
        layers = ([upper] if upper else []) + lowers
        if len(layers) == 1:
            return Mount("bind", str(layers[0]), ("ro", "rbind"))
        dirs = ("upperdir", "workdir", "lowerdir")
        keep = [o for o in m.options if o.split("=", 1)[0] not in dirs]
        lowerdir = "lowerdir=" + ":".join(str(p) for p in layers)
        return Mount("overlay", m.source, (*keep, "ro", lowerdir))
    options = [o for o in m.options if o != "rw"]
    return Mount(m.type, m.source, (*options, "ro"), m.target)


@contextlib.contextmanager
def apply_target(mounts: Sequence[Mount], overlay_roots: Sequence[Path] = ()) -> Iterator[Target]:
    """The directory and mode a layer for these mounts is applied with (see the module doc)."""
    if not mounts:
        raise InvalidArgument("no mounts to apply the layer to")
    if len(mounts) == 1 and mounts[0].type == "overlay":
        upper, lowers = overlay_dirs(mounts[0])
        if upper is None:
            raise InvalidArgument("cannot apply a layer to a read-only overlay view (no upperdir)")
        yield Target(upper, Mode.OVERLAY, tuple(lowers))
        return
    if len(mounts) == 1 and is_bind(mounts[0]):
        m = mounts[0]
        if "ro" in m.options:
            raise InvalidArgument(f"cannot apply a layer to the read-only bind mount of {m.source}")
        source = Path(m.source)
        if not source.is_dir():
            raise InvalidArgument(f"bind mount source {m.source} is not a directory")
        under_overlay = OVERLAYFS_ROOT in source.parts or any(
            source.resolve().is_relative_to(r.resolve()) for r in overlay_roots
        )
        mode = Mode.OVERLAY if under_overlay else Mode.DELETE
        yield Target(source, mode)
        return
    with mounted(mounts) as root:
        yield Target(root, Mode.DELETE)


@contextlib.contextmanager
def read_view(mounts: Sequence[Mount]) -> Iterator[Path | None]:
    """A directory showing the mounts' tree read-only; None for no mounts (an empty tree)."""
    if not mounts:
        yield None
        return
    views = [read_only(m) for m in mounts]
    if len(views) == 1 and is_bind(views[0]):
        yield Path(views[0].source)
        return
    with mounted(views) as root:
        yield root


def unique_ref() -> str:
    return f"diff-{time.time_ns()}-{uuid.uuid4().hex[:12]}"


class _Sink:
    """A content Writer seen as a plain file for the compressor."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    def write(self, data: bytes) -> int:
        self.writer.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


class CountingReader:
    """A binary stream that reports how many bytes were read from it, every `step` or so."""

    def __init__(self, stream: BinaryIO, report: Callable[[int], None], step: int = 256 << 10):
        self._stream = stream
        self._report = report
        self._step = step
        self._read = 0
        self._told = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._read += len(data)
        if not data or self._read - self._told >= self._step:
            self._told = self._read
            self._report(self._read)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def overlay_roots(snapshotters: Iterable[Snapshotter]) -> list[Path]:
    """The roots of the snapshotters whose snapshots become overlay lower directories."""
    return [s.root for s in snapshotters if s.OVERLAY_LOWERS]


class Differ:
    """containerd's `walking` differ over a content store, its ownership records and snapshotters.

    Blobs are read from `content` when `records` says the namespace owns them, and
    new ones are committed through `gc`; `snapshotters` are the ones whose mounts it
    may be given, which tell it where overlay whiteouts are needed.
    """

    def __init__(
        self,
        content: ContentStore,
        records: ContentMetadata,
        gc: GarbageCollector,
        snapshotters: Mapping[str, Snapshotter],
    ) -> None:
        self.content = content
        self.records = records
        self.gc = gc
        self.snapshotters = snapshotters

    async def apply(
        self,
        namespace: str,
        desc: Descriptor,
        mounts: Sequence[Mount],
        expected_diff_id: str = "",
        *,
        progress: Callable[[int], None] | None = None,
        defer_sync: bool = False,
    ) -> Applied:
        """Apply the namespace's layer blob `desc` onto `mounts`; the result is uncompressed.

        `progress` hears, from the worker thread, how many bytes of the blob were read.
        With `defer_sync` (only for a bind mount of a directory that outlives the call) the
        layer is not yet durable: see `apply_tar`.
        """
        validate_digest(desc.digest)
        record = self.records.get(namespace, desc.digest)
        compression.layer_compression(desc.media_type)
        if desc.size and record.size != desc.size:
            raise FailedPrecondition(
                f"content {desc.digest} has size {record.size}, the descriptor says {desc.size}"
            )
        expected = expected_diff_id or record.labels.get(UNCOMPRESSED_LABEL, "")
        path = self.content.path(desc.digest)
        return await asyncio.to_thread(
            self._apply, path, desc.media_type, mounts, expected, progress, defer_sync
        )

    def _apply(
        self,
        path: Path,
        media_type: str,
        mounts: Sequence[Mount],
        expected: str,
        progress: Callable[[int], None] | None = None,
        defer_sync: bool = False,
    ) -> Applied:
        roots = overlay_roots(self.snapshotters.values())
        with apply_target(mounts, roots) as target, path.open("rb") as blob:
            return apply_layer(
                CountingReader(blob, progress) if progress else blob,
                media_type,
                target.root,
                target.mode,
                lowers=target.lowers,
                expected_diff_id=expected,
                defer_sync=defer_sync,
            )

    async def diff(
        self,
        namespace: str,
        lease: str | None,
        left: Sequence[Mount],
        right: Sequence[Mount],
        media_type: str = "",
        ref: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        """Write the layer of changes from `left` to `right` into the content store."""
        media_type = media_type or compression.OCI_LAYER_GZIP
        if media_type not in DIFF_MEDIA_TYPES:
            raise InvalidArgument(f"unsupported diff media type {media_type!r}")
        if not right:
            raise InvalidArgument("no mounts for the upper side of the diff")
        ref = ref or unique_ref()
        key = ingest_key(namespace, ref)
        content = self.content
        meta = self.records
        writer = await asyncio.to_thread(content.open_writer, key)
        try:
            if writer.offset:
                # A leftover ingest under the same ref holds some other diff's bytes.
                writer.truncate(0)
            meta.begin_ingest(namespace, ref, "", lease)
            diff_id = await asyncio.to_thread(
                self._write, writer, left, right, DIFF_MEDIA_TYPES[media_type]
            )
            size = writer.offset
            all_labels = {**(labels or {}), UNCOMPRESSED_LABEL: diff_id}
            digest = await self.gc.commit_blob(namespace, lease, writer, size, "", all_labels, ref)
        finally:
            writer.close()
            meta.end_ingest(namespace, ref)
            with contextlib.suppress(NotFound):
                content.abort(key)
        return Descriptor(media_type, digest, size)

    @staticmethod
    def _write(writer: Writer, left: Sequence[Mount], right: Sequence[Mount], kind: str) -> str:
        """Write the compressed diff into `writer`; return its diff ID."""
        sink = _Sink(writer)
        compressor = Compressor(sink, kind)  # type: ignore[arg-type]
        uncompressed = HashingWriter(compressor)  # type: ignore[arg-type]
        with read_view(left) as lower, read_view(right) as upper:
            assert upper is not None
            write_diff(lower, upper, uncompressed)  # type: ignore[arg-type]
        compressor.close()
        return uncompressed.digest()
