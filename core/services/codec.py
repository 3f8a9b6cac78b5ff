"""The wire codec: protobuf as usual, plus responses encoded ahead of time.

Encoding is most of what a large response costs in pure Python. Two places
avoid doing it again: an event sent to fifty subscribers is encoded once, and a
list response is assembled from each record's cached encoding. `Preencoded`
carries such bytes through grpclib untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from grpclib.encoding.proto import ProtoCodec


class Preencoded:
    """A message whose wire bytes are already known."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Codec(ProtoCodec):
    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, Preencoded):
            return message.data
        return super().encode(message, message_type)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def repeated(field_number: int, items: Iterable[bytes]) -> bytes:
    """A repeated message field built from already encoded items."""
    tag = _varint(field_number << 3 | 2)
    return b"".join(tag + _varint(len(item)) + item for item in items)


class EncodingCache:
    """Encoded messages by a key that changes whenever the record does."""

    def __init__(self, limit: int = 20_000) -> None:
        self.limit = limit
        self._items: dict[Any, bytes] = {}

    def get(self, key: Any, build: Any) -> bytes:
        data = self._items.get(key)
        if data is None:
            if len(self._items) >= self.limit:
                self._items.clear()
            data = self._items[key] = bytes(build())
        return data
