"""The fleet console's tables: the Nodes pane, and the containers of every node at once.

`NodesTable` is one row per node (name, state with its reason or the
reconnect countdown, engine name and version, round trip, running and total
containers), the selected node marked as the namespaces pane marks the current
namespace, in name order. `AllContainersTable` is the containers table with a NODE column in
front, keyed by (node, container id); it answers `selected_key` with the
container id, as the one-node table does, so every container action works on
it unchanged, and `selected_node` says whose container that is.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding

from tui import commands
from tui.fleet import UP, NodeStatus
from tui.widgets.tables import Cells, Column, ContainersTable, ResourceTable, fit

NODES = "nodes"
# The pane's title for help and the palette, beside the built-in panes'.
commands.PANE_TITLES.setdefault(NODES, "Nodes")


class NodesTable(ResourceTable):
    PANE = NODES
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("enter", "select_cursor", "show this node"),
        *commands.bindings(NODES),
    ]
    COLUMNS = (
        Column("name", "NODE", 14, essential=True),
        Column("state", "STATE", 18, essential=True),
        Column("engine", "ENGINE", 10, keep=3),
        Column("version", "VERSION", 20, keep=1),
        Column("rtt", "RTT", 8, keep=2),
        Column("containers", "RUN/ALL", 9, keep=4),
        # Why a node is down matters more than its version or round trip.
        Column("reason", "REASON", 44, keep=5),
    )

    @staticmethod
    def cells(status: NodeStatus, selected: bool, error_style: str, now: float) -> Cells:
        state = status.state_text(now)
        counted = status.total is not None and status.phase == UP
        return {
            "name": fit(("▸ " if selected else "  ") + status.name, 14),
            "state": Text.styled(state, "" if status.phase == UP else error_style),
            "engine": status.engine or "-",
            "version": fit(status.version.replace("+ctrdeck.", "+") or "-", 20),
            "rtt": "-" if status.rtt is None else f"{status.rtt * 1000:.1f}ms",
            "containers": f"{status.running}/{status.total}" if counted else "-",
            "reason": fit(status.reason, 44),
        }

    def show(self, statuses: list[NodeStatus], selected: str, error_style: str) -> None:
        now = time.monotonic()
        self.sync({s.name: self.cells(s, s.name == selected, error_style, now) for s in statuses})


class AllContainersTable(ContainersTable):
    """Every node's containers; `selected_key` is the container id, `selected_node` its node."""

    PANE = commands.CONTAINERS
    COLUMNS: ClassVar[tuple[Column, ...]] = (
        Column("node", "NODE", 12, essential=True),
        *ContainersTable.COLUMNS,
    )
    SORT_COLUMN = "node"

    @staticmethod
    def node_cells(node: str, cells: Cells) -> Cells:
        return {"node": fit(node, 12), **cells}

    def selected_pair(self) -> tuple[str, str] | None:
        key = super().selected_key()
        return key if isinstance(key, tuple) else None

    def selected_key(self) -> Hashable | None:
        pair = self.selected_pair()
        return None if pair is None else pair[1]

    def selected_node(self) -> str | None:
        pair = self.selected_pair()
        return None if pair is None else pair[0]
