"""Quick triage against a real engine and runc: processes, sort and top, why it stopped, jump, copy,
a shell (Pilot up to the hand-over, and the real thing on a pseudo-terminal) and an OOM kill.

Images are pushed to a test registry on 127.0.0.1 and pulled with Debian's
`ctr`, which also runs the containers; the console is driven from the keyboard.
Whatever a test starts is killed and removed at the end.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import struct
import termios
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.widgets import Static

from tests.engine_proc import EngineProcess
from tests.engine_proc import containerd as start_containerd
from tests.helpers import ctr
from tests.registry import Registry
from tests.tui.conftest import AppFactory
from tests.tui.support import chatty_image, until
from tests.tui.terminal import Terminal, console_argv, console_env
from tests.tui.test_console import plain
from tui.app import CtrdeckApp
from tui.screens.dialogs import Pick, PickScreen
from tui.screens.inspect import InspectScreen
from tui.screens.main import MainScreen
from tui.screens.processes import ProcessesScreen, ProcessTable

SIZE = (140, 40)
Runner = Callable[..., str]


@pytest.fixture
def run_container(engine: EngineProcess, registry: Registry) -> Iterator[Runner]:
    """`run_container(id, *args, flags=[...])` runs the chatty image with ctr; all end after."""
    ref = registry.push(chatty_image(), "tools/chatty", "1")
    ctr(engine.address, "images", "pull", "--plain-http", ref)
    started: list[str] = []

    def run(cid: str, *args: str, flags: tuple[str, ...] = ()) -> str:
        ctr(engine.address, "run", "-d", *flags, ref, cid, *args)
        started.append(cid)
        return cid

    yield run
    for cid in started:
        ctr(engine.address, "task", "kill", "-s", "SIGKILL", cid, check=False)
        ctr(engine.address, "task", "rm", "-f", cid, check=False)
        ctr(engine.address, "containers", "rm", cid, check=False)


def toasts(app: CtrdeckApp) -> list[str]:
    return [n.message for n in app._notifications]


def status_cell(app: CtrdeckApp, cid: str) -> str:
    table = app.main.table("containers")
    return str(table.get_cell(cid, "status"))


async def test_processes_sort_top_copy_and_jump(
    engine: EngineProcess, console: AppFactory, run_container: Runner
) -> None:
    run_container("busy", "/bin/sh", "-c", "sleep 1001 & sleep 1002 & exec sleep 1000")
    run_container("idle")
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        table = app.main.table("containers")
        await until(pilot, lambda: len(app.state.containers) == 2 and app.state.running == 2)
        await until(pilot, lambda: table.selected_key() is not None)
        table.select_key("busy")
        await pilot.press("t")

        # P: the processes, with their command lines and users, read on this host.
        await pilot.press("P")
        assert isinstance(app.screen, ProcessesScreen)
        screen = app.screen
        await until(pilot, lambda: len(screen.rows) == 3)
        commands = sorted(r.command for r in screen.rows.values())
        assert commands == ["sleep 1000", "sleep 1001", "sleep 1002"]
        assert {r.user for r in screen.rows.values()} == {"root"}
        assert all(r.rss for r in screen.rows.values())
        # Refreshed while open: a second sample has CPU figures.
        await until(pilot, lambda: all(r.cpu is not None for r in screen.rows.values()))

        # ctrl+k signals the chosen process only.
        victim = next(r for r in screen.rows.values() if r.command == "sleep 1002")
        screen.query_one(ProcessTable).select_key(victim.pid)
        await pilot.press("ctrl+k")
        assert isinstance(app.screen, PickScreen)
        app.screen.dismiss(Pick("SIGKILL"))
        await until(pilot, lambda: victim.pid not in screen.rows, timeout=20)
        assert len(screen.rows) == 2
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        assert app.state.containers["busy"].status == "RUNNING"

        # Sort by any column, the header says so; the same key again turns it round.
        await pilot.press("N")
        assert table.sort_by == ("id", False)
        assert [table.get_row_at(i)[0].plain for i in range(2)] == ["busy", "idle"]
        await pilot.press("N")
        assert table.sort_by == ("id", True)
        assert [table.get_row_at(i)[0].plain for i in range(2)] == ["idle", "busy"]
        assert str(table.columns[next(k for k in table.columns if k.value == "id")].label) == "ID▼"

        # :top: the containers zoomed, busiest first, kept in order as the metrics move.
        await pilot.press("colon", *"top", "enter")
        assert table.sort_by == ("cpu", True)
        assert app.main.maximized is app.main.query_one("#resources")
        await until(pilot, lambda: all(r.cpu is not None for r in app.state.containers.values()))
        await pilot.press("escape")

        # y copies the selected id, with OSC 52, and says so.
        table.select_key("idle")
        await pilot.press("y")
        assert app.clipboard == "idle"
        assert any("copied idle" in m for m in toasts(app))

        # enter on an event-log line selects its object.
        log = app.main.event_log
        log.focus()
        await until(pilot, lambda: any(line.topic == "/containers/create" for line in log.shown))
        while (
            (chosen := log.chosen()) is None
            or chosen.detail.split()[0] != "busy"
            or (chosen.topic != "/containers/create")
        ):
            before = chosen
            await pilot.press("k")
            assert log.chosen() is not before, "no /containers/create line for busy"
        table.select_key("idle")
        await pilot.press("enter")
        assert app.main.focused is table
        assert table.selected_key() == "busy"

        taught = [line.detail for line in log.buffer if line.kind == "ctr"]
        assert taught == [
            "ctr -n default task ps busy",
            # The console signalled a child on this host: no ctr line does that.
        ]


async def test_why_it_stopped_in_row_inspect_and_toast(
    engine: EngineProcess, console: AppFactory, run_container: Runner
) -> None:
    run_container("victim")
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        table = app.main.table("containers")
        await until(pilot, lambda: app.state.running == 1)
        await until(pilot, lambda: table.selected_key() == "victim")
        # Opening its processes makes it a watched container.
        await pilot.press("P")
        await pilot.press("escape")
        await until(pilot, lambda: app.state.containers["victim"].started is not None)
        ctr(engine.address, "task", "kill", "-s", "SIGKILL", "victim")
        await until(pilot, lambda: app.state.containers["victim"].status == "STOPPED")
        row = app.state.containers["victim"]
        assert row.exit_status == 137 and row.exited_at is not None and row.ran_for is not None
        await until(pilot, lambda: status_cell(app, "victim") == "SIGKILL(137)")
        await until(
            pilot, lambda: any("victim exited 137 (SIGKILL) after" in m for m in toasts(app))
        )
        toast = next(m for m in toasts(app) if "victim exited" in m)
        assert "hello from the console test" in toast

        await pilot.press("enter")
        assert isinstance(app.screen, InspectScreen)
        inspect = app.screen
        await until(pilot, lambda: "Why it stopped" in _text(inspect))
        shown = _text(inspect)
        assert "137 (SIGKILL)" in shown
        assert "killed by SIGKILL" in shown
        assert "ran for" in shown
        assert "hello from the console test" in shown


def _text(screen: InspectScreen) -> str:
    sections = [w for w in screen.query(".section") if isinstance(w, Static)]
    return "\n".join(f"{w.border_title}\n{plain(w)}" for w in sections)


async def test_oom_killed_container_is_marked(
    engine: EngineProcess, console: AppFactory, run_container: Runner
) -> None:
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.connected)
        # Doubles a string until the 16 MiB limit's OOM killer ends it.
        run_container(
            "hog",
            "/bin/sh",
            "-c",
            'sleep 1; a=x; while :; do a="$a$a"; done',
            flags=("--memory-limit", str(16 << 20)),
        )
        await until(pilot, lambda: "hog" in app.state.containers)
        await until(pilot, lambda: app.state.containers["hog"].status == "STOPPED", timeout=60)
        await until(pilot, lambda: app.state.containers["hog"].oom)
        assert app.state.containers["hog"].exit_status == 137
        await until(pilot, lambda: status_cell(app, "hog") == "OOMKILLED")
        # The engine's event says so too (it may trail the exit the counter already told).
        await until(pilot, lambda: any(x.topic == "/tasks/oom" for x in app.main.event_log.buffer))


async def test_shell_says_when_there_is_none_and_needs_a_terminal(
    engine: EngineProcess, console: AppFactory, run_container: Runner
) -> None:
    run_container("box")
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        table = app.main.table("containers")
        await until(pilot, lambda: app.state.running == 1 and table.selected_key() == "box")
        await pilot.press("colon", *"sh /bin/nosuch", "enter")
        await until(pilot, lambda: any("box has no /bin/nosuch" in m for m in toasts(app)))
        # Pilot has no terminal to hand over: x starts the shell, then says so and ends it.
        await pilot.press("t", "x")
        await until(pilot, lambda: any("cannot hand over" in m for m in toasts(app)))
        taught = [line.detail for line in app.main.event_log.buffer if line.kind == "ctr"]
        assert len(taught) == 1
        assert re.fullmatch(
            r"ctr -n default task exec -t --exec-id ctrdeck-shell-[0-9a-f]{8} box /bin/sh",
            taught[0],
        )
        execs = ctr(engine.address, "task", "ps", "box").stdout
        assert len(execs.splitlines()) == 2


def drive_shell(address: str, cid: str, home: Path) -> None:
    """`x` on a pseudo-terminal: type into the shell, read the answer, exit, find the console."""
    term = Terminal(
        console_argv(address, "--teach"), cols=100, rows=30, env=console_env(home)
    ).start()
    try:
        term.wait_for(lambda out: b"RUNNING" in out)
        term.settle()
        term.press("x")
        term.wait_for(lambda out: b"exit the shell to come back" in out)
        mark = term.written
        term.press("echo shell-says-$((6*7))\r")
        term.wait_for(lambda out: b"shell-says-42" in out[mark:])
        # The window size follows the terminal: resize it as a terminal emulator does.
        fcntl.ioctl(term._master, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        assert term.proc is not None
        os.killpg(term.proc.pid, signal.SIGWINCH)
        for _ in range(20):
            mark = term.written
            term.press("busybox stty size\r")
            term.settle(quiet=0.3)
            if b"33 101" in term.output(mark):
                break
        assert b"33 101" in term.output(mark)
        mark = term.written
        term.press("exit\r")
        # The console is back: it draws its screen again, and says how the shell ended.
        term.wait_for(lambda out: b"Containers" in out[mark:] and b"RUNNING" in out[mark:])
        term.wait_for(lambda out: b"exited with 0" in out[mark:])
        # The shell's exec is gone: the task has its init process only.
        assert len(ctr(address, "task", "ps", cid).stdout.splitlines()) == 2
        term.settle()
        term.press("q")
        assert term.exit_code() == 0
    finally:
        term.stop()


def test_shell_on_a_real_terminal(
    engine: EngineProcess, run_container: Runner, tmp_path: Path
) -> None:
    run_container("sh1")
    drive_shell(str(engine.address), "sh1", tmp_path)


@pytest.mark.skipif(shutil.which("containerd") is None, reason="Debian's containerd is missing")
def test_shell_on_a_real_terminal_against_containerd(registry: Registry, tmp_path: Path) -> None:
    ref = registry.push(chatty_image(), "tools/chatty", "1")
    with start_containerd() as running:
        address = str(running.address)
        ctr(address, "images", "pull", "--plain-http", "--snapshotter", "native", ref)
        ctr(address, "run", "-d", "--snapshotter", "native", ref, "sh2")
        try:
            drive_shell(address, "sh2", tmp_path)
        finally:
            ctr(address, "task", "kill", "-s", "SIGKILL", "sh2", check=False)
            ctr(address, "task", "rm", "-f", "sh2", check=False)
            ctr(address, "containers", "rm", "sh2", check=False)
