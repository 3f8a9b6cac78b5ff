"""`ctrdeck replay FILE`: the console on a recording, with no engine, socket or root.

`ReplayApp` is the console (`CtrdeckApp`) fed by a `tui.player.Player`
instead of a `Syncer`: the same panes, filters, zoom and event log, on the
recorded rows and lines, with the clock at the recorded time. `ReplayScreen`
adds the timeline bar (position, length, speed, and the keys) and the
playback keys: space pauses and resumes, `.` steps to the next event,
left/right seek 10 s (shift: a minute), `<` and `>` change the speed, and
`:seek 1m30s` / `:speed 10` do it by number. Replay is read-only by nature:
it reuses the console's read-only mode, and its refusal says why; inspect
shows the recorded row instead of asking an engine.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any, ClassVar, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input, Static

from tui import commands, recording
from tui.app import CtrdeckApp, exit_status
from tui.console import Settings
from tui.player import Player
from tui.screens.inspect import InspectScreen, Section, fields
from tui.screens.main import MainScreen
from tui.state import LogLine, NodeState

TICK = 0.1
SEEK_STEP = 10.0
KEYS_HELP = "space pause · ←→ seek · . next event · < > speed · :seek 1m30s"


class Timeline(Static):
    """`▶ 0:42 ━━━━━●──── 5:00 · 10x`, and the playback keys while they fit."""

    def show(self, player: Player) -> None:
        mark = "paused" if player.paused else "▶"
        speed = f"{player.speed:g}x"
        here, length = (
            recording.format_duration(player.position),
            recording.format_duration(player.duration),
        )
        width = self.size.width or 80
        head, tail = f" {mark} {here} ", f" {length} · {speed} "
        keys = f"· {KEYS_HELP} "
        room = width - len(head) - len(tail)
        if room - len(keys) >= 20:
            room -= len(keys)
        else:
            keys = ""
        room = max(room, 4)
        done = round(room * player.position / player.duration) if player.duration else room
        done = min(done, room - 1)
        bar = Text(head, style="bold")
        bar.append("━" * done, style="bold")
        bar.append("●")
        bar.append("─" * (room - done - 1), style="dim")
        bar.append(tail)
        bar.append(keys, style="dim")
        self.update(bar)


class ReplayScreen(MainScreen):
    """The main screen on a recording: a timeline, playback keys, and replay's refusals."""

    BINDINGS: ClassVar[list[Binding]] = [
        *MainScreen.BINDINGS,
        Binding("space", "play", "play/pause", priority=True, show=False),
        Binding("full_stop", "step", "next event", priority=True, show=False),
        Binding("left", "seek(-1)", "back", priority=True, show=False),
        Binding("right", "seek(1)", "forward", priority=True, show=False),
        Binding("shift+left", "seek(-6)", "back a minute", priority=True, show=False),
        Binding("shift+right", "seek(6)", "forward a minute", priority=True, show=False),
        Binding("less_than_sign", "speed(0)", "slower", priority=True, show=False),
        Binding("greater_than_sign", "speed(1)", "faster", priority=True, show=False),
    ]
    ALLOW_IN_MAXIMIZED_VIEW = MainScreen.ALLOW_IN_MAXIMIZED_VIEW + ", #timeline"

    @property
    def player(self) -> Player:
        return cast(ReplayApp, self.app).player

    def compose(self) -> ComposeResult:
        for widget in super().compose():
            if widget.id == "cmdline":
                yield Timeline(id="timeline", classes="topbar")
            yield widget

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("play", "step", "seek", "speed"):
            # Typing in the filter or the command line keeps its keys.
            return not isinstance(self.focused, Input)
        return super().check_action(action, parameters)

    def show_timeline(self) -> None:
        self.query_one(Timeline).show(self.player)

    def action_play(self) -> None:
        player = self.player
        if player.paused and player.position >= player.duration:
            player.seek(0)
        player.paused = not player.paused
        self.show_timeline()

    def action_step(self) -> None:
        if not self.player.step():
            self.notify("no more events in the recording", title="replay")
        self.show_timeline()

    def action_seek(self, steps: int) -> None:
        self.player.seek(self.player.position + steps * SEEK_STEP)
        self.show_timeline()

    def action_speed(self, up: int) -> None:
        self.player.faster(bool(up))
        self.show_timeline()

    def refuse(self, command: commands.Command) -> None:
        self.notify(
            f"replay: '{command.title}' would change the node, and this is a recording "
            "(a replay is read-only)",
            severity="warning",
            title="refused",
        )

    def run_line(self, text: str) -> None:
        words = text.strip().lstrip(":").split()
        verb, args = (words[0].lower(), words[1:]) if words else ("", [])
        if verb == "seek":
            self.seek_line(args)
        elif verb == "speed":
            self.speed_line(args)
        elif verb == "record":
            self.notify("replay: this is a recording already", severity="warning", title="refused")
        else:
            super().run_line(text)

    def seek_line(self, args: list[str]) -> None:
        """`:seek 1m30s` goes there; `:seek +30s` / `:seek -1m` move by that much."""
        if not args:
            self.notify(":seek needs a time: :seek 1m30s, :seek +30s", severity="warning")
            return
        text = args[0]
        sign = {"+": 1, "-": -1}.get(text[:1], 0)
        try:
            seconds = recording.parse_duration(text[1:] if sign else text)
        except ValueError as exc:
            self.notify(f":seek: {exc}", severity="error", markup=False)
            return
        self.player.seek(self.player.position + sign * seconds if sign else seconds)
        self.show_timeline()

    def speed_line(self, args: list[str]) -> None:
        try:
            speed = float(args[0].rstrip("x")) if args else 0.0
        except ValueError:
            speed = 0.0
        if not 0 < speed <= 1000:
            self.notify(":speed needs a factor: :speed 10", severity="warning")
            return
        self.player.speed = speed
        self.show_timeline()

    def switch_namespace(self, namespace: str) -> None:
        if namespace == self.node.namespace:
            return
        self.player.follow = False
        self.player.show_namespace(namespace)
        self.console.note(f"namespace {namespace}")
        self.refresh_view({commands.NAMESPACES})

    def do_table_inspect(self, pane: str) -> None:
        key = self.selected(pane)
        if key is None:
            return
        row = self.node.tables[pane].get(key) if pane in self.node.tables else None
        if row is None:
            return
        name = key if isinstance(key, str) else " ".join(str(k) for k in cast(tuple[Any], key))
        values = [(f.name, getattr(row, f.name)) for f in dataclasses.fields(row)]
        at = recording.format_duration(self.player.position)
        sections = [Section(f"as recorded at {at}", fields(values))]

        async def loader() -> list[Section]:
            return sections

        title = f"{commands.PANE_TITLES[pane].rstrip('s')} ▸ {name} (recorded)"
        self.app.push_screen(InspectScreen(title, loader))


