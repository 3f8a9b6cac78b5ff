"""Processes (`P`): the processes of a container's task, refreshed while open; `ctrl+k` signals one.

The pids come from the engine (Tasks.ListPids), the details from this host's
this host when the engine is local (`tui.procs`); the table is a `ResourceTable`
keyed by pid, so a refresh changes only the cells that moved, and `C`/`M`
order it by CPU or memory as in the containers table. Signalling a process
picks the signal from the same list as the container's kill, and is refused in
read-only mode. Every cell is the container's data, shown as plain text.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Static

from core.client import Client
from tui import commands, operations, procs
from tui.plain import plain
from tui.screens.dialogs import Pick, PickScreen
from tui.widgets.footer import KeyFooter
from tui.widgets.tables import Cells, Column, ResourceTable, fit, size

REFRESH_INTERVAL = 2.0
PROCESSES = "processes"


class ProcessTable(ResourceTable):
    PANE = PROCESSES
    BINDINGS: ClassVar[list[Binding]] = [
        Binding(key, action, show=False, id=f"processes.{bid}")
        for key, action, bid in commands.VIM_KEYS
    ]
    COLUMNS = (
        Column("pid", "PID", 8, essential=True),
        Column("user", "USER", 10, keep=2),
        Column("state", "S", 1, keep=1),
        Column("cpu", "CPU", 6, keep=4),
        Column("mem", "RSS", 10, keep=3),
        Column("exec", "EXEC", 14),
        Column("command", "COMMAND", 48, essential=True),
    )

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        # Pids in numeric order until the operator picks another.
        self.sort_by = ("pid", False)

    @property
    def title(self) -> str:
        return "Processes"

    @staticmethod
    def cells(row: procs.ProcessRow) -> Cells:
        return {
            "pid": str(row.pid),
            "user": fit(row.user, 10),
            "state": row.state,
            "cpu": "-" if row.cpu is None else f"{row.cpu:.1f}%",
            "mem": size(row.rss),
            "exec": fit(row.exec_id or "-", 14),
            "command": fit(row.command, 200),
            "_pid": row.pid,
            "_cpu": row.cpu,
            "_mem": row.rss,
        }


class ProcessesScreen(Screen[None]):
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("escape", "back", "back", id="processes.back"),
        Binding("q", "back", show=False, id="processes.close"),
        Binding("ctrl+k", "signal", "signal…", id="processes.signal"),
        Binding("C", "sort('cpu')", "sort cpu", id="processes.sort_cpu"),
        Binding("M", "sort('mem')", "sort mem", id="processes.sort_mem"),
        Binding("N", "sort('pid')", "sort pid", id="processes.sort_pid"),
    ]

    def __init__(
        self,
        client: Client,
        container_id: str,
        init_pid: int,
        *,
        read_only: bool,
        namespace: str = "",
        teach: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.container_id = container_id
        self.init_pid = init_pid
        self.read_only = read_only
        self.detailed = True
        self.sampler = procs.Sampler()
        self.rows: dict[int, procs.ProcessRow] = {}
        self.namespace = namespace
        self.teach = teach

    def compose(self) -> ComposeResult:
        yield Static(plain(self.title_text()), id="processes-title", classes="topbar")
        yield ProcessTable(id="processes-table")
        yield KeyFooter()

    def title_text(self) -> str:
        title = f" Processes ▸ {self.container_id}"
        if not self.detailed:
            title += " · pids only: the engine tells no details and its pids are not this host's"
        return title

    def on_mount(self) -> None:
        self.table.focus()
        self.refresh_processes()
        self.set_interval(REFRESH_INTERVAL, self.refresh_processes)

    @property
    def table(self) -> ProcessTable:
        return self.query_one(ProcessTable)

    @work(exclusive=True, group="processes")
    async def refresh_processes(self) -> None:
        try:
            rows, detailed = await procs.processes(
                self.client, self.container_id, self.init_pid, self.sampler
            )
        except operations.ConsoleError as exc:
            self.query_one("#processes-title", Static).update(
                plain(f" Processes ▸ {self.container_id} · {exc.message}")
            )
            return
        if detailed != self.detailed:
            self.detailed = detailed
            self.query_one("#processes-title", Static).update(plain(self.title_text()))
        self.rows = {r.pid: r for r in rows}
        self.table.sync({r.pid: ProcessTable.cells(r) for r in rows})
        self.table.border_subtitle = plain(
            f"{len(rows)} processes"
            + (f" · {self.table.sort_name()}" if self.table.sort_by else "")
        )

    def action_back(self) -> None:
        self.dismiss(None)

    def action_sort(self, column: str) -> None:
        current = self.table.sort_by
        descending = not (current is not None and current[0] == column and current[1])
        self.table.set_sort(column, descending)
        self.refresh_processes()

    def action_signal(self) -> None:
        if self.read_only:
            self.notify(
                "read-only: signalling a process would change the node",
                severity="warning",
                title="refused",
            )
            return
        key = self.table.selected_key()
        row = self.rows.get(key) if isinstance(key, int) else None
        if row is None:
            self.notify("no process selected", severity="warning")
            return
        options = [(name, f"{name:<8} {number:>2}") for name, number in operations.SIGNALS]
        numbers = dict(operations.SIGNALS)

        def chosen(pick: Pick | None) -> None:
            if pick is not None:
                self.send(row, pick.value, numbers[pick.value])

        self.app.push_screen(
            PickScreen(f"Signal pid {row.pid}: which signal?", options, selected="SIGTERM"),
            chosen,
        )

    @work(group="processes-signal")
    async def send(self, row: procs.ProcessRow, name: str, number: int) -> None:
        if self.teach is not None and (row.pid == self.init_pid or row.exec_id):
            exec_flag = f" --exec-id {shlex.quote(row.exec_id)}" if row.exec_id else ""
            ns, cid = shlex.quote(self.namespace), shlex.quote(self.container_id)
            self.teach(f"ctr -n {ns} task kill{exec_flag} -s {name} {cid}")
        try:
            await procs.signal_process(self.client, self.container_id, self.init_pid, row, number)
        except operations.ConsoleError as exc:
            self.notify(exc.message, severity="error", title="signal", timeout=8)
            return
        self.notify(f"sent {name} to pid {row.pid} ({fit(row.command, 40)})", title="signal")
        self.refresh_processes()
