"""Task and pull actions from the keyboard against a real engine, runtime and registry.

An image is pushed to a test registry on 127.0.0.1 and pulled into the engine
with Debian's `ctr`; the console then runs it (`r`), pauses and resumes it
(space), follows its log (`l`), kills it with a chosen signal (`ctrl+k`), starts it
again (`s`) and deletes it (`D`), checking each step with `ctr` too. Whatever a
test leaves running is killed and removed at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Input, RichLog

from tests.engine_proc import EngineProcess
from tests.helpers import ctr
from tests.registry import Registry
from tests.tui.conftest import AppFactory
from tests.tui.support import chatty_image, until
from tui.app import CtrdeckApp
from tui.screens.dialogs import ConfirmScreen, PickScreen, RunScreen
from tui.screens.logs import LogsScreen
from tui.screens.main import MainScreen
from tui.screens.pull import PullScreen

SIZE = (120, 36)


@pytest.fixture
def pulled(engine: EngineProcess, registry: Registry) -> Iterator[str]:
    ref = registry.push(chatty_image(), "tools/chatty", "1")
    ctr(engine.address, "images", "pull", "--plain-http", ref)
    yield ref
    # The engine never stops containers by itself: end what the test started.
    for args in (("task", "kill", "-s", "SIGKILL", "t1"), ("task", "rm", "-f", "t1")):
        ctr(engine.address, *args, check=False)
    ctr(engine.address, "containers", "rm", "t1", check=False)


def status(app: CtrdeckApp, cid: str) -> str:
    row = app.state.containers.get(cid)
    return "" if row is None else row.status


def ctr_status(address: Path, cid: str) -> str:
    for line in ctr(address, "task", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[-1]
    return ""


async def test_run_pause_logs_kill_start_delete(
    engine: EngineProcess, console: AppFactory, pulled: str
) -> None:
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t", "2")
        await until(pilot, lambda: pulled in app.state.images)
        await pilot.press("r")
        assert isinstance(app.screen, RunScreen)
        app.screen.query_one("#run-id", Input).value = "t1"
        await pilot.press("enter")
        await until(pilot, lambda: status(app, "t1") == "RUNNING", timeout=30)
        assert ctr_status(engine.address, "t1") == "RUNNING"

        await pilot.press("1")
        await until(pilot, lambda: app.main.table("containers").selected_key() == "t1")
        await pilot.press("space")
        await until(pilot, lambda: status(app, "t1") == "PAUSED")
        assert ctr_status(engine.address, "t1") == "PAUSED"
        await pilot.press("space")
        await until(pilot, lambda: status(app, "t1") == "RUNNING")

        await pilot.press("l")
        assert isinstance(app.screen, LogsScreen)
        logs = app.screen
        view = logs.query_one("#logs-view", RichLog)
        await until(pilot, lambda: any("hello from the console test" in s.text for s in view.lines))
        await pilot.press("slash", *"nothing-like-this")
        await until(pilot, lambda: not any("hello" in s.text for s in view.lines))
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, MainScreen)

        await pilot.press("ctrl+k")
        assert isinstance(app.screen, PickScreen)
        await pilot.press("j", "enter")  # SIGTERM is first; SIGKILL next
        await until(pilot, lambda: status(app, "t1") == "STOPPED", timeout=30)
        assert app.state.containers["t1"].exit_status == 137

        await pilot.press("s")
        await until(pilot, lambda: status(app, "t1") == "RUNNING", timeout=30)

        await pilot.press("D")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: "t1" not in app.state.containers, timeout=30)
        assert "t1" not in ctr(engine.address, "containers", "ls").stdout

        taught = [line.detail for line in app.main.event_log.buffer if line.kind == "ctr"]
        assert taught == [
            f"ctr -n default run -d --snapshotter overlayfs {pulled} t1",
            "ctr -n default task pause t1",
            "ctr -n default task resume t1",
            "ctr -n default task kill -s SIGKILL t1",
            "ctr -n default task start -d t1",
            "ctr -n default containers rm t1",
        ]


async def test_logs_of_a_container_without_a_task(
    engine: EngineProcess, console: AppFactory, pulled: str
) -> None:
    ctr(engine.address, "containers", "create", pulled, "t1")
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.table("containers").selected_key() == "t1")
        await pilot.press("l")
        view = app.screen.query_one("#logs-view", RichLog)
        await until(pilot, lambda: bool(view.lines))
        assert "no logs for this container" in "".join(s.text for s in view.lines)


async def test_pull_dialog(engine: EngineProcess, console: AppFactory, registry: Registry) -> None:
    ref = registry.push(chatty_image(), "tools/pulled", "1")
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.connected)
        await pilot.press("p")
        assert isinstance(app.screen, PullScreen)
        app.screen.query_one("#pull-ref", Input).value = ref
        await pilot.click("#pull-plain-http")
        await pilot.click("#pull-go")
        assert isinstance(app.screen, PullScreen) and app.screen.job is not None
        job = app.screen.job
        await until(pilot, lambda: job.finished, timeout=60)
        assert not job.error
        await until(pilot, lambda: ref in app.state.images)
        assert job.layers
        assert all(layer.state in ("unpacked", "exists") for layer in job.layers.values())
