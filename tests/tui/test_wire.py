"""Cutting a reply's repeated field out of its bytes, as the generated decoder would read it.

`tui.wire.elements` reads only tags and lengths: each element it returns must
decode to the message the generated decoder finds at that place, other fields
(known or not) must be skipped, and bytes that are no protobuf message must
be refused rather than misread. `ContainerList` decodes only the records
whose bytes it has not seen, also when a server writes their labels in
another order.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import pytest

from core.api.containerd.services.containers import v1 as containers_api
from core.api.google.protobuf import Any as AnyMessage
from core.client import Client
from tui import container_list, wire
from tui.container_list import record_row

SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"


def listing() -> containers_api.ListContainersResponse:
    return containers_api.ListContainersResponse(
        containers=[
            containers_api.Container(
                id=f"c{i}",
                image="busybox",
                labels={"a": str(i), "ünï": "[b]markup[/b]"},
                runtime=containers_api.ContainerRuntime(name="io.containerd.runc.v2"),
                # Specs of several sizes: lengths of one and two varint bytes.
                spec=AnyMessage(type_url=SPEC_URL, value=b'{"x": %d}' % i * (40 * i + 1)),
                snapshot_key=f"c{i}",
                created_at=datetime(2026, 12, 2, 8, i, tzinfo=UTC),
            )
            for i in range(5)
        ]
    )


def test_elements_decode_to_the_listed_records() -> None:
    reply = listing()
    data = bytes(reply)
    parts = wire.elements(data, 1)
    assert [containers_api.Container.FromString(bytes(p)) for p in parts] == reply.containers
    assert [record_row(containers_api.Container.FromString(bytes(p))).labels for p in parts] == [
        dict(c.labels) for c in reply.containers
    ]
    assert wire.elements(b"", 1) == []


def test_other_fields_are_skipped() -> None:
    data = bytes(listing())
    # Unknown fields around the records: a varint (field 7), 64 and 32 bits (8, 9), bytes (10).
    noise = b"\x38\x96\x01" + b"\x41" + bytes(8) + b"\x4d" + bytes(4) + b"\x52\x03abc"
    parts = wire.elements(noise + data + noise, 1)
    assert [bytes(p) for p in parts] == [bytes(p) for p in wire.elements(data, 1)]
    assert len(parts) == 5


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05abc",  # a length past the end
        b"\x0a",  # no length
        b"\x0b",  # a group start (wire type 3)
        b"\x00\x01",  # field number 0
        b"\x09\x01\x02",  # 64 bits cut short
        b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a varint past 64 bits
    ],
)
def test_bytes_that_are_no_message_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        wire.elements(data, 1)


def test_the_fingerprint_tells_records_apart() -> None:
    parts = wire.elements(bytes(listing()), 1)
    assert len({wire.fingerprint(p) for p in parts}) == 5
    assert wire.fingerprint(parts[0]) == wire.fingerprint(bytes(parts[0]))


def record(cid: str, labels: dict[str, str]) -> containers_api.Container:
    return containers_api.Container(
        id=cid,
        image="busybox",
        labels=labels,
        runtime=containers_api.ContainerRuntime(name="io.containerd.runc.v2"),
        spec=AnyMessage(type_url=SPEC_URL, value=b"{}"),
    )


async def test_a_listing_decodes_only_records_it_has_not_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As from a containerd: an unchanged record may come with its labels in another order."""
    replies: list[bytes] = []

    async def reply(client: object, route: str, request: object) -> bytes:
        assert route == container_list.LIST_ROUTE
        return replies.pop(0)

    monkeypatch.setattr(wire, "unary_bytes", reply)

    def listed(*containers: containers_api.Container) -> bytes:
        return bytes(containers_api.ListContainersResponse(containers=list(containers)))

    one = {"a": "1", "b": "2", "c": "3"}
    shuffled = {"c": "3", "a": "1", "b": "2"}
    assert listed(record("x", one)) != listed(record("x", shuffled))
    replies.extend(
        [
            listed(record("x", one), record("y", {"k": "v"})),
            listed(record("x", one), record("y", {"k": "v"})),
            listed(record("x", shuffled), record("y", {"k": "v"})),
            listed(record("x", shuffled), record("y", {"k": "w"})),
            listed(record("x", {"a": "1", "b": "2"}), record("y", {"k": "w"})),
            listed(record("x", one), record("y", {"k": "w"})),
        ]
    )
    listing = container_list.ContainerList()
    client = cast(Client, None)
    first = await listing.rows(client)
    assert [r.labels for r in first] == [one, {"k": "v"}] and listing.decoded == 2
    # The same bytes again; then x's labels in another order: nothing to decode.
    assert await listing.rows(client) is first
    again = await listing.rows(client)
    assert again[0] is first[0] and again[1] is first[1] and listing.decoded == 2
    # y changed: y alone is decoded.
    changed = await listing.rows(client)
    assert changed[0] is first[0] and changed[1].labels == {"k": "w"} and listing.decoded == 3
    # x lost a label, then got it back (the order it is known by is one seen two replies ago).
    fewer = await listing.rows(client)
    assert fewer[0].labels == {"a": "1", "b": "2"} and listing.decoded == 4
    back = await listing.rows(client)
    assert back[0].labels == one and listing.decoded == 5
