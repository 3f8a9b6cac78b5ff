"""The resource tables: namespaces, containers, images, snapshots, content.

`ResourceTable` is a `LineTable` (`tui.widgets.line_table`: only the lines on
screen are drawn) that is told either the full set of rows it should show
(already formatted, keyed like the model; `sync` works out the difference) or
only the rows the model says changed (`update`): rows are added, changed
(repainting that row only, when on screen) or removed by key, so a refresh
never clears and rebuilds the table. Its filter
(a substring of any cell, in any case) and the operator's sort choice are the
line table's filter and order. Columns have fixed widths and drop from the
right when the table is too narrow for them, except the ones marked essential
(an ID, a status), which stay to the last. Every cell reaches the screen as
plain text: a snapshot key or an image name is data, never markup or a
terminal control code.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import humanize
from rich.text import Text
from textual.binding import Binding

from tui import commands, why
from tui.state import (
    CONTAINERS,
    CONTENT,
    IMAGES,
    NAMESPACES,
    SNAPSHOTS,
    ContainerRow,
    ContentRow,
    ImageRow,
    NamespaceRow,
    SnapshotRow,
    age,
)
from tui.widgets.line_table import LineTable

Cell = str | Text
# A row's cells by column key; a key that starts with "_" is no column but the
# raw value its column sorts by (a CPU percentage, a byte count, a time).
Cells = dict[str, Any]
CELL_PADDING = 1
# Rows added at once from which their objects are kept out of the cyclic GC's walks.
FREEZE_ROWS = 1000


@dataclass(frozen=True)
class Column:
    """One column; when the table is too narrow, the lowest `keep` goes first."""

    key: str
    label: str
    width: int
    essential: bool = False
    keep: int = 0


def size(n: int | None) -> str:
    return "-" if n is None else humanize.naturalsize(n, binary=True, format="%.1f")


def short_digest(digest: str, hex_chars: int = 12) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:hex_chars]}" if hexpart else digest


def fit(text: str, width: int, *, keep_right: bool = False) -> str:
    """`text` cut to `width` cells with an ellipsis; image names keep their tag end."""
    if len(text) <= width:
        return text
    if keep_right:
        return "…" + text[-(width - 1) :]
    return text[: width - 1] + "…"


def visible_columns(columns: tuple[Column, ...], width: int) -> tuple[Column, ...]:
    """The columns that fit in `width`, in their order.

    Columns go lowest `keep` first and, among equals, from the right; the
    essential ones (an ID, a status) go last, from the right too.
    """
    chosen = list(columns)

    def needed(cols: list[Column]) -> int:
        return sum(c.width + 2 * CELL_PADDING for c in cols)

    position = {c.key: i for i, c in enumerate(columns)}
    order = sorted(columns, key=lambda c: (c.essential, c.keep, -position[c.key]))
    for column in order:
        if needed(chosen) <= width or len(chosen) == 1:
            break
        chosen.remove(column)
    return tuple(chosen)


class ResourceTable(LineTable):
    """A keyed table that updates rows in place; subclasses say which pane and columns."""

    PANE: ClassVar[str] = ""
    COLUMNS: ClassVar[tuple[Column, ...]] = ()
    SORT_COLUMN: ClassVar[str] = ""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cell_padding=CELL_PADDING)
        self.filter_text = ""
        self._needle = ""
        self._keys: dict[str, Hashable] = {}
        # Each row's cells in lower case, for the filter; rebuilt only for rows whose cells changed.
        self._haystacks: dict[str, tuple[Cells, str]] = {}
        self._shown_columns: tuple[Column, ...] = ()
        # The operator's choice of order (a column key, descending?); None is the table's own.
        self.sort_by: tuple[str, bool] | None = None

    @property
    def title(self) -> str:
        return commands.PANE_TITLES[self.PANE]

    def on_mount(self) -> None:
        self._set_columns(visible_columns(self.COLUMNS, max(self.size.width, 40)))

    def on_resize(self) -> None:
        wanted = visible_columns(self.COLUMNS, self.size.width)
        if wanted != self._shown_columns and self.size.width > 0:
            # Only a change of width re-lays the columns; refreshes never do.
            self._set_columns(wanted)

    def _set_columns(self, columns: tuple[Column, ...]) -> None:
        self._shown_columns = columns
        self.set_columns([(c.key, Text(self._label(c)), c.width) for c in columns])

    def _label(self, column: Column) -> str:
        if self.sort_by is None or self.sort_by[0] != column.key:
            return column.label
        return column.label + ("▼" if self.sort_by[1] else "▲")

    def set_sort(self, column: str, descending: bool) -> None:
        """Order rows by `column` from now on, refreshes included; the header shows the arrow."""
        self.sort_by = (column, descending)
        for col in self._shown_columns:
            self.relabel(col.key, Text(self._label(col)))
        self.reorder()

    def sort_name(self) -> str:
        """What the rows are ordered by, for the pane's title ("" for the table's own order)."""
        if self.sort_by is None:
            return ""
        label = next((c.label for c in self.COLUMNS if c.key == self.sort_by[0]), self.sort_by[0])
        return f"{label.lower()} {'▼' if self.sort_by[1] else '▲'}"

    @property
    def descending(self) -> bool:
        return self.sort_by is not None and self.sort_by[1]

    def order_key(self, rid: str, cells: Cells) -> Any:
        if self.sort_by is None:
            column = self.SORT_COLUMN or self.COLUMNS[0].key
            return (_sort_key(cells.get(column, "")), rid)
        column, descending = self.sort_by
        raw = cells.get("_" + column)
        # Rows without a value (no task: no CPU) go last either way.
        if raw is None:
            return (0 if descending else 1, "", rid)
        return (1 if descending else 0, raw, rid)

    def row_id(self, key: Hashable) -> str:
        return "\x1f".join(key) if isinstance(key, tuple) else str(key)

    def sync(self, rows: Mapping[Hashable, Cells]) -> None:
        """Show exactly `rows` (subject to the filter), touching only what changed."""
        keys: dict[str, Hashable] = {}
        given: dict[str, Cells] = {}
        row_id = self.row_id
        for key, cells in rows.items():
            rid = row_id(key)
            keys[rid] = key
            given[rid] = cells
        self._keys = keys
        with _placing(len(keys) - self.total_count):
            self.set_rows(given)
        if len(self._haystacks) > len(keys):
            self._haystacks = {r: h for r, h in self._haystacks.items() if r in keys}

    def update(self, rows: Mapping[Hashable, Cells | None]) -> None:
        """Change only the rows named (None: the row goes); the others are not looked at."""
        keys = self._keys
        given: dict[str, Cells | None] = {}
        added = 0
        for key, cells in rows.items():
            rid = self.row_id(key)
            given[rid] = cells
            if cells is None:
                keys.pop(rid, None)
                self._haystacks.pop(rid, None)
            elif rid not in keys:
                keys[rid] = key
                added += 1
        with _placing(added):
            self.update_rows(given)

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip()
        self._needle = self.filter_text.lower()
        self.refilter(bool(self._needle))

    def matches(self, rid: str, cells: Cells) -> bool:
        cached = self._haystacks.get(rid)
        if cached is None or cached[0] is not cells:
            text = "\x00".join([str(v) for k, v in cells.items() if k[:1] != "_"]).lower()
            cached = self._haystacks[rid] = (cells, text)
        return self._needle in cached[1]

    def refresh_ages(self, remake: Callable[[Hashable], Cells | None]) -> None:
        """The clock moved: the rows on screen get `remake`'s cells now, the others in view."""
        keys = self._keys
        self.refresh_visible(lambda rid: remake(keys[rid]) if rid in keys else None)

    def selected_key(self) -> Hashable | None:
        rid = self.cursor_id()
        return None if rid is None else self._keys.get(rid)

    def select_key(self, key: Hashable) -> None:
        self.move_to(self.row_id(key))

    def counts(self) -> tuple[int, int]:
        return self.row_count, self.total_count


