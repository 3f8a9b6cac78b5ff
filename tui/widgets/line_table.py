"""A table that draws only the lines on screen: Textual's line API over rows kept in order.

`LineTable` is a `ScrollView` whose `render_line` draws the header, or the one
row at that line, from a cache of rendered strips per row (dropped for a row
when its cells change, for all when the width, the columns or the colours
change), so a frame costs the rows it shows, not the rows the table holds. It
is given whole sets of rows by id (`set_rows`) and works out what changed;
it keeps every row in its own order (sorted once, later arrivals placed by
bisection), the rows its filter lets through as a second list in the same
order, and a cursor that stays on its row while rows come, go or move. A
clock tick (`refresh_visible`) remakes the cells of the rows on screen only;
a row off screen is remade when it comes into view.

It draws what Textual's `DataTable` drew with a row cursor, segment for
segment: the same padding, header, cursor and hover colours (component
classes `linetable--*`, styled as DataTable's), and posts the same
`RowHighlighted` and `RowSelected` messages, with the same keys. A cell is a
`rich.text.Text` or a string shown as plain text (`tui.plain.clean`): never
markup, never a terminal control code.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.plain import clean

# A row's cells by column key; keys that are no column are ignored here.
Cells = Mapping[str, Any]
NULL = Style.null()
# Rendered rows kept: enough for many screens of scrolling back and forth.
STRIP_CACHE = 2000
# A change to more rows than this share of the table rebuilds its order in one sort.
REBUILD_SHARE = 8
_BEYOND = Style.from_meta({"out_of_bounds": True})


@dataclass(frozen=True)
class RowKey:
    """A row's id, as `DataTable.RowKey` offered it (`.value`)."""

    value: str


@dataclass(frozen=True)
class ColumnKey:
    value: str


@dataclass
class TableColumn:
    key: ColumnKey
    label: Text
    width: int


class RowDoesNotExist(KeyError):
    pass


@dataclass(frozen=True)
class _Paint:
    """What a frame draws rows with; a change of any of it makes every cached row stale."""

    width: int
    base: Style
    header: Style
    cursor: Style
    hover: Style
    header_hover: Style


