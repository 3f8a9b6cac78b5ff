"""Layer media types and their compressions: opening a layer for reading or writing.

This module owns the table of layer media types the engine accepts (OCI and Docker,
plain, gzip and zstd, and the foreign and non-distributable variants), telling the
compression of a stream by its magic bytes (which wins over the media type, as in
containerd, since registries mislabel layers), and the streams that decompress,
compress and hash what passes through them. An unknown media type is refused with
InvalidArgument naming it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import queue
import threading
import zlib
from typing import BinaryIO

import zstandard
from isal import igzip, isal_zlib

from core.errors import InvalidArgument

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

GZIP = "gzip"
ZSTD = "zstd"
PLAIN = ""

LAYER_COMPRESSION: dict[str, str] = {
    OCI_LAYER: PLAIN,
    OCI_LAYER_GZIP: GZIP,
    OCI_LAYER_ZSTD: ZSTD,
    "application/vnd.oci.image.layer.nondistributable.v1.tar": PLAIN,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": ZSTD,
    DOCKER_LAYER: PLAIN,
    DOCKER_LAYER_GZIP: GZIP,
    "application/vnd.docker.image.rootfs.diff.tar.zstd": ZSTD,
    "application/vnd.docker.image.rootfs.foreign.diff.tar": PLAIN,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": GZIP,
}

GZIP_MAGIC = b"\x1f\x8b\x08"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# What a broken compressed stream raises while it is read; the applier names the layer.
DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (
    gzip.BadGzipFile,
    EOFError,
    zlib.error,
    isal_zlib.error,
    zstandard.ZstdError,
)

_CHUNK = 1 << 20


def layer_compression(media_type: str) -> str:
    """`gzip`, `zstd` or `` for a layer media type; InvalidArgument for any other type."""
    base = media_type.split(";", 1)[0].strip().lower()
    try:
        return LAYER_COMPRESSION[base]
    except KeyError:
        raise InvalidArgument(f"unsupported diff media type {media_type!r}") from None


def detect(head: bytes) -> str:
    """The compression of a stream from its first bytes (plain when no magic matches)."""
    if head.startswith(GZIP_MAGIC):
        return GZIP
    if head.startswith(ZSTD_MAGIC):
        return ZSTD
    return PLAIN


class _Prefixed(io.RawIOBase):
    """A stream with bytes already read from its head put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)


def open_layer(raw: BinaryIO, media_type: str) -> BinaryIO:
    """The uncompressed tar stream of a layer read from `raw`.

    The media type must be a layer type; the compression is taken from the magic bytes.
    """
    layer_compression(media_type)
    head = raw.read(len(ZSTD_MAGIC))
    kind = detect(head)
    stream = io.BufferedReader(_Prefixed(head, raw), _CHUNK)
    if kind == GZIP:
        # ISA-L's inflate reads the same gzip streams at about 2.5 times zlib's speed.
        return igzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    if kind == ZSTD:
        return zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)  # type: ignore[return-value]
    return stream  # type: ignore[return-value]


class Prefetcher:
    """Reads and hashes a stream ahead in a worker thread, so both overlap the file writes.

    zlib, zstd and sha256 release the GIL while they work, as the writes of the applier
    do; a bounded queue keeps at most `depth` chunks in memory. `chunk` hands them out in
    order; errors of the stream surface from it in the reading thread. `digest` and `size`
    cover what was read once `chunk` has returned b"". `close` stops the worker.
    """

    def __init__(self, stream: BinaryIO, chunk: int = _CHUNK, depth: int = 8) -> None:
        self._stream = stream
        self._chunk = chunk
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._stop = threading.Event()
        self._eof = False
        self._hash = hashlib.sha256()
        self.size = 0
        self._thread = threading.Thread(target=self._fill, name="layer-prefetch", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._stream.read(self._chunk)
                self._hash.update(data)
                self.size += len(data)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the reader, which raises it
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def chunk(self) -> bytes:
        """The next piece of the stream, of any size; b"" at its end."""
        if self._eof:
            return b""
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        if not item:
            self._eof = True
        return item

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class HashingReader:
    """Reads a stream in chunks in the caller's thread, keeping their sha256 and byte count."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()
        self.size = 0

    def chunk(self) -> bytes:
        """The next piece of the stream; b"" at its end."""
        data = self._stream.read(_CHUNK)
        self._hash.update(data)
        self.size += len(data)
        return data

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class HashingWriter:
    """Writes through to a stream, keeping the sha256 and byte count of what was written."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._stream.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._stream.flush()

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class Compressor:
    """Compresses what is written to it into `out`; `close()` finishes the stream, not `out`."""

    def __init__(self, out: BinaryIO, compression: str) -> None:
        self._inner: BinaryIO | None = None
        if compression == GZIP:
            # mtime=0 keeps the blob's digest a function of its content alone.
            self._inner = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0)  # type: ignore[assignment]
        elif compression == ZSTD:
            self._inner = zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False)  # type: ignore[assignment]
        elif compression != PLAIN:
            raise InvalidArgument(f"unsupported compression {compression!r}")
        self._out = out

    def write(self, data: bytes) -> int:
        return (self._inner or self._out).write(data)

    def flush(self) -> None:
        (self._inner or self._out).flush()

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
