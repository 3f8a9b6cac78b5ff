"""A refresh remakes only the rows the model says changed, and the table still equals the model.

`NodeState` numbers its row changes and tells a reader which keys changed
since the number it last saw (`changed_since`); the main screen gives the
containers table only those rows. A metrics poll that moves the CPU figure of
a few running containers must remake those rows' cells and no others, and
rows that come and go through the same path must show as they do in the model,
also after more changes than the model's log keeps.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tui.app import CtrdeckApp
from tui.console import Settings
from tui.state import CHANGE_LOG, CONTAINERS, ContainerRow, NodeState
from tui.widgets.tables import ContainersTable

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
ROWS = 400
RUNNING = ("c0000", "c0100", "c0200", "c0300")


def node() -> NodeState:
    state = NodeState("default", "unix:///test.sock")
    state.connected = True
    for i in range(ROWS):
        cid = f"c{i:04d}"
        live = cid in RUNNING
        state.upsert(
            CONTAINERS,
            cid,
            ContainerRow(
                cid,
                "docker.io/library/busybox:latest",
                "io.containerd.runc.v2",
                status="RUNNING" if live else "",
                pid=100 + i if live else 0,
                started=NOW - timedelta(minutes=3) if live else None,
                cpu=0.5 if live else None,
            ),
        )
    return state


def app_on(state: NodeState) -> CtrdeckApp:
    settings = Settings(
        address="unix:///test.sock", namespace="default", keymap_path=Path("/nonexistent")
    )
    return CtrdeckApp(settings, state=state, clock=lambda: NOW)


def table_cells(table: ContainersTable) -> dict[str, dict]:
    return {rid: dict(table._rows[rid]) for rid in table.ordered_ids()}


def model_cells(app: CtrdeckApp) -> dict[str, dict]:
    styles = app.main.status_styles
    return {
        cid: ContainersTable.cells(row, NOW, styles)
        for cid, row in sorted(app.state.containers.items())
    }


async def test_a_metrics_refresh_remakes_only_the_changed_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = app_on(node())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table = app.main.query_one(f"#{CONTAINERS}", ContainersTable)
        assert table.total_count == ROWS
        made: list[str] = []
        real = ContainersTable._cells

        def counted(row, now, styles, live):  # type: ignore[no-untyped-def]
            made.append(row.id)
            return real(row, now, styles, live)

        monkeypatch.setattr(ContainersTable, "_cells", staticmethod(counted))
        # The poll moved two of the four running rows' figures.
        for i, cid in enumerate(RUNNING[:2]):
            app.state.update_container(cid, cpu=10.0 + i)
        app.repaint()
        await pilot.pause()
        assert sorted(made) == sorted(RUNNING[:2])
        assert str(table.get_cell("c0100", "cpu")) == "11.0%"
        assert table_cells(table) == model_cells(app)
        # A refresh with nothing changed since remakes nothing.
        made.clear()
        app.main.refresh_view({CONTAINERS})
        assert made == []


async def test_rows_that_come_and_go_between_refreshes_show_as_in_the_model() -> None:
    app = app_on(node())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table = app.main.query_one(f"#{CONTAINERS}", ContainersTable)
        state = app.state
        state.remove(CONTAINERS, "c0001")
        state.upsert(CONTAINERS, "a-new", ContainerRow("a-new", "alpine", "runc"))
        state.update_container("c0002", image="alpine")
        # Added then removed before the screen looked: never shown.
        state.upsert(CONTAINERS, "brief", ContainerRow("brief", "alpine", "runc"))
        state.remove(CONTAINERS, "brief")
        app.repaint()
        await pilot.pause()
        assert table.ordered_ids()[0] == "a-new"
        assert "c0001" not in table.ordered_ids() and "brief" not in table.ordered_ids()
        assert table_cells(table) == model_cells(app)
        # More changes than the model's log keeps: the screen gives the whole table again.
        for n in range(CHANGE_LOG + 10):
            state.update_container(f"c{n % ROWS:04d}", pid=n + 1)
        state.remove(CONTAINERS, "c0399")
        app.repaint()
        await pilot.pause()
        assert table_cells(table) == model_cells(app)


def test_the_model_says_which_keys_changed_since_a_change_number() -> None:
    state = NodeState("default")
    state.upsert(CONTAINERS, "a", ContainerRow("a", "busybox", "runc"))
    seen = state.seq
    state.upsert(CONTAINERS, "b", ContainerRow("b", "busybox", "runc"))
    state.upsert(CONTAINERS, "a", ContainerRow("a", "busybox", "runc"))  # the same row: no change
    state.remove(CONTAINERS, "a")
    assert state.changed_since(CONTAINERS, seen) == {"a", "b"}
    assert state.changed_since(CONTAINERS, state.seq) == set()
    # Dirty as a whole: a reader from before cannot be told which keys, one after can.
    state.mark(CONTAINERS)
    assert state.changed_since(CONTAINERS, seen) is None
    assert state.changed_since(CONTAINERS, state.seq) == set()
    assert state.running == 0
    state.upsert(CONTAINERS, "r", ContainerRow("r", "busybox", "runc", status="RUNNING"))
    assert state.running == 1
    state.update_container("r", status="STOPPED")
    assert state.running == 0