@contextlib.contextmanager
def _placing(new_rows: int) -> Iterator[None]:
    """Around placing `new_rows` rows: past `FREEZE_ROWS`, no collections meanwhile, one after."""
    if new_rows < FREEZE_ROWS:
        yield
        return
    # Placing thousands of new rows would start collections that walk them all.
    gc.disable()
    try:
        yield
    finally:
        # Thousands of rows are thousands of long-lived objects that every full
        # collection of the cyclic GC would walk again, a frame's worth of
        # pause each time (the p99 of a key at 10,000 rows); reference
        # counting still frees them when their rows go. Cyclic garbage is
        # collected first, so none of it is frozen for the console's life.
        gc.collect()
        gc.freeze()
        gc.enable()


def _sort_key(value: Cell) -> str:
    # The namespaces pane marks the current one with a leading arrow; it must not sort first.
    return str(value).lstrip("▸ ").lower()


def _status_text(row: ContainerRow, styles: Mapping[str, str]) -> Text:
    # Styled as a span, not a base style: Text equality sees spans only, and the
    # keyed update must notice a theme change.
    if not row.status:
        return Text.styled("-", styles.get("dim", ""))
    style = styles.get("error", "") if row.oom else styles.get(row.status, "")
    return Text.styled(why.status_label(row), style)


# RUNNING first when sorted by status descending: the live ones lead.
_STATUS_ORDER = {"RUNNING": 5, "PAUSED": 4, "CREATED": 3, "STOPPED": 2, "UNKNOWN": 1, "": 0}
# The cells of rows without a running task, by row object (the model replaces a
# row's object when it changes: hashing a whole row for each look-up was most of
# a refresh's cost at 10,000 rows); cleared when it grows this big.
IDLE_CELLS_MAX = 100_000
_IDLE_CELLS: dict[int, tuple[ContainerRow, Mapping[str, str], Cells]] = {}
# The sort commands' names for the containers' columns (`sort.age` orders by UP).
SORT_COLUMNS = {"name": "id", "status": "status", "age": "up", "cpu": "cpu", "mem": "mem"}


