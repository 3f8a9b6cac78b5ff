"""The remembering HPACK coder is byte for byte, and table for table, hpack's own."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple, OversizedHeaderListError

from core.hpack_cache import MAX_BLOCK_BYTES, MAX_BLOCKS, CachedDecoder, CachedEncoder

REPLY = [(":status", "200"), ("content-type", "application/grpc+proto")]
TRAILERS = [("grpc-status", "0")]


def test_same_blocks_and_tables_as_hpack_in_any_sequence() -> None:
    rng = random.Random(14)
    names = ["content-type", "grpc-status", "grpc-message", ":status", "x-a", "x-b"]
    values = ["0", "13", "200", "application/grpc+proto", "boom", "x" * 50, "y" * 3000]
    for _ in range(100):
        plain_enc, enc = Encoder(), CachedEncoder()
        plain_dec, dec = Decoder(), CachedDecoder()
        for _ in range(100):
            if rng.random() < 0.03:
                size = rng.choice([0, 100, 256, 4096])
                plain_enc.header_table_size = enc.header_table_size = size
            if rng.random() < 0.3:
                headers = [
                    (rng.choice(names), rng.choice(values)) for _ in range(rng.randint(1, 4))
                ]
            else:
                headers = rng.choice([REPLY, TRAILERS])
            block = plain_enc.encode(list(headers))
            assert enc.encode(list(headers)) == block
            assert dec.decode(block, raw=True) == plain_dec.decode(block, raw=True)
            assert enc.header_table.dynamic_entries == plain_enc.header_table.dynamic_entries
            assert dec.header_table.dynamic_entries == plain_dec.header_table.dynamic_entries


def test_encode_tuples_is_encode_in_any_sequence() -> None:
    # The reply fast path (core.calls) codes its constant lists with encode_tuples.
    rng = random.Random(15)
    reply = tuple((k.encode(), v.encode()) for k, v in REPLY)
    trailers = tuple((k.encode(), v.encode()) for k, v in TRAILERS)
    for _ in range(50):
        plain, enc = Encoder(), CachedEncoder()
        for _ in range(100):
            if rng.random() < 0.05:
                size = rng.choice([0, 100, 256, 4096])
                plain.header_table_size = enc.header_table_size = size
            if rng.random() < 0.2:
                other = [(f"x-{rng.randint(0, 9)}", "v" * rng.randint(0, 300))]
                assert enc.encode(list(other)) == plain.encode(list(other))
            key = rng.choice([reply, trailers])
            assert enc.encode_tuples(key) == plain.encode(list(key))
            assert enc.header_table.dynamic_entries == plain.header_table.dynamic_entries


def test_a_repeated_block_is_coded_once() -> None:
    enc, dec = CachedEncoder(), CachedDecoder()
    for _ in range(3):
        for headers in (REPLY, TRAILERS):
            dec.decode(enc.encode(list(headers)), raw=True)
    # The first of each adds content-type and grpc-status to the tables; the
    # second leaves them as they are and is remembered; the third is served.
    assert set(enc.blocks) == {tuple(REPLY), tuple(TRAILERS)}
    assert len(dec.headers) == 2


def test_an_insertion_forgets_what_was_remembered() -> None:
    enc = CachedEncoder()
    for _ in range(2):
        enc.encode(list(TRAILERS))
    assert enc.blocks
    enc.encode([("grpc-message", "new")])
    assert not enc.blocks
    # Indexes moved by one: the reply is coded again, as hpack would.
    plain = Encoder()
    for headers in (TRAILERS, TRAILERS, [("grpc-message", "new")], TRAILERS):
        expected = plain.encode(list(headers))
    assert enc.encode(list(TRAILERS)) == expected


def test_never_indexed_fields_are_not_taken_for_plain_ones() -> None:
    enc, plain = CachedEncoder(), Encoder()
    secret = [("authorization", "x")]
    for _ in range(2):
        assert enc.encode(list(secret)) == plain.encode(list(secret))
    never = [NeverIndexedHeaderTuple("authorization", "x")]
    assert enc.encode(never) == plain.encode(never)


def test_a_resize_is_signalled_even_for_a_remembered_block() -> None:
    enc, plain = CachedEncoder(), Encoder()
    for _ in range(2):
        enc.encode(list(TRAILERS))
        plain.encode(list(TRAILERS))
    enc.header_table_size = plain.header_table_size = 8192
    assert enc.encode(list(TRAILERS)) == plain.encode(list(TRAILERS))


def test_a_lowered_header_list_limit_applies_to_a_remembered_block() -> None:
    enc, dec = CachedEncoder(), CachedDecoder()
    block = b""
    for _ in range(3):
        block = enc.encode(list(REPLY))
        dec.decode(block, raw=True)
    dec.max_header_list_size = 10
    with pytest.raises(OversizedHeaderListError):
        dec.decode(block, raw=True)


def test_the_decoded_list_is_the_callers_own() -> None:
    enc, dec = CachedEncoder(), CachedDecoder()
    block = b""
    for _ in range(3):
        block = enc.encode(list(REPLY))
        dec.decode(block, raw=True)
    dec.decode(block, raw=True).clear()
    assert dec.decode(block, raw=True) == [
        (b":status", b"200"),
        (b"content-type", b"application/grpc+proto"),
    ]


def test_new_literals_every_call_keep_the_cache_bounded() -> None:
    dec, enc = CachedDecoder(), CachedEncoder()
    for i in range(MAX_BLOCKS * 3):
        # Never-indexed: unique values that do not enter the table.
        dec.decode(enc.encode([NeverIndexedHeaderTuple("grpc-timeout", f"{i}m")]), raw=True)
        assert len(dec.headers) <= MAX_BLOCKS


def test_long_blocks_are_not_kept() -> None:
    enc, dec = CachedEncoder(), CachedDecoder()
    long = [NeverIndexedHeaderTuple("x-long", "z" * (2 * MAX_BLOCK_BYTES))]
    for _ in range(3):
        dec.decode(enc.encode(long), raw=True)
    assert not dec.headers


def test_undo_puts_the_table_back_for_any_block() -> None:
    """`mark`/`undo` around decoding any block, good or bad, leave a decoder that
    decodes whatever follows as a decoder that never saw that block."""
    rng = random.Random(16)
    values = ["0", "boom", "x" * 50, "y" * 1500]
    for _ in range(40):
        enc, plain, dec = Encoder(), Decoder(), CachedDecoder()
        for _ in range(60):
            if rng.random() < 0.05:
                enc.header_table_size = rng.choice([0, 100, 256, 4096])
            headers = [(f"x-{rng.randint(0, 5)}", rng.choice(values))]
            block = enc.encode(headers)
            if rng.random() < 0.3:
                # Decoded, some of it bad, then undone: nothing of it may remain.
                stray = Encoder()
                stray.header_table_size = enc.header_table.maxsize
                other = stray.encode([("x-stray", rng.choice(values))])
                other += rng.choice([b"", b"\xff\xff\xff\xff\x0f", b"\x80", b"\x7f"])
                mark = dec.mark()
                with contextlib.suppress(Exception):
                    dec.decode(other, raw=True)
                dec.undo(mark)
                assert dec.remembered(block) is None
            assert dec.decode(block, raw=True) == plain.decode(block, raw=True)
            assert dec.header_table.dynamic_entries == plain.header_table.dynamic_entries
            assert dec.header_table.__dict__.keys() == plain.header_table.__dict__.keys()
            for name in ("_maxsize", "_current_size", "resized"):
                assert getattr(dec.header_table, name) == getattr(plain.header_table, name)
            again = dec.remembered(block)
            assert again is None or again == plain.decode(block, raw=True)


def test_blocks_of_indexes_decode_as_hpacks() -> None:
    """Blocks of one-byte indexes (decoded without hpack's loop) against hpack's own
    decoder: the same fields, or the same refusal (an index past the table, a list
    over the limit, a table not shrunk as announced), the same table after."""
    rng = random.Random(18)
    for _ in range(200):
        enc, plain, dec = Encoder(), Decoder(), CachedDecoder()
        limit = rng.choice([200, 1000, 65536])
        plain.max_header_list_size = dec.max_header_list_size = limit
        for _ in range(30):
            if rng.random() < 0.4:
                block = enc.encode([(f"x-{rng.randint(0, 9)}", "v" * rng.randint(0, 90))])
            else:
                block = bytes(rng.randint(0x80, 0xFF) for _ in range(rng.randint(1, 12)))
            if rng.random() < 0.05:
                plain.max_allowed_table_size = dec.max_allowed_table_size = rng.choice([0, 4096])
            try:
                want: Any = plain.decode(block, raw=True)
            except Exception as exc:
                want = (type(exc), str(exc))
            try:
                got: Any = dec.decode(block, raw=True)
            except Exception as exc:
                got = (type(exc), str(exc))
            assert got == want
            if isinstance(got, list):
                assert [type(h) for h in got] == [type(h) for h in want]
            assert dec.header_table.dynamic_entries == plain.header_table.dynamic_entries
