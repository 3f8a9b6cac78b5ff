"""HPACK header blocks remembered while the compression table they depend on is unchanged.

Every unary call decodes the client's request headers and encodes the same
reply headers (`:status 200`, content-type) and trailers (`grpc-status 0`).
After a connection's first calls each of those is a block of table indexes,
and hpack rebuilds it field by field every time: about a tenth of the
engine's CPU per call. `CachedEncoder` and `CachedDecoder` are hpack's own,
remembering a block's result, but only a block whose coding left the dynamic
table exactly as it found it (no field added, none evicted, no size update
pending), and only while that table stays as it was: any change to it
(a new field, an eviction, a resize by either peer's settings) forgets
everything remembered. A cached result is then what hpack would compute, and
hpack's state is what it would be. Limits a result depends on (the header
list size, the allowed table size) are part of the same check, and a block
that fails to decode is never remembered, so it fails the same way each time.
A block not remembered that is only one-byte table indexes (a known list the
client codes anew after the table moved) is a lookup per field, with hpack's own
size limit; anything else, or anything hpack would refuse, is hpack's. `mark` and
`undo` put the decoder's table back as it was, for `core.receive`, which decodes
a request's block on h2's behalf and hands it back to h2 if h2 would refuse it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from hpack import Decoder, Encoder, HeaderTuple
from hpack.table import HeaderTable

# What one connection may keep per direction: a peer sending a new unindexed
# literal with every call, or long blocks, cannot make the engine hold more than
# MAX_BLOCKS blocks of MAX_BLOCK_BYTES (a block of table indexes is a few bytes
# per field; decoded fields from the table share its strings).
MAX_BLOCKS = 32
MAX_BLOCK_BYTES = 512

# A field coded as a table index below 127 is one byte, 0x81-0xFE.
_ONE_BYTE_INDEXES = bytes(range(0x81, 0xFF))
_STATIC = len(HeaderTable.STATIC_TABLE)
_header = tuple.__new__

State = tuple[Any, ...]
Mark = tuple[dict[str, Any], tuple[Any, ...]]


def _table_state(table: Any) -> State:
    """What identifies the dynamic table's contents: its newest entry (a tuple
    hpack makes anew for every insertion, held here so it cannot be reused),
    its length (evictions) and its size limit."""
    entries = table.dynamic_entries
    return (entries[0] if entries else None, len(entries), table.maxsize)


def _same(a: State | None, b: State) -> bool:
    # The newest entry by identity: an insertion equal in value is still a change.
    return a is not None and a[0] is b[0] and a[1:] == b[1:]


class CachedEncoder(Encoder):
    """hpack's encoder, returning a remembered block for a header list that left the table as is."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: dict[tuple[tuple[str | bytes, str | bytes], ...], bytes] = {}
        self.state: State | None = None

    @classmethod
    def replacing(cls, encoder: Encoder) -> CachedEncoder:
        """This encoder in `encoder`'s place, with its table and settings."""
        new = cls()
        new.__dict__.update(encoder.__dict__)
        new.blocks, new.state = {}, None
        return new

    def encode_tuples(self, key: tuple[tuple[bytes, bytes], ...]) -> bytes:
        """`encode(list(key))` for a caller that vouches for `key`: plain 2-tuples,
        coded with Huffman. Skips the check of each field on a remembered block."""
        table = self.header_table
        if not table.resized and _same(self.state, _table_state(table)):
            block = self.blocks.get(key)
            if block is not None:
                return block
        return self.encode(list(key))

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        table = self.header_table
        before = _table_state(table)
        resized = table.resized
        key = None
        # Plain 2-tuples only: a HeaderTuple compares equal to a tuple but may
        # ask for never-indexed coding, and 3-tuples carry that flag.
        if huffman and not resized and isinstance(headers, list):
            key = tuple(headers)
            if all(type(h) is tuple and len(h) == 2 for h in key):
                if _same(self.state, before):
                    block = self.blocks.get(key)
                    if block is not None:
                        return block
            else:
                key = None
        block = super().encode(headers, huffman)
        after = _table_state(table)
        if not _same(self.state, after):
            self.blocks.clear()
            self.state = after
        if key is not None and len(block) <= MAX_BLOCK_BYTES and _same(before, after):
            if len(self.blocks) >= MAX_BLOCKS:
                self.blocks.clear()
            self.blocks[key] = block
        return block


class CachedDecoder(Decoder):
    """hpack's decoder, returning a remembered header list for a block that left the table as is."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: dict[bytes, list[Any]] = {}
        self.state: State | None = None

    @classmethod
    def replacing(cls, decoder: Decoder) -> CachedDecoder:
        """This decoder in `decoder`'s place, with its table and limits."""
        new = cls()
        new.__dict__.update(decoder.__dict__)
        new.headers, new.state = {}, None
        return new

    def remembered(self, data: bytes) -> list[Any] | None:
        """The header list `decode(data, raw=True)` would give from what is remembered,
        without decoding (not a copy: the caller must not change it); None if not remembered."""
        if _same(self.state, self._state()):
            return self.headers.get(data)
        return None

    def mark(self) -> Mark:
        """What `undo` needs to put the dynamic table back as it is now."""
        table = self.header_table
        return dict(table.__dict__), tuple(table.dynamic_entries)

    def undo(self, mark: Mark) -> None:
        """The dynamic table as it was at `mark` (its entries the same objects), and
        nothing remembered: decoding after this is as if nothing was decoded since."""
        table = self.header_table
        fields, entries = mark
        table.__dict__.update(fields)
        table.dynamic_entries = deque(entries)
        self.headers.clear()
        self.state = None

    def _indexed(self, data: bytes) -> list[Any] | None:
        """hpack's `decode(data, raw=True)` of a block of one-byte table indexes only
        (a known header list coded after the table moved: it changes nothing), or
        None for any other block, or one hpack would refuse, which hpack decodes."""
        if not data or data.translate(None, _ONE_BYTE_INDEXES):
            return None
        if self.header_table_size > self.max_allowed_table_size:
            return None
        static, dynamic = HeaderTable.STATIC_TABLE, self.header_table.dynamic_entries
        limit = self.max_header_list_size
        headers, size = [], 0
        for byte in data:
            index = byte - 0x81
            if index < _STATIC:
                name, value = static[index]
            elif index - _STATIC < len(dynamic):
                name, value = dynamic[index - _STATIC]
            else:
                return None
            size += 32 + len(name) + len(value)
            if size > limit:
                return None
            headers.append(_header(HeaderTuple, (name, value)))
        return headers

    def _state(self) -> State:
        return (
            *_table_state(self.header_table),
            self.max_header_list_size,
            self.max_allowed_table_size,
        )

    def decode(self, data: bytes, raw: bool = False) -> Any:
        if not raw:
            return super().decode(data, raw)
        data = bytes(data)
        before = self._state()
        if _same(self.state, before):
            headers = self.headers.get(data)
            if headers is not None:
                # A fresh list: the caller may change the one it gets.
                return list(headers)
        headers = self._indexed(data)
        if headers is None:
            headers = super().decode(data, raw)
        after = self._state()
        if not _same(self.state, after):
            self.headers.clear()
            self.state = after
        if len(data) <= MAX_BLOCK_BYTES and _same(before, after):
            if len(self.headers) >= MAX_BLOCKS:
                self.headers.clear()
            self.headers[data] = list(headers)
        return headers