class ContainersTable(ResourceTable):
    PANE = CONTAINERS
    BINDINGS: ClassVar[list[Binding]] = commands.bindings(CONTAINERS)
    COLUMNS = (
        Column("id", "ID", 16, essential=True),
        Column("image", "IMAGE", 23, keep=5),
        # STOPPED(137) in full: an exit status cut short is no status at all.
        Column("status", "STATUS", 12, essential=True),
        # At 80 columns CPU and MEM say more about a container than its pid and uptime.
        Column("pid", "PID", 7, keep=1),
        Column("up", "UP", 7, keep=2),
        Column("cpu", "CPU", 6, keep=4),
        Column("mem", "MEM", 10, keep=3),
        Column("runtime", "RUNTIME", 22),
    )

    @staticmethod
    def cells(row: ContainerRow, now: datetime, styles: Mapping[str, str]) -> Cells:
        live = row.status in ("RUNNING", "PAUSED")
        if not live:
            # Without a task a row's cells do not move with the clock: made once
            # per row (and theme), not for every row on every refresh. The same
            # dict again also makes the table's comparison an identity check.
            cached = _IDLE_CELLS.get(id(row))
            if cached is not None and cached[0] is row and cached[1] is styles:
                return cached[2]
            if len(_IDLE_CELLS) >= IDLE_CELLS_MAX:
                _IDLE_CELLS.clear()
            made = ContainersTable._cells(row, now, styles, live)
            _IDLE_CELLS[id(row)] = (row, styles, made)
            return made
        return ContainersTable._cells(row, now, styles, live)

    @staticmethod
    def _cells(row: ContainerRow, now: datetime, styles: Mapping[str, str], live: bool) -> Cells:
        return {
            "id": fit(row.id, 16),
            "image": fit(row.image, 23, keep_right=True),
            "status": _status_text(row, styles),
            "pid": str(row.pid) if live and row.pid else "-",
            "up": age(row.started, now) if live else "-",
            "cpu": f"{row.cpu:.1f}%" if live and row.cpu is not None else "-",
            "mem": size(row.memory) if live and row.memory is not None else "-",
            "runtime": fit(row.runtime, 22, keep_right=True),
            "_id": row.id,
            "_status": _STATUS_ORDER.get(row.status, 9),
            "_up": -row.started.timestamp() if live and row.started else None,
            "_cpu": row.cpu if live else None,
            "_mem": row.memory if live else None,
        }


class ImagesTable(ResourceTable):
    PANE = IMAGES
    BINDINGS: ClassVar[list[Binding]] = commands.bindings(IMAGES)
    COLUMNS = (
        Column("name", "NAME", 36, essential=True),
        Column("digest", "DIGEST", 19),
        Column("size", "SIZE", 10),
        Column("platforms", "PLATFORMS", 20),
        Column("age", "AGE", 6),
    )

    @staticmethod
    def cells(row: ImageRow, now: datetime) -> Cells:
        return {
            "name": fit(row.name, 36, keep_right=True),
            "digest": short_digest(row.digest),
            "size": size(row.size),
            "platforms": fit(row.platforms or "-", 20),
            "age": age(row.created, now),
        }


class SnapshotsTable(ResourceTable):
    PANE = SNAPSHOTS
    BINDINGS: ClassVar[list[Binding]] = commands.bindings(SNAPSHOTS)
    COLUMNS = (
        Column("key", "KEY", 30, essential=True),
        Column("kind", "KIND", 9, essential=True),
        Column("snapshotter", "SNAPSHOTTER", 11),
        Column("parent", "PARENT", 24),
        Column("age", "AGE", 6),
    )

    @staticmethod
    def cells(row: SnapshotRow, now: datetime) -> Cells:
        return {
            "key": fit(row.key, 30),
            "kind": row.kind,
            "snapshotter": row.snapshotter,
            "parent": fit(row.parent or "-", 24),
            "age": age(row.created, now),
        }


class ContentTable(ResourceTable):
    PANE = CONTENT
    BINDINGS: ClassVar[list[Binding]] = commands.bindings(CONTENT)
    COLUMNS = (
        Column("digest", "DIGEST", 24, essential=True),
        Column("size", "SIZE", 10, essential=True),
        Column("age", "AGE", 6),
        Column("labels", "LABELS", 40),
    )

    @staticmethod
    def cells(row: ContentRow, now: datetime) -> Cells:
        labels = ",".join(f"{k.rsplit('/', 1)[-1]}={v}" for k, v in sorted(row.labels.items()))
        return {
            "digest": short_digest(row.digest, 16),
            "size": size(row.size),
            "age": age(row.created, now),
            "labels": fit(labels or "-", 40),
        }


class NamespacesTable(ResourceTable):
    PANE = NAMESPACES
    BINDINGS: ClassVar[list[Binding]] = commands.bindings(NAMESPACES)
    COLUMNS = (
        Column("name", "NAMESPACE", 12, essential=True),
        Column("containers", "CTR", 3),
    )

    @staticmethod
    def cells(row: NamespaceRow, current: str) -> Cells:
        marker = "▸ " if row.name == current else "  "
        return {
            "name": fit(marker + row.name, 12),
            "containers": "-" if row.containers is None else str(row.containers),
        }
