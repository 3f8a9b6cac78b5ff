"""The protobuf wire format read by hand: varints and a message's fields, importing nothing.

Two paths read replies without decoding them through the generated classes:
the resync cuts a container list into its records' bytes (`tui.wire`), and
`ctrdeck pull` reads its progress messages before any of the generic client
is imported (`tui.pull_wire`). Both walk a message's fields here; each says
what a malformed message means to its caller (this raises `ValueError`).
"""

from __future__ import annotations

from collections.abc import Iterator

# Wire types (the low three bits of a tag).
VARINT, I64, LEN, I32 = 0, 1, 2, 5


def read_varint(data: bytes | memoryview, at: int) -> tuple[int, int]:
    """The varint at `at`, and where the next thing starts."""
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def fields(data: bytes | memoryview) -> Iterator[tuple[int, int, int, int, int]]:
    """Each field: its number, wire type, where it starts, where its value starts, its end."""
    end = len(data)
    at = 0
    while at < end:
        start = at
        tag, at = read_varint(data, at)
        number, kind = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("field number 0")
        if kind == LEN:
            size, at = read_varint(data, at)
            value = at
            at += size
        elif kind == VARINT:
            value = at
            _, at = read_varint(data, at)
        elif kind == I64:
            value, at = at, at + 8
        elif kind == I32:
            value, at = at, at + 4
        else:
            raise ValueError(f"wire type {kind}")
        if at > end:
            raise ValueError("a field past the end of the message")
        yield number, kind, start, value, at
