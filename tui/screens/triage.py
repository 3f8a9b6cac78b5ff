"""Quick triage from the main screen: shell, processes, sort and top, why it stopped, jump, copy.

The `do_<command id>` handlers of issue 16's keys: `x` opens a shell in the
selected container on the operator's own terminal (the console steps aside
with Textual's suspend and comes back as it was; `tui.shell`), `P` its
processes (`tui.screens.processes`), `N S A C M` sort the containers table
(again: the other way) and `:top` shows the containers zoomed and sorted by
CPU, `enter` on an event-log line selects its object in its pane, and `y`
copies the selected row's id or reference with OSC 52. It also says why a
task stopped: in inspect (`why_stopped`) and in a toast when a task this
console started, ran or opened exits (`task_exited`). A mixin of the main
screen, like `tui.screens.actions`, whose lookups it uses.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Hashable
from typing import cast

from textual import work
from textual.app import SuspendNotSupported
from textual.screen import Screen

from core.client import Client
from tui import commands, operations, shell, why
from tui.commands import CONTAINERS, CONTENT, IMAGES, NAMESPACES, SNAPSHOTS
from tui.console import Console
from tui.plain import clean
from tui.screens.processes import ProcessesScreen
from tui.state import ContainerRow, LogLine
from tui.widgets.tables import SORT_COLUMNS

# Which pane an event's object is in, by the topic's first part.
TOPIC_PANES = {
    "containers": CONTAINERS,
    "tasks": CONTAINERS,
    "images": IMAGES,
    "snapshot": SNAPSHOTS,
    "content": CONTENT,
    "namespaces": NAMESPACES,
}


def event_object(line: LogLine) -> tuple[str, str] | None:
    """(pane, name) of the object a log line is about; None for a note or a `ctr` line."""
    if line.kind != "event" or not line.topic.startswith("/"):
        return None
    pane = TOPIC_PANES.get(line.topic.split("/")[1])
    words = line.detail.split()
    if pane is None or not words:
        return None
    return pane, words[0]


class Triage(Screen[None]):
    """The triage handlers; `MainScreen` supplies the lookups they use."""

    console: Console

    @property
    def watched(self) -> set[str]:
        """Containers this console started, ran or looked into: their exits get a toast."""
        return cast(set[str], self.__dict__.setdefault("_watched", set()))

    # --- shell ------------------------------------------------------------------------

    def do_container_shell(self, pane: str) -> None:
        cid = self._container(pane)
        if cid is not None:
            self.open_shell(cid, shell.DEFAULT_SHELL)

    def shell_line(self, args: list[str]) -> None:
        """`:sh [CMD ARGS...]`: a shell (or CMD) in the selected container."""
        if self.console.settings.read_only:
            self.refuse(commands.BY_ID["container.shell"])
            return
        cid = self.table(CONTAINERS).selected_key()
        row = self.console.state.containers.get(cid) if cid is not None else None
        if row is None or row.status != "RUNNING":
            self.notify("select a running container first (1 shows containers)", severity="warning")
            return
        self.open_shell(str(cid), tuple(args) or shell.DEFAULT_SHELL)

    def open_shell(self, cid: str, argv: tuple[str, ...]) -> None:
        client = self.client()
        if client is None:
            return
        self.watched.add(cid)
        self._shell(client, cid, argv)

    @work(group="shell", exclusive=True)
    async def _shell(self, client: Client, cid: str, argv: tuple[str, ...]) -> None:
        tty_in, tty_out = sys.__stdin__.fileno(), sys.__stdout__.fileno()  # type: ignore[union-attr]
        term = os.environ.get("TERM") or "xterm"
        try:
            session = await shell.open_shell(client, cid, argv, shell.terminal_size(tty_out), term)
        except operations.ConsoleError as exc:
            self.notify(exc.message, severity="error", title="shell", timeout=10)
            return
        tail = " " + shlex.join(argv)
        self.teach("container.shell", CONTAINERS, id=cid, exec_id=session.exec_id, tail=tail)
        status: int | None = None
        try:
            with self.app.batch_update(), self.app.suspend():
                banner = clean(f"ctrdeck: {' '.join(argv)} in {cid}; exit the shell to come back")
                os.write(tty_out, f"{banner}\r\n".encode("utf-8", "replace"))
                status = await shell.attach(session, tty_in, tty_out)
        except SuspendNotSupported:
            self.notify("this terminal cannot hand over to a shell", severity="error")
        except operations.ConsoleError as exc:
            self.notify(exc.message, severity="error", title="shell", timeout=10)
        finally:
            await shell.close(session)
        if status is not None:
            self.notify(f"the shell in {cid} exited with {why.exit_text(status)}", title="shell")

    # --- processes ----------------------------------------------------------------------

    def do_container_processes(self, pane: str) -> None:
        cid = self._container(pane)
        client = self.client()
        if cid is None or client is None:
            return
        row = self.console.state.containers.get(cid)
        self.watched.add(cid)
        self.teach("container.processes", CONTAINERS, id=cid)
        self.app.push_screen(
            ProcessesScreen(
                client,
                cid,
                row.pid if row is not None else 0,
                read_only=self.console.settings.read_only,
                namespace=self.console.state.namespace,
                teach=self.console.teach,
            )
        )

    # --- sort and top ---------------------------------------------------------------------

    def sort_containers(self, column: str, descending: bool | None = None) -> None:
        table = self.table(CONTAINERS)
        key = SORT_COLUMNS[column]
        if descending is None:
            current = table.sort_by
            # Numbers lead with the largest; names and ages start from the top of the alphabet.
            first = column in ("cpu", "mem", "status", "age")
            descending = not current[1] if current is not None and current[0] == key else first
        table.set_sort(key, descending)

    def do_sort_name(self, pane: str) -> None:
        self.sort_containers("name")

    def do_sort_status(self, pane: str) -> None:
        self.sort_containers("status")

    def do_sort_age(self, pane: str) -> None:
        self.sort_containers("age")

    def do_sort_cpu(self, pane: str) -> None:
        self.sort_containers("cpu")

    def do_sort_mem(self, pane: str) -> None:
        self.sort_containers("mem")

    def show_top(self) -> None:
        """`:top`: the containers, zoomed, busiest first; the metrics keep it current."""
        self.show_pane(CONTAINERS)
        self.sort_containers("cpu", descending=True)
        self.zoom(CONTAINERS)

    # --- copy and jump ----------------------------------------------------------------

    def do_table_copy(self, pane: str) -> None:
        key = self.selected(pane)
        if key is None:
            return
        text = key[1] if isinstance(key, tuple) else str(key)
        self.app.copy_to_clipboard(text)
        self.notify(f"copied {text} (OSC 52: the terminal puts it on the clipboard)", title="copy")

    def do_events_jump(self, pane: str) -> None:
        line = self.event_log.chosen()
        target = event_object(line) if line is not None else None
        if line is None or target is None:
            self.notify("this line names no object to jump to", severity="warning")
            return
        pane_name, name = target
        state = self.console.state
        if pane_name != NAMESPACES and line.namespace and line.namespace != state.namespace:
            self.switch_namespace(line.namespace)
            self.notify(f"switched to namespace {line.namespace}; {name} shows once it loads")
            return
        key: Hashable = name
        if pane_name == NAMESPACES:
            found = name in state.namespaces
        elif pane_name == SNAPSHOTS:
            keys = [k for k in state.snapshots if isinstance(k, tuple) and k[1] == name]
            found = bool(keys)
            key = keys[0] if keys else name
        else:
            found = name in state.tables[pane_name]
        if not found:
            self.notify(f"{name} is gone", severity="warning")
            return
        self.show_pane(pane_name)
        table = self.table(pane_name)
        if table.filter_text:
            table.set_filter("")
            self.retitle()
        table.select_key(key)

    # --- why it stopped -----------------------------------------------------------------

    async def why_stopped(self, client: Client, cid: str) -> list[tuple[str, str]]:
        """Inspect's lines on how the task ended, with its last output; empty while it runs."""
        row = self.console.state.containers.get(cid)
        if row is None:
            return []
        found = why.reasons(row, self.console.clock())
        if found:
            lines = await self._last_lines(client, cid)
            if lines:
                found.append(("last lines", "\n".join(lines)))
        return found

    async def _last_lines(self, client: Client, cid: str) -> tuple[str, ...]:
        try:
            return await operations.output_tail(client, cid)
        except operations.ConsoleError:
            return ()

    def task_exited(self, row: ContainerRow) -> None:
        """A task of the current namespace exited: a toast saying why, if it is watched."""
        if row.id in self.watched:
            self._exit_toast(row)

    @work(group="exit-toast")
    async def _exit_toast(self, row: ContainerRow) -> None:
        client = self.console.client
        scoped = client.with_namespace(self.console.state.namespace) if client else None
        lines = await self._last_lines(scoped, row.id) if scoped is not None else ()
        self.notify(
            why.exit_toast(row, lines),
            title="exited",
            severity="information" if row.exit_status == 0 else "warning",
            timeout=12,
        )
