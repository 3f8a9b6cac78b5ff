"""Replies kept as bytes: a unary call answered undecoded, and a message's elements cut out of it.

Decoding a `Containers.List` reply of 10,000 records (each with its spec) costs
the console about a second of CPU, and a resync asks for one although it
rarely finds anything changed. `unary_bytes` makes a call through the
client's channel and hands back the reply's bytes as they came;
`elements` cuts the repeated message field of such a reply into each
element's bytes, reading only the tags and lengths of the protobuf wire
format, so a caller decodes only the elements whose bytes it has not seen
(`fingerprint`, or `canonical` where a server writes maps in no set order).
Nothing here depends on the engine: any containerd's reply is a protobuf
message, and bytes that differ only decode again.
"""

from __future__ import annotations

import hashlib
from typing import Any

from grpclib.const import Cardinality

from core.client import Client
from tui.protowire import fields


class _Bytes:
    """A reply type that is no message: grpclib's codec hands its `FromString` the bytes."""

    @staticmethod
    def FromString(data: bytes) -> bytes:
        return bytes(data)


async def unary_bytes(client: Client, route: str, request: Any) -> bytes:
    """The reply to a unary call on `route` (e.g. `/pkg.Service/Method`), not decoded."""
    async with client.channel.request(
        route,
        Cardinality.UNARY_UNARY,
        type(request),
        _Bytes,
        timeout=client.timeout,
        metadata=client.metadata,
    ) as stream:
        await stream.send_message(request, end=True)
        reply = await stream.recv_message()
    # An empty message may come as no bytes at all.
    return reply or b""


def elements(data: bytes, field: int) -> list[memoryview]:
    """The bytes of each element of repeated message field `field`, in order.

    Other fields are skipped. Raises ValueError on bytes that are no
    well-formed protobuf message.
    """
    view = memoryview(data)
    return [view[value:end] for number, _, _, value, end in fields(view) if number == field]


def canonical(data: bytes | memoryview, maps: frozenset[int]) -> bytes:
    """A digest of a message that its map fields' order does not change.

    A Go server (containerd) writes a map's entries in no set order, so one
    record can come as different bytes; here the entries of the fields in
    `maps` are sorted, after the other fields in the order they came. Two
    encodings with the same digest decode to the same message: map keys are
    unique, so their entries' order says nothing.
    """
    view = memoryview(data)
    digest = hashlib.sha256()
    entries: list[bytes] = []
    for number, _, start, _, end in fields(view):
        if number in maps:
            entries.append(bytes(view[start:end]))
        else:
            digest.update(view[start:end])
    # Apart from the fields before them: "these fields, then these entries".
    digest.update(b"\x00")
    for entry in sorted(entries):
        digest.update(entry)
    return digest.digest()


def fingerprint(data: bytes | memoryview) -> bytes:
    """A digest that tells two byte strings apart (SHA-256: the CPU's own instructions)."""
    return hashlib.sha256(data).digest()
