"""Whole list replies, encoded once per change of the metadata.

Many clients polling the same lists (a console's resync, monitoring, `ctr`
loops) ask for the same answer over and over while nothing changes. A
`ReplyCache` keeps each list's encoded reply, keyed by what the request asked
(namespace, filters) and valid for one `Database.generation`: the first call
after any row changed anywhere finds the cache empty and builds the answer
from the records again, so a reply is never older than the last write. Only
answers that are built whole are cached: a request that fails (a bad filter,
a missing namespace) raises before anything is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


class ReplyCache:
    """Replies by request key, for the current generation only."""

    def __init__(self, generation: Callable[[], int], limit: int = 64) -> None:
        self.generation = generation
        # Distinct filter strings are few in practice; the limit bounds a client
        # that sends a new one every call.
        self.limit = limit
        self._at = -1
        self._items: dict[Hashable, object] = {}

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        now = self.generation()
        if now != self._at:
            self._items.clear()
            self._at = now
        try:
            return self._items[key]  # type: ignore[return-value]
        except KeyError:
            pass
        reply = build()
        # Building reads the database only; were that to change, a write during
        # `build` would make this reply stale, so it is kept only if none came.
        if self.generation() == now:
            if len(self._items) >= self.limit:
                self._items.clear()
            self._items[key] = reply
        return reply
