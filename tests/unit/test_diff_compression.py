"""Layer media types and compression detection."""

from __future__ import annotations

import gzip
import hashlib
import io

import pytest
import zstandard

from core.diff.compression import (
    GZIP,
    PLAIN,
    ZSTD,
    HashingReader,
    Prefetcher,
    detect,
    layer_compression,
    open_layer,
)
from core.errors import InvalidArgument


@pytest.mark.parametrize(
    ("media", "kind"),
    [
        ("application/vnd.oci.image.layer.v1.tar", PLAIN),
        ("application/vnd.oci.image.layer.v1.tar+gzip", GZIP),
        ("application/vnd.oci.image.layer.v1.tar+zstd", ZSTD),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", GZIP),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", GZIP),
        ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", GZIP),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip; charset=binary", GZIP),
    ],
)
def test_known_layer_types(media: str, kind: str) -> None:
    assert layer_compression(media) == kind


@pytest.mark.parametrize("media", ["application/vnd.oci.image.manifest.v1+json", "text/plain", ""])
def test_unknown_types_are_named(media: str) -> None:
    with pytest.raises(InvalidArgument, match="unsupported diff media type"):
        layer_compression(media)


def test_magic_bytes() -> None:
    assert detect(gzip.compress(b"x")) == GZIP
    assert detect(zstandard.ZstdCompressor().compress(b"x")) == ZSTD
    assert detect(b"plain") == PLAIN
    assert detect(b"") == PLAIN


def test_magic_wins_over_media_type() -> None:
    raw = io.BytesIO(gzip.compress(b"payload"))
    assert open_layer(raw, "application/vnd.oci.image.layer.v1.tar").read() == b"payload"


def test_multi_member_gzip_and_multi_frame_zstd() -> None:
    data = gzip.compress(b"one") + gzip.compress(b"two")
    assert (
        open_layer(io.BytesIO(data), "application/vnd.oci.image.layer.v1.tar+gzip").read()
        == b"onetwo"
    )
    z = zstandard.ZstdCompressor()
    data = z.compress(b"one") + z.compress(b"two")
    assert (
        open_layer(io.BytesIO(data), "application/vnd.oci.image.layer.v1.tar+zstd").read()
        == b"onetwo"
    )


def test_short_plain_stream() -> None:
    assert open_layer(io.BytesIO(b"ab"), "application/vnd.oci.image.layer.v1.tar").read() == b"ab"


def _all_chunks(stream: Prefetcher) -> list[bytes]:
    chunks = []
    while chunk := stream.chunk():
        chunks.append(chunk)
    return chunks


def test_prefetcher_hands_out_the_stream_and_its_digest() -> None:
    data = bytes(range(256)) * 5000
    stream = Prefetcher(io.BytesIO(data), chunk=4096, depth=2)
    try:
        chunks = _all_chunks(stream)
        assert b"".join(chunks) == data
        assert max(map(len, chunks)) == 4096
        assert stream.chunk() == b""
        assert stream.size == len(data)
        assert stream.digest() == "sha256:" + hashlib.sha256(data).hexdigest()
    finally:
        stream.close()


def test_hashing_reader_hands_out_the_stream_and_its_digest() -> None:
    data = b"y" * 3_000_000
    reader = HashingReader(io.BytesIO(data))
    assert b"".join(iter(reader.chunk, b"")) == data
    assert reader.size == len(data)
    assert reader.digest() == "sha256:" + hashlib.sha256(data).hexdigest()


def test_prefetcher_hands_errors_to_the_reader() -> None:
    broken = gzip.compress(b"x" * 100_000)[:50]
    stream = Prefetcher(open_layer(io.BytesIO(broken), "application/vnd.oci.image.layer.v1.tar"))
    try:
        with pytest.raises(EOFError):
            _all_chunks(stream)
        assert stream.chunk() == b""
    finally:
        stream.close()


def test_prefetcher_close_before_the_end() -> None:
    stream = Prefetcher(io.BytesIO(b"x" * 10_000_000), chunk=1000, depth=1)
    assert stream.chunk() == b"x" * 1000
    stream.close()
