"""The wire codec: strict decoding, a send limit, responses encoded ahead of time.

A request is checked by `wire.check` before betterproto2 parses it, so bytes
that do not decode as the method's message become one INVALID_ARGUMENT
("error unmarshalling request: ...") naming the field, and no handler sees a
half-parsed message. A reply larger than `[grpc] max_send_message_size` is
RESOURCE_EXHAUSTED, with grpc-go's words.

Encoding is most of what a large response costs in pure Python. Two places
avoid doing it again: an event sent to fifty subscribers is encoded once, and a
list response is assembled from each record's cached encoding. `Preencoded`
carries such bytes through grpclib untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import betterproto2
from grpclib.encoding.proto import ProtoCodec

from core.config import DEFAULT_MAX_MESSAGE_SIZE
from core.errors import InvalidArgument, ResourceExhausted
from core.services import wire


class Preencoded:
    """A message whose wire bytes are already known."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def unmarshal(data: bytes, message_type: Any) -> Any:
    """Strictly decode one request; InvalidArgument when it does not decode."""
    if not issubclass(message_type, betterproto2.Message):
        # Health and reflection use protobuf's own (strict) parser.
        try:
            return message_type.FromString(data)
        except Exception:
            raise InvalidArgument(f"{_prefix(message_type)}: not a valid encoding") from None
    if not data:
        # Most requests (Version, every unfiltered List) are empty: all defaults,
        # which is what parsing nothing gives.
        return message_type()
    try:
        wire.check(data, message_type)
    except wire.WireError as exc:
        raise InvalidArgument(f"error unmarshalling request: {exc}") from None
    try:
        return message_type.FromString(data)
    except (ValueError, OverflowError):
        # Well-formed wire data can still carry, e.g., a timestamp no
        # datetime can hold.
        raise InvalidArgument(f"{_prefix(message_type)}: a value is out of range") from None


def _prefix(message_type: Any) -> str:
    return f"error unmarshalling request: {message_type.__name__}"


def check_sendable(reply: Any, limit: int, what: str) -> None:
    """Refuse to store a record when `reply`, the smallest reply carrying it, is over `limit`."""
    size = len(bytes(reply))
    if size > limit:
        raise ResourceExhausted(
            f"{what}: its record of {size} bytes would exceed max_send_message_size"
            f" ({limit}), so no reply could carry it"
        )


class Codec(ProtoCodec):
    def __init__(self, max_send: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_send = max_send

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, Preencoded):
            data = message.data
        else:
            data = super().encode(message, message_type)
        if len(data) > self.max_send:
            raise ResourceExhausted(
                f"grpc: trying to send message larger than max ({len(data)} vs. {self.max_send})"
            )
        return data

    def decode(self, data: bytes, message_type: Any) -> Any:
        return unmarshal(data, message_type)


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
