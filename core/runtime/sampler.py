"""One read of each task's cgroup per short window, shared by everyone who asks in it.

Several consoles, a fleet console and a Prometheus scrape of the engine's own
endpoint may each ask for every task's statistics every few seconds; the reads
are the engine's cost, and answers taken microseconds apart would differ by
nothing anyone can use. So a `Sampler` keeps each cgroup's last `Sample` and
reads it again only once it is `WINDOW` old; callers queue on one lock, so a
request that arrives while a read is under way waits for it and takes its
result instead of reading again. This is safe because every value is a counter
or a gauge sampled at one moment, and each `Sample` carries that moment
(`taken_ns`, which `Tasks.Metrics` sends as the `Metric`'s timestamp), so a
rate computed between two samples stays right; a sample up to a second old is
what a client polling every two seconds expects anyway. A cgroup found gone is
not remembered, so it is looked for again on the next request.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Sequence

from core.errors import NotFound
from core.runtime.cgroup_sample import Sample
from core.runtime.cgroups import Cgroup

WINDOW = 1.0


def _read(cgroups: Sequence[Cgroup]) -> list[Sample | None]:
    found: list[Sample | None] = []
    for cgroup in cgroups:
        try:
            found.append(cgroup.sample())
        except NotFound:
            found.append(None)
    return found


class Sampler:
    """Each cgroup's statistics, read at most once per `window` seconds."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._lock = asyncio.Lock()
        # Keyed weakly: a deleted task's cgroup leaves with it.
        self._last: weakref.WeakKeyDictionary[Cgroup, tuple[float, Sample]] = (
            weakref.WeakKeyDictionary()
        )
        # When each cgroup was last forgotten: a read begun before that is not kept.
        self._forgot: weakref.WeakKeyDictionary[Cgroup, float] = weakref.WeakKeyDictionary()

    async def samples(self, cgroups: Sequence[Cgroup]) -> list[Sample | None]:
        """A sample per cgroup (None for one that is gone), read off the event loop.

        Raises `CgroupsUnavailable` on a host without cgroups.
        """
        async with self._lock:
            now = time.monotonic()
            stale = [c for c in cgroups if not self._fresh(c, now)]
            fresh: dict[Cgroup, Sample | None] = {}
            if stale:
                for cgroup, sample in zip(
                    stale, await asyncio.to_thread(_read, stale), strict=True
                ):
                    if sample is None:
                        self._last.pop(cgroup, None)
                    elif self._forgot.get(cgroup, -1.0) < now:
                        self._last[cgroup] = (now, sample)
                    fresh[cgroup] = sample
            return [fresh[c] if c in fresh else self._get(c) for c in cgroups]

    def forget(self, cgroup: Cgroup) -> None:
        """Read this cgroup afresh next time: something changed what it would show."""
        self._last.pop(cgroup, None)
        self._forgot[cgroup] = time.monotonic()

    def _get(self, cgroup: Cgroup) -> Sample | None:
        entry = self._last.get(cgroup)
        return None if entry is None else entry[1]

    def _fresh(self, cgroup: Cgroup, now: float) -> bool:
        entry = self._last.get(cgroup)
        return entry is not None and now - entry[0] < self.window
