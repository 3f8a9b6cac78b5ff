"""Playing a recording into the console's `NodeState` and event log, at any position.

`Player` is what stands beside `tui.syncer.Syncer` when there is no engine:
it keeps every recorded namespace's tables as they were at `position`
(seconds from the recording's start) and puts the current namespace's into
the console's `NodeState`, where the screen picks up changed tables as it does
live. Moving forward applies the records in between, and their log lines go
to the event log as they would have arrived; moving back (or far forward)
starts again from the last `snap` before the position and hands the log the
lines up to it in one go. `tick` moves the position on by the elapsed time
times `speed`, unless paused, and stops at `pause_at` when one is set.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Hashable
from datetime import datetime, timedelta
from typing import Any

from tui import recording
from tui.state import TABLES, LogLine, NodeState

SPEEDS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
# The most lines a seek hands the event log (it keeps no more than this anyway).
LOG_KEEP = 2000


class Player:
    """A recording's state at `position`, played into a `NodeState` and a log."""

    def __init__(
        self,
        rec: recording.Recording,
        state: NodeState,
        *,
        on_log: Callable[[LogLine], None],
        on_reset_log: Callable[[list[LogLine]], None],
        on_connection: Callable[[bool, str], None] = lambda up, detail: None,
    ) -> None:
        self.recording = rec
        self.records = rec.records
        self.times = rec.records.times
        kinds = rec.records.kinds
        self.state = state
        self.on_log = on_log
        self.on_reset_log = on_reset_log
        self.on_connection = on_connection
        self.position = 0.0
        self.speed = 1.0
        self.paused = False
        self.pause_at: float | None = None
        # Whether the shown namespace follows the recorded console's; not once the viewer picks one.
        self.follow = True
        self._next = 0
        self._tables: dict[str, dict[str, dict[Hashable, Any]]] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        # Per namespace, the indexes of its snapshots, to seek from the last one.
        self._snaps: dict[str, list[int]] = {}
        self._logs = [i for i, kind in enumerate(kinds) if kind == "log"]
        self._views = [i for i, kind in enumerate(kinds) if kind == "view"]
        first_snap: tuple[int, str] | None = None
        for i, kind in enumerate(kinds):
            if kind == "snap":
                ns = str(self.records[i].get("ns", ""))
                self._snaps.setdefault(ns, []).append(i)
                first_snap = first_snap or (i, ns)
        wanted = str(rec.header.get("namespace") or "")
        if wanted not in self._snaps and first_snap is not None:
            wanted = first_snap[1]
        if wanted:
            state.namespace = wanted
        self._first_namespace = state.namespace
        state.address = str(rec.header.get("address", ""))
        state.connected = True

    @property
    def duration(self) -> float:
        return self.recording.duration

    @property
    def namespaces(self) -> list[str]:
        return sorted(self._snaps)

    def now(self) -> datetime:
        """The recorded wall-clock time at the position: ages and uptimes run on it."""
        return self.recording.started + timedelta(seconds=self.position)

    # --- moving ---------------------------------------------------------------

    def tick(self, elapsed: float) -> None:
        if self.paused:
            return
        target = self.position + elapsed * self.speed
        if self.pause_at is not None and target >= self.pause_at:
            target, self.pause_at, self.paused = self.pause_at, None, True
        if target >= self.duration:
            target, self.paused = self.duration, True
        self.advance(target)

    def advance(self, position: float) -> None:
        """Move forward to `position`, applying (and logging) what happened in between."""
        end = bisect.bisect_right(self.times, position)
        while self._next < end:
            self._apply(self.records[self._next], live=True)
            self._next += 1
        self.position = max(self.position, position)

    def seek(self, position: float) -> None:
        """Jump to `position` (clamped to the recording): the tables and log as they were then."""
        # The first records (the snapshot) come a moment after the header's start.
        first = self.times[0] if self.times else 0.0
        position = min(max(position, first), self.duration)
        end = bisect.bisect_right(self.times, position)
        start = self._rebuild_from(end)
        if end >= self._next and start <= self._next:
            # Nothing to rebuild: forward from here is cheaper than from a snapshot.
            self.advance(position)
            self.position = position
            return
        self._tables.clear()
        self._meta.clear()
        lines: list[LogLine] = []
        for i in range(start, end):
            record = self.records[i]
            if record.get("k") == "log":
                lines.append(recording.decode_line(record.get("line") or {}))
            else:
                self._apply(record, live=False)
        # The log shows what came before the snapshot too, back to its capacity.
        k = bisect.bisect_left(self._logs, start)
        before = [
            recording.decode_line(self.records[i].get("line") or {})
            for i in self._logs[max(0, k - (LOG_KEEP - len(lines))) : k]
        ]
        self._next = end
        self.position = position
        self.show_namespace(self._viewed(end) if self.follow else self.state.namespace)
        self.on_reset_log((before + lines)[-LOG_KEEP:])

    def _viewed(self, end: int) -> str:
        """The namespace the recorded console showed before record `end`."""
        k = bisect.bisect_left(self._views, end)
        if k == 0:
            return self._first_namespace
        return str(self.records[self._views[k - 1]].get("ns", self._first_namespace))

    def _rebuild_from(self, end: int) -> int:
        """The index to rebuild from for a position whose next record is `end`."""
        starts = []
        for snaps in self._snaps.values():
            k = bisect.bisect_left(snaps, end) - 1
            starts.append(snaps[k] if k >= 0 else 0)
        return min(starts, default=0)

    def step(self) -> bool:
        """Move to the next recorded event and pause there; False when there is none."""
        self.paused = True
        for k in range(bisect.bisect_left(self._logs, self._next), len(self._logs)):
            i = self._logs[k]
            if _is_event(self.records[i]):
                self.advance(self.times[i])
                return True
        return False

    def faster(self, up: bool) -> float:
        i = bisect.bisect_left(SPEEDS, self.speed)
        i = min(i + 1, len(SPEEDS) - 1) if up else max(i - 1, 0)
        self.speed = SPEEDS[i]
        return self.speed

    def show_namespace(self, namespace: str) -> None:
        """Show `namespace`'s recorded tables (empty ones if it was not recorded)."""
        self.state.namespace = namespace
        tables = self._tables.get(namespace, {})
        for table in TABLES:
            self.state.replace_all(table, dict(tables.get(table, {})))
        meta = self._meta.get(namespace, {})
        self.state.version = str(meta.get("version", ""))
        self.state.snapshotters = list(meta.get("snapshotters", []))
        self.state.unserved = set(meta.get("unserved", []))

    # --- records --------------------------------------------------------------

    def _apply(self, record: dict[str, Any], *, live: bool) -> None:
        kind = record.get("k")
        ns = str(record.get("ns", ""))
        shown = live and ns == self.state.namespace
        if kind == "log":
            if live:
                self.on_log(recording.decode_line(record.get("line") or {}))
        elif kind == "snap":
            tables: dict[str, dict[Hashable, Any]] = {}
            for table in TABLES:
                rows = record.get("tables", {}).get(table, [])
                tables[table] = {
                    recording.decode_key(k): recording.decode_row(table, r) for k, r in rows
                }
            self._tables[ns] = tables
            self._meta[ns] = record
            if shown:
                self.show_namespace(ns)
        elif kind == "row":
            self._apply_row(record, ns, shown)
        elif kind == "view" and live and self.follow:
            self.show_namespace(ns)
        elif kind == "conn" and live:
            self.state.connected = bool(record.get("up"))
            self.on_connection(self.state.connected, str(record.get("detail", "")))

    def _apply_row(self, record: dict[str, Any], ns: str, shown: bool) -> None:
        table = str(record.get("tb", ""))
        if table not in TABLES:
            return
        rows = self._tables.setdefault(ns, {}).setdefault(table, {})
        key = recording.decode_key(record.get("key"))
        row: Any = None
        if record.get("rm"):
            rows.pop(key, None)
        elif "row" in record:
            row = recording.decode_row(table, record["row"])
        elif key in rows:
            known = {f.name for f in dataclasses.fields(rows[key])}
            changes = {k: v for k, v in record.get("set", {}).items() if k in known}
            row = dataclasses.replace(rows[key], **recording.decode_fields(changes))
        if row is not None:
            rows[key] = row
        if shown:
            if row is None:
                self.state.remove(table, key)
            else:
                self.state.upsert(table, key, row)


def _is_event(record: dict[str, Any]) -> bool:
    return (record.get("line") or {}).get("kind", "event") == "event"
