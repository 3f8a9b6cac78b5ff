"""The on-disk content-addressable blob store, ctrdeck's counterpart of containerd's content/local.

This module owns the files under the store root and nothing else: committed blobs at
`blobs/sha256/<hex>`, which are immutable and only ever appear by an atomic rename of fully
written and verified data, and resumable ingests at `ingest/<sha256 hex of ref>/`, each holding
its `data` plus small `ref`, `startedat`, `updatedat`, `total` and `expected` files. A ref is an
opaque key the caller has already namespaced; namespaces, labels, leases and garbage collection
belong to the metadata layer above. Methods are synchronous and blocking: the async services call
the heavy ones (commit, large writes, resuming a large ingest) through `asyncio.to_thread`, which
is why the ref lock table and each `Writer` guard themselves with `threading.Lock`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import stat
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    Unavailable,
)

CHUNK_SIZE = 1 << 20
"""Largest piece `read` yields; matches containerd's 1 MiB Read responses."""

_HEX = re.compile(r"[0-9a-f]{64}")

# Anything under ingest/ with this prefix is a half-built or half-removed ingest directory, or
# (with the suffix) a metadata file caught mid-replace; none of it is ever valid after a restart.
_TEMP_PREFIX = ".tmp-"
_TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A committed blob: its digest, size in bytes and commit time (UTC)."""

    digest: str
    size: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class IngestStatus:
    """Progress of an in-progress ingest, as containerd's `content.Status` reports it."""

    ref: str
    offset: int
    total: int
    expected: str
    started_at: datetime
    updated_at: datetime


def digest_hex(digest: str) -> str:
    """Return the hex part of a `sha256:<64 lowercase hex>` digest, or raise InvalidArgument."""
    algorithm, sep, encoded = digest.partition(":")
    if not sep or not algorithm:
        raise InvalidArgument(f"invalid digest {digest!r}: want <algorithm>:<hex>")
    if algorithm != "sha256":
        raise InvalidArgument(f"unsupported digest algorithm {algorithm!r} in {digest!r}")
    if not _HEX.fullmatch(encoded):
        raise InvalidArgument(f"invalid digest {digest!r}: want 64 lowercase hex characters")
    return encoded


def _now() -> datetime:
    return datetime.now(UTC)


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, UTC)


