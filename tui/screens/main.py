"""The main screen: where you are, what runs, what just happened, and the keys for it.

Layout: a top bar (address, engine version, the engine's uptime and plugin
counts while they fit, namespace, counts), a banner while the engine is lost,
the namespaces pane beside the resource area (containers, images, snapshots,
content; `1`-`4` switch), the live event log, a command line and the footer
with the focused pane's keys. Below 100 columns the namespaces pane folds
away (`n` or `:ns` switch) and the event log gets short. `:engine` (or `e`)
opens the engine view: version, directories and every plugin's status.

Every key runs `command(<id>)`, which checks read-only mode and dispatches to a
`do_<id>` handler here. Handlers ask the dialogs, then run the matching
`tui.operations` call in a worker; failures become notifications with the
engine's message, and with teaching on, the equivalent `ctr` line goes to the
event log first.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, ClassVar, cast

from rich.table import Table
from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.color import Color
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import ContentSwitcher, DataTable, Input, Static

from core import status as engine_status
from core.api.containerd.services.images import v1 as images_api
from core.client import Client
from tui import commands, operations
from tui import spec as specs
from tui.commands import CONTAINERS, CONTENT, EVENTS, IMAGES, NAMESPACES, SNAPSHOTS
from tui.console import Console
from tui.plain import plain
from tui.screens.dialogs import ConfirmScreen, Pick, PickScreen, RunScreen
from tui.screens.engine import EngineScreen, health_text
from tui.screens.help import HelpScreen
from tui.screens.inspect import (
    InspectScreen,
    Section,
    container_sections,
    content_sections,
    image_sections,
    snapshot_sections,
)
from tui.screens.logs import LogsScreen
from tui.screens.pull import PullScreen, registry_host
from tui.spec import RunOptions
from tui.state import NodeState
from tui.widgets.event_log import EventLog
from tui.widgets.footer import KeyFooter
from tui.widgets.tables import (
    ContainersTable,
    ContentTable,
    ImagesTable,
    NamespacesTable,
    ResourceTable,
    SnapshotsTable,
    short_digest,
)

NARROW = 100
# Deleting an image in use names this many of its containers, then counts the rest.
USERS_NAMED = 6
VIEW_IDS = {
    "view.containers": CONTAINERS,
    "view.images": IMAGES,
    "view.snapshots": SNAPSHOTS,
    "view.content": CONTENT,
}
JUMPS = {
    "images": IMAGES,
    "image": IMAGES,
    "img": IMAGES,
    "containers": CONTAINERS,
    "container": CONTAINERS,
    "ctr": CONTAINERS,
    "snapshots": SNAPSHOTS,
    "snapshot": SNAPSHOTS,
    "snap": SNAPSHOTS,
    "content": CONTENT,
    "blobs": CONTENT,
    "events": EVENTS,
    "namespaces": NAMESPACES,
}
CMDLINE_HELP = (
    ":images  :containers  :snapshots  :content  :events  :ns NAME  :pull REF  :run IMAGE [ARGS]  "
    ":engine  :theme light|dark  :teach  :q"
)


class MainScreen(Screen[None]):
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
        self.refresh_view({CONTAINERS})

    def refresh_view(self, dirty: set[str]) -> None:
        node = self.node
        now = self.console.clock()
        if CONTAINERS in dirty:
            self.table(CONTAINERS).sync(
                {
                    k: ContainersTable.cells(r, now, self.status_styles)
                    for k, r in node.containers.items()
                }
            )
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
        if NAMESPACES in dirty:
            self.table(NAMESPACES).sync(
                {k: NamespacesTable.cells(r, node.namespace) for k, r in node.namespaces.items()}
            )
        self.retitle()
        self.recheck_bindings()

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

    @on(DataTable.RowHighlighted)
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

    @work(group="actions")
    async def perform(self, what: str, action: Callable[[], Awaitable[Any]], done: str) -> None:
        try:
            await action()
        except operations.ConsoleError as exc:
            self.notify(exc.message, severity="error", title=what, timeout=8)
            return
        if done:
            self.notify(done, title=what)

    # --- everywhere -------------------------------------------------------------

    def do_app_pull(self, pane: str) -> None:
        self.open_pull()

    def open_pull(self, ref: str = "") -> None:
        job = self.console.pull_job
        if job is not None and (not job.finished or (job.error and not job.error_seen)):
            self.app.push_screen(PullScreen(job=job))
            return
        node = self.node
        default = self.console.settings.snapshotter
        form = PullScreen(
            snapshotters=node.snapshotters or [default],
            snapshotter=default,
            platform="",
            ref=ref,
            plain_http=self.console.plain_http,
        )

        def start(request: Any) -> None:
            if request is not None:
                self.start_pull(request)

        self.app.push_screen(form, start)

    def start_pull(self, request: images_api.PullImageRequest) -> None:
        job = self.console.pull_job
        if job is not None and not job.finished:
            self.notify("a pull is already going; p shows it", severity="warning")
            return
        self.console.plain_http[registry_host(request.ref)] = request.plain_http
        flags = " --plain-http" if request.plain_http else ""
        if request.snapshotter:
            flags += f" --snapshotter {shlex.quote(request.snapshotter)}"
        if request.platform:
            flags += f" --platform {shlex.quote(request.platform)}"
        self.teach("app.pull", commands.SCREEN, flags=flags, ref=request.ref)
        self.app.push_screen(PullScreen(job=self.console.start_pull(request)))

    def pull_line(self, args: list[str]) -> None:
        """`:pull REF [--plain-http] [--snapshotter S] [--platform P]` pulls at once."""
        if self.read_only:
            self.refuse(commands.BY_ID["app.pull"])
            return
        if not args:
            self.open_pull()
            return
        ref, plain_http = "", False
        snapshotter, platform = self.console.settings.snapshotter, ""
        words = iter(args)
        for word in words:
            name, eq, value = word.partition("=")
            if name in ("--snapshotter", "--platform"):
                value = value if eq else next(words, "")
                if not value:
                    self.notify(f":pull {name} needs a value", severity="error", markup=False)
                    return
                if name == "--snapshotter":
                    snapshotter = value
                else:
                    platform = value
            elif word == "--plain-http":
                plain_http = True
            elif word.startswith("-") or ref:
                self.notify(
                    f":pull does not take {word!r}: "
                    ":pull REF [--plain-http] [--snapshotter S] [--platform P]",
                    severity="error",
                    markup=False,
                )
                return
            else:
                ref = word
        if not ref:
            self.open_pull()
            return
        self.start_pull(operations.pull_request(ref, snapshotter, platform, plain_http))

    def do_app_help(self, pane: str) -> None:
        settings = self.console.settings
        help_screen = HelpScreen(pane, settings.keymap, self.read_only, settings.keymap_path)
        self.app.push_screen(help_screen)

    def do_app_engine(self, pane: str) -> None:
        node = self.node
        known = node.engine

        async def loader() -> engine_status.EngineStatus:
            # Without a connection (fixed data) the last status the node had is all there is.
            if self.console.client is None and known is not None:
                return known
            return await engine_status.probe(node.address, tls=self.console.settings.tls)

        self.teach("app.engine", pane)
        line = commands.BY_ID["app.engine"].ctr_line(pane)
        self.app.push_screen(EngineScreen(f"Engine ▸ {node.address}", loader, line))

    def do_app_command_line(self, pane: str) -> None:
        line = self.query_one("#cmdline", Input)
        line.value = ""
        line.remove_class("hidden")
        line.focus()

    def do_app_teach(self, pane: str) -> None:
        settings = self.console.settings
        settings.teaching = not settings.teaching
        state = "on: each action writes its ctr command line here" if settings.teaching else "off"
        self.console.note(f"teaching {state}")
        self.retitle()

    def do_app_namespace(self, pane: str) -> None:
        names = sorted(str(k) for k in self.node.namespaces)
        if not names:
            self.notify("no namespaces yet", severity="warning")
            return

        def chosen(pick: Pick | None) -> None:
            if pick is not None:
                self.switch_namespace(pick.value)

        self.app.push_screen(
            PickScreen("Namespace", [(n, n) for n in names], selected=self.node.namespace), chosen
        )

    def do_app_theme(self, pane: str) -> None:
        self.console.set_theme("light" if self.app.current_theme.dark else "dark")

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

    @on(Input.Submitted, "#cmdline")
    def command_line(self, event: Input.Submitted) -> None:
        event.input.add_class("hidden")
        self.table(self._pane).focus()
        self.run_line(event.value)

    def run_line(self, text: str) -> None:
        """Run one command-line entry (without its leading colon)."""
        words = text.strip().lstrip(":").split()
        if not words:
            return
        verb, args = words[0].lower(), words[1:]
        if verb in ("q", "quit", "exit"):
            self.app.exit()
        elif verb in JUMPS:
            self.show_pane(JUMPS[verb])
            if JUMPS[verb] == EVENTS:
                self.zoom(EVENTS)
        elif verb in ("ns", "namespace"):
            if args:
                self.switch_namespace(args[0])
            else:
                self.do_app_namespace(self._pane)
        elif verb == "theme" and args and args[0] in ("light", "dark"):
            self.console.set_theme(args[0])
        elif verb in ("teach", "teaching"):
            wanted = not self.console.settings.teaching if not args else args[0] == "on"
            if wanted != self.console.settings.teaching:
                self.do_app_teach(self._pane)
        elif verb == "help":
            self.do_app_help(self._pane)
        elif verb == "engine":
            self.do_app_engine(self._pane)
        elif verb in ("run", "pull"):
            try:
                args = shlex.split(text.strip().lstrip(":"))[1:]
            except ValueError as exc:
                self.notify(f":{verb}: {exc}", severity="error", markup=False)
                return
            (self.run_line_run if verb == "run" else self.pull_line)(args)
        else:
            self.notify(f"unknown command :{text.strip()}; try {CMDLINE_HELP}", severity="error")

    # --- namespaces pane --------------------------------------------------------------

    def do_namespace_switch(self, pane: str) -> None:
        key = self.selected(NAMESPACES)
        if key is not None:
            self.switch_namespace(str(key))

    # --- events pane ----------------------------------------------------------------

    def do_events_pause(self, pane: str) -> None:
        self.event_log.set_paused(not self.event_log.paused)

    def do_events_clear(self, pane: str) -> None:
        self.event_log.clear_all()

    # --- images -----------------------------------------------------------------------

    def do_image_run(self, pane: str) -> None:
        if pane != IMAGES:
            self.notify("select an image to run (2 shows images)", severity="warning")
            return
        image = self.selected(IMAGES)
        client = self.client()
        if image is None or client is None:
            return
        self.open_run(client, str(image), self.console.hold_keys())

    def suggested_id(self, image: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.-]", "-", image.rsplit("/", 1)[-1].split("@")[0])
        suggested = base.replace(":", "-")
        n = 1
        while f"{suggested}-{n}" in self.node.containers:
            n += 1
        return f"{suggested}-{n}"

    @work(group="actions")
    async def open_run(self, client: Client, image: str, release: Callable[[], None]) -> None:
        # Keys typed meanwhile belong to the form: they are held until it is pushed.
        try:
            await self._push_run_form(client, image)
        finally:
            release()

    async def _push_run_form(self, client: Client, image: str) -> None:
        # The form shows what the image runs by default, so an empty field says something.
        try:
            config = (await operations.image_detail(client, image)).config or {}
        except operations.ConsoleError:
            config = {}
        dialog = RunScreen(
            image,
            self.suggested_id(image),
            self.node.snapshotters,
            self.console.settings.snapshotter,
            operations.DEFAULT_RUNTIME,
            default_command=shlex.join(specs.default_command(config)) if config else "",
            default_cwd=str((config.get("config") or {}).get("WorkingDir") or ""),
        )

        def go(options: RunOptions | None) -> None:
            if options is not None:
                self.run_image(client, image, options)

        self.app.push_screen(dialog, go)

    def run_line_run(self, args: list[str]) -> None:
        """`:run IMAGE [ARGS...]`: run at once with the image's defaults and these arguments."""
        if self.read_only:
            self.refuse(commands.BY_ID["image.run"])
            return
        client = self.client()
        if not args or client is None:
            if not args:
                self.notify(":run needs an image: :run IMAGE [ARGS...]", severity="warning")
            return
        image = args[0]
        options = RunOptions(
            container_id=self.suggested_id(image),
            snapshotter=self.console.settings.snapshotter,
            args=tuple(args[1:]),
        )
        self.run_image(client, image, options)

    def run_image(self, client: Client, image: str, options: RunOptions) -> None:
        flags = " " + shlex.join(options.ctr_flags())
        tail = " " + shlex.join(options.args) if options.args else ""
        self.teach("image.run", IMAGES, flags=flags, tail=tail, ref=image, id=options.container_id)
        self.run_worker(self._run(client, image, options), group="actions")

    async def _run(self, client: Client, image: str, options: RunOptions) -> None:
        cid = options.container_id
        try:
            result = await operations.run(client, image, options)
        except operations.ConsoleError as exc:
            self.notify(exc.message, severity="error", title="run", timeout=8)
            return
        if result.exit_status is None:
            self.notify(f"started {cid} (pid {result.pid})", title="run")
            if options.remove:
                self.run_worker(self._remove_on_exit(client, cid), group="remove-on-exit")
            return
        gone = " and was removed" if options.remove else ""
        output = "\n".join(result.output) if result.output else "(no output)"
        self.notify(
            f"{cid} exited with code {result.exit_status}{gone}:\n{output}",
            title="run",
            severity="information" if result.exit_status == 0 else "warning",
            timeout=12,
            markup=False,
        )

    async def _remove_on_exit(self, client: Client, cid: str) -> None:
        # --rm: the console waits for the task (as `ctr run --rm` does) and removes it after.
        try:
            status = await operations.wait_exit(client, cid, None)
            await operations.delete_container(client, cid)
        except operations.ConsoleError as exc:
            self.notify(exc.message, severity="error", title=f"remove {cid}", timeout=8)
            return
        self.console.note(f"{cid} exited with code {status} and was removed")

    # --- containers -------------------------------------------------------------------

    def _container(self, pane: str) -> str | None:
        if pane != CONTAINERS:
            self.notify("this acts on a container (1 shows containers)", severity="warning")
            return None
        key = self.selected(CONTAINERS)
        return None if key is None else str(key)

    def do_container_start(self, pane: str) -> None:
        cid = self._container(pane)
        client = self.client()
        if cid is None or client is None:
            return
        steps = self.teach_steps(id=cid)
        self.perform("start", lambda: operations.start(client, cid, steps=steps), f"started {cid}")

    def do_container_pause(self, pane: str) -> None:
        cid = self._container(pane)
        client = self.client()
        if cid is None or client is None:
            return
        row = self.node.containers.get(cid)
        verb = "resume" if row is not None and row.status == "PAUSED" else "pause"
        self.teach("container.pause", CONTAINERS, id=cid, verb=verb)
        self.perform(verb, lambda: operations.pause_or_resume(client, cid), "")

    def do_container_kill(self, pane: str) -> None:
        cid = self._container(pane)
        client = self.client()
        if cid is None or client is None:
            return
        row = self.node.containers.get(cid)
        stop_signal = (row.labels if row else {}).get(operations.STOP_SIGNAL_LABEL, "SIGTERM")
        options = [(name, f"{name:<8} {number:>2}") for name, number in operations.SIGNALS]
        numbers = dict(operations.SIGNALS)

        def chosen(pick: Pick | None) -> None:
            if pick is None:
                return
            self.teach(
                "container.kill",
                CONTAINERS,
                id=cid,
                signal=pick.value,
                flags=" -a" if pick.all_processes else "",
            )
            signal = numbers[pick.value]
            self.perform(
                "kill",
                lambda: operations.kill(client, cid, signal, pick.all_processes),
                f"sent {pick.value} to {cid}",
            )

        self.app.push_screen(
            PickScreen(f"Kill {cid}: which signal?", options, selected=stop_signal, offer_all=True),
            chosen,
        )

    def do_container_logs(self, pane: str) -> None:
        cid = self._container(pane)
        client = self.client()
        if cid is None or client is None:
            return
        self.app.push_screen(LogsScreen(cid, lambda: operations.log_path(client, cid)))

    # --- delete and inspect -----------------------------------------------------------

    def do_table_delete(self, pane: str) -> None:
        key = self.selected(pane)
        client = self.client()
        if key is None or client is None:
            return
        if pane == CONTAINERS:
            cid = str(key)
            row = self.node.containers.get(cid)
            live = row is not None and row.status in ("RUNNING", "PAUSED", "CREATED")
            question = f"Delete container {cid}?"
            detail = "Its task is live: it gets SIGKILL first. " if live else ""
            detail += "Its snapshot goes with it."
            fields = {"id": cid}
            steps = self.teach_steps(id=cid)
            action = lambda: operations.delete_container(client, cid, steps=steps)  # noqa: E731
        elif pane == IMAGES:
            question, detail = f"Delete image {key}?", self._image_users(str(key))
            fields = {"ref": str(key)}
            action = lambda: operations.delete_image(client, str(key))  # noqa: E731
        elif pane == SNAPSHOTS:
            snapshotter, skey = cast(tuple[str, str], key)
            question, detail = f"Remove snapshot {skey} ({snapshotter})?", ""
            fields = {"snapshotter": snapshotter, "key": skey}
            action = lambda: operations.delete_snapshot(client, snapshotter, skey)  # noqa: E731
        elif pane == CONTENT:
            question, detail = f"Delete blob {short_digest(str(key))}?", ""
            fields = {"digest": str(key)}
            action = lambda: operations.delete_content(client, str(key))  # noqa: E731
        elif pane == NAMESPACES:
            question, detail = f"Delete namespace {key}?", "Only an empty namespace can go."
            fields = {"name": str(key)}
            action = lambda: operations.delete_namespace(client, str(key))  # noqa: E731
        else:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                if pane != CONTAINERS:
                    # A container's delete teaches its steps as it takes them.
                    self.teach("table.delete", pane, **fields)
                self.perform("delete", action, f"deleted {key if isinstance(key, str) else key[1]}")

        self.app.push_screen(ConfirmScreen(question, detail), answered)

    def _image_users(self, name: str) -> str:
        """What deleting image `name` means, naming the containers made from it."""
        users = sorted(str(k) for k, c in self.node.containers.items() if c.image == name)
        if not users:
            return "Its blobs and snapshots go once unused."
        shown = ", ".join(users[:USERS_NAMED])
        if len(users) > USERS_NAMED:
            shown += f" and {len(users) - USERS_NAMED} more"
        return (
            f"Still used by {len(users)} container{'s' if len(users) > 1 else ''}: {shown}. "
            "They keep their snapshots, but its blobs go: pull it again to run it again."
        )

    def do_table_inspect(self, pane: str) -> None:
        key = self.selected(pane)
        client = self.client()
        if key is None or client is None:
            return
        loader: Callable[[], Awaitable[list[Section]]]
        if pane == CONTAINERS:
            cid = str(key)
            fields = {"id": cid}

            async def loader() -> list[Section]:
                return container_sections(await operations.container_detail(client, cid))

            title = f"Container ▸ {cid}"
        elif pane == IMAGES:
            name = str(key)
            fields = {"ref": name}

            async def loader() -> list[Section]:
                return image_sections(name, await operations.image_detail(client, name))

            title = f"Image ▸ {name}"
        elif pane == SNAPSHOTS:
            snapshotter, skey = cast(tuple[str, str], key)
            fields = {"snapshotter": snapshotter, "key": skey}

            async def loader() -> list[Section]:
                detail = await operations.snapshot_detail(client, snapshotter, skey)
                return snapshot_sections(snapshotter, detail)

            title = f"Snapshot ▸ {skey}"
        elif pane == CONTENT:
            digest = str(key)
            fields = {"digest": digest}

            async def loader() -> list[Section]:
                return content_sections(await operations.content_detail(client, digest))

            title = f"Blob ▸ {digest}"
        else:
            return
        self.teach("table.inspect", pane, **fields)
        line = commands.BY_ID["table.inspect"].ctr_line(pane, ns=self.node.namespace, **fields)
        self.app.push_screen(InspectScreen(title, loader, line))
