"""Content: blobs by digest, and the resumable Write protocol `ctr` speaks.

The blob files are shared by all namespaces; what a namespace sees is what the
metadata says it owns. Ingest refs are private to their namespace. Writes are
visible only after a verified, atomic commit. Heavy file work (hashing a resumed
ingest, large writes, the fsync of a commit) runs in a worker thread so the
event loop keeps serving other calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from core import context, filters
from core.api.containerd import events
from core.api.containerd.services.content import v1 as api
from core.api.google.protobuf import Empty
from core.content.store import CHUNK_SIZE, IngestStatus, Writer
from core.descriptor import validate_digest
from core.engine import Engine
from core.errors import AlreadyExists, InvalidArgument, NotFound
from core.metadata.content import ContentRecord, ingest_key
from core.services.convert import ts

LIST_BATCH = 100


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


class _Shared:
    """A blob another namespace already committed: this one only needs to own it."""

    def __init__(self, digest: str, size: int) -> None:
        self.digest_value = digest
        self.offset = size
        self.started = datetime.now(UTC)

    def digest(self) -> str:
        return self.digest_value


class ContentService(api.ContentBase):
    PARTS: tuple[str, ...] = ("metadata", "content", "events", "gc")
    """The engine's parts it uses: Introspection lists their types as its `requires`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.meta = engine.metadata.content
        self.store = engine.content

    async def info(self, message: api.InfoRequest) -> api.InfoResponse:
        validate_digest(message.digest)
        return api.InfoResponse(info=info_out(self.meta.get(context.namespace(), message.digest)))

    async def update(self, message: api.UpdateRequest) -> api.UpdateResponse:
        info = message.info or api.Info()
        validate_digest(info.digest)
        paths = list(message.update_mask.paths) if message.update_mask else []
        record = self.meta.update(context.namespace(), info.digest, info.labels, paths)
        return api.UpdateResponse(info=info_out(record))

    async def list(self, message: api.ListContentRequest) -> AsyncIterator[api.ListContentResponse]:
        records = self.meta.list(context.namespace(), list(message.filters))
        for start in range(0, len(records), LIST_BATCH):
            batch = records[start : start + LIST_BATCH]
            yield api.ListContentResponse(info=[info_out(r, with_updated=False) for r in batch])

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
        self.meta.get(ns, message.digest)
        chunks = self.store.read(message.digest, message.offset, message.size, CHUNK_SIZE)
        sent = 0
        while True:
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                return
            # containerd counts a response's offset from the start of this read.
            yield api.ReadContentResponse(offset=sent, data=chunk)
            sent += len(chunk)

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
        ns = context.namespace()
        lease = context.lease()
        writer: Writer | _Shared | None = None
        ref = ""
        total = 0
        expected = ""
        try:
            async for req in messages:
                if not ref:
                    if not req.ref:
                        raise InvalidArgument("first message must have a reference")
                    ref = req.ref
                elif req.ref and req.ref != ref:
                    raise InvalidArgument(f"ref {req.ref!r} does not match the stream's {ref!r}")
                if req.total > 0:
                    total = req.total
                if req.expected:
                    expected = validate_digest(req.expected)
                if expected and self.meta.has(ns, expected):
                    raise AlreadyExists(f"content {expected}")
                if writer is None:
                    writer = await self._open(ns, ref, total, expected, lease)
                yield await self._step(ns, lease, ref, writer, req, total, expected)
                if req.action == api.WriteAction.COMMIT:
                    return
        finally:
            if isinstance(writer, Writer):
                writer.close()
            elif isinstance(writer, _Shared):
                self.engine.gc.pins.unpin(writer.digest_value)

    async def _open(
        self, ns: str, ref: str, total: int, expected: str, lease: str | None
    ) -> Writer | _Shared:
        if expected and self.engine.gc.pins.pin(expected):
            size = self.store.info(expected).size
            if total and size != total:
                self.engine.gc.pins.unpin(expected)
                raise InvalidArgument(f"content {expected} has size {size}, not {total}")
            return _Shared(expected, size)
        writer = await asyncio.to_thread(
            self.store.open_writer, ingest_key(ns, ref), total, expected
        )
        self.meta.begin_ingest(ns, ref, expected, lease)
        return writer

    async def _step(
        self,
        ns: str,
        lease: str | None,
        ref: str,
        writer: Writer | _Shared,
        req: api.WriteContentRequest,
        total: int,
        expected: str,
    ) -> api.WriteContentResponse:
        resp = api.WriteContentResponse(action=req.action)
        if isinstance(writer, _Shared):
            if req.action == api.WriteAction.COMMIT:
                self.meta.add(ns, writer.digest_value, writer.offset, req.labels, lease)
            resp.offset = resp.total = writer.offset
            resp.digest = writer.digest_value
            resp.started_at = resp.updated_at = writer.started
            return resp
        if req.action in (api.WriteAction.WRITE, api.WriteAction.COMMIT):
            if req.offset == 0 and writer.offset > 0:
                await asyncio.to_thread(writer.truncate, 0)
            if req.data:
                await asyncio.to_thread(writer.write, req.data, req.offset or None)
            elif req.offset > 0 and req.offset != writer.offset:
                writer.write(b"", req.offset)
        if req.action == api.WriteAction.COMMIT:
            digest = await self.engine.gc.commit_blob(
                ns, lease, writer, total, expected, req.labels, ref
            )
            resp.digest = digest
            resp.offset = writer.offset
            return resp
        status = writer.status()
        resp.offset = writer.offset
        resp.total = status.total or total
        resp.started_at = status.started_at
        resp.updated_at = status.updated_at
        resp.digest = writer.digest()
        return resp
