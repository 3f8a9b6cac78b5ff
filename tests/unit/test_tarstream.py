"""The applier's tar reader: header fields, extended headers, chunk boundaries, broken streams.

Archives come from Python's `tarfile` (and hand-edited headers for what it never writes);
the reader's entries must say what `tarfile` says of the same archive, whatever the sizes
of the chunks the stream arrives in.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Iterator

import pytest

from core.diff import tarstream
from core.diff.tarstream import Entry, TarError, TarReader, number


def _archive(members: list[tuple[tarfile.TarInfo, bytes]], **kwargs: object) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", **kwargs) as tar:  # type: ignore[call-overload]
        for info, data in members:
            info.size = len(data) if info.isreg() else info.size
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _read_all(data: bytes, chunk: int = 1 << 20) -> list[tuple[Entry, bytes]]:
    pieces = _chunks(data, chunk)
    reader = TarReader(lambda: next(pieces, b""))
    out = []
    with tempfile.TemporaryFile() as f:
        while (entry := reader.next()) is not None:
            f.seek(0)
            f.truncate()
            if entry.sparse is None:
                reader.write_to(f.fileno(), entry.size)
            else:
                reader.write_sparse(f.fileno(), entry)
            f.seek(0)
            out.append((entry, f.read()))
    reader.drain()
    return out


MEMBERS = [
    (_info("etc/", tarfile.DIRTYPE, mode=0o755, mtime=1_700_000_000), b""),
    (_info("etc/hosts", mode=0o644, uid=0, gid=0, mtime=1_700_000_001), b"127.0.0.1 x\n"),
    (_info("bin/su", mode=0o4755, uid=0, gid=0), os.urandom(5000)),
    (_info("bin/sh", tarfile.SYMTYPE, linkname="dash"), b""),
    (_info("bin/sh2", tarfile.LNKTYPE, linkname="bin/su"), b""),
    (_info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666), b""),
    (_info("dev/loop0", tarfile.BLKTYPE, devmajor=7, devminor=0), b""),
    (_info("run/fifo", tarfile.FIFOTYPE), b""),
    (_info("empty"), b""),
    (_info("x" * 120 + "/" + "y" * 120, uid=5_000_000, gid=6_000_000), b"long"),
    (_info("l", tarfile.SYMTYPE, linkname="z" * 200), b""),
]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
@pytest.mark.parametrize("chunk", [1, 7, 512, 4096, 1 << 20])
def test_entries_as_tarfile_reads_them(fmt: int, chunk: int) -> None:
    data = _archive(MEMBERS, format=fmt)
    got = _read_all(data, chunk)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        expected = tar.getmembers()
        contents = [tar.extractfile(m).read() if m.isreg() else b"" for m in expected]  # type: ignore[union-attr]
    assert len(got) == len(expected)
    kinds = {tarfile.AREGTYPE: tarfile.REGTYPE}
    for (entry, content), member, want in zip(got, expected, contents, strict=True):
        assert entry.name.rstrip("/") == member.name
        assert entry.type == kinds.get(member.type, member.type)
        assert (entry.mode, entry.uid, entry.gid) == (member.mode, member.uid, member.gid)
        assert entry.mtime_ns == int(member.mtime) * 10**9
        assert entry.linkname == member.linkname
        assert (entry.devmajor, entry.devminor) == (
            (member.devmajor, member.devminor) if member.ischr() or member.isblk() else (0, 0)
        )
        assert content == want


def test_ustar_prefix_and_v7_directories() -> None:
    name = "p" * 120 + "/" + "n" * 90
    data = bytearray(_archive([(_info(name), b"data")], format=tarfile.USTAR_FORMAT))
    assert data[345:350] == b"ppppp"  # the prefix field holds the directory
    [(entry, content)] = _read_all(bytes(data))
    assert (entry.name, content) == (name, b"data")
    v7 = bytearray(_archive([(_info("old/", tarfile.DIRTYPE), b"")], format=tarfile.USTAR_FORMAT))
    v7[156:157] = b"\0"
    v7[257:265] = bytes(8)
    _rechecksum(v7)
    [(entry, _)] = _read_all(bytes(v7))
    assert (entry.name, entry.type) == ("old/", tarstream.DIRECTORY)


def _rechecksum(block: bytearray, signed: bool = False) -> None:
    block[148:156] = b" " * 8
    values = [b - 256 if signed and b > 127 else b for b in block[:512]]
    block[148:156] = b"%06o\0 " % sum(values)


def test_numbers() -> None:
    assert number(b"0000644\0") == 0o644
    assert number(b"  644 \0\0") == 0o644
    assert number(b"\0\0\0\0") == 0
    assert number(b"\x80" + (5_000_000).to_bytes(7, "big")) == 5_000_000
    assert number(b"\xff" * 8) == -1
    with pytest.raises(TarError):
        number(b"12z\0")


def test_pax_fields_to_the_nanosecond_and_raw_xattrs() -> None:
    info = _info("f", mtime=1)
    info.pax_headers = {
        "mtime": "1700000000.123456789",
        "SCHILY.xattr.user.raw": "bytes \udcff here",
        "SCHILY.xattr.security.capability": "\x01\x00",
    }
    [(entry, _)] = _read_all(_archive([(info, b"x")], format=tarfile.PAX_FORMAT))
    assert entry.mtime_ns == 1_700_000_000_123_456_789
    assert dict(entry.xattrs) == {
        "user.raw": b"bytes \xff here",
        "security.capability": b"\x01\x00",
    }


def test_global_headers_are_skipped() -> None:
    data = _archive(
        [(_info("a"), b"1"), (_info("b"), b"2")],
        format=tarfile.PAX_FORMAT,
        pax_headers={"comment": "made by git archive", "uid": "77"},
    )
    assert data[156:157] == b"g"
    got = _read_all(data)
    assert [(e.name, e.uid, c) for e, c in got] == [("a", 0, b"1"), ("b", 0, b"2")]


def test_header_only_entries_skip_no_data() -> None:
    # A link whose size field is not zero still has no data after its header.
    data = bytearray(
        _archive([(_info("l", tarfile.SYMTYPE, linkname="t"), b""), (_info("f"), b"F")])
    )
    data[124:136] = b"%011o\0" % 512
    _rechecksum(data)
    got = _read_all(bytes(data))
    assert [(e.name, e.size, c) for e, c in got] == [("l", 0, b""), ("f", 1, b"F")]


def test_signed_checksums_are_accepted() -> None:
    data = bytearray(_archive([(_info("caf\u00e9"), b"x")], format=tarfile.USTAR_FORMAT))
    _rechecksum(data, signed=True)
    [(entry, _)] = _read_all(bytes(data))
    assert entry.name == "caf\u00e9"


def test_a_stream_may_end_without_the_end_marker() -> None:
    data = _archive([(_info("a"), b"abc")])
    [(entry, content)] = _read_all(data[:1024])
    assert (entry.name, content) == ("a", b"abc")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[:300], "unexpected end"),
        (lambda d: d[:600], "unexpected end"),
        (lambda d: d[:148] + b"9999999\0" + d[156:], "invalid number"),
        (lambda d: d[:148] + b"0000001\0" + d[156:], "bad header checksum"),
    ],
)
def test_broken_streams(damage, message: str) -> None:  # type: ignore[no-untyped-def]
    data = damage(_archive([(_info("a"), b"x" * 700)]))
    with pytest.raises(TarError, match=message):
        _read_all(data)


def test_broken_pax_header() -> None:
    data = bytearray(
        _archive([(_info("a", pax_headers={"path": "b"}), b"x")], format=tarfile.PAX_FORMAT)
    )
    record = data.index(b"path=b")
    data[record - 2] = ord("8")  # the record's length, one short
    with pytest.raises(TarError, match="PAX"):
        _read_all(bytes(data))


def _one_header(**fields: bytes) -> bytearray:
    data = bytearray(_archive([(_info("a"), b"x")], format=tarfile.GNU_FORMAT))
    spans = {"size": (124, 136), "uid": (108, 116), "type": (156, 157)}
    for key, value in fields.items():
        start, stop = spans[key]
        data[start:stop] = value
    _rechecksum(data)
    return data


def test_hostile_sizes_are_refused() -> None:
    with pytest.raises(TarError, match="extended header of"):
        _read_all(bytes(_one_header(type=b"L", size=b"%011o\0" % (2 << 20))))
    with pytest.raises(TarError, match="negative"):
        _read_all(bytes(_one_header(size=b"\xff" * 12)))
    with pytest.raises(TarError, match="negative"):
        _read_all(bytes(_one_header(uid=b"\xff" * 8)))


@pytest.mark.parametrize(
    ("segments", "realsize"),
    [([(100, 10), (50, 10)], 1000), ([(0, 10), (5, 10)], 1000), ([(0, 10)], 5)],
)
def test_bad_sparse_maps_are_refused(segments: list[tuple[int, int]], realsize: int) -> None:
    entry = Entry()
    entry.sparse, entry.realsize, entry.size = segments, realsize, 20
    reader = TarReader(iter([bytes(512)]).__next__)
    with tempfile.TemporaryFile() as f:
        with pytest.raises(TarError, match="sparse map"):
            reader.write_sparse(f.fileno(), entry)
        assert os.fstat(f.fileno()).st_size == 0  # refused before anything is written
