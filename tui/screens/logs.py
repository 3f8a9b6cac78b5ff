"""Logs: follow a container's log through the engine's API, with `/` to search inside it.

The screen is given a way to open the log (`tui.operations.follow_log`, ctrdeck's
`TaskDetails.Log`): it starts at the last lines and then shows new output as
the engine sends it, until the task exits (the title then says the log ended).
It never opens a file, so it works the same for an engine on another host.
Lines are kept in a bounded buffer; a search shows only the lines that match,
with the match highlighted, and clearing it shows everything again. When there
is no log (a container without a task, an engine such as containerd that keeps
none) the screen says so plainly. A container writes what it likes: every
line, and the search term, are shown as plain text with control codes made
visible (`tui.plain`), so a log line cannot retitle, recolour or clear the
terminal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Input, RichLog, Static

from tui.operations import NO_LOGS, ConsoleError
from tui.plain import plain
from tui.widgets.footer import KeyFooter

MAX_LINES = 5000

LogOpener = Callable[[int], AsyncIterator[bytes]]
"""Opens the log from its last N lines on, followed until the task exits."""


class LogsScreen(Screen[None]):
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("escape", "back", "back", id="logs.back"),
        Binding("q", "close", show=False, id="logs.close"),
        Binding("slash", "search", "search", key_display="/", id="logs.search"),
        Binding("f", "follow", "follow", id="logs.follow"),
        Binding("j", "scroll(1)", show=False, id="logs.down"),
        Binding("k", "scroll(-1)", show=False, id="logs.up"),
        Binding("g", "top", show=False, id="logs.top"),
        Binding("G", "bottom", show=False, id="logs.bottom"),
    ]

    def __init__(self, container_id: str, open_log: LogOpener) -> None:
        super().__init__()
        self.container_id = container_id
        self.open_log = open_log
        self.partial = b""
        self.kept: deque[str] = deque(maxlen=MAX_LINES)
        self.search_text = ""
        self.following = True
        self.ended = False

    def compose(self) -> ComposeResult:
        yield Static(plain(f" Logs ▸ {self.container_id}"), id="logs-title", classes="topbar")
        yield Input(placeholder="search the log (esc clears)", id="logs-search", classes="hidden")
        yield RichLog(id="logs-view", max_lines=MAX_LINES, wrap=False, min_width=20)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#logs-view").focus()
        self._retitle()
        self.follow_log()

    @work(exclusive=True, group="logs")
    async def follow_log(self) -> None:
        try:
            async for data in self.open_log(MAX_LINES):
                self._add(data)
        except ConsoleError as exc:
            view = self.query_one("#logs-view", RichLog)
            view.write(plain(exc.message, lines=True))
            if not (exc.unimplemented or exc.message.startswith(NO_LOGS)):
                self.notify(exc.message, severity="error", title="logs")
            return
        if self.partial:
            self._add(b"\n")
        self.ended = True
        self._retitle()

    def _retitle(self) -> None:
        mode = "following" if self.following else "paused"
        title = f" Logs ▸ {self.container_id} · {mode}"
        if self.ended:
            title += " · ended: the task exited"
        if self.search_text:
            title += f" · search: {self.search_text}"
        self.query_one("#logs-title", Static).update(plain(title))

    def _add(self, data: bytes) -> None:
        chunks = (self.partial + data).split(b"\n")
        self.partial = chunks.pop()
        # A tty's output ends its lines with CRLF; the CR is no part of the line.
        fresh = [c.decode("utf-8", "replace").removesuffix("\r") for c in chunks]
        self.kept.extend(fresh)
        self._show(fresh)

    def _show(self, lines: list[str]) -> None:
        shown = [self._styled(line) for line in lines if self._wanted(line)]
        if shown:
            view = self.query_one("#logs-view", RichLog)
            view.write(Text("\n").join(shown), scroll_end=self.following)

    def _wanted(self, line: str) -> bool:
        return not self.search_text or self.search_text.lower() in line.lower()

    def _styled(self, line: str) -> Text:
        text = plain(line, lines=True)
        if self.search_text:
            text.highlight_words([self.search_text], style="reverse", case_sensitive=False)
        return text

    def _reshow(self) -> None:
        view = self.query_one("#logs-view", RichLog)
        view.clear()
        self._show(list(self.kept))
        self._retitle()

    def action_search(self) -> None:
        box = self.query_one("#logs-search", Input)
        box.remove_class("hidden")
        box.value = self.search_text
        box.focus()

    @on(Input.Changed, "#logs-search")
    def searching(self, event: Input.Changed) -> None:
        self.search_text = event.value.strip()
        self._reshow()

    @on(Input.Submitted, "#logs-search")
    def searched(self) -> None:
        self.query_one("#logs-view").focus()

    def action_back(self) -> None:
        box = self.query_one("#logs-search", Input)
        if box.has_focus or self.search_text:
            box.value = ""
            box.add_class("hidden")
            self.search_text = ""
            self._reshow()
            self.query_one("#logs-view").focus()
        else:
            self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_follow(self) -> None:
        self.following = not self.following
        if self.following:
            self.query_one("#logs-view", RichLog).scroll_end(animate=False)
        self._retitle()

    def action_scroll(self, lines: int) -> None:
        self.query_one("#logs-view", RichLog).scroll_relative(y=lines, animate=False)

    def action_top(self) -> None:
        self.following = False
        self.query_one("#logs-view", RichLog).scroll_home(animate=False)
        self._retitle()

    def action_bottom(self) -> None:
        self.query_one("#logs-view", RichLog).scroll_end(animate=False)
