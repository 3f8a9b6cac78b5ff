"""The live event log: a bounded ring buffer shown through a filter, with pause and scroll back.

Lines arrive from the event stream (and from the teaching toggle) at any rate;
they go into a ring buffer of fixed size and a pending list that is written to
the screen shortly after the first of a burst arrives, in one batch, so a burst
costs one repaint and a quiet log costs nothing.
Pausing stops the writing (the buffer keeps filling, and the title counts what
is waiting); the view only follows the end while it is scrolled to the end,
so reading back is never interrupted. `up`/`down` (`j`/`k`) move a line cursor
(drawn reversed; `g`/`G` go to the first line and back to following the end),
and `chosen()` is the line it is on, or the newest without one: `enter` jumps
to that line's object. In a fleet console each line names its node in a column
of its own. The filter (`ns:NAME`, `topic:/tasks`, `node:NAME`,
or any words) re-renders from the buffer. Every line and the filter are shown
as plain text (`tui.plain`): an event names what the node holds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.strip import Strip
from textual.widgets import RichLog

from tui import commands
from tui.plain import clean, plain
from tui.state import LogLine

CAPACITY = 2000
# Lines arriving within this window are written together.
FLUSH_DELAY = 0.03


def parse_filter(text: str) -> list[tuple[str, str]]:
    """`ns:default topic:/tasks web` -> [("ns","default"), ("topic","/tasks"), ("","web")].

    `node:NAME` keeps one node's lines in a fleet console.
    """
    terms: list[tuple[str, str]] = []
    for word in text.split():
        field, sep, value = word.partition(":")
        if sep and field == "node":
            terms.append(("node", value))
        elif sep and field in ("ns", "namespace", "topic"):
            terms.append(("ns" if field != "topic" else "topic", value))
        else:
            terms.append(("", word))
    return terms


def matches(line: LogLine, terms: list[tuple[str, str]]) -> bool:
    for field, value in terms:
        if field == "ns" and line.namespace != value:
            return False
        if field == "node" and line.node != value:
            return False
        if field == "topic" and value not in line.topic:
            return False
        if not field and value.lower() not in f"{line.topic} {line.detail}".lower():
            return False
    return True


class EventLog(RichLog):
    PANE = commands.EVENTS
    BINDINGS: ClassVar[list[Binding]] = commands.bindings(commands.EVENTS)

    def __init__(self, *, capacity: int = CAPACITY, id: str | None = None) -> None:
        super().__init__(
            max_lines=capacity, wrap=False, markup=False, auto_scroll=True, min_width=20, id=id
        )
        self.can_focus = True
        self.buffer: deque[LogLine] = deque(maxlen=capacity)
        self.pending: list[LogLine] = []
        self.paused = False
        self.filter_text = ""
        self.compact = False
        self._terms: list[tuple[str, str]] = []
        self.styles_by_kind: dict[str, str] = {}
        self._flush_pending = False
        # The lines on screen, one per log line (the log never wraps), and the cursor's line.
        self.shown: deque[LogLine] = deque(maxlen=capacity)
        self.cursor: LogLine | None = None
        # Told of every line added (a recorder listens here).
        self.on_add: Callable[[LogLine], None] | None = None
        self.node_width = 8

    def on_mount(self) -> None:
        self._retitle()

    def add(self, line: LogLine) -> None:
        self.buffer.append(line)
        if self.on_add is not None:
            self.on_add(line)
        if matches(line, self._terms):
            self.pending.append(line)
            if len(self.pending) > self.buffer.maxlen:  # type: ignore[operator]
                del self.pending[: -self.buffer.maxlen]  # type: ignore[operator]
            if self.paused:
                self._retitle()
            elif not self._flush_pending:
                self._flush_pending = True
                self.set_timer(FLUSH_DELAY, self.flush)

    def format(self, line: LogLine) -> Text:
        stamp = line.time.astimezone()
        detail = clean(line.detail)
        # A fleet's lines name their node first; one node's never do.
        node = f"{clean(line.node):<{self.node_width}} " if line.node else ""
        if line.kind == "ctr":
            return Text(f"  $ {node}{detail}", style=self.styles_by_kind.get("ctr", "bold"))
        if line.kind == "note":
            return Text(f"  # {node}{detail}", style=self.styles_by_kind.get("note", "italic"))
        topic = clean(line.topic)
        if self.compact:
            return Text(f"{stamp:%H:%M:%S}  {node}{topic:<18} {detail}")
        ms = f"{stamp.microsecond // 1000:03d}"
        namespace = clean(line.namespace)
        return Text(f"{stamp:%H:%M:%S}.{ms}  {node}{namespace:<10} {topic:<20} {detail}")

    def flush(self) -> None:
        self._flush_pending = False
        if self.paused or not self.pending:
            return
        lines, self.pending = self.pending, []
        self.shown.extend(lines)
        at_end = self.is_vertical_scroll_end or self.max_scroll_y == 0
        self.write(Text("\n").join(self.format(line) for line in lines), scroll_end=at_end)

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self._retitle()
        if not paused:
            self.flush()

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip()
        self._terms = parse_filter(self.filter_text)
        self.pending = [line for line in self.buffer if matches(line, self._terms)]
        self.clear()
        self._retitle()
        self.flush()

    def clear(self) -> EventLog:
        self.shown.clear()
        self.cursor = None
        super().clear()
        return self

    def chosen(self) -> LogLine | None:
        """The line under the cursor, or the newest one shown."""
        if self.cursor is not None:
            return self.cursor
        return self.shown[-1] if self.shown else None

    def _cursor_index(self) -> int | None:
        if self.cursor is None:
            return None
        for i in range(len(self.shown) - 1, -1, -1):
            if self.shown[i] is self.cursor:
                return i
        return None

    def move_cursor(self, delta: int) -> None:
        if not self.shown:
            return
        current = self._cursor_index()
        if current is None:
            # Without a cursor the newest line is the chosen one: moving starts from there.
            current = len(self.shown) - 1
        index = min(max(current + delta, 0), len(self.shown) - 1)
        self.cursor = self.shown[index]
        # Lines still waiting for the log's first layout are not on screen yet.
        y = index - (len(self.shown) - len(self.lines))
        if y < self.scroll_y:
            self.scroll_to(y=y, animate=False)
        elif y >= self.scroll_y + self.scrollable_content_region.height:
            self.scroll_to(y=y - self.scrollable_content_region.height + 1, animate=False)
        self.refresh()

    def action_scroll_down(self) -> None:
        self.move_cursor(1)

    def action_scroll_up(self) -> None:
        self.move_cursor(-1)

    def action_scroll_home(self) -> None:
        self.move_cursor(-len(self.shown))

    def action_scroll_end(self) -> None:
        self.cursor = None
        self.scroll_end(animate=False)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        index = self._cursor_index()
        if index is not None and int(self.scroll_y) + y == index - (
            len(self.shown) - len(self.lines)
        ):
            return strip.apply_style(Style(reverse=True))
        return strip

    def clear_all(self) -> None:
        self.buffer.clear()
        self.pending.clear()
        self.clear()

    def _retitle(self) -> None:
        mode = f"paused · {len(self.pending)} new" if self.paused else "live"
        title = f"Events ▸ {mode}"
        if self.filter_text:
            title += f" · filter: {self.filter_text}"
        self.border_title = plain(title)
