"""The main screen of a fleet console: the Nodes pane above it, and an all-nodes containers view.

`FleetScreen` is `MainScreen` with two tables mounted into its layout: the
Nodes pane above the namespaces and resources, and `AllContainersTable` beside
the containers table in the resource switcher. Everything else (panes, keys,
actions, the `:` line) is the main screen's, acting on the selected node,
which the console swaps underneath it. `ctrl+n` moves to the next node (and
`enter` in the Nodes pane, or `:node NAME`, to a given one; `N` is the
containers' sort by name); `0` (or `:node all`, as k9s' `0` is all namespaces)
shows the containers of every node with a NODE column, where moving to a row
selects its node, so an action on that row goes to that node and its toast
says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.binding import Binding
from textual.widgets import ContentSwitcher

from tui.commands import CONTAINERS, NAMESPACES, RESOURCE_PANES
from tui.fleet import CONNECTING, UP
from tui.plain import plain
from tui.screens.main import MainScreen
from tui.widgets.fleet_tables import NODES, AllContainersTable, NodesTable
from tui.widgets.tables import Cells, ContainersTable, ResourceTable

if TYPE_CHECKING:
    from tui.fleet_app import FleetApp

ALL = "allcontainers"
NODES_CSS = """
#nodes {
    height: auto;
    max-height: 9;
    border: round $border-blurred;
    border-title-color: $foreground;
}
#nodes:focus {
    border: round $border;
}
"""


class FleetScreen(MainScreen):
    BINDINGS: ClassVar[list[Binding]] = [
        *MainScreen.BINDINGS,
        Binding("ctrl+n", "next_node", "next node"),
        Binding("0", "all_nodes", "all nodes"),
    ]
    DEFAULT_CSS = NODES_CSS

    def __init__(self, console: FleetApp) -> None:
        super().__init__(console)
        self.fleet_console = console
        self.all_nodes = False
        # Each node's formatted container rows for the all-nodes view, kept until that node changes.
        self._cells: dict[str, dict[tuple[str, str], Cells]] = {}
        self.stale: set[str] = set()

    def on_mount(self) -> None:
        nodes = NodesTable(id=NODES)
        nodes.border_title = "Nodes"
        self.mount(nodes, before="#body")
        everything = AllContainersTable(id=ALL)
        # The switcher hides the children it was composed with; this one comes later.
        everything.display = False
        self.query_one(ContentSwitcher).mount(everything)
        names = list(self.fleet_console.fleet.nodes)
        self.event_log.node_width = min(max(len(n) for n in names), 16)
        # `MainScreen.on_mount` runs next (Textual runs every class's handler) and fills the panes.
        self.refresh_nodes()

    # --- the selected node and the all-nodes view --------------------------------

    def table(self, pane: str) -> ResourceTable:
        if pane == CONTAINERS and self.all_nodes:
            return self.query_one(f"#{ALL}", ResourceTable)
        return super().table(pane)

    def _show_tab(self, pane: str) -> None:
        super()._show_tab(pane)
        if pane == CONTAINERS and self.all_nodes:
            self.query_one(ContentSwitcher).current = ALL

    def refresh_view(self, dirty: set[str]) -> None:
        if self.all_nodes and (CONTAINERS in dirty or ALL in dirty):
            self.sync_all()
            dirty = dirty - {CONTAINERS}
        super().refresh_view(dirty - {ALL, NODES})
        if NODES in dirty:
            self.refresh_nodes()

    def sync_all(self) -> None:
        now = self.console.clock()
        fleet = self.fleet_console.fleet
        rows: dict[tuple[str, str], Cells] = {}
        for name, node in fleet.nodes.items():
            if name in self.stale or name not in self._cells:
                self._cells[name] = {
                    (name, cid): AllContainersTable.node_cells(
                        name, ContainersTable.cells(row, now, self.status_styles)
                    )
                    for cid, row in node.state.containers.items()
                }
            rows.update(self._cells[name])
        self.stale.clear()
        self.query_one(f"#{ALL}", AllContainersTable).sync(rows)

    def refresh_nodes(self) -> None:
        statuses = self.fleet_console.fleet.statuses()
        table = self.query_one(f"#{NODES}", NodesTable)
        table.show(statuses, self.fleet_console.selected, self.error_style)
        up = sum(1 for s in statuses if s.phase == UP)
        table.border_subtitle = plain(f"{up} of {len(statuses)} up")

    def set_all_nodes(self, on: bool) -> None:
        if on == self.all_nodes:
            self.show_pane(CONTAINERS)
            return
        self.all_nodes = on
        self.stale.update(self.fleet_console.fleet.nodes)
        self.refresh_view({CONTAINERS})
        self.show_pane(CONTAINERS)
        self.retitle()

    def action_all_nodes(self) -> None:
        self.set_all_nodes(not self.all_nodes)

    def action_next_node(self) -> None:
        names = list(self.fleet_console.fleet.nodes)
        following = names[(names.index(self.fleet_console.selected) + 1) % len(names)]
        self.set_all_nodes(False)
        self.fleet_console.select_node(following)

    def node_switched(self) -> None:
        """The console swapped the selected node: show its tables, its state and the marker."""
        dirty = {*RESOURCE_PANES, NAMESPACES, NODES}
        if self.all_nodes:
            # The all-nodes table already shows every node; its rows need no rebuild.
            dirty.discard(CONTAINERS)
        self.refresh_view(dirty)
        self.show_node_state()

    def show_node_state(self) -> None:
        """The banner says why the selected node is down; a node still connecting has none."""
        status = self.fleet_console.node.status
        if status.phase == UP or status.phase == CONNECTING:
            self.show_connection(True, "")
        else:
            self.show_connection(False, f"{status.name}: {status.reason or status.phase}")

    @on(ResourceTable.RowHighlighted, f"#{ALL}")
    def all_row_highlighted(self) -> None:
        name = self.query_one(f"#{ALL}", AllContainersTable).selected_node()
        if name is not None and name != self.fleet_console.selected:
            self.fleet_console.select_node(name, quiet=True)

    @on(ResourceTable.RowSelected, f"#{NODES}")
    def node_chosen(self, event: ResourceTable.RowSelected) -> None:
        event.stop()
        self.set_all_nodes(False)
        self.fleet_console.select_node(str(event.row_key.value))

    def retitle(self) -> None:
        super().retitle()
        if self.all_nodes and self._pane == CONTAINERS:
            table = self.table(CONTAINERS)
            shown, total = table.counts()
            where = f"all nodes · {shown} of {total}" if table.filter_text else "all nodes"
            note = f"{where} · {total} containers"
            if self._shown_titles.get("note") != note:
                self._shown_titles["note"] = note
                self.query_one("#resources").border_subtitle = plain(note)

    # --- the : line ------------------------------------------------------------------

    def run_line(self, text: str) -> None:
        words = text.strip().lstrip(":").split()
        if not words or words[0].lower() not in ("node", "nodes"):
            super().run_line(text)
            return
        if len(words) == 1:
            self.query_one(f"#{NODES}", NodesTable).focus()
        elif words[1] == "all":
            self.set_all_nodes(True)
        elif words[1] in self.fleet_console.fleet.nodes:
            self.set_all_nodes(False)
            self.fleet_console.select_node(words[1])
        else:
            known = ", ".join(self.fleet_console.fleet.nodes)
            self.notify(f"no node {words[1]!r}; the nodes are {known}, or all", severity="error")

    def show_pane(self, pane: str) -> None:
        if pane == NODES:
            self.query_one(f"#{NODES}", NodesTable).focus()
            return
        super().show_pane(pane)

    def pane_box(self, pane: str):  # type: ignore[no-untyped-def]
        if pane == NODES:
            return self.query_one(f"#{NODES}", NodesTable)
        return super().pane_box(pane)