class LineTable(ScrollView, can_focus=True):
    """Rows by id in the table's order, a filter, a row cursor; only visible lines are drawn."""

    ALLOW_SELECT = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Select", show=False),
        Binding("up", "cursor_up", "Cursor up", show=False),
        Binding("down", "cursor_down", "Cursor down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("ctrl+home", "scroll_top", "Top", show=False),
        Binding("ctrl+end", "scroll_bottom", "Bottom", show=False),
        Binding("home", "scroll_home", "Home", show=False),
        Binding("end", "scroll_end", "End", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "linetable--cursor",
        "linetable--hover",
        "linetable--header",
        "linetable--header-hover",
    }
    # DataTable's looks, for a row cursor without fixed rows or zebra stripes.
    DEFAULT_CSS = """
    LineTable {
        background: $surface;
        color: $foreground;
        height: auto;
        max-height: 100%;

        &:focus {
            background-tint: $foreground 5%;
            & > .linetable--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .linetable--header {
                background-tint: $foreground 5%;
            }
        }
        & > .linetable--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .linetable--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .linetable--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        & > .linetable--header-hover {
            background: $accent 30%;
        }
        & > .linetable--hover {
            background: $block-hover-background;
        }
    }
    """

    header_height = 1

    class _RowMessage(Message):
        """A row and the table it is in, with DataTable's attribute names."""

        def __init__(self, table: LineTable, cursor_row: int, row_key: RowKey) -> None:
            self.data_table = table
            self.cursor_row = cursor_row
            self.row_key = row_key
            super().__init__()

        @property
        def control(self) -> LineTable:
            return self.data_table

    class RowHighlighted(_RowMessage):
        """The cursor moved to another row."""

    class RowSelected(_RowMessage):
        """`enter` on a row, or a click on the cursor's row."""

    def __init__(
        self, *, cell_padding: int = 1, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.cell_padding = cell_padding
        self._columns: list[TableColumn] = []
        self._metas: list[Style] = []
        self._rows: dict[str, Cells] = {}
        # Each row's place in the order; ids end every key, so no two are equal.
        self._okeys: dict[str, Any] = {}
        # Every row in ascending order, and the rows the filter lets through (the
        # same list while nothing is filtered). Shown reversed when `descending`.
        self._all: list[str] = []
        self._shown: list[str] = self._all
        self._filtering = False
        self._cursor = 0
        self._cursor_rid: str | None = None
        self._announced: str | None = None
        self._hover: int | None = None
        self._show_hover = False
        self._strips: LRUCache[tuple[str, int], Strip] = LRUCache(STRIP_CACHE)
        self._header_strip: Strip | None = None
        self._paint: _Paint | None = None
        # The clock of `refresh_visible`: when the rows were last all given, and
        # when each row remade since was.
        self._remake: Callable[[str], Cells | None] | None = None
        self._clock = 0
        self._synced_at = 0
        self._made_at: dict[str, int] = {}

    # --- what subclasses decide ---------------------------------------------------

    def order_key(self, rid: str, cells: Cells) -> Any:
        """Where a row goes: rows are shown in ascending order of this, ending in `rid`."""
        return rid

    @property
    def descending(self) -> bool:
        """Show the order back to front."""
        return False

    def matches(self, rid: str, cells: Cells) -> bool:
        """Whether the filter lets a row through; asked only while `filtering`."""
        return True

    # --- columns and rows -----------------------------------------------------------

    def set_columns(self, columns: list[tuple[str, Text, int]]) -> None:
        self._columns = [TableColumn(ColumnKey(k), label, width) for k, label, width in columns]
        self._metas = [Style.from_meta({"column": i}) for i in range(len(columns))]
        self._forget_strips()
        self._update_virtual_size()
        self.refresh()

    def relabel(self, key: str, label: Text) -> None:
        for column in self._columns:
            if column.key.value == key:
                column.label = label
        self._header_strip = None
        self._refresh_screen_line(0)

    @property
    def columns(self) -> dict[ColumnKey, TableColumn]:
        return {c.key: c for c in self._columns}

    @property
    def ordered_columns(self) -> list[TableColumn]:
        return list(self._columns)

    @property
    def row_count(self) -> int:
        return len(self._shown)

    @property
    def total_count(self) -> int:
        return len(self._all)

    @property
    def rows(self) -> dict[RowKey, int]:
        """The shown rows' keys in order, with their index."""
        return {RowKey(rid): i for i, rid in enumerate(self.ordered_ids())}

    def ordered_ids(self) -> list[str]:
        return list(reversed(self._shown)) if self.descending else list(self._shown)

    def set_rows(self, rows: dict[str, Cells]) -> None:
        """Show exactly `rows` (as the filter lets them), touching only what changed."""
        old = self._rows
        gone = [rid for rid in old if rid not in rows] if len(old) else []
        added: list[str] = []
        changed: list[str] = []
        for rid, cells in rows.items():
            was = old.get(rid)
            if was is None:
                added.append(rid)
            elif was is not cells and was != cells:
                changed.append(rid)
        self._rows = rows
        self._synced_at = self._clock
        self._made_at.clear()
        self._apply(gone, added, changed)

    def update_rows(self, rows: Mapping[str, Cells | None]) -> None:
        """Change only the rows named: their new cells, or None for a row that goes.

        The others stay as they are, uncompared: a refresh that knows which rows
        changed costs those rows, not the table.
        """
        current = self._rows
        gone: list[str] = []
        added: list[str] = []
        changed: list[str] = []
        for rid, cells in rows.items():
            was = current.get(rid)
            if cells is None:
                if was is not None:
                    gone.append(rid)
                    del current[rid]
                continue
            if was is None:
                added.append(rid)
            elif was is cells or was == cells:
                continue
            else:
                changed.append(rid)
            current[rid] = cells
        self._apply(gone, added, changed)
        # Made as of now: the clock's next tick remakes them, not the frame after this one.
        for rid in (*added, *changed):
            self._made_at[rid] = self._clock

    def _apply(self, gone: list[str], added: list[str], changed: list[str]) -> None:
        """Place the rows that came, went or changed (`_rows` already holds the new set)."""
        rows = self._rows
        if not (gone or added or changed):
            return
        if len(gone) + len(added) + len(changed) > max(64, len(self._all) // REBUILD_SHARE):
            for rid in gone:
                del self._okeys[rid]
            self._forget([*gone, *changed])
            for rid in (*added, *changed):
                self._okeys[rid] = self.order_key(rid, rows[rid])
            self._rebuild()
            return
        moved = bool(gone or added)
        for rid in gone:
            self._unplace(rid)
            del self._okeys[rid]
        self._forget(gone)
        for rid in changed:
            moved = self._changed(rid) or moved
        for rid in added:
            self._okeys[rid] = self.order_key(rid, rows[rid])
            self._place(rid)
        self._after_change(moved)

    def _rebuild(self) -> None:
        self._all = sorted(self._rows, key=self._okeys.__getitem__)
        self._apply_filter()

    def refilter(self, filtering: bool) -> None:
        """The filter changed: which rows it lets through is asked again of `matches`."""
        self._filtering = filtering
        self._apply_filter()

    def reorder(self) -> None:
        """The order changed (`order_key`, `descending`): every row is placed again."""
        for rid, cells in self._rows.items():
            self._okeys[rid] = self.order_key(rid, cells)
        self._rebuild()

    def _apply_filter(self) -> None:
        if self._filtering:
            rows, matches = self._rows, self.matches
            self._shown = [rid for rid in self._all if matches(rid, rows[rid])]
        else:
            self._shown = self._all
        self._after_change(True)

    def _place(self, rid: str) -> None:
        okey = self._okeys.__getitem__
        bisect.insort(self._all, rid, key=okey)
        if self._filtering and self.matches(rid, self._rows[rid]):
            bisect.insort(self._shown, rid, key=okey)

    def _unplace(self, rid: str) -> None:
        for order in (self._all, self._shown) if self._filtering else (self._all,):
            i = bisect.bisect_left(order, self._okeys[rid], key=self._okeys.__getitem__)
            if i < len(order) and order[i] == rid:
                del order[i]

    def _changed(self, rid: str) -> bool:
        """A row's cells changed; True when it moved, or the filter now decides otherwise."""
        self._drop_strips(rid)
        cells = self._rows[rid]
        key = self.order_key(rid, cells)
        position = self._position(rid)
        wanted = not self._filtering or self.matches(rid, cells)
        if key == self._okeys[rid] and (position is not None) == wanted:
            if position is not None:
                self._refresh_row(len(self._shown) - 1 - position if self.descending else position)
            return False
        self._unplace(rid)
        self._okeys[rid] = key
        self._place(rid)
        return True

    def _forget(self, rids: list[str]) -> None:
        for rid in rids:
            self._drop_strips(rid)
            self._made_at.pop(rid, None)

    def _after_change(self, moved: bool) -> None:
        if moved:
            self._update_virtual_size()
            self._keep_cursor()
            self.refresh()
        self._announce()

    # --- where rows are -------------------------------------------------------------

    def _position(self, rid: str) -> int | None:
        """`rid`'s place in `_shown` (not reversed), or None."""
        key = self._okeys.get(rid)
        if key is None:
            return None
        shown = self._shown
        i = bisect.bisect_left(shown, key, key=self._okeys.__getitem__)
        return i if i < len(shown) and shown[i] == rid else None

    def _index_of(self, rid: str) -> int | None:
        """`rid`'s row index on screen (0 first under the header), or None."""
        i = self._position(rid)
        if i is None:
            return None
        return len(self._shown) - 1 - i if self.descending else i

    def _rid_at(self, index: int) -> str:
        return self._shown[len(self._shown) - 1 - index if self.descending else index]

    def get_row_index(self, row_key: RowKey | str) -> int:
        rid = row_key.value if isinstance(row_key, RowKey) else row_key
        index = self._index_of(rid)
        if index is None:
            raise RowDoesNotExist(rid)
        return index

    def get_row_at(self, index: int) -> list[Text]:
        if not 0 <= index < len(self._shown):
            raise RowDoesNotExist(index)
        return self._texts(self._rid_at(index))

    def get_row(self, row_key: RowKey | str) -> list[Text]:
        return self.get_row_at(self.get_row_index(row_key))

    def get_cell(self, row_key: RowKey | str, column_key: ColumnKey | str) -> Text:
        column = column_key.value if isinstance(column_key, ColumnKey) else column_key
        keys = [c.key.value for c in self._columns]
        return self.get_row(row_key)[keys.index(column)]

    def _texts(self, rid: str) -> list[Text]:
        cells = self._rows[rid]
        return [_as_text(cells.get(c.key.value, "")) for c in self._columns]

    def _update_virtual_size(self) -> None:
        width = sum(c.width + 2 * self.cell_padding for c in self._columns)
        self.virtual_size = Size(width, len(self._shown) + self.header_height)

    # --- the cursor -------------------------------------------------------------------

    @property
    def cursor_row(self) -> int:
        return self._cursor

    def cursor_id(self) -> str | None:
        """The id of the row under the cursor, or None when nothing is shown."""
        return self._rid_at(self._cursor) if self._shown else None

    def move_cursor(self, *, row: int | None = None, scroll: bool = True, **_: Any) -> None:
        if row is None or not self._shown:
            return
        old = self._cursor
        self._cursor = max(0, min(row, len(self._shown) - 1))
        self._cursor_rid = self._rid_at(self._cursor)
        if old != self._cursor:
            self._refresh_row(old)
            self._refresh_row(self._cursor)
        if scroll:
            self._scroll_cursor_into_view()
        self._announce()

    def move_to(self, rid: str) -> bool:
        """Put the cursor on row `rid`; False when it is not shown."""
        index = self._index_of(rid)
        if index is None:
            return False
        self.move_cursor(row=index)
        return True

    def _keep_cursor(self) -> None:
        """After rows came, went or moved: the cursor stays on its row, else at its place.

        A cursor that was on screen stays on screen; one the operator scrolled
        away from (the mouse wheel) does not pull the view back.
        """
        top = round(self.scroll_y)
        seen = top <= self._cursor < top + self._body_height()
        index = None if self._cursor_rid is None else self._index_of(self._cursor_rid)
        if index is None:
            index = max(0, min(self._cursor, len(self._shown) - 1))
        self._cursor = index
        self._cursor_rid = self._rid_at(index) if self._shown else None
        if seen:
            self._scroll_cursor_into_view()

    def _announce(self) -> None:
        rid = self.cursor_id()
        if rid is not None and rid != self._announced:
            self.post_message(self.RowHighlighted(self, self._cursor, RowKey(rid)))
        self._announced = rid

    def _body_height(self) -> int:
        return max(self.scrollable_content_region.height - self.header_height, 0)

    def _scroll_cursor_into_view(self, animate: bool = False) -> None:
        height = self._body_height()
        if not height or not self._shown:
            return
        top = round(self.scroll_y)
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=animate, force=True)
        elif self._cursor >= top + height:
            self.scroll_to(y=self._cursor - height + 1, animate=animate, force=True)

    # --- keys and the mouse ----------------------------------------------------------

    def _key_moves(self) -> None:
        # The keyboard hides the mouse's hover, as DataTable's does.
        self._set_hover(None)

    def action_cursor_down(self) -> None:
        self._key_moves()
        self.move_cursor(row=self._cursor + 1)

    def action_cursor_up(self) -> None:
        self._key_moves()
        self.move_cursor(row=self._cursor - 1)

    def action_scroll_top(self) -> None:
        self._key_moves()
        self.move_cursor(row=0)

    def action_scroll_bottom(self) -> None:
        self._key_moves()
        self.move_cursor(row=len(self._shown) - 1)

    def action_page_down(self) -> None:
        self._key_moves()
        height = self._body_height()
        self.scroll_relative(y=height, animate=False, force=True)
        self.move_cursor(row=self._cursor + height, scroll=False)
        self._scroll_cursor_into_view()

    def action_page_up(self) -> None:
        self._key_moves()
        height = self._body_height()
        self.scroll_relative(y=-height, animate=False, force=True)
        self.move_cursor(row=self._cursor - height, scroll=False)
        self._scroll_cursor_into_view()

    def action_scroll_home(self) -> None:
        self._key_moves()
        self.scroll_x = 0

    def action_scroll_end(self) -> None:
        self._key_moves()
        self.scroll_x = self.max_scroll_x

    def action_select_cursor(self) -> None:
        self._key_moves()
        rid = self.cursor_id()
        if rid is not None:
            self.post_message(self.RowSelected(self, self._cursor, RowKey(rid)))

    def _row_under(self, event: events.MouseEvent) -> int | None:
        """The row index under the mouse, -1 for the header, None for no row."""
        offset = event.get_content_offset(self)
        if offset is None:
            return None
        if offset.y < self.header_height:
            return -1
        index = offset.y - self.header_height + round(self.scroll_y)
        return index if index < len(self._shown) else None

    def _set_hover(self, index: int | None) -> None:
        show = index is not None
        if (index, show) == (self._hover, self._show_hover):
            return
        for old in (self._hover, index):
            if old is not None:
                self._refresh_row(old)
        self._hover, self._show_hover = index, show

    def on_mouse_move(self, event: events.MouseMove) -> None:
        self._set_hover(self._row_under(event))

    def on_leave(self, _: events.Leave) -> None:
        self._set_hover(None)

    def on_click(self, event: events.Click) -> None:
        index = self._row_under(event)
        if index is None or index < 0:
            return
        event.stop()
        again = index == self._cursor
        self.move_cursor(row=index)
        if again:
            self.action_select_cursor()

    # --- the clock ----------------------------------------------------------------------

    def visible_ids(self) -> list[str]:
        top = round(self.scroll_y)
        end = min(top + self._body_height(), len(self._shown))
        return [self._rid_at(i) for i in range(top, end)]

    def refresh_visible(self, remake: Callable[[str], Cells | None]) -> None:
        """The clock moved: remake the rows on screen now, and others when they come into view.

        `remake` gives a row's cells as of now (None: leave the row as it is).
        """
        self._remake = remake
        self._clock += 1
        for rid in self.visible_ids():
            self._freshen(rid)

    def _freshen(self, rid: str) -> None:
        if self._remake is None or self._made_at.get(rid, self._synced_at) >= self._clock:
            return
        self._made_at[rid] = self._clock
        cells = self._remake(rid)
        was = self._rows.get(rid)
        if cells is None or was is None or cells is was or cells == was:
            return
        self._rows[rid] = cells
        self._drop_strips(rid)
        index = self._index_of(rid)
        if self.order_key(rid, cells) != self._okeys[rid]:
            # Its place moved with the clock: placed again after this frame.
            self.call_later(self._replace, rid)
        if index is not None:
            self._refresh_row(index)

    def _replace(self, rid: str) -> None:
        if rid in self._rows:
            self._after_change(self._changed(rid))

    # --- drawing ---------------------------------------------------------------------------

    def _refresh_row(self, index: int) -> None:
        if index == -1:
            self._header_strip = None
            self._refresh_screen_line(0)
        elif 0 <= index < len(self._shown):
            self._refresh_screen_line(index + self.header_height)

    def _refresh_screen_line(self, y: int) -> None:
        # The header stays on line 0 while the rows scroll under it.
        if y >= self.header_height:
            y -= round(self.scroll_y)
        if 0 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def _drop_strips(self, rid: str) -> None:
        for state in range(4):
            self._strips.discard((rid, state))

    def _forget_strips(self) -> None:
        self._strips.clear()
        self._header_strip = None

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._forget_strips()
        self.refresh()

    def render_lines(self, crop: Region) -> list[Strip]:
        paint = _Paint(
            self.size.width,
            self.rich_style,
            self.get_component_styles("linetable--header").rich_style,
            self.get_component_rich_style("linetable--cursor"),
            self.get_component_rich_style("linetable--hover"),
            self.get_component_rich_style("linetable--header-hover"),
        )
        if paint != self._paint:
            self._paint = paint
            self._forget_strips()
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        paint = self._paint
        width = self.size.width
        if paint is None:
            return Strip.blank(width)
        if y < self.header_height:
            if self._header_strip is None:
                self._header_strip = self._header_line(paint)
            strip = self._header_strip
        else:
            index = y - self.header_height + round(self.scroll_y)
            if index >= len(self._shown):
                return Strip.blank(width, paint.base)
            rid = self._rid_at(index)
            if self._remake is not None:
                self._freshen(rid)
            hover = self._show_hover and self._hover == index
            state = (index == self._cursor) | (hover << 1)
            strip = self._strips.get((rid, state))
            if strip is None:
                strip = self._row_line(rid, state, paint)
                self._strips[(rid, state)] = strip
        scroll_x = round(self.scroll_x)
        if scroll_x or strip.cell_length != width:
            strip = strip.crop(scroll_x, scroll_x + width).adjust_cell_length(width, paint.base)
        return strip

    def _header_line(self, paint: _Paint) -> Strip:
        style = paint.header
        if self._show_hover and self._hover == -1:
            style = style + paint.hover + paint.header_hover
        texts = [c.label for c in self._columns]
        return self._line(texts, style, NULL, style, paint.width)

    def _row_line(self, rid: str, state: int, paint: _Paint) -> Strip:
        component = Style()
        if state & 2:
            component += paint.hover
        if state & 1:
            component += paint.cursor
        pre = paint.base + component
        post = Style.from_color(color=component.color)
        return self._line(self._texts(rid), pre, post, pre, paint.width)

    def _line(self, texts: list[Text], pre: Style, post: Style, extend: Style, width: int) -> Strip:
        """One line as DataTable drew it: each cell padded and styled on its own, then the rest."""
        pad = " " * self.cell_padding
        segments: list[Segment] = []
        used = 0
        for column, text, meta in zip(self._columns, texts, self._metas, strict=True):
            w = column.width
            # Each cell's style carries its column, as DataTable's did: Textual joins
            # neighbouring runs of equal style, and a line must draw as it drew.
            cell_pre = pre + meta
            plain_text = text.plain
            if not text._spans and not text.style and plain_text.isascii() and len(plain_text) <= w:
                # The common cell: one run of one style.
                both = cell_pre + post if post else cell_pre
                segments.append(Segment(f"{pad}{plain_text.ljust(w)}{pad}", both))
            else:
                segments.extend(self._cell(text, w, pad, cell_pre, post))
            used += w + 2 * len(pad)
        segments.append(Segment(" " * max(0, width - used), extend + _BEYOND))
        return Strip(segments)

    def _cell(self, text: Text, width: int, pad: str, pre: Style, post: Style) -> Iterator[Segment]:
        options = self.app.console_options.update_dimensions(width, 1).update(no_wrap=True)
        lines = self.app.console.render_lines(text, options, style=NULL, pad=True)
        line = lines[0] if lines else [Segment(" " * width)]
        cell = [Segment(pad, pre), *(Segment(t, pre + s) for t, s, _ in line), Segment(pad, pre)]
        if post:
            cell = [Segment(t, s + post) for t, s, _ in cell]
        return Segment.simplify(cell)


def _as_text(value: Any) -> Text:
    # A string could be markup to Rich, or carry a terminal control: shown as plain text.
    return value if isinstance(value, Text) else Text(clean(str(value)))
