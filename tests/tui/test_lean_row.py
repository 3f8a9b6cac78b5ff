"""A container's row read off its record's bytes equals the row of the generated decoder's record.

The resync at connect makes a row for every container of the namespace;
`tui.container_list.lean_row` reads only the fields a row shows and skips
the spec. It must make the same row as `record_row` of the generated
decoder's message for any record (fields in any order, unknown fields,
maps with repeated keys, timestamps before 1970), and hand back None,
for the generated decoder to read, wherever bytes are odd.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from core.api.containerd.services.containers import v1 as containers_api
from core.api.google.protobuf import Any as AnyMessage
from tui.container_list import lean_row, record_row
from tui.protowire import fields

ALPHABET = "abcXYZ09-_./:ünï漢[]\\\x1b "


def text(rng: random.Random, longest: int = 12) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(longest)))


def record(rng: random.Random) -> containers_api.Container:
    """A container record with each optional field there or not."""
    c = containers_api.Container(id=text(rng) or "c")
    if rng.random() < 0.8:
        c.image = text(rng, 40)
    if rng.random() < 0.7:
        c.labels = {text(rng): text(rng, 30) for _ in range(rng.randrange(6))}
    if rng.random() < 0.8:
        c.runtime = containers_api.ContainerRuntime(
            name=text(rng),
            options=AnyMessage(type_url="x", value=rng.randbytes(rng.randrange(20)))
            if rng.random() < 0.5
            else None,
        )
    if rng.random() < 0.8:
        c.spec = AnyMessage(type_url="spec", value=rng.randbytes(rng.randrange(3000)))
    if rng.random() < 0.8:
        c.snapshotter = text(rng)
        c.snapshot_key = text(rng)
    if rng.random() < 0.8:
        microseconds = rng.randrange(-(10**15), 10**16)
        c.created_at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=microseconds)
    if rng.random() < 0.5:
        c.updated_at = datetime(2026, 12, 2, tzinfo=UTC)
    if rng.random() < 0.5:
        c.extensions = {
            text(rng): AnyMessage(type_url="e", value=rng.randbytes(9)) for _ in range(3)
        }
    if rng.random() < 0.3:
        c.sandbox = text(rng)
    return c


def shuffled(data: bytes, rng: random.Random) -> bytes:
    """The same message with its fields in another order (as a Go server may write maps)."""
    view = memoryview(data)
    parts = [bytes(view[start:end]) for _, _, start, _, end in fields(view)]
    rng.shuffle(parts)
    return b"".join(parts)


@pytest.mark.parametrize("seed", range(8))
def test_lean_rows_equal_the_generated_decoders(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        message = record(rng)
        data = bytes(message)
        if rng.random() < 0.5:
            data = shuffled(data, rng)
        decoded = containers_api.Container.FromString(data)
        lean = lean_row(memoryview(data))
        assert lean is not None
        row, entries = lean
        assert row == record_row(decoded)
        assert row.created == decoded.created_at
        assert entries == len(decoded.labels) + len(decoded.extensions)


def field(number: int, kind: int, payload: bytes) -> bytes:
    """One field: its tag, and for length-delimited fields its length, then `payload`."""
    tag = bytes([number << 3 | kind])
    return tag + (bytes([len(payload)]) + payload if kind == 2 else payload)


def test_repeated_keys_and_strings_take_the_last_as_protobuf_does() -> None:
    entry_a1 = field(1, 2, b"a") + field(2, 2, b"1")
    entry_a2 = field(2, 2, b"2") + field(1, 2, b"a")
    data = (
        field(1, 2, b"first")
        + field(2, 2, entry_a1)
        + field(15, 2, b"unknown")
        + field(2, 2, entry_a2)
        + field(1, 2, b"second")
    )
    row, entries = lean_row(memoryview(data)) or (None, 0)
    assert row == record_row(containers_api.Container.FromString(data))
    assert row is not None and row.id == "second" and row.labels == {"a": "2"}
    assert entries == 2


@pytest.mark.parametrize(
    "odd",
    [
        field(1, 0, b"\x05"),  # the id as a varint
        field(4, 2, field(1, 2, b"runc")) * 2,  # a message field given twice
        field(8, 2, field(1, 0, b"\x01")) * 2,
        field(8, 2, field(1, 2, b"x")),  # seconds as bytes
        field(3, 2, b"\xff\xfe"),  # no UTF-8
        field(2, 2, field(1, 2, b"\xc3")),
        field(2, 0, b"\x01"),
        b"\x0a\x05ab",  # cut short
    ],
)
def test_odd_bytes_are_left_to_the_generated_decoder(odd: bytes) -> None:
    assert lean_row(memoryview(odd)) is None
