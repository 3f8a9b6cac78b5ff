"""Whole list replies, encoded once per change of the metadata.

Many clients polling the same lists (a console's resync, monitoring, `ctr`
loops) ask for the same answer over and over while nothing changes. A
`ReplyCache` keeps each list's encoded reply, keyed by what the request asked
(namespace, filters) and valid for one `Database.generation`: the first call
after any row changed anywhere finds the cache empty and builds the answer
from the records again, so a reply is never older than the last write. Only
answers that are built whole are cached: a request that fails (a bad filter,
a missing namespace) raises before anything is stored, and a builder may
return None for an answer it does not want kept (one too large to cache).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

MAX_BYTES = 32 << 20


def _size(reply: Any) -> int:
    """Bytes of a reply: one encoded message, or the messages of a stream."""
    return len(reply) if isinstance(reply, bytes) else sum(len(r) for r in reply)


class ReplyCache:
    """Replies by request key, for the current generation only."""

    def __init__(
        self, generation: Callable[[], int], limit: int = 64, max_bytes: int = MAX_BYTES
    ) -> None:
        self.generation = generation
        # Distinct filter strings are few in practice; the limits bound a client
        # that sends a new one every call over a node of 10,000 containers.
        self.limit = limit
        self.max_bytes = max_bytes
        self._at = -1
        self._items: dict[Hashable, object] = {}
        self._bytes = 0

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        now = self.generation()
        if now != self._at:
            self._items.clear()
            self._bytes = 0
            self._at = now
        try:
            return self._items[key]  # type: ignore[return-value]
        except KeyError:
            pass
        reply = build()
        if reply is None:
            return reply  # the builder's way of saying "not worth keeping"
        # Building reads the database only; were that to change, a write during
        # `build` would make this reply stale, so it is kept only if none came.
        size = _size(reply)
        if self.generation() == now and size <= self.max_bytes:
            if len(self._items) >= self.limit or self._bytes + size > self.max_bytes:
                self._items.clear()
                self._bytes = 0
            self._items[key] = reply
            self._bytes += size
        return reply
