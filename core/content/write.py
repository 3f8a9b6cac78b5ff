"""The resumable Write protocol `ctr` speaks, as sessions over the content store.

A `WriteSession` is one `Content.Write` stream: its first step names the ingest
ref (every later one must name the same ref or none) and may give the expected
digest and total size. A digest the namespace already owns ends the session
with AlreadyExists (ctr: done). One another namespace owns is pinned against
the blob sweep and only needs to be owned: its offset is its size, and COMMIT
records the ownership. Otherwise the session writes an ingest in the store,
keyed by namespace and ref (locked against a second writer, resumed from its
data when a client went away), appending and hashing in a worker thread; COMMIT
verifies size and digest and goes through the garbage collector, which renames
the blob into place and records its ownership (attached to the session's lease)
so the sweep never removes it meanwhile. `Writes` holds the parts every
session uses; the engine wires it once.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from core.content.store import ContentStore, Writer
from core.descriptor import validate_digest
from core.errors import AlreadyExists, InvalidArgument
from core.metadata.content import ContentMetadata, ingest_key

if TYPE_CHECKING:
    # core.gc imports the content store: a type only, to keep the import one-way.
    from core.gc import GarbageCollector


class Action(enum.Enum):
    """What one step of a write asks for, as containerd's `WriteAction`."""

    STAT = "stat"
    WRITE = "write"
    COMMIT = "commit"


@dataclass
class WriteStatus:
    """What a step reports back: where the ingest stands, and the digest so far or committed."""

    offset: int
    digest: str
    total: int = 0
    started_at: datetime | None = None
    updated_at: datetime | None = None


class _Shared:
    """A blob another namespace already committed: this one only needs to own it."""

    def __init__(self, digest: str, size: int) -> None:
        self.digest = digest
        self.size = size
        self.started = datetime.now(UTC)


class Writes:
    """The content store, its ownership records and the collector, for write sessions."""

    def __init__(self, store: ContentStore, records: ContentMetadata, gc: GarbageCollector) -> None:
        self.store = store
        self.records = records
        self.gc = gc

    def session(self, namespace: str, lease: str | None) -> WriteSession:
        return WriteSession(self, namespace, lease)


class WriteSession:
    """One write stream in one namespace, under the call's lease; `close` it when done."""

    def __init__(self, parts: Writes, namespace: str, lease: str | None) -> None:
        self.parts = parts
        self.namespace = namespace
        self.lease = lease
        self.ref = ""
        self.total = 0
        self.expected = ""
        self._writer: Writer | _Shared | None = None

    async def step(
        self,
        action: Action,
        *,
        ref: str = "",
        offset: int = 0,
        data: bytes = b"",
        total: int = 0,
        expected: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> WriteStatus:
        """Take one message of the stream; the session is finished after a COMMIT."""
        if not self.ref:
            if not ref:
                raise InvalidArgument("first message must have a reference")
            self.ref = ref
        elif ref and ref != self.ref:
            raise InvalidArgument(f"ref {ref!r} does not match the stream's {self.ref!r}")
        if total > 0:
            self.total = total
        if expected:
            self.expected = validate_digest(expected)
        if self.expected and self.parts.records.has(self.namespace, self.expected):
            raise AlreadyExists(f"content {self.expected}")
        if self._writer is None:
            self._writer = await self._open()
        if isinstance(self._writer, _Shared):
            return self._shared(self._writer, action, labels or {})
        return await self._write(self._writer, action, offset, data, labels or {})

    def close(self) -> None:
        """Let go of the ingest (it stays resumable) or of the pin on a shared blob."""
        if isinstance(self._writer, Writer):
            self._writer.close()
        elif isinstance(self._writer, _Shared):
            self.parts.gc.pins.unpin(self._writer.digest)

    async def _open(self) -> Writer | _Shared:
        parts, expected = self.parts, self.expected
        if expected and parts.gc.pins.pin(expected):
            size = parts.store.info(expected).size
            if self.total and size != self.total:
                parts.gc.pins.unpin(expected)
                raise InvalidArgument(f"content {expected} has size {size}, not {self.total}")
            return _Shared(expected, size)
        writer = await asyncio.to_thread(
            parts.store.open_writer, ingest_key(self.namespace, self.ref), self.total, expected
        )
        parts.records.begin_ingest(self.namespace, self.ref, expected, self.lease)
        return writer

    def _shared(self, shared: _Shared, action: Action, labels: Mapping[str, str]) -> WriteStatus:
        if action is Action.COMMIT:
            self.parts.records.add(self.namespace, shared.digest, shared.size, labels, self.lease)
        return WriteStatus(
            offset=shared.size,
            digest=shared.digest,
            total=shared.size,
            started_at=shared.started,
            updated_at=shared.started,
        )

    async def _write(
        self,
        writer: Writer,
        action: Action,
        offset: int,
        data: bytes,
        labels: Mapping[str, str],
    ) -> WriteStatus:
        if action in (Action.WRITE, Action.COMMIT):
            if offset == 0 and writer.offset > 0:
                await asyncio.to_thread(writer.truncate, 0)
            if data:
                await asyncio.to_thread(writer.write, data, offset or None)
            elif offset > 0 and offset != writer.offset:
                writer.write(b"", offset)
        if action is Action.COMMIT:
            digest = await self.parts.gc.commit_blob(
                self.namespace, self.lease, writer, self.total, self.expected, labels, self.ref
            )
            return WriteStatus(offset=writer.offset, digest=digest)
        status = writer.status()
        return WriteStatus(
            offset=writer.offset,
            digest=writer.digest(),
            total=status.total or self.total,
            started_at=status.started_at,
            updated_at=status.updated_at,
        )