class ReplayApp(CtrdeckApp):
    """The console on a recording: a `Player` where the live console has its `Syncer`."""

    MAIN_SCREEN = ReplayScreen

    def __init__(
        self,
        rec: recording.Recording,
        *,
        speed: float = 1.0,
        start: float = 0.0,
        paused: bool = False,
        settings: Settings | None = None,
    ) -> None:
        header = rec.header
        settings = settings or Settings(
            address=str(header.get("address", "")), namespace=str(header.get("namespace", ""))
        )
        settings.read_only = True
        state = NodeState(settings.namespace, settings.address)
        super().__init__(settings, state=state, clock=self._now)
        self.player = Player(
            rec,
            state,
            on_log=self._log,
            on_reset_log=self._reset_log,
            on_connection=self._connection,
        )
        self.player.speed = speed
        self._start = start
        self._start_paused = paused
        self._last_tick = time.monotonic()

    def _now(self) -> Any:
        return self.player.now()

    @property
    def replay(self) -> ReplayScreen:
        return cast(ReplayScreen, self.main)

    def on_mount(self) -> None:
        # Textual runs CtrdeckApp's on_mount after this one: start once it has.
        self.call_later(self.start_playing)

    def start_playing(self) -> None:
        cut = self.player.recording.cut
        if cut:
            self.note(f"the recording ends early ({cut}): it plays up to its last whole record")
        self.player.seek(self._start)
        self.player.paused = self._start_paused
        self.replay.show_timeline()
        self._last_tick = time.monotonic()
        self.set_interval(TICK, self.tick)

    def tick(self) -> None:
        now = time.monotonic()
        elapsed, self._last_tick = now - self._last_tick, now
        if not self.player.paused:
            self.player.tick(elapsed)
            self.replay.show_timeline()

    def _log(self, line: LogLine) -> None:
        if self.is_screen_installed("main"):
            self.main.event_log.add(line)

    def _reset_log(self, lines: list[LogLine]) -> None:
        if not self.is_screen_installed("main"):
            return
        log = self.main.event_log
        log.clear_all()
        for line in lines:
            log.add(line)

    def _connection(self, up: bool, detail: str) -> None:
        if self.is_screen_installed("main"):
            self.main.show_connection(up, detail)

    def record(self, args: list[str]) -> None:
        self.notify("replay: this is a recording already", severity="warning", title="refused")


def run(args: argparse.Namespace) -> int:
    """`ctrdeck replay FILE`: read it (a clear error if it cannot be), then play it."""
    try:
        start = recording.parse_duration(args.start)
    except ValueError as exc:
        print(f"ctrdeck replay: --from: {exc}", file=sys.stderr)
        return 2
    if not 0 < args.speed <= 1000:
        print("ctrdeck replay: --speed must be above 0 and at most 1000", file=sys.stderr)
        return 2
    try:
        rec = recording.read(args.file)
    except recording.RecordingError as exc:
        print(f"ctrdeck replay: {exc}", file=sys.stderr)
        return 2
    header = rec.header
    settings = Settings(
        address=str(header.get("address", "")),
        namespace=str(header.get("namespace", "")),
        theme=getattr(args, "theme", None) or "dark",
    )
    app = ReplayApp(rec, speed=args.speed, start=start, paused=args.paused, settings=settings)
    app.run()
    return exit_status(app)
