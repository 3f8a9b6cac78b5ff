"""Reading a layer's tar stream: entries parsed from the raw headers, data handed out in place.

This module owns the tar format as the applier reads it, in one pass over chunks of the
uncompressed stream, without `tarfile`'s objects: ustar, GNU and v7 headers (octal and
base-256 numbers, the ustar name prefix), POSIX PAX extended headers (`path`, `linkpath`,
`size`, `uid`, `gid`, `mtime` to the nanosecond, `SCHILY.xattr.*` as raw bytes), GNU long
names and link names, and sparse files (old GNU `S` entries and PAX sparse formats 0.0, 0.1
and 1.0). Global PAX headers are skipped, as containerd does. A file's data is written to a
descriptor straight from the chunks, with no copy. The first zero block ends the archive;
a header with a bad checksum, a truncated stream or a malformed number raises `TarError`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

BLOCK = 512
# The most an extended header or a GNU long name may hold, as Go's archive/tar allows: a
# hostile size must not make the reader keep the rest of the stream in memory.
MAX_SPECIAL = 1 << 20
ZERO_BLOCK = bytes(BLOCK)

REGULAR = b"0"
HARD_LINK = b"1"
SYMLINK = b"2"
CHAR = b"3"
BLOCK_DEVICE = b"4"
DIRECTORY = b"5"
FIFO = b"6"
# Regular files under other names: the old `\0` flag and POSIX's contiguous files.
_AS_REGULAR = {b"\0": REGULAR, b"7": REGULAR, REGULAR: REGULAR}
# Entries that carry no data whatever their size field says (as Go's archive/tar reads them).
_HEADER_ONLY = frozenset((HARD_LINK, SYMLINK, CHAR, BLOCK_DEVICE, DIRECTORY, FIFO))
_PAX = b"x"
_PAX_GLOBAL = b"g"
_GNU_LONGNAME = b"L"
_GNU_LONGLINK = b"K"
_GNU_SPARSE = b"S"

_USTAR = b"ustar\x0000"
_XATTR = b"SCHILY.xattr."
# The header as fields: name, mode, uid, gid, size, mtime, checksum, type, linkname,
# magic+version, uname, gname, devmajor, devminor, prefix.
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")
_SIGNED = struct.Struct("148b8x356b")


class TarError(Exception):
    """The stream is not a valid tar archive (the applier names the entry it stopped at)."""


class Entry:
    """One member of the archive, with its extended headers applied."""

    __slots__ = ("devmajor", "devminor", "gid", "linkname", "mode", "mtime_ns", "name",
                 "realsize", "size", "sparse", "type", "uid", "xattrs")  # fmt: skip

    def __init__(self, mode: int = 0, uid: int = 0, gid: int = 0, mtime_ns: int = 0) -> None:
        self.mode, self.uid, self.gid, self.mtime_ns = mode, uid, gid, mtime_ns
        self.xattrs: list[tuple[str, bytes]] = []
        # (offset, length) of each data segment of a sparse file, and the file's size.
        self.sparse: list[tuple[int, int]] | None = None
        self.realsize = self.size = self.devmajor = self.devminor = 0
        self.name = self.linkname = ""
        self.type = REGULAR


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _cstr(field: bytes) -> bytes:
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


def number(field: bytes) -> int:
    """A header's number: octal digits (NUL or space padded), or GNU's base-256."""
    first = field[0]
    if first >= 0x80:
        if first == 0x80:
            return int.from_bytes(field[1:], "big")
        if first == 0xFF:
            return int.from_bytes(field, "big", signed=True)
    try:
        # The common field: digits, then NULs or spaces (int() takes the leading spaces).
        return int(field.rstrip(b"\0 ") or b"0", 8)
    except ValueError:
        pass
    digits = _cstr(field).strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise TarError(f"invalid number {field!r} in a header") from None


def pax_mtime_ns(raw: str) -> int:
    """A PAX time (decimal seconds, an optional fraction) in nanoseconds, every digit kept."""
    sign, digits = (-1, raw[1:]) if raw.startswith("-") else (1, raw)
    whole, _, frac = digits.partition(".")
    if whole.isdigit() and (not frac or frac.isdigit()):
        return sign * (int(whole) * 1_000_000_000 + int((frac + "000000000")[:9]))
    try:
        return round(float(raw) * 1e9)
    except ValueError:
        raise TarError(f"invalid PAX mtime {raw!r}") from None


def _pax_records(data: bytes) -> list[tuple[bytes, bytes]]:
    records = []
    pos, end = 0, len(data)
    while pos < end and data[pos] != 0:
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarError("invalid PAX extended header") from None
        stop = pos + length
        if space < 0 or length <= 0 or stop > end or data[stop - 1] != 0x0A:
            raise TarError("invalid PAX extended header")
        key, eq, value = data[space + 1 : stop - 1].partition(b"=")
        if not eq:
            raise TarError("invalid PAX extended header record")
        records.append((key, value))
        pos = stop
    return records


def _padded(size: int) -> int:
    return (size + BLOCK - 1) & -BLOCK


class TarReader:
    """The entries of an uncompressed tar stream, read from `next_chunk()` (b"" at its end)."""

    def __init__(self, next_chunk: Callable[[], bytes]) -> None:
        self._next_chunk = next_chunk
        self._buf = b""
        self._view = memoryview(self._buf)
        self._pos = 0
        # Bytes of the current entry's data (and padding) not yet consumed.
        self._left = 0

    # -- the byte stream -------------------------------------------------------------------------

    def _fill(self) -> bool:
        chunk = self._next_chunk()
        if not chunk:
            return False
        self._buf, self._view, self._pos = chunk, memoryview(chunk), 0
        return True

    def _take(self, n: int) -> bytes:
        """Exactly `n` bytes; TarError if the stream ends first."""
        pos, end = self._pos, self._pos + n
        if end <= len(self._buf):
            self._pos = end
            return self._buf[pos:end]
        parts = [self._buf[pos:]]
        have = len(parts[0])
        self._pos = len(self._buf)
        while have < n:
            if not self._fill():
                raise TarError("unexpected end of the stream")
            piece = self._buf[: n - have]
            self._pos = len(piece)
            parts.append(piece)
            have += len(piece)
        return b"".join(parts)

    def _skip(self, n: int) -> None:
        while n:
            if self._pos == len(self._buf) and not self._fill():
                raise TarError("unexpected end of the stream")
            step = min(n, len(self._buf) - self._pos)
            self._pos += step
            n -= step

    def write_to(self, fd: int, size: int) -> None:
        """Write the next `size` bytes of the current entry's data to `fd`, as they lie."""
        if size > self._left:
            raise TarError("entry data longer than its header says")
        self._left -= size
        while size:
            if self._pos == len(self._buf) and not self._fill():
                raise TarError("unexpected end of data")
            end = min(len(self._buf), self._pos + size)
            view = self._view[self._pos : end]
            while view:
                view = view[os.write(fd, view) :]
            size -= end - self._pos
            self._pos = end

    def write_sparse(self, fd: int, entry: Entry) -> None:
        """Write a sparse file's segments at their offsets, leaving holes, then set its size.

        The segments must be in order, apart, and inside the file's size (as Go's reader
        checks them); else TarError, before anything is written.
        """
        assert entry.sparse is not None
        end = 0
        for offset, length in entry.sparse:
            if offset < end or length < 0:
                raise TarError("sparse map out of order")
            end = offset + length
        if end > entry.realsize or entry.realsize < 0:
            raise TarError("sparse map past the end of the file")
        for offset, length in entry.sparse:
            os.lseek(fd, offset, os.SEEK_SET)
            self.write_to(fd, length)
        os.ftruncate(fd, entry.realsize)

    def drain(self) -> None:
        """Read the stream to its end (what follows the end-of-archive marker too)."""
        self._buf, self._view, self._pos = b"", memoryview(b""), 0
        while self._next_chunk():
            pass

    # -- entries ---------------------------------------------------------------------------------

    def next(self) -> Entry | None:
        """The next entry; None at the end of the archive (a zero block, or the stream's end)."""
        if self._left:
            self._skip(self._left)
            self._left = 0
        pax: dict[bytes, bytes] = {}
        long_name = long_link = None
        while True:
            pos = self._pos
            if pos + BLOCK <= len(self._buf):
                self._pos = pos + BLOCK
                block = self._buf[pos : pos + BLOCK]
            elif pos == len(self._buf) and not self._fill():
                return None  # no end marker: the stream ends at an entry boundary
            else:
                block = self._take(BLOCK)
            if block == ZERO_BLOCK:
                return None
            fields = _HEADER.unpack(block)
            checksum = sum(block) - sum(block[148:156]) + 256
            stored = number(fields[6])
            if stored != checksum and stored != sum(_SIGNED.unpack(block)) + 256:
                raise TarError("bad header checksum")
            kind = fields[7]
            size = number(fields[4])
            if kind in (_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK):
                if not 0 <= size <= MAX_SPECIAL:
                    raise TarError(f"extended header of {size} bytes")
                data = self._take(size)
                self._skip(_padded(size) - size)
                if kind == _PAX:
                    pax.update(self._pax(data, pax))
                elif kind == _GNU_LONGNAME:
                    long_name = _cstr(data)
                elif kind == _GNU_LONGLINK:
                    long_link = _cstr(data)
                continue
            return self._entry(block, fields, kind, size, pax, long_name, long_link)

    @staticmethod
    def _pax(data: bytes, so_far: dict[bytes, bytes]) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for key, value in _pax_records(data):
            # Sparse format 0.0 repeats these two keys, one pair per segment, in order.
            if key in (b"GNU.sparse.offset", b"GNU.sparse.numbytes"):
                key = b"%s.%d" % (key, sum(1 for k in (*so_far, *out) if k.startswith(key)))
            out[key] = value
        return out

    def _entry(
        self,
        block: bytes,
        fields: tuple[bytes, ...],
        kind: bytes,
        size: int,
        pax: dict[bytes, bytes],
        long_name: bytes | None,
        long_link: bytes | None,
    ) -> Entry:
        entry = Entry(
            number(fields[1]),
            number(fields[2]),
            number(fields[3]),
            number(fields[5]) * 1_000_000_000,
        )
        name = _cstr(fields[0])
        magic = fields[9]
        if kind == _GNU_SPARSE:
            entry.sparse, entry.realsize = self._gnu_sparse(block)
            kind = REGULAR
        elif magic == _USTAR and fields[14][0]:
            name = _cstr(fields[14]) + b"/" + name
        if long_name is not None:
            name = long_name
        if long_link is not None:
            linkname = long_link
        elif kind in (SYMLINK, HARD_LINK):
            linkname = _cstr(fields[8])
        else:
            linkname = b""
        if kind in (CHAR, BLOCK_DEVICE):
            entry.devmajor = number(fields[12])
            entry.devminor = number(fields[13])
        if pax:
            name, linkname, size = self._apply_pax(entry, pax, name, linkname, size)
        entry.type = _AS_REGULAR.get(kind, kind)
        if kind == b"\0" and name.endswith(b"/"):
            entry.type = DIRECTORY  # how v7 tar wrote a directory
        entry.name = name.decode("utf-8", "surrogateescape")
        if linkname:
            entry.linkname = linkname.decode("utf-8", "surrogateescape")
        if min(size, entry.uid, entry.gid, entry.mode) < 0:
            raise TarError("negative size, owner or mode")
        if entry.type not in _HEADER_ONLY:
            entry.size = size
            self._left = _padded(size)
        if entry.sparse is not None and pax.get(b"GNU.sparse.major") == b"1":
            self._sparse_map_10(entry)
        elif entry.sparse is None:
            entry.realsize = entry.size
        return entry

    def _apply_pax(
        self, entry: Entry, pax: dict[bytes, bytes], name: bytes, linkname: bytes, size: int
    ) -> tuple[bytes, bytes, int]:
        get = pax.get
        try:
            name = get(b"path", name)
            linkname = get(b"linkpath", linkname)
            if b"size" in pax:
                size = int(pax[b"size"])
            if b"uid" in pax:
                entry.uid = int(pax[b"uid"])
            if b"gid" in pax:
                entry.gid = int(pax[b"gid"])
            if b"mtime" in pax:
                entry.mtime_ns = pax_mtime_ns(pax[b"mtime"].decode("ascii"))
            real = get(b"GNU.sparse.realsize", get(b"GNU.sparse.size"))
            if real is not None:
                entry.realsize = int(real)
                name = get(b"GNU.sparse.name", name)
                entry.sparse = self._pax_sparse_map(pax)
        except (ValueError, KeyError, UnicodeDecodeError):
            raise TarError("invalid PAX extended header value") from None
        for key, value in pax.items():
            if key.startswith(_XATTR):
                entry.xattrs.append((_text(key[len(_XATTR) :]), value))
        return name, linkname, size

    @staticmethod
    def _pax_sparse_map(pax: dict[bytes, bytes]) -> list[tuple[int, int]]:
        """The segments of PAX sparse formats 0.1 and 0.0; none yet for 1.0 (in the data)."""
        if b"GNU.sparse.map" in pax:
            numbers = [int(x) for x in pax[b"GNU.sparse.map"].split(b",") if x]
            return list(zip(numbers[::2], numbers[1::2], strict=True))
        count = sum(1 for k in pax if k.startswith(b"GNU.sparse.offset."))
        offsets = [int(pax[b"GNU.sparse.offset.%d" % i]) for i in range(count)]
        lengths = [int(pax[b"GNU.sparse.numbytes.%d" % i]) for i in range(count)]
        return list(zip(offsets, lengths, strict=True))

    def _sparse_map_10(self, entry: Entry) -> None:
        """Sparse format 1.0: the segment map is decimal lines at the head of the data."""
        data = b""
        numbers: list[int] = []
        count = -1
        while count < 0 or len(numbers) < 2 * count:
            if b"\n" not in data:
                data += self._take(BLOCK)
                self._left -= BLOCK
                if self._left < 0:
                    raise TarError("sparse map longer than the entry")
                continue
            line, data = data.split(b"\n", 1)
            try:
                value = int(line)
            except ValueError:
                raise TarError("invalid sparse map") from None
            if count < 0:
                count = value
            else:
                numbers.append(value)
        entry.sparse = list(zip(numbers[::2], numbers[1::2], strict=True))

    def _gnu_sparse(self, block: bytes) -> tuple[list[tuple[int, int]], int]:
        """Old GNU sparse: 4 segments in the header, 21 in each extension block after it."""
        segments = self._segments(block[386:482], 4)
        extended = block[482]
        realsize = number(block[483:495])
        while extended:
            ext = self._take(BLOCK)
            segments += self._segments(ext[:504], 21)
            extended = ext[504]
        return segments, realsize

    @staticmethod
    def _segments(raw: bytes, count: int) -> list[tuple[int, int]]:
        out = []
        for i in range(count):
            at = 24 * i
            if raw[at] == 0:
                break
            out.append((number(raw[at : at + 12]), number(raw[at + 12 : at + 24])))
        return out
