"""Snapshots: containerd's Snapshots service over the engine's snapshotters.

Every request names its snapshotter; the work is the snapshotter's, done in
the call's namespace and attached to the call's lease. Prepare, Commit and
Remove publish `/snapshot/prepare`, `/snapshot/commit` and `/snapshot/remove`
(View publishes nothing, as in containerd). A removal may leave a parent
chain nothing refers to any more, so it schedules garbage collection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from core import context
from core.api.containerd import events, types
from core.api.containerd.services.snapshots import v1 as api
from core.api.google.protobuf import Empty
from core.engine import Engine
from core.metadata.snapshots import SnapshotRecord
from core.services.convert import ts
from core.snapshots import Mount, Snapshotter, select

LIST_BATCH = 100


def info_out(record: SnapshotRecord) -> api.Info:
    return api.Info(
        name=record.key,
        parent=record.parent,
        kind=api.Kind(int(record.kind)),
        created_at=ts(record.created_at),
        updated_at=ts(record.updated_at),
        labels=record.labels,
    )


def mounts_out(mounts: list[Mount]) -> list[types.Mount]:
    return [
        types.Mount(type=m.type, source=m.source, target=m.target, options=list(m.options))
        for m in mounts
    ]


class SnapshotsService(api.SnapshotsBase):
    PARTS: tuple[str, ...] = ("events", "gc", "snapshotters")
    """The engine's parts it uses: Introspection lists their types as its `requires`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _snapshotter(self, name: str) -> Snapshotter:
        return select(self.engine.snapshotters, name)

    async def prepare(self, message: api.PrepareSnapshotRequest) -> api.PrepareSnapshotResponse:
        sn = self._snapshotter(message.snapshotter)
        ns = context.namespace()
        mounts = await sn.prepare(ns, message.key, message.parent, message.labels, context.lease())
        self.engine.events.publish(
            ns, "/snapshot/prepare", events.SnapshotPrepare(key=message.key, parent=message.parent)
        )
        return api.PrepareSnapshotResponse(mounts=mounts_out(mounts))

    async def view(self, message: api.ViewSnapshotRequest) -> api.ViewSnapshotResponse:
        sn = self._snapshotter(message.snapshotter)
        ns = context.namespace()
        mounts = await sn.view(ns, message.key, message.parent, message.labels, context.lease())
        return api.ViewSnapshotResponse(mounts=mounts_out(mounts))

    async def mounts(self, message: api.MountsRequest) -> api.MountsResponse:
        sn = self._snapshotter(message.snapshotter)
        mounts = await sn.mounts(context.namespace(), message.key)
        return api.MountsResponse(mounts=mounts_out(mounts))

    async def commit(self, message: api.CommitSnapshotRequest) -> Empty:
        sn = self._snapshotter(message.snapshotter)
        ns = context.namespace()
        await sn.commit(ns, message.name, message.key, message.labels, context.lease())
        self.engine.events.publish(
            ns, "/snapshot/commit", events.SnapshotCommit(key=message.key, name=message.name)
        )
        return Empty()

    async def remove(self, message: api.RemoveSnapshotRequest) -> Empty:
        sn = self._snapshotter(message.snapshotter)
        ns = context.namespace()
        await sn.remove(ns, message.key, context.lease())
        self.engine.events.publish(ns, "/snapshot/remove", events.SnapshotRemove(key=message.key))
        await self.engine.gc.collect(wait=False)
        return Empty()

    async def stat(self, message: api.StatSnapshotRequest) -> api.StatSnapshotResponse:
        sn = self._snapshotter(message.snapshotter)
        record = await sn.stat(context.namespace(), message.key)
        return api.StatSnapshotResponse(info=info_out(record))

    async def update(self, message: api.UpdateSnapshotRequest) -> api.UpdateSnapshotResponse:
        sn = self._snapshotter(message.snapshotter)
        info = message.info or api.Info()
        paths = list(message.update_mask.paths) if message.update_mask else []
        record = await sn.update(context.namespace(), info.name, info.labels, paths)
        return api.UpdateSnapshotResponse(info=info_out(record))

    async def list(
        self, message: api.ListSnapshotsRequest
    ) -> AsyncIterator[api.ListSnapshotsResponse]:
        sn = self._snapshotter(message.snapshotter)
        records = await sn.list(context.namespace(), list(message.filters))
        for start in range(0, len(records), LIST_BATCH):
            batch = records[start : start + LIST_BATCH]
            yield api.ListSnapshotsResponse(info=[info_out(r) for r in batch])

    async def usage(self, message: api.UsageRequest) -> api.UsageResponse:
        sn = self._snapshotter(message.snapshotter)
        usage = await sn.usage(context.namespace(), message.key)
        return api.UsageResponse(size=usage.size, inodes=usage.inodes)

    async def cleanup(self, message: api.CleanupRequest) -> Empty:
        await self._snapshotter(message.snapshotter).cleanup()
        return Empty()
