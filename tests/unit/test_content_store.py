"""Unit tests of the on-disk content store (core/content/store.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.content import CHUNK_SIZE, ContentStore
from core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    Unavailable,
)

EMPTY_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "content")


def put(store: ContentStore, data: bytes, ref: str = "ref") -> str:
    with store.open_writer(ref, total=len(data), expected=sha(data)) as w:
        w.write(data)
        return w.commit(len(data), sha(data))


def test_write_commit_roundtrip(store: ContentStore) -> None:
    data = b"hello, content"
    before = datetime.now(UTC)
    with store.open_writer("layer-x", total=len(data), expected=sha(data)) as w:
        assert w.offset == 0
        assert w.digest() == EMPTY_DIGEST
        assert w.write(data[:5]) == 5
        assert w.write(data[5:], offset=5) == len(data)
        assert w.digest() == sha(data)
        assert w.commit(len(data), sha(data)) == sha(data)

    assert store.exists(sha(data))
    info = store.info(sha(data))
    assert (info.digest, info.size) == (sha(data), len(data))
    assert info.created_at.tzinfo is not None
    assert info.created_at >= before.replace(microsecond=0)
    blob = store.path(sha(data))
    assert blob == store.root / "blobs" / "sha256" / sha(data).removeprefix("sha256:")
    assert blob.read_bytes() == data
    assert not os.access(blob, os.W_OK) or os.geteuid() == 0
    assert b"".join(store.read(sha(data))) == data
    assert list(store.walk()) == [info]
    assert store.total_bytes() == len(data)
    # The ingest is gone, and so is its lock: the ref can be reused.
    assert store.list_statuses() == []
    assert list((store.root / "ingest").iterdir()) == []
    with pytest.raises(NotFound):
        store.status("layer-x")
    store.open_writer("layer-x").close()


def test_commit_empty_blob(store: ContentStore) -> None:
    with store.open_writer("empty") as w:
        assert w.commit() == EMPTY_DIGEST
    assert store.info(EMPTY_DIGEST).size == 0
    assert list(store.read(EMPTY_DIGEST)) == []


def test_read_offsets_sizes_and_chunks(store: ContentStore) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    digest = put(store, data)

    assert b"".join(store.read(digest, offset=100)) == data[100:]
    assert b"".join(store.read(digest, offset=100, size=50)) == data[100:150]
    assert b"".join(store.read(digest, offset=10000, size=1000)) == data[10000:]
    assert b"".join(store.read(digest, size=-1)) == data
    assert list(store.read(digest, offset=len(data))) == []

    pieces = list(store.read(digest, offset=1, size=2500, chunk=1000))
    assert [len(p) for p in pieces] == [1000, 1000, 500]
    assert b"".join(pieces) == data[1:2501]


def test_read_chunks_never_exceed_one_mib(store: ContentStore) -> None:
    data = os.urandom(CHUNK_SIZE * 2 + 7)
    digest = put(store, data)
    pieces = list(store.read(digest, chunk=CHUNK_SIZE * 4))
    assert [len(p) for p in pieces] == [CHUNK_SIZE, CHUNK_SIZE, 7]
    assert b"".join(pieces) == data


def test_read_out_of_range_and_missing(store: ContentStore) -> None:
    digest = put(store, b"abc")
    # Raised by the call itself, before any iteration.
    with pytest.raises(OutOfRange, match="offset 4"):
        store.read(digest, offset=4)
    with pytest.raises(OutOfRange):
        store.read(digest, offset=-1)
    with pytest.raises(InvalidArgument):
        store.read(digest, chunk=0)
    with pytest.raises(NotFound, match=f"content {sha(b'nope')}: not found"):
        store.read(sha(b"nope"))


def test_info_and_delete(store: ContentStore) -> None:
    digest = put(store, b"to delete")
    missing = sha(b"missing")
    with pytest.raises(NotFound) as excinfo:
        store.info(missing)
    assert str(excinfo.value) == f"content {missing}: not found"
    with pytest.raises(NotFound):
        store.path(missing)
    assert not store.exists(missing)

    store.delete(digest)
    assert not store.exists(digest)
    assert list(store.walk()) == []
    assert store.total_bytes() == 0
    with pytest.raises(NotFound):
        store.delete(digest)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "sha256:",
        "sha256:" + "A" * 64,
        "sha256:" + "0" * 63,
        "sha256:" + "0" * 65,
        "sha512:" + "0" * 128,
        ":" + "0" * 64,
        "sha256:../../etc/passwd",
    ],
)
def test_malformed_digest(store: ContentStore, bad: str) -> None:
    for call in (store.info, store.exists, store.path, store.delete):
        with pytest.raises(InvalidArgument):
            call(bad)
    with pytest.raises(InvalidArgument):
        store.read(bad)
    if bad:
        with pytest.raises(InvalidArgument):
            store.open_writer("ref", expected=bad)
        with store.open_writer("ref") as w, pytest.raises(InvalidArgument):
            w.commit(expected=bad)


def test_write_offsets_and_mismatch(store: ContentStore) -> None:
    with store.open_writer("ref") as w:
        w.write(b"abc", offset=0)
        w.write(b"def", offset=3)
        with pytest.raises(OutOfRange) as excinfo:
            w.write(b"zzz", offset=2)
        assert "offset 2" in str(excinfo.value)
        assert "offset 6" in str(excinfo.value)
        with pytest.raises(OutOfRange):
            w.write(b"zzz", offset=7)
        assert w.offset == 6
        # Offset 0 with data present restarts the ingest.
        w.write(b"xy", offset=0)
        assert w.offset == 2
        assert w.digest() == sha(b"xy")
        assert store.status("ref").offset == 2
        w.write(b"z")
        w.truncate(0)
        assert (w.offset, w.digest()) == (0, EMPTY_DIGEST)
        with pytest.raises(InvalidArgument):
            w.truncate(1)
        w.write(b"final")
        assert w.commit(5, sha(b"final")) == sha(b"final")
    assert store.path(sha(b"final")).read_bytes() == b"final"


def test_resume_after_close(store: ContentStore) -> None:
    data = os.urandom(3 * CHUNK_SIZE // 2)
    half = len(data) // 2
    w = store.open_writer("layer-r", total=len(data), expected=sha(data))
    w.write(data[:half])
    started = w.status().started_at
    w.close()
    w.close()  # idempotent
    with pytest.raises(FailedPrecondition):
        w.write(b"more")

    st = store.status("layer-r")
    assert (st.ref, st.offset, st.total, st.expected) == ("layer-r", half, len(data), sha(data))
    assert st.started_at == started

    # A fresh store instance (as after a restart) resumes from disk with the right digest.
    again = ContentStore(store.root)
    with again.open_writer("layer-r", total=len(data), expected=sha(data)) as w2:
        assert w2.offset == half
        assert w2.digest() == sha(data[:half])
        assert w2.status().started_at == started
        with pytest.raises(OutOfRange):
            w2.write(data[half:], offset=half + 1)
        w2.write(data[half:], offset=half)
        assert w2.commit(len(data), sha(data)) == sha(data)
    assert b"".join(again.read(sha(data))) == data


def test_resume_with_conflicting_total_restarts(store: ContentStore) -> None:
    with store.open_writer("ref", total=10) as w:
        w.write(b"stale")
    with store.open_writer("ref", total=3) as w:
        assert (w.offset, w.digest()) == (0, EMPTY_DIGEST)
    assert store.status("ref").total == 3

    # A total given only now is recorded without losing data.
    with store.open_writer("other") as w:
        w.write(b"ab")
    with store.open_writer("other", total=4) as w:
        assert w.offset == 2
    assert store.status("other").total == 4


def test_commit_wrong_digest_or_size_refused(store: ContentStore) -> None:
    data = b"payload"
    w = store.open_writer("ref")
    w.write(data)
    with pytest.raises(FailedPrecondition) as excinfo:
        w.commit(len(data), sha(b"other"))
    message = str(excinfo.value)
    assert sha(b"other") in message
    assert sha(data) in message
    assert list(store.walk()) == []
    # Commit ends the writer; the data stays for resumption.
    with pytest.raises(FailedPrecondition):
        w.write(b"x")
    assert store.status("ref").offset == len(data)

    w = store.open_writer("ref")
    assert w.offset == len(data)
    with pytest.raises(FailedPrecondition) as excinfo:
        w.commit(len(data) + 1)
    assert str(len(data)) in str(excinfo.value)
    assert str(len(data) + 1) in str(excinfo.value)
    assert list(store.walk()) == []
    assert list((store.root / "blobs" / "sha256").iterdir()) == []


def test_commit_falls_back_to_expected_given_at_open(store: ContentStore) -> None:
    with store.open_writer("ref", total=3, expected=sha(b"abc")) as w:
        w.write(b"abd")
        with pytest.raises(FailedPrecondition):
            w.commit()
    with store.open_writer("ref2", total=4) as w:
        w.write(b"abc")
        with pytest.raises(FailedPrecondition):
            w.commit()
    assert list(store.walk()) == []


def test_already_exists(store: ContentStore) -> None:
    digest = put(store, b"present")
    with pytest.raises(AlreadyExists) as excinfo:
        store.open_writer("again", expected=digest)
    assert str(excinfo.value) == f"content {digest}: already exists"
    # Nothing was created and the ref is not left locked.
    assert list((store.root / "ingest").iterdir()) == []
    store.open_writer("again").close()

    # Same data committed under another ref without `expected` collides at commit time.
    with store.open_writer("dup") as w:
        w.write(b"present")
        with pytest.raises(AlreadyExists):
            w.commit()
    with pytest.raises(NotFound):
        store.status("dup")
    assert [i.digest for i in store.walk()] == [digest]


def test_concurrent_open_is_unavailable(store: ContentStore) -> None:
    w = store.open_writer("busy")
    with pytest.raises(Unavailable) as excinfo:
        store.open_writer("busy")
    assert str(excinfo.value) == "ref busy locked: unavailable"
    # Another store object on the same root shares the lock.
    with pytest.raises(Unavailable):
        ContentStore(store.root).open_writer("busy")
    store.open_writer("other").close()
    w.close()
    store.open_writer("busy").close()


def test_lock_is_thread_safe(store: ContentStore) -> None:
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    # Held so the winner's lock is not released by garbage collection mid-test.
    winners: list[object] = []

    def grab() -> None:
        barrier.wait()
        try:
            winners.append(store.open_writer("contended"))
            outcomes.append("won")
        except Unavailable:
            outcomes.append("lost")

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]


def test_dropped_writer_releases_lock(store: ContentStore) -> None:
    store.open_writer("leaked").write(b"x")
    store.open_writer("leaked").close()


async def test_writer_usable_from_worker_threads(store: ContentStore) -> None:
    data = os.urandom(100_000)
    w = await asyncio.to_thread(store.open_writer, "threaded", len(data), sha(data))
    for i in range(0, len(data), 30_000):
        await asyncio.to_thread(w.write, data[i : i + 30_000], i)
    assert await asyncio.to_thread(w.commit, len(data), sha(data)) == sha(data)


def test_status_and_list_statuses(store: ContentStore) -> None:
    assert store.list_statuses() == []
    with pytest.raises(NotFound) as excinfo:
        store.status("nope")
    assert str(excinfo.value) == "ingest ref nope: not found"

    before = datetime.now(UTC)
    a = store.open_writer("a", total=10, expected=sha(b"x" * 10))
    a.write(b"xxxx")
    b = store.open_writer("b")
    st = store.status("a")
    assert (st.ref, st.offset, st.total, st.expected) == ("a", 4, 10, sha(b"x" * 10))
    assert st.started_at >= before
    assert st.updated_at >= st.started_at
    assert st.started_at == a.status().started_at
    refs = {s.ref: s for s in store.list_statuses()}
    assert set(refs) == {"a", "b"}
    assert (refs["b"].offset, refs["b"].total, refs["b"].expected) == (0, 0, "")

    # Ingest directories are keyed by the sha256 of the ref.
    key = hashlib.sha256(b"a").hexdigest()
    ingest = store.root / "ingest" / key
    assert (ingest / "ref").read_text() == "a"
    assert {p.name for p in ingest.iterdir()} == {
        "data",
        "ref",
        "startedat",
        "updatedat",
        "total",
        "expected",
    }
    a.close()
    b.close()


def test_abort(store: ContentStore) -> None:
    with pytest.raises(NotFound):
        store.abort("none")
    with store.open_writer("gone") as w:
        w.write(b"data")
    store.abort("gone")
    with pytest.raises(NotFound):
        store.status("gone")
    assert list((store.root / "ingest").iterdir()) == []
    with pytest.raises(NotFound):
        store.abort("gone")

    # Aborting under a live writer (as containerd allows) makes its commit fail cleanly.
    w = store.open_writer("live")
    w.write(b"abc")
    store.abort("live")
    with pytest.raises(NotFound):
        w.commit()
    assert list(store.walk()) == []
    with store.open_writer("live") as w2:
        assert w2.offset == 0


def test_startup_sweeps_temporaries_but_keeps_ingests(store: ContentStore) -> None:
    with store.open_writer("keep") as w:
        w.write(b"partial")
    ingest = store.root / "ingest"
    (ingest / ".tmp-crashed").mkdir()
    (ingest / ".tmp-crashed" / "data").write_bytes(b"junk")
    key = hashlib.sha256(b"keep").hexdigest()
    (ingest / key / "updatedat.tmp").write_text("half")

    again = ContentStore(store.root)
    assert not (ingest / ".tmp-crashed").exists()
    assert not (ingest / key / "updatedat.tmp").exists()
    assert [s.ref for s in again.list_statuses()] == ["keep"]
    with again.open_writer("keep") as w:
        assert w.digest() == sha(b"partial")


def test_open_writer_argument_checks(store: ContentStore) -> None:
    with pytest.raises(InvalidArgument):
        store.open_writer("")
    with pytest.raises(InvalidArgument):
        store.open_writer("ref", total=-1)
    store.open_writer("ref").close()