def _write_text_atomic(path: Path, text: str) -> None:
    # Readers of status must never see a truncated timestamp or total.
    tmp = path.with_name(path.name + _TEMP_SUFFIX)
    tmp.write_text(text)
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard_dir(path: Path) -> bool:
    """Remove a directory so that observers see it vanish at once; False if it was absent.

    The rename makes removal atomic for `status`/`list_statuses`; a crash during the rmtree
    leaves only a temp-prefixed directory, which the next start sweeps away.
    """
    trash = path.with_name(f"{_TEMP_PREFIX}{path.name}-{uuid.uuid4().hex}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return False
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _load_status(directory: Path) -> IngestStatus | None:
    """Read an ingest's status from disk; None if it is absent or incomplete."""
    try:
        ref = (directory / "ref").read_text()
        started_at = datetime.fromisoformat((directory / "startedat").read_text())
        updated_at = datetime.fromisoformat((directory / "updatedat").read_text())
        total = int((directory / "total").read_text())
        expected = (directory / "expected").read_text()
        data = (directory / "data").stat()
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    # updatedat is only persisted on close, so a live writer's progress shows in the mtime.
    return IngestStatus(
        ref=ref,
        offset=data.st_size,
        total=total,
        expected=expected,
        started_at=started_at,
        updated_at=max(updated_at, _mtime(data)),
    )


class _RefLocks:
    """Process-wide set of (store root, ref) pairs held by a live Writer."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._held: set[tuple[Path, str]] = set()

    def acquire(self, root: Path, ref: str) -> None:
        with self._mu:
            if (root, ref) in self._held:
                raise Unavailable(f"ref {ref} locked")
            self._held.add((root, ref))

    def release(self, root: Path, ref: str) -> None:
        with self._mu:
            self._held.discard((root, ref))


# Shared by every ContentStore so two instances opened on the same root still exclude each other.
_LOCKS = _RefLocks()


def _finish(file: BinaryIO, release: Callable[[], None]) -> None:
    # Also runs from a weakref finalizer, so a Writer dropped without close() cannot keep its
    # ref locked for the life of the process.
    file.close()
    release()


class Writer:
    """An exclusive, resumable write transaction on one ingest ref.

    Obtain one from `ContentStore.open_writer`. It holds the ref's lock until `commit` or `close`
    (or garbage collection). Safe to hand between threads, one call at a time; calls are
    serialized by an internal lock. After `commit` (successful or not) or `close` every method
    except `close`, `offset`, `digest` and `status` raises FailedPrecondition.
    """

    def __init__(
        self,
        *,
        status: IngestStatus,
        hasher: hashlib._Hash,
        directory: Path,
        blobs_dir: Path,
        release: Callable[[], None],
        publish: Callable[[Path, Path, int], None],
    ) -> None:
        self._ref = status.ref
        self._total = status.total
        self._expected = status.expected
        self._started_at = status.started_at
        self._updated_at = status.updated_at
        self._offset = status.offset
        self._hasher = hasher
        self._dir = directory
        self._blobs_dir = blobs_dir
        self._publish = publish
        self._mu = threading.Lock()
        # Unbuffered append: the on-disk size is always the true offset (status relies on it)
        # and a restart after truncate(0) writes from the start again.
        self._file: BinaryIO = open(directory / "data", "ab", buffering=0)  # noqa: SIM115
        self._finalizer = weakref.finalize(self, _finish, self._file, release)

    @property
    def ref(self) -> str:
        return self._ref

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def digest(self) -> str:
        """Digest of the data written so far (sha256 of nothing for an empty ingest)."""
        with self._mu:
            return "sha256:" + self._hasher.copy().hexdigest()

    def status(self) -> IngestStatus:
        with self._mu:
            return IngestStatus(
                ref=self._ref,
                offset=self._offset,
                total=self._total,
                expected=self._expected,
                started_at=self._started_at,
                updated_at=self._updated_at,
            )

    def write(self, data: bytes, offset: int | None = None) -> int:
        """Append `data` and return the new offset.

        `offset`, when given, must be the current offset; 0 instead restarts the ingest from
        empty (containerd's Write protocol uses this to start over), any other value raises
        OutOfRange.
        """
        with self._mu:
            self._check_open()
            if offset is not None and offset != self._offset:
                if offset != 0:
                    raise OutOfRange(
                        f"write offset {offset} does not match current offset {self._offset} "
                        f"of ref {self._ref}"
                    )
                self._truncate()
            view = memoryview(data)
            try:
                while view:
                    written = self._file.write(view)
                    view = view[written:]
            except OSError:
                # Drop any partial tail so the file and the running digest stay in step and a
                # retry (or resume) continues from a consistent offset.
                os.ftruncate(self._file.fileno(), self._offset)
                raise
            self._hasher.update(data)
            self._offset += len(data)
            self._updated_at = _now()
            return self._offset

    def truncate(self, size: int) -> None:
        """Discard all data written so far; only size 0 is supported, as in containerd."""
        with self._mu:
            self._check_open()
            if size != 0:
                raise InvalidArgument(f"cannot truncate ref {self._ref} to {size}: only 0")
            self._truncate()

    def commit(self, size: int = 0, expected: str = "") -> str:
        """Verify the data and move it into the blob store; return its digest.

        `size` and `expected` fall back to the total and expected digest given when the
        writer was opened, so nothing unverified is committed by omission. Committing ends the
        writer whatever the outcome (as in containerd); after a verification failure the ingest
        data stays on disk for a new writer to resume or for `abort`.
        """
        with self._mu:
            self._check_open()
            try:
                return self._commit(size or self._total, expected or self._expected)
            finally:
                self._finalizer()

    def close(self) -> None:
        """Release the ref lock, keeping the ingest on disk so a new writer can resume it."""
        with self._mu:
            if not self._finalizer.alive:
                return
            try:
                os.fsync(self._file.fileno())
                _write_text_atomic(self._dir / "updatedat", self._updated_at.isoformat())
            except FileNotFoundError:
                pass  # the ingest was aborted underneath us: nothing is left to persist
            finally:
                self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise FailedPrecondition(f"writer for ref {self._ref} is closed")

    def _truncate(self) -> None:
        os.ftruncate(self._file.fileno(), 0)
        self._hasher = hashlib.sha256()
        self._offset = 0
        self._updated_at = _now()

    def _commit(self, size: int, expected: str) -> str:
        if expected:
            digest_hex(expected)
        actual = "sha256:" + self._hasher.hexdigest()
        if size > 0 and size != self._offset:
            raise FailedPrecondition(
                f"unexpected commit size {self._offset}, expected {size} (ref {self._ref})"
            )
        if expected and expected != actual:
            raise FailedPrecondition(
                f"unexpected commit digest {actual}, expected {expected} (ref {self._ref})"
            )

        # Finish the file while it is still private to the ingest, so the blob is complete,
        # read-only and stamped with its commit time the instant the rename publishes it.
        fd = self._file.fileno()
        os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & ~0o333)
        os.utime(fd)
        os.fsync(fd)
        self._file.close()

        target = self._blobs_dir / actual.removeprefix("sha256:")
        if target.exists():
            _discard_dir(self._dir)
            raise AlreadyExists(f"content {actual}")
        try:
            self._publish(self._dir / "data", target, self._offset)
        except FileNotFoundError as exc:
            raise NotFound(f"ingest ref {self._ref} was aborted") from exc
        _fsync_dir(self._blobs_dir)
        _discard_dir(self._dir)
        return actual


class ContentStore:
    """Blobs and ingests under one root directory (see the module docstring for the layout)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs" / "sha256"
        self._ingests = self.root / "ingest"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._ingests.mkdir(parents=True, exist_ok=True)
        self._lock_root = self.root.resolve()
        # Bytes of committed blobs, counted once by `total_bytes` and then kept up to date
        # by commits and deletes (which may run in worker threads), so a metrics scrape
        # never walks the blob directory.
        self._bytes: int | None = None
        self._bytes_mu = threading.Lock()
        self._sweep_temporaries()

    # -- blobs ---------------------------------------------------------------------------------

    def path(self, digest: str) -> Path:
        """Path of a committed blob's file (read-only); NotFound if it is not in the store."""
        blob = self._blob_path(digest)
        if not blob.is_file():
            raise NotFound(f"content {digest}")
        return blob

    def exists(self, digest: str) -> bool:
        return self._blob_path(digest).is_file()

    def info(self, digest: str) -> BlobInfo:
        try:
            st = self._blob_path(digest).stat()
        except FileNotFoundError as exc:
            raise NotFound(f"content {digest}") from exc
        return BlobInfo(digest=digest, size=st.st_size, created_at=_mtime(st))

    def read(
        self, digest: str, offset: int = 0, size: int = 0, chunk: int = CHUNK_SIZE
    ) -> Iterator[bytes]:
        """Stream `size` bytes of a blob from `offset` in pieces of at most `chunk` (≤ 1 MiB).

        `size <= 0`, or a size reaching past the end, reads to the end; `offset` equal to the
        blob size yields nothing and beyond it raises OutOfRange. Errors about the arguments
        are raised by this call, not on first iteration.
        """
        if chunk <= 0:
            raise InvalidArgument(f"read chunk size must be positive, got {chunk}")
        blob_size = self.info(digest).size
        if offset < 0 or offset > blob_size:
            raise OutOfRange(
                f"read offset {offset} is out of range for content {digest} of {blob_size} bytes"
            )
        remaining = blob_size - offset
        if size > 0:
            remaining = min(size, remaining)
        return self._stream(digest, offset, remaining, min(chunk, CHUNK_SIZE))

    def delete(self, digest: str) -> None:
        path = self._blob_path(digest)
        with self._bytes_mu:
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError as exc:
                raise NotFound(f"content {digest}") from exc
            if self._bytes is not None:
                self._bytes -= size

    def digests(self) -> list[str]:
        """The digest of every committed blob, read from the directory alone (no stat)."""
        with os.scandir(self._blobs) as entries:
            return [f"sha256:{e.name}" for e in entries if _HEX.fullmatch(e.name)]

    def walk(self) -> Iterator[BlobInfo]:
        """Every committed blob, in no particular order."""
        with os.scandir(self._blobs) as entries:
            for entry in entries:
                if not _HEX.fullmatch(entry.name):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue  # deleted while we were listing
                yield BlobInfo(
                    digest=f"sha256:{entry.name}", size=st.st_size, created_at=_mtime(st)
                )

    def total_bytes(self) -> int:
        """Bytes of all committed blobs: a walk the first time, a counter afterwards."""
        with self._bytes_mu:
            if self._bytes is None:
                self._bytes = sum(info.size for info in self.walk())
            return self._bytes

    def _publish(self, data: Path, blob: Path, size: int) -> None:
        """A writer's rename into place, counted in the same step as it becomes visible."""
        with self._bytes_mu:
            os.rename(data, blob)
            if self._bytes is not None:
                self._bytes += size

    # -- ingests -------------------------------------------------------------------------------

    def open_writer(self, ref: str, total: int = 0, expected: str = "") -> Writer:
        """Start, or resume, the ingest `ref` and return its exclusive Writer.

        Resuming re-hashes the existing data to restore the running digest, which costs a full
        read of it. An existing ingest whose recorded total or expected digest contradicts the
        ones given here is for other content and is restarted from empty (containerd recreates
        such ingests too). Raises AlreadyExists if `expected` is already committed, before
        touching anything, and Unavailable if another Writer holds the ref.
        """
        if not ref:
            raise InvalidArgument("ref must not be empty")
        if total < 0:
            raise InvalidArgument(f"total must not be negative, got {total}")
        if expected and self.exists(expected):
            raise AlreadyExists(f"content {expected}")
        _LOCKS.acquire(self._lock_root, ref)
        try:
            return self._open_ingest(ref, total, expected)
        except BaseException:
            _LOCKS.release(self._lock_root, ref)
            raise

    def status(self, ref: str) -> IngestStatus:
        found = _load_status(self._ingest_dir(ref))
        if found is None or found.ref != ref:
            raise NotFound(f"ingest ref {ref}")
        return found

    def list_statuses(self) -> list[IngestStatus]:
        statuses = []
        with os.scandir(self._ingests) as entries:
            for entry in entries:
                if entry.name.startswith(_TEMP_PREFIX):
                    continue
                # Ingests committed or aborted while listing simply drop out.
                found = _load_status(Path(entry.path))
                if found is not None:
                    statuses.append(found)
        return statuses

    def abort(self, ref: str) -> None:
        """Discard the ingest `ref`; NotFound if there is none.

        Like containerd, this does not wait for or refuse a live writer: its data is removed at
        once, later writes go nowhere and its commit fails with NotFound. The writer keeps the
        ref locked until it is closed.
        """
        if not _discard_dir(self._ingest_dir(ref)):
            raise NotFound(f"ingest ref {ref}")

    # -- internals -----------------------------------------------------------------------------

    def _blob_path(self, digest: str) -> Path:
        return self._blobs / digest_hex(digest)

    def _ingest_dir(self, ref: str) -> Path:
        # Hashing keeps directory names fixed-length and filesystem-safe for any ref.
        return self._ingests / hashlib.sha256(ref.encode()).hexdigest()

    def _stream(self, digest: str, offset: int, remaining: int, chunk: int) -> Iterator[bytes]:
        try:
            f = self._blob_path(digest).open("rb")
        except FileNotFoundError as exc:
            raise NotFound(f"content {digest}") from exc
        with f:
            f.seek(offset)
            while remaining > 0:
                piece = f.read(min(chunk, remaining))
                if not piece:
                    return
                remaining -= len(piece)
                yield piece

    def _open_ingest(self, ref: str, total: int, expected: str) -> Writer:
        directory = self._ingest_dir(ref)
        found = _load_status(directory)
        if found is not None and found.ref == ref and _compatible(found, total, expected):
            if total and not found.total:
                _write_text_atomic(directory / "total", str(total))
            if expected and not found.expected:
                _write_text_atomic(directory / "expected", expected)
            hasher = hashlib.sha256()
            offset = 0
            with (directory / "data").open("rb") as f:
                while piece := f.read(CHUNK_SIZE):
                    hasher.update(piece)
                    offset += len(piece)
            status = IngestStatus(
                ref=ref,
                offset=offset,
                total=total or found.total,
                expected=expected or found.expected,
                started_at=found.started_at,
                updated_at=found.updated_at,
            )
        else:
            _discard_dir(directory)
            status = self._create_ingest(directory, ref, total, expected)
            hasher = hashlib.sha256()
        return Writer(
            status=status,
            hasher=hasher,
            directory=directory,
            blobs_dir=self._blobs,
            release=functools.partial(_LOCKS.release, self._lock_root, ref),
            publish=self._publish,
        )

    def _create_ingest(self, directory: Path, ref: str, total: int, expected: str) -> IngestStatus:
        # Built aside and renamed into place, so an ingest directory is either complete or absent.
        staging = self._ingests / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            now = _now()
            (staging / "ref").write_text(ref)
            (staging / "startedat").write_text(now.isoformat())
            (staging / "updatedat").write_text(now.isoformat())
            (staging / "total").write_text(str(total))
            (staging / "expected").write_text(expected)
            (staging / "data").touch()
            os.rename(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return IngestStatus(
            ref=ref, offset=0, total=total, expected=expected, started_at=now, updated_at=now
        )

    def _sweep_temporaries(self) -> None:
        with os.scandir(self._ingests) as entries:
            for entry in entries:
                if entry.name.startswith(_TEMP_PREFIX):
                    shutil.rmtree(entry.path, ignore_errors=True)
                elif entry.is_dir(follow_symlinks=False):
                    for leftover in Path(entry.path).glob(f"*{_TEMP_SUFFIX}"):
                        leftover.unlink(missing_ok=True)


def _compatible(found: IngestStatus, total: int, expected: str) -> bool:
    if total and found.total and total != found.total:
        return False
    return not (expected and found.expected and expected != found.expected)
