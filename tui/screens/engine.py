"""The engine's health: a short summary for the top bar, and the engine view behind `:engine`.

Both read an `EngineStatus` from `core.status` (computed from the client side
of the API, so they work the same against this engine and a real containerd).
The summary says only what is known: an engine that does not report when it
started gets no uptime rather than the word "unknown". Both write the uptime
the one way `ctrdeck engine status` does (`core.status.format_uptime`), so the
top bar and the view agree. The view is a modal
that shows what `ctr version` and `ctr plugins ls` show, plus the directories
and uptime, with every plugin's status and error; it loads when it opens, so it
is always current, and escape closes it. The builders are pure, so the same
view renders fixed data in snapshot tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import ClassVar

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from core.listeners import SECURITY_NAMES
from core.status import EngineStatus, format_uptime
from tui.plain import plain
from tui.screens.inspect import Section, fields, when

StatusLoader = Callable[[], Awaitable[EngineStatus]]


def plugin_summary(status: EngineStatus, *, leave_out: str = "") -> str:
    """`24 ok 1 skip`: each status that occurs (ok, skip, error first), with its count."""
    counts = status.plugin_counts()
    return " ".join(f"{n} {s}" for s, n in counts.items() if n and s != leave_out)


def health_text(
    status: EngineStatus | None, error_style: str = "bold", now: datetime | None = None
) -> Text:
    """`up 3h 2m · plugins 24 ok 1 skip` for the top bar; empty when nothing is known.

    The uptime runs on to `now` (the console's clock) between two looks at the engine.
    """
    out = Text()
    if status is None or not status.answering:
        return out
    if status.started_at is not None:
        uptime = status.uptime if now is None else max(now - status.started_at, timedelta(0))
        out.append(f"up {format_uptime(uptime)}")
    if status.plugins:
        if out:
            out.append(" · ")
        out.append(f"plugins {plugin_summary(status, leave_out='error')}".rstrip())
        errors = status.plugin_counts()["error"]
        if errors:
            # A plugin that failed to load is the one fact here worth catching the eye.
            out.append(f" {errors} error", style=error_style)
    return out


def engine_fields(status: EngineStatus) -> Table:
    uptime = format_uptime(status.uptime)
    if status.started_at is not None:
        uptime += f" (since {when(status.started_at)})"
    listening = [
        ("listeners" if i == 0 else "", f"{x.address}  {SECURITY_NAMES.get(x.security, '?')}")
        for i, x in enumerate(status.listeners)
    ]
    return fields(
        [
            ("version", status.version),
            ("revision", status.revision),
            ("uuid", status.uuid),
            ("address" if status.address.startswith("tcp://") else "socket", status.address),
            *listening,
            ("root", status.root or "unknown"),
            ("state", status.state or "unknown"),
            ("uptime", uptime),
            ("checked", when(status.checked_at)),
        ]
    )


def plugins_table(status: EngineStatus, styles: dict[str, str]) -> RenderableType:
    if not status.plugins:
        return Text("the engine lists no plugins", style="dim")
    table = Table(box=None, padding=(0, 1), show_edge=False)
    table.add_column("TYPE", no_wrap=True)
    table.add_column("ID", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("ERROR", overflow="fold")
    for p in status.plugins:
        table.add_row(
            plain(p.type),
            plain(p.id),
            plain(p.status, styles.get(p.status, "")),
            plain(p.error, lines=True),
        )
    return table


def engine_sections(status: EngineStatus, styles: dict[str, str] | None = None) -> list[Section]:
    """What the view shows: the engine's facts, then its plugins; `styles` colours a status."""
    if not status.answering:
        return [Section("Engine", plain(status.problem, "bold", lines=True))]
    summary = plugin_summary(status)
    title = f"Plugins ({len(status.plugins)}: {summary})" if summary else "Plugins"
    return [
        Section("Engine", engine_fields(status)),
        Section(title, plugins_table(status, styles or {})),
    ]


class EngineScreen(ModalScreen[None]):
    # Its own class, not the app's `.dialog`: plugin errors need a wider box than dialogs get.
    DEFAULT_CSS = """
    .engine-view {
        width: 120;
        max-width: 95%;
        height: 90%;
        border: round $border;
        background: $surface;
        padding: 0 1;
    }
    """
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("escape,q", "close", "close", id="engine.close"),
        Binding("j", "scroll(1)", show=False, id="engine.down"),
        Binding("k", "scroll(-1)", show=False, id="engine.up"),
    ]

    def __init__(self, title: str, loader: StatusLoader, ctr_line: str | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.loader = loader
        self.ctr_line = ctr_line
        self.status: EngineStatus | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="engine-view", id="engine-body") as body:
            body.border_title = plain(self.title_text)
            body.border_subtitle = "esc closes"
            yield Static("loading…", classes="dim")

    def on_mount(self) -> None:
        self.query_one("#engine-body").focus()
        self.load()

    def status_styles(self) -> dict[str, str]:
        if self.app.no_color:
            return {"skip": "dim", "error": "bold reverse"}
        theme = self.app.current_theme
        return {"ok": theme.success or "", "skip": "dim", "error": f"bold {theme.error or ''}"}

    @work(exclusive=True, group="engine")
    async def load(self) -> None:
        status = await self.loader()
        self.status = status
        widgets = []
        for section in engine_sections(status, self.status_styles()):
            widget = Static(section.body, classes="section")
            widget.border_title = plain(section.title)
            widgets.append(widget)
        if self.ctr_line:
            widgets.append(Static(plain(f"$ {self.ctr_line}"), classes="teach"))
        body = self.query_one("#engine-body", VerticalScroll)
        await body.remove_children()
        await body.mount_all(widgets)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_scroll(self, lines: int) -> None:
        self.query_one("#engine-body", VerticalScroll).scroll_relative(y=lines, animate=False)
