"""Unpacking an image's layers into a snapshotter, as containerd's `rootfs` package does.

This module owns the snapshot chain of an image: each layer becomes the committed snapshot
named by its chain ID, built by preparing an `extract-<nanos>-<rand> <chainID>` snapshot on
the previous chain ID, applying the compressed layer blob onto its mounts with the walking
differ, checking the resulting diff ID against the image config, and committing it. A layer
whose chain ID already exists is skipped. A failed apply removes its extract snapshot, so no
half-built snapshot is left behind. After a layer is unpacked its blob gets the
`containerd.io/uncompressed` label, and at the end the config gets
`containerd.io/gc.ref.snapshot.<snapshotter>` = top chain ID, which is what keeps the chain
alive once the work's lease is gone. Snapshot events are published as the Snapshots service
would. A layer may also be applied from a stream while its blob is still downloading; the
snapshot is then committed only once the blob has landed verified and the diff ID matched.
`Unpackers`, wired once by the engine, holds the parts an unpack uses and hands out one
`Unpacker` per image.

With overlayfs a layer's upper directory depends on the layers below only for the owner and
mode of directories it implies without listing them, so up to `parallel` layers are applied
at once: a layer whose parent is not committed yet goes into a parentless staging snapshot,
and once the parent is committed its tree is renamed into a fresh snapshot on the parent
(implied directories then take their metadata from the lowers) and committed there. Commits
stay in chain order.
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import betterproto2

from core.api.containerd import events
from core.descriptor import Descriptor
from core.diff import durable
from core.diff.apply import Applied, apply_layer, copy_up_implied
from core.diff.differ import CountingReader, Differ, apply_target, overlay_dirs, overlay_roots
from core.errors import AlreadyExists, CtrdeckError, FailedPrecondition, Internal
from core.images.handlers import GC_SNAPSHOT, UNCOMPRESSED
from core.metadata.content import ContentMetadata
from core.metadata.namespaces import NamespaceStore
from core.metadata.snapshots import SnapshotStore
from core.snapshots import Mount, Snapshotter, unpack_target
from core.snapshots.base import in_thread

# Layers applied at once on overlayfs. Four, so that an image of up to four layers (most
# base images, issue 14's benchmark images) applies every layer from its download as the
# bytes arrive: with two, the upper two waited for a slot until after the last byte and
# were then read back from the store (80-160 ms after it on a busy machine, 24 MiB more
# read per 48 MiB). The work is less; on two busy cores the wall did not move with it.
PARALLEL_LAYERS = 4

Publish = Callable[[str, str, betterproto2.Message], None]


class Unpackers:
    """The parts unpacking uses, shared by every pull and import; `open` makes an `Unpacker`."""

    def __init__(
        self,
        snapshotters: Mapping[str, Snapshotter],
        snapshot_records: SnapshotStore,
        namespaces: NamespaceStore,
        content_records: ContentMetadata,
        differ: Differ,
        publish: Publish,
        default_snapshotter: str,
    ) -> None:
        self.snapshotters = snapshotters
        self.snapshot_records = snapshot_records
        self.namespaces = namespaces
        self.content_records = content_records
        self.differ = differ
        self.publish = publish
        self.default_snapshotter = default_snapshotter

    def choose(self, namespace: str, name: str) -> tuple[str, Snapshotter]:
        """The snapshotter asked for, else the namespace's default label, else the default."""
        return unpack_target(
            self.snapshotters, self.namespaces, self.default_snapshotter, namespace, name
        )

    def open(self, namespace: str, lease: str | None, snapshotter: str) -> Unpacker:
        """An unpacker for one image in `namespace`, under `lease`, into `snapshotter`."""
        name, chosen = self.choose(namespace, snapshotter)
        return Unpacker(self, namespace, lease, name, chosen)


def extract_key(chain_id: str) -> str:
    """A fresh key for the active snapshot a layer is applied in, shaped as ctr's."""
    suffix = base64.urlsafe_b64encode(os.urandom(3)).decode()
    return f"extract-{time.time_ns() % 10**9}-{suffix} {chain_id}"


