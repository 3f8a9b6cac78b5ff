"""A namespace's container records as rows, decoding only the records not seen before.

The resync lists every container of the namespace; decoding 10,000 records
(each with its spec) was about a second of the console's CPU, for a safety
net that rarely finds anything changed. `ContainerList` asks for the reply
undecoded (`tui.wire`) and keeps a digest of it and of each record's bytes
with the row made from them: a reply byte for byte the same as the last one
(ctrdeck's engine keeps its encoded list replies while nothing changes) is
the same rows again, and in a reply that differs only the records whose
bytes are new are decoded. A containerd writes a record's labels in no set
order, so a record with several is also known by a digest of its bytes with
the labels sorted (`tui.wire.canonical`, a tenth of a decoding's cost). No
speed here relies on ctrdeck's engine for the rows to be right: bytes never
seen are decoded.
"""

from __future__ import annotations

from core.api.containerd.services.containers import v1 as containers_api
from core.client import Client
from tui import wire
from tui.state import ContainerRow

LIST_ROUTE = "/containerd.services.containers.v1.Containers/List"
# `ListContainersResponse.containers`.
CONTAINERS_FIELD = 1
# `Container.labels` and `Container.extensions`: maps, whose entries a Go server orders at will.
MAP_FIELDS = frozenset({2, 10})


def record_row(c: containers_api.Container) -> ContainerRow:
    """The row of a container record, without its task."""
    return ContainerRow(
        id=c.id,
        image=c.image,
        runtime=c.runtime.name if c.runtime else "",
        snapshotter=c.snapshotter,
        snapshot_key=c.snapshot_key,
        created=c.created_at,
        labels=dict(c.labels),
    )


class ContainerList:
    """The rows of the last `Containers.List` reply, by the digest of each record's bytes."""

    def __init__(self) -> None:
        self._reply = b""
        self._rows: list[ContainerRow] = []
        # Each record's row by the digest of its bytes, with its `wire.canonical` digest
        # when it has more than one map entry (whose order may change); rows by the latter.
        self._by_record: dict[bytes, tuple[ContainerRow, bytes | None]] = {}
        self._by_canonical: dict[bytes, ContainerRow] = {}
        # Records decoded so far: what a resync of an unchanged node must not add to.
        self.decoded = 0

    async def rows(self, client: Client) -> list[ContainerRow]:
        """Every container of `client`'s namespace, as rows without their task."""
        reply = await wire.unary_bytes(client, LIST_ROUTE, containers_api.ListContainersRequest())
        whole = wire.fingerprint(reply)
        if whole == self._reply:
            return self._rows
        try:
            records = wire.elements(reply, CONTAINERS_FIELD)
        except ValueError:
            # Bytes this reader does not take apart: the generated decoder says what they hold.
            listed = containers_api.ListContainersResponse.FromString(reply).containers
            self.decoded += len(listed)
            self._reply, self._rows = whole, [record_row(c) for c in listed]
            self._by_record, self._by_canonical = {}, {}
            return self._rows
        known, known_canonical = self._by_record, self._by_canonical
        by_record: dict[bytes, tuple[ContainerRow, bytes | None]] = {}
        by_canonical: dict[bytes, ContainerRow] = {}
        rows: list[ContainerRow] = []
        for record in records:
            digest = wire.fingerprint(record)
            row, canonical = known.get(digest, (None, None))
            if row is None:
                if known_canonical:
                    canonical = wire.canonical(record, MAP_FIELDS)
                    row = known_canonical.get(canonical)
                if row is None:
                    container = containers_api.Container.FromString(bytes(record))
                    self.decoded += 1
                    row = record_row(container)
                    if len(container.labels) + len(container.extensions) < 2:
                        canonical = None
                    elif canonical is None:
                        canonical = wire.canonical(record, MAP_FIELDS)
            by_record[digest] = (row, canonical)
            if canonical is not None:
                by_canonical[canonical] = row
            rows.append(row)
        self._reply, self._rows = whole, rows
        self._by_record, self._by_canonical = by_record, by_canonical
        return rows


async def count(client: Client) -> int:
    """How many containers `client`'s namespace holds, without decoding their records."""
    reply = await wire.unary_bytes(client, LIST_ROUTE, containers_api.ListContainersRequest())
    try:
        return len(wire.elements(reply, CONTAINERS_FIELD))
    except ValueError:
        return len(containers_api.ListContainersResponse.FromString(reply).containers)
