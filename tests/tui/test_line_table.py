"""The line-API table under every resource table: order, filter, cursor, keys, mouse, clock.

`LineTable` keeps its rows in its own order, the filter's rows as a second
list and a cursor that stays on its row, and draws only the lines on screen.
These drive a `ContainersTable` (a `ResourceTable` on it) through Pilot.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import UTC, datetime, timedelta
from typing import Any

from textual import on
from textual.app import App, ComposeResult

from tests.tui import fixed
from tests.tui.test_engine_view import fixed_status
from tui.state import ContainerRow
from tui.widgets.line_table import LineTable
from tui.widgets.tables import Cells, ContainersTable

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
RUNTIME = "io.containerd.runc.v2"


def cells_of(ids: list[str], image: str = "busybox") -> dict[str, Cells]:
    return {i: ContainersTable.cells(ContainerRow(i, image, RUNTIME), NOW, {}) for i in ids}


def running(cid: str, started: datetime, now: datetime, cpu: float = 1.0) -> Cells:
    row = ContainerRow(cid, "busybox", RUNTIME, status="RUNNING", pid=7, started=started, cpu=cpu)
    return ContainersTable.cells(row, now, {})


class TableApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.selected: list[str] = []
        self.highlighted: list[str] = []

    def compose(self) -> ComposeResult:
        yield ContainersTable(id="containers")

    @on(LineTable.RowSelected)
    def row_selected(self, event: LineTable.RowSelected) -> None:
        self.selected.append(event.row_key.value)

    @on(LineTable.RowHighlighted)
    def row_highlighted(self, event: LineTable.RowHighlighted) -> None:
        self.highlighted.append(event.row_key.value)


def screen_text(table: LineTable) -> list[str]:
    return [table.render_line(y).text for y in range(table.scrollable_content_region.height)]


async def test_rows_keep_their_order_as_rows_come_and_go() -> None:
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(ContainersTable)
        ids = [f"c{i:04d}" for i in range(0, 400, 2)]
        table.sync(cells_of(ids))
        await pilot.pause()
        assert table.ordered_ids() == ids
        # A few arrivals are placed by bisection, many at once by one sort.
        few = [*ids, "c0001", "c0399", "a"]
        table.sync(cells_of(few))
        assert table.ordered_ids() == sorted(few)
        many = [f"c{i:04d}" for i in range(400)]
        table.sync(cells_of(many))
        assert table.ordered_ids() == many
        fewer = [i for i in many if not i.endswith("7")]
        table.sync(cells_of(fewer))
        assert table.ordered_ids() == fewer
        assert table.counts() == (len(fewer), len(fewer))
        # A row whose sort value changed moves; the operator's order turns round.
        table.set_sort("cpu", True)
        given = cells_of(fewer)
        given["c0100"] = running("c0100", NOW, NOW, cpu=50.0)
        given["c0200"] = running("c0200", NOW, NOW, cpu=10.0)
        table.sync(given)
        assert table.ordered_ids()[:2] == ["c0100", "c0200"]
        given["c0300"] = running("c0300", NOW, NOW, cpu=99.0)
        table.sync(given)
        assert table.ordered_ids()[:3] == ["c0300", "c0100", "c0200"]
        assert str(table.columns[next(k for k in table.columns if k.value == "cpu")].label) == (
            "CPU▼"
        )


async def test_cursor_keeps_its_row_across_refreshes_and_filters() -> None:
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(ContainersTable)
        table.focus()
        ids = [f"c{i:03d}" for i in range(100)]
        table.sync(cells_of(ids))
        await pilot.pause()
        table.select_key("c050")
        assert table.selected_key() == "c050"
        # Rows arrive above it, and its own cells change: the cursor stays on it.
        table.sync(cells_of([*ids, "a1", "a2", "b"]) | cells_of(["c050"], image="alpine"))
        assert table.selected_key() == "c050"
        assert table.cursor_row == 53
        assert "c050" in table.visible_ids()
        # A filter that keeps it keeps the cursor on it; one that hides it lands nearby.
        table.set_filter("c05")
        assert table.counts() == (10, 103)
        assert table.selected_key() == "c050"
        table.set_filter("")
        assert table.selected_key() == "c050"
        # Hidden, it leaves the cursor at its place (row 53), as far down as the rows go.
        table.set_filter("c07")
        assert table.selected_key() == "c079"
        # The row under the cursor goes: the cursor stays at its place.
        table.set_filter("")
        table.select_key("c010")
        table.sync(cells_of([i for i in [*ids, "a1", "a2", "b"] if i != "c010"]))
        assert table.selected_key() == "c011"
        await pilot.pause()
        assert app.highlighted[-1] == "c011"


async def test_filter_matches_any_cell_and_a_changed_row_follows_it() -> None:
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(ContainersTable)
        given = cells_of([f"c{i:03d}" for i in range(50)])
        table.sync(given)
        table.set_filter("ALPINE")
        assert table.counts() == (0, 50)
        given = {**given, **cells_of(["c007", "c042"], image="alpine")}
        table.sync(given)
        assert table.ordered_ids() == ["c007", "c042"]
        given = {**given, **cells_of(["c007"])}
        table.sync(given)
        assert table.ordered_ids() == ["c042"]
        await pilot.pause()
        assert screen_text(table)[1].split()[0] == "c042"


async def test_keys_move_the_cursor_and_keep_it_on_screen() -> None:
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(ContainersTable)
        table.focus()
        table.sync(cells_of([f"c{i:03d}" for i in range(200)]))
        await pilot.pause()
        await pilot.press("j", "j", "down")
        assert table.selected_key() == "c003"
        await pilot.press("k")
        assert table.selected_key() == "c002"
        await pilot.press("G")
        assert table.selected_key() == "c199"
        assert table.visible_ids()[-1] == "c199"
        await pilot.pause()
        assert screen_text(table)[-1].split()[0] == "c199"
        await pilot.press("g")
        assert table.selected_key() == "c000" and table.scroll_y == 0
        page = table.size.height - 1
        await pilot.press("pagedown")
        assert table.cursor_row == page
        assert table.selected_key() in table.visible_ids()
        await pilot.press("pagedown", "pageup")
        assert table.cursor_row == page
        assert table.selected_key() in table.visible_ids()
        # `enter` is the pane's inspect key in the console; the table's own select action:
        table.action_select_cursor()
        await pilot.pause()
        assert app.selected == [table.selected_key()]


async def test_a_click_moves_the_cursor_and_a_second_selects() -> None:
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(ContainersTable)
        table.sync(cells_of([f"c{i:03d}" for i in range(30)]))
        await pilot.pause()
        # Line 0 is the header; line 4 is the fourth row.
        await pilot.click(ContainersTable, offset=(3, 4))
        assert table.selected_key() == "c003"
        assert app.selected == []
        await pilot.click(ContainersTable, offset=(30, 4))
        await pilot.pause()
        assert app.selected == ["c003"]
        await pilot.click(ContainersTable, offset=(3, 0))
        assert table.selected_key() == "c003"
        await pilot.hover(ContainersTable, offset=(3, 6))
        await pilot.pause()
        assert table._hover == 5


async def test_an_empty_table_has_no_selection_and_takes_every_key() -> None:
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(ContainersTable)
        table.focus()
        await pilot.pause()
        await pilot.press("j", "k", "G", "g", "pagedown", "pageup", "enter")
        await pilot.click(ContainersTable, offset=(3, 3))
        await pilot.pause()
        table.action_select_cursor()
        await pilot.pause()
        assert table.selected_key() is None and table.row_count == 0
        assert app.selected == [] and app.highlighted == []
        lines = screen_text(table)
        assert lines[0].split()[:3] == ["ID", "IMAGE", "STATUS"]
        assert all(not line.strip() for line in lines[1:])
        # Rows that come and all go again leave it empty, cursor and all.
        table.sync(cells_of(["a", "b"]))
        table.sync({})
        assert table.selected_key() is None and table.counts() == (0, 0)


async def test_cells_are_plain_text_never_markup_or_control_codes() -> None:
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(ContainersTable)
        table.sync(cells_of(["[bold]x[/]", "esc\x1b[2Jy"], image="img\x07\nz"))
        await pilot.pause()
        text = "\n".join(screen_text(table))
        assert "[bold]x[/]" in text
        assert "esc␛[2Jy" in text and "img␇␤z" in text
        assert "\x1b" not in text and "\x07" not in text


async def test_ten_thousand_rows_draw_only_what_is_on_screen() -> None:
    app = TableApp()
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(ContainersTable)
        table.focus()
        ids = [f"c{i:05d}" for i in range(10_000)]
        table.sync(cells_of(ids))
        await pilot.pause()
        assert table.counts() == (10_000, 10_000)
        assert table.virtual_size.height == 10_001
        await pilot.press("G")
        await pilot.pause()
        assert table.selected_key() == "c09999"
        assert screen_text(table)[-1].split()[0] == "c09999"
        table.set_filter("c0999")
        await pilot.pause()
        assert table.ordered_ids() == [f"c0999{i}" for i in range(10)]
        assert table.selected_key() == "c09999"
        table.set_filter("")
        await pilot.press("g")
        await pilot.pause()
        # Two screens drawn (top and bottom), a few cursor lines: never the whole table.
        assert len(table._strips) < 200


async def test_the_clock_remakes_rows_on_screen_now_and_others_when_they_show() -> None:
    app = TableApp()
    async with app.run_test(size=(100, 12)) as pilot:
        table = app.query_one(ContainersTable)
        table.focus()
        started = NOW - timedelta(seconds=30)
        ids = [f"c{i:03d}" for i in range(100)]
        table.sync({i: running(i, started, NOW) for i in ids})
        await pilot.pause()
        later = NOW + timedelta(minutes=5)
        asked: list[Hashable] = []

        def remake(key: Hashable) -> Any:
            asked.append(key)
            return running(str(key), started, later)

        table.refresh_ages(remake)
        await pilot.pause()
        shown = table.visible_ids()
        assert sorted(asked) == shown and len(shown) == table.size.height - 1
        assert "5m" in screen_text(table)[1]
        # Off screen the old age stays until the row is drawn, then it is remade.
        assert str(table.get_cell("c090", "up")) == "30s"
        await pilot.press("G")
        await pilot.pause()
        assert "c099" in asked
        assert "5m" in screen_text(table)[-1]
        # A full refresh gives every row afresh; nothing is remade twice for one tick.
        count = len(asked)
        await pilot.press("g")
        await pilot.pause()
        assert len(asked) == count


async def test_the_consoles_age_tick_moves_the_uptimes_on_screen() -> None:
    moved = [fixed.NOW]
    app = fixed.fixed_app()
    app.state.engine = fixed_status()
    app.clock = lambda: moved[0]
    async with app.run_test(size=(160, 36)) as pilot:
        table = app.main.table("containers")
        await pilot.pause()
        assert str(table.get_cell("web-1", "up")) == "3h02m"
        moved[0] = fixed.NOW + timedelta(minutes=10)
        app.refresh_ages()
        await pilot.pause()
        assert str(table.get_cell("web-1", "up")) == "3h12m"
        line = next(t for t in screen_text(table) if t.startswith(" web-1 "))
        assert "3h12m" in line
        # The engine's uptime in the top bar moves with the same tick.
        topbar = app.main.query_one("#topbar")
        assert "up 3h 12m" in topbar.render_lines(topbar.size.region)[0].text


async def test_a_view_scrolled_away_from_the_cursor_stays_where_it_was_put() -> None:
    app = TableApp()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(ContainersTable)
        ids = [f"c{i:04d}" for i in range(1000)]
        table.sync(cells_of(ids))
        await pilot.pause()
        table.scroll_to(y=500, animate=False)
        await pilot.pause()
        # New rows (an event) leave the view alone while the cursor is off screen.
        table.sync(cells_of([*ids, "a0", "a1"]))
        await pilot.pause()
        assert table.scroll_y == 500 and table.selected_key() == "c0000"
        # A filter that leaves fewer rows than the view held shows them all.
        table.set_filter("c000")
        await pilot.pause()
        assert table.scroll_y == 0
        assert [t.split()[0] for t in screen_text(table)[1:11]] == ids[:10]
