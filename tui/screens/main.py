"""The main screen: where you are, what runs, what just happened, and the keys for it.

Layout: a top bar (address, engine version, the engine's uptime and plugin
counts while they fit, namespace, counts), a banner while the engine is lost,
the namespaces pane beside the resource area (containers, images, snapshots,
content; `1`-`4` switch), the live event log, a command line and the footer
with the focused pane's keys. Below 100 columns the namespaces pane folds
away (`n` or `:ns` switch) and the event log gets short. `:engine` (or `e`)
opens the engine view: version, directories and every plugin's status.

Every key runs `command(<id>)`, which checks read-only mode and whether the
command applies to the selected row, and dispatches to a `do_<id>` handler of
`tui.screens.actions`; the `:` line is `tui.screens.command_line`. This module
owns the layout, the lookups those two use, and moving between panes.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.color import Color
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import ContentSwitcher, Input, Static

from core.client import Client
from tui import commands, operations, pods
from tui.commands import CONTAINERS, CONTENT, EVENTS, IMAGES, NAMESPACES, PODS, SNAPSHOTS
from tui.console import Console
from tui.plain import plain
from tui.screens.command_line import CMDLINE_HELP, CommandLine
from tui.screens.engine import health_text
from tui.screens.pods import PodsActions
from tui.state import NodeState
from tui.widgets.event_log import EventLog
from tui.widgets.footer import KeyFooter
from tui.widgets.pods_table import PodsTable
from tui.widgets.tables import (
    Cells,
    ContainersTable,
    ContentTable,
    ImagesTable,
    NamespacesTable,
    ResourceTable,
    SnapshotsTable,
)

NARROW = 100


class MainScreen(CommandLine, PodsActions):
    BINDINGS: ClassVar[list[Binding]] = [c.binding() for c in commands.for_pane(commands.SCREEN)]
    # A zoomed pane keeps the top bar, the command line and the keys around it.
    ALLOW_IN_MAXIMIZED_VIEW = "#topbar, #banner, #cmdline, KeyFooter"

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self._pane = CONTAINERS
        self._filter_target: str | None = None
        self._shown_titles: dict[str, object] = {}
        self._applicable: tuple[str, frozenset[str]] = ("", frozenset())
        self.error_style = "bold"
        # The model and its change number the containers table was last brought up to.
        self._containers_at: tuple[NodeState, int] | None = None

    @property
    def node(self) -> NodeState:
        return self.console.state

    @property
    def read_only(self) -> bool:
        return self.console.settings.read_only

    def compose(self) -> ComposeResult:
        yield Static(id="topbar", classes="topbar")
        yield Static(id="banner", classes="hidden")
        with Horizontal(id="body"):
            namespaces = NamespacesTable(id="namespaces")
            namespaces.border_title = "Namespaces"
            yield namespaces
            with Vertical(id="resources"):
                yield Input(placeholder="filter (esc clears)", id="filter", classes="hidden")
                with ContentSwitcher(initial=CONTAINERS, id="switcher"):
                    yield ContainersTable(id=CONTAINERS)
                    yield ImagesTable(id=IMAGES)
                    yield SnapshotsTable(id=SNAPSHOTS)
                    yield ContentTable(id=CONTENT)
                    yield PodsTable(id=PODS)
        yield EventLog(id="events")
        yield Input(placeholder=CMDLINE_HELP, id="cmdline", classes="hidden")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.table(CONTAINERS).focus()
        self.restyle()
        self.refresh_view(set(commands.RESOURCE_PANES) | {NAMESPACES})

    # --- lookups --------------------------------------------------------------

    def table(self, pane: str) -> ResourceTable:
        return self.query_one(f"#{pane}", ResourceTable)

    @property
    def event_log(self) -> EventLog:
        return self.query_one(EventLog)

    def focused_pane(self) -> str:
        return self.pane_of(self.focused) or self._pane

    @staticmethod
    def pane_of(widget: Widget | None) -> str:
        """The pane `widget` belongs to, or "" for one outside every pane (the command line)."""
        while widget is not None:
            pane = getattr(widget, "PANE", "")
            if pane:
                return pane
            widget = widget.parent if isinstance(widget.parent, Widget) else None
        return ""

    def client(self) -> Client | None:
        client = self.console.client
        if client is None:
            self.notify("not connected to an engine", severity="warning")
            return None
        return client.with_namespace(self.node.namespace)

    # --- rendering --------------------------------------------------------------

    def restyle(self) -> None:
        theme = self.app.current_theme

        def readable(color: str | None) -> str:
            # The themes' status colours are made for dark grounds; on a light one they fade.
            if not color:
                return ""
            return color if theme.dark else Color.parse(color).darken(0.25).hex

        if self.app.no_color:
            # Without colour the status words still differ in weight and slant.
            running, paused, created = "bold", "italic", "underline"
        else:
            running, paused = readable(theme.success), readable(theme.warning)
            created = readable(theme.accent)
        self.status_styles = {
            "RUNNING": running,
            "PAUSED": paused,
            "CREATED": created,
            "STOPPED": "dim",
            "UNKNOWN": "dim",
            "dim": "dim",
        }
        self.event_log.styles_by_kind = {"ctr": f"bold {readable(theme.accent)}".strip()}
        self.error_style = "bold" if self.app.no_color else f"bold {readable(theme.error)}".strip()
        # The log's lines were drawn in the old colours: draw them again from its buffer.
        self.event_log.set_filter(self.event_log.filter_text)
        # Every row's status is drawn in the old colours too.
        self._containers_at = None
        self.refresh_view({CONTAINERS})

    def refresh_view(self, dirty: set[str]) -> None:
        node = self.node
        now = self.console.clock()
        if CONTAINERS in dirty:
            self.refresh_containers(now)
        if IMAGES in dirty:
            self.table(IMAGES).sync({k: ImagesTable.cells(r, now) for k, r in node.images.items()})
        if SNAPSHOTS in dirty:
            self.table(SNAPSHOTS).sync(
                {k: SnapshotsTable.cells(r, now) for k, r in node.snapshots.items()}
            )
        if CONTENT in dirty:
            self.table(CONTENT).sync(
                {k: ContentTable.cells(r, now) for k, r in node.content.items()}
            )
        if (CONTAINERS in dirty or PODS in dirty) and self._pane == PODS:
            # Grouping every container into pods is made again as the pane is shown
            # (`_show_tab`), not on each refresh while it is hidden.
            self.pods_table().show(node.containers, now, self.status_styles, self._pod_ip)
        if NAMESPACES in dirty:
            self.table(NAMESPACES).sync(
                {k: NamespacesTable.cells(r, node.namespace) for k, r in node.namespaces.items()}
            )
        self.retitle()
        self.recheck_bindings()

    def refresh_containers(self, now: datetime) -> None:
        """Bring the containers table up to the model: only the rows changed since it last was.

        A metrics poll changes the running rows only; remaking and comparing all
        10,000 rows for it was most of an idle console's work. The whole table is
        given again when the model cannot say what changed (another node, a long
        burst, a change of colours).
        """
        node, styles = self.node, self.status_styles
        table = self.query_one(f"#{CONTAINERS}", ResourceTable)
        at = self._containers_at
        keys = node.changed_since(CONTAINERS, at[1]) if at is not None and at[0] is node else None
        self._containers_at = (node, node.seq)
        rows = node.containers
        if keys is None:
            table.sync({k: ContainersTable.cells(r, now, styles) for k, r in rows.items()})
            return
        changed: dict[Hashable, Cells | None] = {}
        for key in keys:
            row = rows.get(key)
            changed[key] = None if row is None else ContainersTable.cells(row, now, styles)
        table.update(changed)

    def refresh_ages(self) -> None:
        """The clock moved: ages change on the rows on screen now, on other rows as they show.

        At 10,000 containers, remaking every row every 5 seconds was most of an
        idle console's work; the tables ask for a row's cells when they draw it.
        """
        node, styles = self.node, self.status_styles
        now = self.console.clock()

        def container(key: Hashable) -> Cells | None:
            row = node.containers.get(key)
            return None if row is None else ContainersTable.cells(row, now, styles)

        def image(key: Hashable) -> Cells | None:
            row = node.images.get(key)
            return None if row is None else ImagesTable.cells(row, now)

        self.query_one(f"#{CONTAINERS}", ResourceTable).refresh_ages(container)
        self.table(IMAGES).refresh_ages(image)
        if self._pane == PODS:
            self.pods_table().show(node.containers, now, styles, self._pod_ip)
        # The engine's uptime in the top bar moves with the clock too.
        self.retitle()

    async def _pod_ip(self, sandbox_id: str) -> str:
        client = self.console.client
        if client is None:
            return ""
        return await pods.sandbox_ip(client.with_namespace(self.node.namespace), sandbox_id)

    def retitle(self) -> None:
        node = self.node
        width = self.size.width
        narrow = width < NARROW
        right = Text()
        if self.read_only:
            right.append("READ-ONLY ", style="reverse")
        if self.console.settings.teaching:
            right.append(" teach ", style="reverse")
        right.append("  ? help ")
        engine = [] if narrow else [plain(node.address or "no engine"), plain(node.version or "…")]
        where = [plain(f"ns {node.namespace}"), Text(f"{node.running} running")]
        where.append(Text(f"{len(node.images)} images"))
        left = Text(" ctrdeck ▸ ", style="bold").append_text(Text(" · ").join([*engine, *where]))
        now = self.console.clock()
        health = health_text(node.engine, self.error_style, now) if node.connected else Text()
        if health:
            # The health is the first thing to go when the bar has no room for it.
            fuller = Text(" ctrdeck ▸ ", style="bold")
            fuller.append_text(Text(" · ").join([*engine, health, *where]))
            if fuller.cell_len + right.cell_len <= width:
                left = fuller
        bar = Table.grid(expand=True)
        bar.add_column(no_wrap=True, overflow="ellipsis")
        bar.add_column(justify="right", no_wrap=True)
        bar.add_row(left, right)
        # A refresh that changes no words must not repaint: over SSH every repaint is bytes.
        top = (left.plain, right.plain, narrow, self.app.theme)
        if top != self._shown_titles.get("top"):
            self._shown_titles["top"] = top
            self.query_one("#topbar", Static).update(bar, layout=False)
        tabs = Text()
        for i, pane in enumerate(commands.RESOURCE_PANES, 1):
            label = f" {i} {commands.PANE_TITLES[pane]} "
            tabs.append(label, style="reverse bold" if pane == self._pane else "")
        resources = self.query_one("#resources")
        if self._shown_titles.get("tabs") != self._pane:
            self._shown_titles["tabs"] = self._pane
            resources.border_title = tabs
        table = self.table(self._pane)
        shown, total = table.counts()
        note = f"/ {table.filter_text} · {shown} of {total}" if table.filter_text else f"{total}"
        unserved = {SNAPSHOTS: "Snapshots", CONTAINERS: "Tasks"}.get(self._pane)
        if unserved and unserved in node.unserved:
            note = f"engine does not serve {unserved} yet · {note}"
        if self._shown_titles.get("note") != note:
            self._shown_titles["note"] = note
            resources.border_subtitle = plain(note)

    def on_resize(self, event: events.Resize) -> None:
        narrow = event.size.width < NARROW
        self.set_class(narrow, "narrow")
        self.set_class(event.size.height < 30, "short")
        self.event_log.compact = narrow
        self.retitle()

    def show_connection(self, up: bool, detail: str) -> None:
        banner = self.query_one("#banner", Static)
        if up:
            banner.add_class("hidden")
        else:
            banner.update(
                plain(f" engine lost at {self.node.address}: {detail} · reconnecting by itself…")
            )
            banner.remove_class("hidden")
        self.retitle()

    # --- commands ---------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "command" and parameters:
            command = commands.BY_ID.get(str(parameters[0]))
            if command is not None and command.mutates and self.read_only:
                return False
            if command is not None and not self.applies(command, self.focused_pane()):
                return False
        return True

    def applies(self, command: commands.Command, pane: str) -> bool:
        """Whether `command` has something to act on in `pane`: a selected row, in a fitting state.

        The footer shows only what applies (no start for a running container);
        a key for something that does not apply says why instead.
        """
        if commands.SCREEN in command.panes or pane not in command.panes or pane == EVENTS:
            return True
        key = self.table(pane).selected_key()
        if key is None:
            return False
        if pane == CONTAINERS and command.statuses:
            row = self.node.containers.get(str(key))
            return (row.status if row is not None else "") in command.statuses
        return True

    def recheck_bindings(self) -> None:
        """Refresh the footer when what applies to the selected row changed, and only then."""
        pane = self.focused_pane()
        applicable = (
            pane,
            frozenset(c.id for c in commands.for_pane(pane) if self.applies(c, pane)),
        )
        if applicable != self._applicable:
            self._applicable = applicable
            self.refresh_bindings()

    @on(ResourceTable.RowHighlighted)
    def row_highlighted(self) -> None:
        self.recheck_bindings()

    def on_key(self, event: events.Key) -> None:
        if isinstance(self.focused, Input):
            return
        pane = self.focused_pane()
        command = commands.commands_by_key(pane, self.console.settings.keymap).get(event.key)
        if command is None:
            return
        if command.mutates and self.read_only:
            event.stop()
            self.refuse(command)
        elif not self.applies(command, pane):
            event.stop()
            self.explain(command, pane)

    def explain(self, command: commands.Command, pane: str) -> None:
        key = self.table(pane).selected_key()
        if key is None:
            self.notify(f"no {commands.PANE_TITLES[pane].lower()} selected", severity="warning")
            return
        row = self.node.containers.get(str(key))
        status = row.status if row is not None else ""
        state = f"is {status.lower()}" if status else "has no task"
        self.notify(f"{key} {state}: nothing to {command.title.rstrip('…')}", severity="warning")

    def refuse(self, command: commands.Command) -> None:
        self.notify(
            f"read-only: '{command.title}' would change the node, and this console "
            "was started with --read-only",
            severity="warning",
            title="refused",
        )

    def action_command(self, command_id: str) -> None:
        self.run_command(command_id, self.focused_pane())

    def command_from_palette(self, command_id: str) -> None:
        """Run a command the palette found; one that acts on another pane shows that pane first."""
        command = commands.BY_ID[command_id]
        pane = self.focused_pane()
        if commands.SCREEN not in command.panes and pane not in command.panes:
            pane = command.panes[0]
            self.show_pane(pane)
        self.run_command(command_id, pane)

    def run_command(self, command_id: str, pane: str) -> None:
        command = commands.BY_ID[command_id]
        if command.mutates and self.read_only:
            self.refuse(command)
            return
        if not self.applies(command, pane):
            self.explain(command, pane)
            return
        handler = getattr(self, "do_" + command_id.replace(".", "_"))
        handler(pane)

    def teach(self, command_id: str, pane: str, flags: str = "", **fields: str) -> None:
        command = commands.BY_ID[command_id]
        line = command.ctr_line(pane, flags, ns=self.node.namespace, **fields)
        if line is not None:
            self.console.teach(line)

    def teach_steps(self, **fields: str) -> operations.Steps:
        """Teaches each step an action takes, with the namespace it was started in."""
        namespace = self.node.namespace

        def step(name: str) -> None:
            self.console.teach(commands.step_line(name, ns=namespace, **fields))

        return step

    def selected(self, pane: str) -> Hashable | None:
        if pane not in (*commands.RESOURCE_PANES, NAMESPACES):
            return None
        key = self.table(pane).selected_key()
        if key is None:
            self.notify(f"no {commands.PANE_TITLES[pane].lower()} selected", severity="warning")
        return key

    def do_view_containers(self, pane: str) -> None:
        self.show_pane(CONTAINERS)

    def do_view_images(self, pane: str) -> None:
        self.show_pane(IMAGES)

    def do_view_snapshots(self, pane: str) -> None:
        self.show_pane(SNAPSHOTS)

    def do_view_content(self, pane: str) -> None:
        self.show_pane(CONTENT)

    def show_pane(self, pane: str) -> None:
        if pane == EVENTS:
            self.event_log.focus()
            return
        if pane == NAMESPACES:
            if self.has_class("narrow"):
                self.do_app_namespace(pane)
            else:
                self.table(NAMESPACES).focus()
            return
        self._show_tab(pane)
        self.table(pane).focus()

    def _show_tab(self, pane: str) -> None:
        if pane == PODS and self._pane != PODS:
            # Its ages moved on only while it was shown.
            now = self.console.clock()
            self.pods_table().show(self.node.containers, now, self.status_styles, self._pod_ip)
        self._pane = pane
        self.query_one(ContentSwitcher).current = pane
        self.retitle()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        # Whatever moved focus to a table (a jump, a click, tab, the end of a filter),
        # that table's tab is the one shown: the tab strip, the table and the footer agree.
        # Focus events arrive after their hops up the tree: act on where focus is now.
        widget = self.focused or event.widget
        pane = getattr(widget, "PANE", "")
        if pane in commands.RESOURCE_PANES and (
            pane != self._pane or self.query_one(ContentSwitcher).current != pane
        ):
            self._show_tab(pane)
        zoomed, focused_pane = self.maximized, self.pane_of(widget)
        if zoomed is not None and focused_pane and zoomed not in widget.ancestors_with_self:
            # The zoom follows focus to where a jump went, as lazygit's does: what has focus shows.
            self.maximized = self.pane_box(focused_pane)
        self.recheck_bindings()

    def pane_box(self, pane: str) -> Widget:
        """The widget that zooming `pane` fills the screen with."""
        if pane == EVENTS:
            return self.event_log
        if pane == NAMESPACES:
            return self.table(NAMESPACES)
        return self.query_one("#resources")

    def do_app_zoom(self, pane: str) -> None:
        if self.maximized is not None:
            self.minimize()
        else:
            self.zoom(pane)

    def zoom(self, pane: str) -> None:
        self.maximized = self.pane_box(pane)

    def switch_namespace(self, namespace: str) -> None:
        if namespace == self.node.namespace:
            return
        syncer = self.console.syncer
        if syncer is not None:
            self.run_worker(syncer.switch_namespace(namespace), group="namespace")
        else:
            self.node.namespace = namespace
            self.node.clear_namespaced()
        self.console.note(f"namespace {namespace}")
        self.refresh_view({NAMESPACES})

    # --- filter and command line ----------------------------------------------------

    def do_table_filter(self, pane: str) -> None:
        self._filter_target = pane
        box = self.query_one("#filter", Input)
        current = self.event_log.filter_text if pane == EVENTS else self.table(pane).filter_text
        box.placeholder = (
            "ns:NAME topic:/tasks words (esc clears)" if pane == EVENTS else "filter (esc clears)"
        )
        box.value = current
        if self.maximized is not None and self.maximized is not self.pane_box(self._pane):
            # The filter box sits above the tables; a zoomed event log would hide it.
            self.minimize()
        box.remove_class("hidden")
        box.focus()

    def apply_filter(self, text: str) -> None:
        target = self._filter_target or self._pane
        if target == EVENTS:
            self.event_log.set_filter(text)
        else:
            self.table(target).set_filter(text)
        self.retitle()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.apply_filter(event.value)

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        self.query_one("#filter", Input).add_class("hidden")
        self._refocus()

    def _refocus(self) -> None:
        if self._filter_target == EVENTS:
            self.event_log.focus()
        else:
            self.table(self._filter_target or self._pane).focus()
        self._filter_target = None

    def key_escape(self) -> None:
        box = self.query_one("#filter", Input)
        line = self.query_one("#cmdline", Input)
        if box.has_focus:
            box.value = ""
            self.apply_filter("")
            box.add_class("hidden")
            self._refocus()
        elif line.has_focus:
            line.add_class("hidden")
            self.table(self._pane).focus()
        elif self.focused_pane() in commands.RESOURCE_PANES:
            table = self.table(self.focused_pane())
            if table.filter_text:
                table.set_filter("")
                self.retitle()
        elif self.focused_pane() == EVENTS and self.event_log.filter_text:
            self.event_log.set_filter("")
