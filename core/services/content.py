"""Content: blobs by digest, and the resumable Write protocol `ctr` speaks.

The blob files are shared by all namespaces; what a namespace sees is what the
metadata says it owns. Ingest refs are private to their namespace. A `Write`
stream is a session of `core/content/write.py`, which owns the protocol; this
module turns its messages into session steps and the steps' status into
replies. `List`, `Info` and the `Read` of a small blob answer from encoded
replies kept until a row of the content table next changes
(`replies.ReplyCache` on `Database.content_generation`): `ctr run` asks Info and
Read of the same manifest and config ten times each, between writes of leases,
snapshots and containers that do not touch them. Heavy file work runs in a
worker thread so the event loop keeps serving other calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from core import context, filters
from core.api.containerd import events
from core.api.containerd.services.content import v1 as api
from core.api.google.protobuf import Empty
from core.content.store import CHUNK_SIZE, IngestStatus
from core.content.write import Action, WriteStatus
from core.descriptor import validate_digest
from core.engine import Engine
from core.errors import NotFound
from core.metadata.content import ContentRecord, ingest_key
from core.services.codec import Preencoded
from core.services.convert import ts
from core.services.replies import ReplyCache

LIST_BATCH = 100
# Blobs up to this size are read on the event loop, in one piece.
INLINE_READ_MAX = 64 * 1024
INFO_CACHE = 256
READ_CACHE = 64
READ_CACHE_BYTES = 8 << 20


def info_out(r: ContentRecord, with_updated: bool = True) -> api.Info:
    return api.Info(
        digest=r.digest,
        size=r.size,
        created_at=ts(r.created_at),
        updated_at=ts(r.updated_at if with_updated else 0),
        labels=r.labels,
    )


def status_out(ref: str, s: IngestStatus) -> api.Status:
    return api.Status(
        ref=ref,
        offset=s.offset,
        total=s.total,
        expected=s.expected,
        started_at=s.started_at,
        updated_at=s.updated_at,
    )


ACTIONS = {
    api.WriteAction.STAT: Action.STAT,
    api.WriteAction.WRITE: Action.WRITE,
    api.WriteAction.COMMIT: Action.COMMIT,
}


def write_out(action: api.WriteAction, status: WriteStatus) -> api.WriteContentResponse:
    resp = api.WriteContentResponse(
        action=action, offset=status.offset, total=status.total, digest=status.digest
    )
    if status.started_at is not None:
        resp.started_at = status.started_at
    if status.updated_at is not None:
        resp.updated_at = status.updated_at
    return resp


class ContentService(api.ContentBase):
    PARTS: tuple[str, ...] = ("metadata", "content", "events", "gc")
    """The engine's parts it uses: Introspection lists their types as its `requires`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.meta = engine.metadata.content
        self.store = engine.content
        self.writes = engine.writes
        db = engine.metadata.db
        self.replies = ReplyCache(lambda: db.content_generation)
        self.infos = ReplyCache(lambda: db.content_generation, limit=INFO_CACHE)
        # Blob bytes never change under a digest; whether the namespace owns
        # the blob is the content table's, as for Info.
        self.reads = ReplyCache(
            lambda: db.content_generation, limit=READ_CACHE, max_bytes=READ_CACHE_BYTES
        )

    async def info(self, message: api.InfoRequest) -> api.InfoResponse:
        validate_digest(message.digest)
        ns = context.namespace()
        data = self.infos.get((ns, message.digest), lambda: self._encoded_info(ns, message.digest))
        return Preencoded(data)  # type: ignore[return-value]

    def _encoded_info(self, ns: str, digest: str) -> bytes:
        return bytes(api.InfoResponse(info=info_out(self.meta.get(ns, digest))))

    async def update(self, message: api.UpdateRequest) -> api.UpdateResponse:
        info = message.info or api.Info()
        validate_digest(info.digest)
        paths = list(message.update_mask.paths) if message.update_mask else []
        record = self.meta.update(context.namespace(), info.digest, info.labels, paths)
        return api.UpdateResponse(info=info_out(record))

    async def list(self, message: api.ListContentRequest) -> AsyncIterator[api.ListContentResponse]:
        ns = context.namespace()
        filters = tuple(message.filters)
        for data in self.replies.get((ns, filters), lambda: self._encoded_list(ns, filters)):
            yield Preencoded(data)  # type: ignore[misc]

    def _encoded_list(self, ns: str, filters: tuple[str, ...]) -> list[bytes]:
        """The replies of one `List`: the namespace's records, `LIST_BATCH` to a message."""
        records = self.meta.list(ns, list(filters))
        return [
            bytes(
                api.ListContentResponse(
                    info=[info_out(r, with_updated=False) for r in records[at : at + LIST_BATCH]]
                )
            )
            for at in range(0, len(records), LIST_BATCH)
        ]

    async def delete(self, message: api.DeleteContentRequest) -> Empty:
        ns = context.namespace()
        validate_digest(message.digest)
        self.meta.delete(ns, message.digest)
        self.engine.events.publish(
            ns, "/content/delete", events.ContentDelete(digest=message.digest)
        )
        await self.engine.gc.collect(wait=False)
        return Empty()

    async def read(self, message: api.ReadContentRequest) -> AsyncIterator[api.ReadContentResponse]:
        ns = context.namespace()
        validate_digest(message.digest)
        key = (ns, message.digest, message.offset, message.size)
        small = self.reads.get(key, lambda: self._encoded_small_read(ns, message))
        if small is not None:
            for data in small:
                yield Preencoded(data)  # type: ignore[misc]
            return
        chunks = self.store.read(message.digest, message.offset, message.size, CHUNK_SIZE)
        sent = 0
        while chunk := await asyncio.to_thread(next, chunks, None):
            yield api.ReadContentResponse(offset=sent, data=chunk)
            sent += len(chunk)

    def _encoded_small_read(self, ns: str, message: api.ReadContentRequest) -> list[bytes] | None:
        """The replies of a Read of a blob up to `INLINE_READ_MAX`, read on the loop; None
        for a larger blob, which streams from a worker thread."""
        record = self.meta.get(ns, message.digest)
        if record.size > INLINE_READ_MAX:
            return None
        # A manifest or config (`ctr run` reads ten) costs less to read than a thread hop.
        replies = []
        sent = 0
        for chunk in self.store.read(message.digest, message.offset, message.size, CHUNK_SIZE):
            # containerd counts a response's offset from the start of this read.
            replies.append(bytes(api.ReadContentResponse(offset=sent, data=chunk)))
            sent += len(chunk)
        return replies

    async def status(self, message: api.StatusRequest) -> api.StatusResponse:
        ns = context.namespace()
        if message.ref not in self.meta.ingest_refs(ns):
            raise NotFound(f"ingest ref {message.ref!r}")
        s = self.store.status(ingest_key(ns, message.ref))
        return api.StatusResponse(status=status_out(message.ref, s))

    async def list_statuses(self, message: api.ListStatusesRequest) -> api.ListStatusesResponse:
        ns = context.namespace()
        match = filters.parse_all(list(message.filters))
        out = []
        for ref in self.meta.ingest_refs(ns):
            if not match.match(filters.field_adaptor({"ref": ref})):
                continue
            try:
                out.append(status_out(ref, self.store.status(ingest_key(ns, ref))))
            except NotFound:
                continue
        return api.ListStatusesResponse(statuses=out)

    async def abort(self, message: api.AbortRequest) -> Empty:
        ns = context.namespace()
        if message.ref not in self.meta.ingest_refs(ns):
            raise NotFound(f"ingest ref {message.ref!r}")
        try:
            self.store.abort(ingest_key(ns, message.ref))
        finally:
            self.meta.end_ingest(ns, message.ref)
        return Empty()

    async def write(
        self, messages: AsyncIterator[api.WriteContentRequest]
    ) -> AsyncIterator[api.WriteContentResponse]:
        session = self.writes.session(context.namespace(), context.lease())
        try:
            async for req in messages:
                action = ACTIONS.get(req.action, Action.STAT)
                status = await session.step(
                    action,
                    ref=req.ref,
                    offset=req.offset,
                    data=req.data,
                    total=req.total,
                    expected=req.expected,
                    labels=req.labels,
                )
                yield write_out(req.action, status)
                if action is Action.COMMIT:
                    return
        finally:
            session.close()
