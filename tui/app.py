"""The console app: settings, one engine connection, and the main screen.

`CtrdeckApp` is thin: it owns the `NodeState`, runs the `Syncer` in a worker,
passes log lines and connection changes to the main screen, repaints changed
tables shortly after the first change of a burst (one repaint per burst, and
nothing at all while the node is quiet), sends the terminal only the cells
that changed (`tui/frames.py`), and runs pulls at app level so they outlive
their dialog. Keys and pastes from the terminal go through `TypeAheadApp`, one
at a time, so typed-ahead keys land where slow typing would put them.
`run(args)` is what `ctrdeck` calls: it finds or starts the engine, then runs
the app, which says in a toast and in the event log when it started the
bundled engine, with its socket and log file, and exits non-zero if the app
crashed.

For tests and screenshots the app also runs on fixed data: give it a
`NodeState` and no `connect`, and a fixed `clock`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from importlib import resources
from typing import ClassVar

from rich.cells import cell_len
from rich.console import RenderableType
from textual import events
from textual._compositor import CompositorUpdate
from textual.app import App
from textual.css.query import NoMatches
from textual.notifications import Notify, SeverityLevel
from textual.screen import Screen

from core.api.containerd.services.images import v1 as images_api
from core.client import Client
from tui import frames, launcher, operations, plain, recorder
from tui import keymap as keymaps
from tui.console import Settings
from tui.palette import ConsoleCommands
from tui.screens.main import MainScreen
from tui.screens.pull import PullJob, PullScreen
from tui.state import LogLine, NodeState, utc_now
from tui.syncer import Syncer
from tui.typeahead import TypeAheadApp

# A burst of events (a pull sends dozens) lands within this window and costs one repaint.
REPAINT_DELAY = 0.03
# Ages and uptimes move on with the clock, not with events.
AGE_REFRESH = 5.0
THEMES = {"dark": "textual-dark", "light": "textual-light"}
# A toast says what happened in a line or two; the whole of a longer message goes to the event log.
TOAST_CHARS = 160
TOAST_LINES = 3
TOAST_TITLE_CHARS = 40
# Textual's toast: 60 cells wide (at most half the screen), a cell of padding
# all round, a one-cell left border, and a blank line above it.
TOAST_WIDTH = 60
TOAST_FRAME = 3


class CtrdeckApp(TypeAheadApp[int]):
    # Read as a package resource, not a file beside the module: it works from a zipapp too.
    CSS = resources.files("tui").joinpath("app.tcss").read_text(encoding="utf-8")
    TITLE = "ctrdeck"
    COMMANDS: ClassVar = App.COMMANDS | {ConsoleCommands}
    # A replay shows the same screen with its own timeline and refusals.
    MAIN_SCREEN: ClassVar[type[MainScreen]] = MainScreen

    def __init__(
        self,
        settings: Settings,
        *,
        connect: Callable[[], Client] | None = None,
        state: NodeState | None = None,
        clock: Callable[[], datetime] = utc_now,
        log_lines: Iterable[LogLine] = (),
        launched: launcher.EngineLaunch | None = None,
    ) -> None:
        super().__init__()
        # Over SSH every animated frame is bytes on the wire; nothing here animates.
        self.animation_level = "none"
        if self.no_color or self.console.color_system is None:
            # Textual would send greys under NO_COLOR and 24-bit colour to TERM=dumb.
            self.no_color = True
            self._filters = [frames.Colourless()]
        self.settings = settings
        self.connect = connect
        self.clock = clock
        self.state = state or NodeState(settings.namespace, settings.address)
        self.state.address = self.state.address or settings.address
        self.client: Client | None = None
        self.syncer: Syncer | None = None
        self.pull_job: PullJob | None = None
        # The plain-HTTP choice per registry host, remembered for the session.
        self.plain_http: dict[str, bool] = {}
        self._initial_lines = list(log_lines)
        self.launched = launched
        self._repaint_pending = False
        self._shadow = frames.Shadow(frames.Alphabet(getattr(sys.__stderr__, "encoding", None)))
        self.recording: recorder.ConsoleRecording | None = None

    @property
    def main(self) -> MainScreen:
        return self.get_screen("main")  # type: ignore[return-value]

    async def on_mount(self) -> None:
        # Back from a suspension, the terminal shows whatever ran meanwhile.
        self.app_resume_signal.subscribe(self, lambda _app: self._shadow.reset())
        self.set_theme(self.settings.theme)
        self.set_keymap(self.settings.keymap)
        self.install_screen(self.main_screen(), "main")
        await self.push_screen("main")
        for line in self._initial_lines:
            self.main.event_log.add(line)
        if self.launched is not None and self.launched.started:
            self.announce_launch(self.launched)
        if self.connect is not None:
            self.client = self.connect()
            self.syncer = Syncer(
                self.client,
                self.state,
                on_log=self.main.event_log.add,
                on_connection=self.connection_changed,
                on_exit=self.main.task_exited,
                watched=lambda: self.app_focus,
            )
            self.run_worker(self.syncer.run(), group="sync", exit_on_error=False)
        # The main screen showed every table as it mounted.
        self.state.take_dirty()
        self.state.on_dirty = self.schedule_repaint
        self.set_interval(AGE_REFRESH, self.refresh_ages)

    def main_screen(self) -> MainScreen:
        """The screen the console opens on; a fleet console adds its Nodes pane to it."""
        return self.MAIN_SCREEN(self)

    def _display(self, screen: Screen, renderable: RenderableType | None) -> None:
        # Textual sends every refreshed region whole; the shadow turns that into the
        # cells that changed, and nothing at all when nothing visible did.
        if isinstance(renderable, CompositorUpdate) and not self.is_headless:
            renderable = self._shadow.update(renderable, self.console._color_system)
        super()._display(screen, renderable)

    def on_resize(self, event: events.Resize) -> None:
        # A resized terminal reflows or clears what it showed.
        self._shadow.reset()

    def on_unmount(self) -> None:
        if self.recording is not None:
            self.recording.stop()
        if self.client is not None:
            self.client.close()

    def schedule_repaint(self) -> None:
        if not self._repaint_pending:
            self._repaint_pending = True
            self.set_timer(REPAINT_DELAY, self.repaint)

    def repaint(self) -> None:
        self._repaint_pending = False
        self._refresh(self.state.take_dirty())

    def refresh_ages(self) -> None:
        if not self.is_screen_installed("main"):
            return
        try:
            self.main.refresh_ages()
        except NoMatches:
            return

    def _refresh(self, dirty: set[str]) -> None:
        # A change that lands while the console shuts down has no screen left to show on.
        if not dirty or not self.is_screen_installed("main"):
            return
        try:
            self.main.refresh_view(dirty)
        except NoMatches:
            return

    def connection_changed(self, up: bool, detail: str) -> None:
        if not self.is_screen_installed("main"):
            return
        self.main.show_connection(up, detail)
        if up:
            self.notify(f"connected to {self.state.address} ({detail})", title="engine")
        else:
            self.notify(detail, severity="error", title="engine lost")

    def announce_launch(self, launched: launcher.EngineLaunch) -> None:
        """Nothing answered, so the console started the bundled engine: say so, and where."""
        self.note(
            f"started the bundled engine: socket {launched.address}, log {launched.log_path}; "
            "it keeps running when the console quits (`ctrdeck engine stop` stops it)"
        )
        self.notify(
            f"socket {launched.address}\nlog {launched.log_path}",
            title="started the bundled engine",
            timeout=10,
        )

    def note(self, text: str) -> None:
        self.main.event_log.add(LogLine(self.clock(), self.state.namespace, "", text, "note"))

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every toast, whoever raises it: plain text, short, and never over half the screen.

        Messages carry ids, references and engine errors, so they are never
        markup (`markup` is ignored). A message longer than a toast holds shows
        its first lines, and the whole of it goes to the event log. A toast that
        repeats one still showing replaces it, and the oldest toasts go first
        when the stack would reach past the middle of the screen.
        """
        full = "\n".join(
            line.rstrip() for line in plain.clean(str(message), lines=True).split("\n")
        )
        full = full.strip()
        short = plain.brief(full, TOAST_CHARS, TOAST_LINES)
        heading = plain.brief(title, TOAST_TITLE_CHARS)
        if short != full and self.is_screen_installed("main"):
            self.note(f"{heading or severity}: {full}")
            short += " (all of it in the event log)"
        super().notify(short, title=heading, severity=severity, timeout=timeout, markup=False)

    def _on_notify(self, event: Notify) -> None:
        # Runs before App's handler adds the toast, in the order toasts were raised.
        new = event.notification
        for old in list(self._notifications):
            if (old.title, old.message) == (new.title, new.message):
                self._unnotify(old, refresh=False)
        self._fit_toasts(self._toast_height(new.title, new.message))

    def _toast_height(self, title: str, message: str) -> int:
        inner = max(min(TOAST_WIDTH, self.size.width // 2) - TOAST_FRAME, 1)
        lines = sum(max(1, -(-cell_len(line) // inner)) for line in message.split("\n"))
        return lines + (1 if title else 0) + TOAST_FRAME

    def _fit_toasts(self, incoming: int) -> None:
        """Drop the oldest toasts until `incoming` more rows stay within half the screen."""
        budget = max(self.size.height // 2, incoming)
        shown = [n for n in self._notifications if not n.has_expired]
        heights = [self._toast_height(n.title, n.message) for n in shown]
        while shown and sum(heights) + incoming > budget:
            self._unnotify(shown.pop(0), refresh=False)
            heights.pop(0)

    def teach(self, line: str) -> None:
        if self.settings.teaching:
            self.main.event_log.add(LogLine(self.clock(), self.state.namespace, "", line, "ctr"))

    def record(self, args: list[str]) -> None:
        """`:record [FILE]` starts recording what this console sees; `:record stop` ends it."""
        self.recording = recorder.console_command(self, self.recording, args)

    def set_theme(self, name: str) -> None:
        self.settings.theme = name
        self.theme = THEMES.get(name, name)
        if self.screen_stack and isinstance(self.screen, MainScreen):
            self.main.restyle()

    def start_pull(self, request: images_api.PullImageRequest) -> PullJob:
        job = PullJob(request, clock=self.clock)
        self.pull_job = job
        if self.client is not None:
            client = self.client.with_namespace(self.state.namespace)
            self.run_worker(self._pull(client, job), group="pull", exit_on_error=False)
        return job

    async def _pull(self, client: Client, job: PullJob) -> None:
        try:
            async for progress in operations.pull(client, job.request):
                job.apply(progress)
        except operations.ConsoleError as exc:
            message = exc.message
            if exc.unimplemented:
                message = operations.pull_elsewhere(
                    self.state.address, client.namespace, job.request
                )
            job.fail(message)
            # The dialog says why; a toast only points there when the dialog is hidden.
            if not (isinstance(self.screen, PullScreen) and self.screen.job is job):
                self.notify(
                    f"pull of {job.request.ref} failed; p shows why",
                    severity="error",
                    title="pull",
                    markup=False,
                )
            return
        job.finish()
        self.notify(f"pulled {job.request.ref}", title="pull")


def settings_from(args: argparse.Namespace) -> Settings:
    """The console's settings from its flags; `LaunchError` for contradictory TLS flags."""
    target = launcher.target(args)
    return Settings(
        address=target.address,
        tls=target.tls,
        namespace=args.namespace,
        read_only=args.read_only,
        teaching=getattr(args, "teach", False),
        theme=getattr(args, "theme", None) or "dark",
        snapshotter=os.environ.get("CONTAINERD_SNAPSHOTTER") or "overlayfs",
        keymap_path=getattr(args, "keymap", None) or keymaps.default_path(),
    )


def run(args: argparse.Namespace) -> int:
    """`ctrdeck`: find (or start) the engine, then run the console until it quits."""
    try:
        settings = settings_from(args)
    except launcher.LaunchError as exc:
        print(f"ctrdeck: {exc}")
        return 2
    try:
        settings.keymap = keymaps.load(getattr(args, "keymap", None))
    except keymaps.KeymapError as exc:
        print(f"ctrdeck: {exc}")
        return 2
    started: launcher.EngineLaunch | None = None
    if not getattr(args, "no_start", False):
        try:
            started = asyncio.run(
                launcher.ensure_engine(
                    settings.address,
                    tls=settings.tls,
                    announce=lambda line: print(f"ctrdeck: {line}", flush=True),
                )
            )
        except launcher.LaunchError as exc:
            print(f"ctrdeck: {exc}")
            return 1
    app = CtrdeckApp(
        settings,
        connect=lambda: Client(settings.address, settings.namespace, tls=settings.tls),
        launched=started,
    )
    app.run()
    if started is not None and started.started:
        print(
            f"ctrdeck: the bundled engine keeps running on {settings.address} "
            f"(log: {started.log_path}); `ctrdeck engine stop` stops it"
        )
    return exit_status(app)


def exit_status(app: App[object]) -> int:
    """The console's exit status: 0 only when it quit as asked, never after a crash."""
    code = app.return_code
    if app._exception is not None:
        return code or 1
    # An app that stopped without an exit of its own did not end well either.
    return 1 if code is None else code