class Unpacker:
    """Unpacks layers of one image, in order, in one namespace under one lease."""

    def __init__(
        self,
        parts: Unpackers,
        namespace: str,
        lease: str | None,
        name: str,
        snapshotter: Snapshotter,
    ) -> None:
        self.parts = parts
        self.namespace = namespace
        self.lease = lease
        self.name = name
        self.snapshotter = snapshotter
        self.differ = parts.differ
        self.publish = parts.publish
        # Snapshots that copy their parent's tree need it complete before a layer goes on.
        self.parallel = PARALLEL_LAYERS if snapshotter.OVERLAY_LOWERS else 1

    def exists(self, chain_id: str) -> bool:
        return self.parts.snapshot_records.find(self.namespace, self.name, chain_id) is not None

    async def layer(
        self,
        layer: Descriptor,
        diff_id: str,
        chain_id: str,
        parent: str,
        *,
        stream: BinaryIO | None = None,
        landed: Callable[[], Awaitable[object]] | None = None,
        progress: Callable[[int], None] | None = None,
        below: Callable[[], Awaitable[object]] | None = None,
    ) -> bool:
        """Make the committed snapshot `chain_id`; False if it was already there.

        Without `stream` the layer is read from the content store. With it, the bytes come
        from `stream` as they arrive, and `landed` is awaited before the commit: it returns
        once the blob is in the content store, verified. `progress` hears, from the worker
        thread that applies the layer, how many bytes of the blob it has read so far.
        `below`, if given, returns once `parent` is committed (or failed): the layer is
        then applied meanwhile where the snapshotter allows it, else after it.
        """
        if self.exists(chain_id):
            self._label_uncompressed(layer, diff_id)
            return False
        if below is not None and parent and self.parallel > 1 and not self.exists(parent):
            return await self._staged(
                layer, diff_id, chain_id, parent, stream, landed, progress, below
            )
        if below is not None:
            await below()
            if self.exists(chain_id):
                self._label_uncompressed(layer, diff_id)
                return False
        ns = self.namespace
        key = extract_key(chain_id)
        mounts = await self.snapshotter.prepare(ns, key, parent, None, self.lease)
        self.publish(ns, "/snapshot/prepare", events.SnapshotPrepare(key=key, parent=parent))
        try:
            applied = await self._apply(layer, diff_id, mounts, stream, progress)
            if landed is not None:
                await landed()
            self._check(layer, diff_id, applied)
            if not await self._commit(key, chain_id):
                self._label_uncompressed(layer, diff_id)
                return False
        except BaseException:
            with contextlib.suppress(CtrdeckError):
                await self._remove(key)
            raise
        self._label_uncompressed(layer, diff_id)
        return True

    async def _staged(
        self,
        layer: Descriptor,
        diff_id: str,
        chain_id: str,
        parent: str,
        stream: BinaryIO | None,
        landed: Callable[[], Awaitable[object]] | None,
        progress: Callable[[int], None] | None,
        below: Callable[[], Awaitable[object]],
    ) -> bool:
        """Apply into a parentless snapshot now; move it onto `parent` once that is committed."""
        ns = self.namespace
        stage = extract_key(chain_id)
        staged = await self.snapshotter.prepare(ns, stage, "", None, self.lease)
        self.publish(ns, "/snapshot/prepare", events.SnapshotPrepare(key=stage))
        key = ""
        try:
            # It cannot be committed before its parent: its sync waits until then, when the
            # parent's syncfs, begun after this layer was written, has usually covered it.
            applied = await self._apply(layer, diff_id, staged, stream, progress, defer=True)
            if landed is not None:
                await landed()
            self._check(layer, diff_id, applied)
            await below()
            if self.exists(chain_id):
                await self._remove(stage)
                self._label_uncompressed(layer, diff_id)
                return False
            key = extract_key(chain_id)
            mounts = await self.snapshotter.prepare(ns, key, parent, None, self.lease)
            self.publish(ns, "/snapshot/prepare", events.SnapshotPrepare(key=key, parent=parent))
            await in_thread(_move_onto, staged, mounts, applied)
            # The staging snapshot's tree has moved; what is left of it is an empty shell.
            await self._remove(stage)
            stage = ""
            if not await self._commit(key, chain_id):
                self._label_uncompressed(layer, diff_id)
                return False
        except BaseException:
            for leftover in (key, stage):
                if leftover:
                    with contextlib.suppress(CtrdeckError):
                        await self._remove(leftover)
            raise
        self._label_uncompressed(layer, diff_id)
        return True

    async def _apply(
        self,
        layer: Descriptor,
        diff_id: str,
        mounts: Sequence[Mount],
        stream: BinaryIO | None,
        progress: Callable[[int], None] | None,
        *,
        defer: bool = False,
    ) -> Applied:
        if stream is None:
            return await self.differ.apply(
                self.namespace, layer, mounts, progress=progress, defer_sync=defer
            )
        counted = CountingReader(stream, progress) if progress else stream
        # A streamed apply blocks its thread until the download hands it bytes, which
        # the download does only after the content store's write in the loop's default
        # executor (a few threads on a small machine): applies holding all of them would
        # stop the writes they wait for.
        return await in_thread(
            self._apply_stream,
            counted,
            layer.media_type,
            mounts,
            diff_id,
            defer,
            own_thread=True,
        )

    @staticmethod
    def _check(layer: Descriptor, diff_id: str, applied: Applied) -> None:
        if applied.digest != diff_id:
            raise FailedPrecondition(
                f"layer {layer.digest} unpacked to diff ID {applied.digest}, but the image "
                f"config says {diff_id}"
            )

    async def _commit(self, key: str, chain_id: str) -> bool:
        """Commit `key` as `chain_id`; False (and `key` removed) if another pull was first."""
        try:
            await self.snapshotter.commit(self.namespace, chain_id, key, None, self.lease)
        except AlreadyExists:
            # Another pull committed the same chain meanwhile; its snapshot is as good.
            await self._remove(key)
            return False
        self.publish(
            self.namespace, "/snapshot/commit", events.SnapshotCommit(key=key, name=chain_id)
        )
        return True

    def _apply_stream(
        self,
        stream: BinaryIO,
        media_type: str,
        mounts: Sequence[Mount],
        diff_id: str,
        defer: bool = False,
    ) -> Applied:
        # The walking differ's placement rules, fed from the download instead of the store.
        with apply_target(mounts, overlay_roots([self.snapshotter])) as target:
            return apply_layer(
                stream,
                media_type,
                target.root,
                target.mode,
                lowers=target.lowers,
                expected_diff_id=diff_id,
                defer_sync=defer,
            )

    async def finish(self, config: Descriptor, top_chain_id: str) -> None:
        """Point the config at the top of the chain, so the image keeps it from GC."""
        key = GC_SNAPSHOT + self.name
        self.parts.content_records.update(
            self.namespace, config.digest, {key: top_chain_id}, [f"labels.{key}"]
        )

    async def _remove(self, key: str) -> None:
        await self.snapshotter.remove(self.namespace, key, self.lease)
        self.publish(self.namespace, "/snapshot/remove", events.SnapshotRemove(key=key))

    def _label_uncompressed(self, layer: Descriptor, diff_id: str) -> None:
        meta = self.parts.content_records
        record = meta.get(self.namespace, layer.digest)
        if record.labels.get(UNCOMPRESSED) != diff_id:
            meta.update(
                self.namespace, layer.digest, {UNCOMPRESSED: diff_id}, [f"labels.{UNCOMPRESSED}"]
            )


def _move_onto(staged: Sequence[Mount], mounts: Sequence[Mount], applied: Applied) -> None:
    """Rename a staged layer's tree over the empty upper directory of `mounts`."""
    if len(staged) != 1 or len(mounts) != 1 or mounts[0].type != "overlay":
        raise Internal("a staged layer needs a bind mount and an overlay mount")
    upper, lowers = overlay_dirs(mounts[0])
    if upper is None:
        raise Internal("the snapshot for a staged layer has no upper directory")
    source = staged[0].source
    copy_up_implied(Path(source), applied.implied, lowers)
    # rename(2) replaces an empty directory; the snapshot's fresh upper is one. The tree is
    # made durable where it now is, and the rename once the directory holding it is.
    os.rename(source, upper)
    if applied.pending is not None:
        durable.finish(applied.pending, upper)
    durable.fsync_dirs([upper.parent])
