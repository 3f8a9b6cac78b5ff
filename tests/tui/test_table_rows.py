"""The keyed table's row changes: filtering hides and restores rows in order.

`ResourceTable` keeps its rows in its own order and its filter as a second
list; what the table shows must be the rows in order, the cursor on a row,
and the cursor's row on screen.
"""

from __future__ import annotations

from datetime import UTC, datetime

from textual.app import App, ComposeResult

from tui.state import ContainerRow
from tui.widgets.tables import ContainersTable

NOW = datetime.now(UTC)


def cells(n: int, image: str = "busybox") -> dict[str, dict]:
    out = {}
    for i in range(n):
        row = ContainerRow(f"c{i:03d}", image, "io.containerd.runc.v2")
        out[row.id] = ContainersTable.cells(row, NOW, {})
    return out


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield ContainersTable(id="containers")


def shown(table: ContainersTable) -> list[str]:
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def test_filter_hides_and_restores_rows_in_order() -> None:
    app = TableApp()
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.query_one(ContainersTable)
        table.sync(cells(300))
        table.focus()
        await pilot.pause()
        everything = [f"c{i:03d}" for i in range(300)]
        assert shown(table) == everything
        table.set_filter("c1")
        await pilot.pause()
        assert shown(table) == [f"c{i:03d}" for i in range(100, 200)]
        assert table.counts() == (100, 300)
        assert table.selected_key() == "c100"
        table.set_filter("c15")
        await pilot.pause()
        assert shown(table) == [f"c{i:03d}" for i in range(150, 160)]
        # A row changed while hidden comes back with its new cells.
        changed = cells(300)
        changed["c005"] = ContainersTable.cells(
            ContainerRow("c005", "alpine", "io.containerd.runc.v2"), NOW, {}
        )
        table.sync(changed)
        table.set_filter("")
        await pilot.pause()
        assert shown(table) == everything
        assert str(table.get_row("c005")[1]) == "alpine"
        assert str(table.get_row("c006")[1]) == "busybox"
        await pilot.press("G")
        assert table.selected_key() == "c299"
        assert table.visible_ids()[-1] == "c299"
        assert table.scroll_y > 0
        await pilot.press("g")
        assert table.selected_key() == "c000"


async def test_rows_removed_by_the_model_stay_gone_when_the_filter_clears() -> None:
    app = TableApp()
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.query_one(ContainersTable)
        table.sync(cells(50))
        table.set_filter("c01")
        await pilot.pause()
        fewer = cells(50)
        del fewer["c020"], fewer["c011"]
        table.sync(fewer)
        table.set_filter("")
        await pilot.pause()
        assert shown(table) == sorted(fewer)
        assert table.counts() == (48, 48)


def test_cells_of_a_row_without_a_task_are_made_once_per_theme() -> None:
    styles = {"dim": "dim"}
    idle = ContainerRow("idle", "busybox", "io.containerd.runc.v2")
    first = ContainersTable.cells(idle, NOW, styles)
    assert ContainersTable.cells(idle, NOW, styles) is first
    # A new theme's styles, or a changed row, make new cells.
    again = ContainersTable.cells(idle, NOW, {"dim": "italic"})
    assert again is not first and again == ContainersTable.cells(idle, NOW, {"dim": "italic"})
    moved = ContainersTable.cells(
        ContainerRow("idle", "alpine", "io.containerd.runc.v2"), NOW, styles
    )
    assert moved["image"] == "alpine"
    # A running row's uptime moves with the clock.
    running = ContainerRow("run", "busybox", "x", status="RUNNING", pid=7, started=NOW)
    later = NOW.replace(year=NOW.year + 1)
    assert (
        ContainersTable.cells(running, NOW, styles)["up"]
        != ContainersTable.cells(running, later, styles)["up"]
    )
