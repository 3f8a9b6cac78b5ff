"""A namespace's container records as rows, decoding only the records not seen before.

The resync lists every container of the namespace; decoding 10,000 records
(each with its spec) was about a second of the console's CPU, for a safety
net that rarely finds anything changed. `ContainerList` asks for the reply
undecoded (`tui.wire`) and keeps a digest of it and of each record's bytes
with the row made from them: a reply byte for byte the same as the last one
(ctrdeck's engine keeps its encoded list replies while nothing changes) is
the same rows again, and in a reply that differs only the records whose
bytes are new are decoded, and only the fields a row shows (`lean_row`: the
spec, most of a record's bytes, is skipped; a record this reader does not
take apart the generated decoder reads). A containerd writes a record's labels in no set
order, so a record with several is also known by a digest of its bytes with
the labels sorted (`tui.wire.canonical`, a tenth of a decoding's cost). No
speed here relies on ctrdeck's engine for the rows to be right: bytes never
seen are decoded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.api.containerd.services.containers import v1 as containers_api
from core.client import Client
from tui import wire
from tui.protowire import LEN, VARINT, fields, read_varint
from tui.state import ContainerRow

LIST_ROUTE = "/containerd.services.containers.v1.Containers/List"
# `ListContainersResponse.containers`.
CONTAINERS_FIELD = 1
# `Container.labels` and `Container.extensions`: maps, whose entries a Go server orders at will.
MAP_FIELDS = frozenset({2, 10})
# `Container`'s string fields a row shows, by number.
ROW_STRINGS = {1: "id", 3: "image", 6: "snapshotter", 7: "snapshot_key"}
LABELS, RUNTIME, CREATED_AT = 2, 4, 8
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def _text(data: memoryview) -> str:
    return str(data, "utf-8")


def _signed(value: int, bits: int) -> int:
    """A varint read as protobuf's intN: its low `bits` bits, two's complement."""
    value &= (1 << bits) - 1
    sign = 1 << (bits - 1)
    return (value ^ sign) - sign


def _strings(data: memoryview, wanted: tuple[int, ...]) -> list[str] | None:
    """The string fields `wanted` of a small message ("" if absent), or None if one is no string."""
    found = [""] * len(wanted)
    for number, kind, _, value, end in fields(data):
        if number in wanted:
            if kind != LEN:
                return None
            found[wanted.index(number)] = _text(data[value:end])
    return found


def _timestamp(data: memoryview) -> datetime | None:
    """A `google.protobuf.Timestamp` as the generated classes make it, or None if odd."""
    seconds = nanos = 0
    for number, kind, _, value, _end in fields(data):
        if number in (1, 2):
            if kind != VARINT:
                return None
            if number == 1:
                seconds = _signed(read_varint(data, value)[0], 64)
            else:
                nanos = _signed(read_varint(data, value)[0], 32)
    return EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


def lean_row(record: memoryview) -> tuple[ContainerRow, int] | None:
    """The row of a `Container` record read off its bytes, and how many map entries it has.

    Reads only the fields a row shows and skips the rest (the spec, the
    extensions' values). None where the bytes are odd enough (a field of
    an unexpected wire type, a message field given twice, text that is no
    UTF-8, a malformed message) that only the generated decoder should say
    what they mean.
    """
    strings = dict.fromkeys(ROW_STRINGS.values(), "")
    labels: dict[str, str] = {}
    runtime: str | None = None
    created: datetime | None = None
    entries = 0
    try:
        for number, kind, _, value, end in fields(record):
            if number in MAP_FIELDS:
                entries += 1
            if number in ROW_STRINGS:
                if kind != LEN:
                    return None
                strings[ROW_STRINGS[number]] = _text(record[value:end])
            elif number == LABELS:
                entry = _strings(record[value:end], (1, 2)) if kind == LEN else None
                if entry is None:
                    return None
                labels[entry[0]] = entry[1]
            elif number == RUNTIME:
                given_once = kind == LEN and runtime is None
                name = _strings(record[value:end], (1,)) if given_once else None
                if name is None:
                    return None
                runtime = name[0]
            elif number == CREATED_AT:
                if kind != LEN or created is not None:
                    return None
                created = _timestamp(record[value:end])
                if created is None:
                    return None
    except (ValueError, OverflowError):
        # UnicodeDecodeError is a ValueError.
        return None
    row = ContainerRow(
        id=strings["id"],
        image=strings["image"],
        runtime=runtime or "",
        snapshotter=strings["snapshotter"],
        snapshot_key=strings["snapshot_key"],
        created=created,
        labels=labels,
    )
    return row, entries


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
                    self.decoded += 1
                    lean = lean_row(record)
                    if lean is None:
                        container = containers_api.Container.FromString(bytes(record))
                        row = record_row(container)
                        entries = len(container.labels) + len(container.extensions)
                    else:
                        row, entries = lean
                    if entries < 2:
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
