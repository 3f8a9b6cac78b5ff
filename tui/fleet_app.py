"""The console over a fleet: `CtrdeckApp` whose node is whichever one is selected.

`FleetApp` owns a `tui.fleet.Fleet` (a connection, model, syncer and
heartbeat per node, started with the app) and swaps the selected node's
`NodeState`, client and syncer under the main screen, which is a
`FleetScreen`: every pane, key and action works on the selected node as the
one-node console does. Every node's lines go to the one event log with the
node's name; the console's own notes and teaching lines carry the selected
node's, and a teaching line for an ssh:// node is the command an operator
would type (`ssh HOST ctr -n NS ...`). Toasts name the node the action went
to. Repaints stay one per burst: each node's model reports its dirty tables
to the same scheduler, and the Nodes pane is redrawn when a node's state,
version or counts change (its round trips with the age refresh, and once a
second while some node counts down to a reconnect).

For tests and screenshots it also runs without connecting (`connect=False`),
on nodes whose states and statuses the caller filled in.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from textual.notifications import SeverityLevel

from core.client import Client
from tui import keymap as keymaps
from tui import nodes_cli
from tui.app import CtrdeckApp, exit_status
from tui.console import Settings
from tui.fleet import RECONNECTING, Fleet, Node
from tui.nodes import REMOTE_DEFAULTS, NodesError, default_path
from tui.nodes_cli import FleetPlan
from tui.screens.fleet import ALL, FleetScreen
from tui.screens.main import MainScreen
from tui.state import CONTAINERS, LogLine, NodeState, utc_now
from tui.syncer import Syncer
from tui.widgets.fleet_tables import NODES

COUNTDOWN_TICK = 1.0


class FleetApp(CtrdeckApp):
    def __init__(
        self,
        settings: Settings,
        plan: FleetPlan,
        *,
        connect: bool = True,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.fleet = Fleet(
            plan.specs,
            settings.namespace,
            ssh_config=plan.ssh_config,
            on_change=self.node_changed,
            on_log=self.node_log,
        )
        self.selected = next(iter(self.fleet.nodes))
        self._connect_fleet = connect
        self._shown: dict[str, tuple[object, ...]] = {}
        self._nodes_dirty = False
        super().__init__(settings, state=self.node.state, clock=clock)

    # The console's node, client and syncer are the selected node's; the base
    # class assigns them once while it is built, which changes nothing here.
    @property
    def node(self) -> Node:
        return self.fleet.nodes[self.selected]

    @property  # type: ignore[override]
    def state(self) -> NodeState:
        return self.node.state

    @state.setter
    def state(self, value: NodeState) -> None:
        return

    @property  # type: ignore[override]
    def client(self) -> Client | None:
        return self.node.client

    @client.setter
    def client(self, value: Client | None) -> None:
        return

    @property  # type: ignore[override]
    def syncer(self) -> Syncer | None:
        return self.node.syncer

    @syncer.setter
    def syncer(self, value: Syncer | None) -> None:
        return

    @property
    def screen_main(self) -> FleetScreen:
        return self.get_screen("main")  # type: ignore[return-value]

    def main_screen(self) -> MainScreen:
        return FleetScreen(self)

    def on_mount(self) -> None:
        # Textual runs this before `CtrdeckApp.on_mount` (every class's handler
        # runs, subclass first), so the fleet starts once the main screen is up.
        self.call_later(self._start_fleet)

    def _start_fleet(self) -> None:
        for node in self.fleet.nodes.values():
            node.state.take_dirty()
            node.state.on_dirty = self.schedule_repaint
        if self._connect_fleet:
            self.fleet.start()
        self.set_interval(COUNTDOWN_TICK, self._countdown)

    async def on_unmount(self) -> None:
        # `CtrdeckApp.on_unmount` runs after this and closes the selected client again, harmlessly.
        await self.fleet.close()

    # --- the selected node ----------------------------------------------------------

    def select_node(self, name: str, *, quiet: bool = False) -> None:
        if name == self.selected or name not in self.fleet.nodes:
            return
        self.selected = name
        # Its dirty tables stay for the repaint already scheduled: the all-nodes view needs them.
        self.screen_main.node_switched()
        if not quiet:
            self.note(f"node {name} ({self.node.spec.where})")

    # --- what the nodes report --------------------------------------------------------

    def node_changed(self, node: Node) -> None:
        s = node.status
        # Round trips move every second; they are redrawn with the age refresh instead.
        shown = (s.phase, s.reason, s.version, s.running, s.total)
        if self._shown.get(node.name) == shown:
            return
        before = self._shown.get(node.name)
        self._shown[node.name] = shown
        self._nodes_dirty = True
        self.schedule_repaint()
        selected = node.name == self.selected and self.is_screen_installed("main")
        if selected and (before is None or before[0] != s.phase):
            self.screen_main.show_node_state()

    def node_log(self, name: str, line: LogLine) -> None:
        if self.is_screen_installed("main"):
            self.main.event_log.add(replace(line, node=name))

    def _countdown(self) -> None:
        if any(n.status.phase == RECONNECTING for n in self.fleet.nodes.values()):
            self._refresh({NODES})

    def refresh_ages(self) -> None:
        self._refresh({"containers", "images", NODES})

    def repaint(self) -> None:
        self._repaint_pending = False
        dirty: set[str] = set()
        screen = self.screen_main if self.is_screen_installed("main") else None
        for name, node in self.fleet.nodes.items():
            changed = node.state.take_dirty()
            if name == self.selected:
                dirty |= changed
            if CONTAINERS in changed and screen is not None:
                screen.stale.add(name)
                dirty.add(ALL)
        if self._nodes_dirty:
            self._nodes_dirty = False
            dirty.add(NODES)
        self._refresh(dirty)

    # --- lines and toasts that name their node -----------------------------------------

    def note(self, text: str) -> None:
        self.main.event_log.add(
            LogLine(self.clock(), self.state.namespace, "", text, "note", node=self.selected)
        )

    def teach(self, line: str) -> None:
        if not self.settings.teaching:
            return
        node = self.node
        if node.tunnel is not None and line.startswith("ctr "):
            remote = node.tunnel.remote or node.spec.remote_path
            address = "" if remote in ("", REMOTE_DEFAULTS[0]) else f"-a {shlex.quote(remote)} "
            line = f"{node.teach_prefix()} ctr {address}{line.removeprefix('ctr ')}"
        self.main.event_log.add(
            LogLine(self.clock(), self.state.namespace, "", line, "ctr", node=self.selected)
        )

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        # An action's toast says which node it went to.
        title = f"{self.selected} · {title}" if title else self.selected
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)


def run(args: argparse.Namespace) -> int:
    """`ctrdeck --node ...` (or a nodes.toml): the console over every node; bad nodes keep a row."""
    try:
        plan = nodes_cli.specs_from(args)
        keymap = keymaps.load(getattr(args, "keymap", None))
    except (NodesError, keymaps.KeymapError) as exc:
        print(f"ctrdeck: {exc}")
        return 2
    if not plan.specs:
        print(f"ctrdeck: no nodes in {args.nodes_file or default_path()}")
        return 2
    settings = Settings(
        address="",
        namespace=args.namespace,
        read_only=args.read_only,
        teaching=getattr(args, "teach", False),
        theme=getattr(args, "theme", None) or "dark",
        snapshotter=os.environ.get("CONTAINERD_SNAPSHOTTER") or "overlayfs",
        keymap=keymap,
        keymap_path=getattr(args, "keymap", None) or keymaps.default_path(),
    )
    app = FleetApp(settings, plan)
    app.run()
    return exit_status(app)
