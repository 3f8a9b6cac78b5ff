"""The pieces behind cheap repeated calls: reply caches, the change generation, joined writes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from core.connection import CoalescedTransport
from core.metadata import Metadata
from core.metadata.containers import AnyValue, Container
from core.services.replies import ReplyCache


def test_reply_cache_keeps_a_reply_for_one_generation() -> None:
    generation = [0]
    builds: list[str] = []
    cache = ReplyCache(lambda: generation[0])

    def build(key: str) -> Any:
        def run() -> bytes:
            builds.append(key)
            return f"{key}@{generation[0]}".encode()

        return run

    assert cache.get("a", build("a")) == b"a@0"
    assert cache.get("a", build("a")) == b"a@0"
    assert cache.get("b", build("b")) == b"b@0"
    assert builds == ["a", "b"]
    generation[0] = 1
    assert cache.get("a", build("a")) == b"a@1"
    assert builds == ["a", "b", "a"]


def test_reply_built_across_a_change_is_not_kept() -> None:
    generation = [0]
    cache = ReplyCache(lambda: generation[0])

    def moving() -> bytes:
        generation[0] += 1
        return b"stale"

    assert cache.get("a", moving) == b"stale"
    assert cache.get("a", lambda: b"fresh") == b"fresh"


def test_reply_cache_is_bounded() -> None:
    cache = ReplyCache(lambda: 0, limit=3)
    for i in range(10):
        cache.get(i, lambda i=i: bytes([i]))
    assert len(cache._items) <= 3


def test_generation_moves_with_every_row_change(tmp_path: Path) -> None:
    meta = Metadata(tmp_path / "meta.db")
    try:
        db = meta.db
        seen = [db.generation]

        def moved() -> bool:
            seen.append(db.generation)
            return seen[-1] != seen[-2]

        spec = AnyValue("types.containerd.io/opencontainers/runtime-spec/1/Spec", b"{}")
        meta.containers.create("ns", Container(id="c", runtime_name="r", spec=spec))
        assert moved()
        meta.containers.list("ns")
        meta.namespaces.list()
        assert not moved()
        meta.namespaces.update("ns", {"k": "v"}, [])
        assert moved()
        meta.containers.delete("ns", "c")
        assert moved()
        meta.namespaces.delete("ns")
        assert moved()
    finally:
        meta.close()


def test_content_generation_moves_with_content_rows_only(tmp_path: Path) -> None:
    meta = Metadata(tmp_path / "meta.db")
    digest = "sha256:" + "a" * 64
    try:
        db = meta.db
        seen = [db.content_generation]

        def moved() -> bool:
            seen.append(db.content_generation)
            return seen[-1] != seen[-2]

        meta.leases.create("ns", "l", {})
        spec = AnyValue("types.containerd.io/opencontainers/runtime-spec/1/Spec", b"{}")
        meta.containers.create("ns", Container(id="c", runtime_name="r", spec=spec))
        meta.namespaces.update("ns", {"k": "v"}, [])
        assert not moved()
        meta.content.add("ns", digest, 3, {}, "l")
        assert moved()
        meta.content.add("ns", digest, 3, {}, None)  # already owned: no row changes
        assert not moved()
        meta.content.update("ns", digest, {"k": "v"}, [])
        assert moved()
        meta.leases.delete("ns", "l")
        meta.containers.delete("ns", "c")
        assert not moved()
        meta.content.add("other", digest, 3, {}, None)
        assert moved()
        meta.content.remove_many([("other", digest)])  # as garbage collection removes
        assert moved()
        meta.content.delete("ns", digest)
        assert moved()
    finally:
        meta.close()


def test_reply_cache_does_not_keep_what_the_builder_declines() -> None:
    cache = ReplyCache(lambda: 0)
    builds: list[int] = []

    def declined() -> None:
        builds.append(1)

    assert cache.get("a", declined) is None
    assert cache.get("a", declined) is None
    assert builds == [1, 1]
    assert cache.get("a", lambda: b"kept") == b"kept"
    assert cache.get("a", lambda: b"other") == b"kept"


class _Recording:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def test_writes_of_one_loop_turn_leave_as_one_in_order() -> None:
    real = _Recording()
    joined = CoalescedTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    joined.write(b"headers|")
    joined.write(b"")
    joined.write(b"message|")
    joined.write(b"trailers")
    assert real.writes == []
    await asyncio.sleep(0)
    assert real.writes == [b"headers|message|trailers"]
    joined.write(b"next")
    await asyncio.sleep(0)
    assert real.writes[-1] == b"next"


async def test_close_sends_what_is_pending_first() -> None:
    real = _Recording()
    joined = CoalescedTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    joined.write(b"goaway")
    joined.close()
    assert real.writes == [b"goaway"] and real.closed
    await asyncio.sleep(0)
    assert real.writes == [b"goaway"]


def test_reply_cache_bounds_bytes_and_skips_huge_replies() -> None:
    cache = ReplyCache(lambda: 0, max_bytes=100)
    cache.get("big", lambda: b"x" * 101)
    assert cache._items == {}
    for i in range(5):
        cache.get(i, lambda: [b"y" * 30])
    assert sum(len(b) for r in cache._items.values() for b in r) <= 100  # type: ignore[attr-defined]
    assert cache.get(4, lambda: [b"z"]) == [b"y" * 30]


async def test_nothing_is_written_to_a_lost_connection() -> None:
    real = _Recording()
    joined = CoalescedTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    joined.write(b"late")
    real.closed = True
    await asyncio.sleep(0)
    assert real.writes == []
