"""The log view and task uptimes through the engine's API, never its files or /proc.

A real task (runc, a busybox rootfs bind-mounted as `ctr` passes snapshot
mounts) runs in the test engine; the console follows its log with `l` through
ctrdeck's `TaskDetails.Log`: the earlier lines first, a line written later
(the task waits for a trigger file the test makes) as it comes, and the title
says the log ended once the task exits. A task started before the console
gets its uptime from `TaskDetails.Started`. The console's own modules open no
engine path and read no /proc.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from textual.widgets import RichLog, Static

from core.api.containerd.services.tasks import v1 as tasks
from core.client import Client
from tests.engine_proc import EngineProcess
from tests.integration.test_tasks import (
    BUSYBOX,
    cleanup_namespace,
    create_container,
    make_rootfs,
    remove_namespace_cgroups,
    rootfs_mounts,
)
from tests.tui.conftest import AppFactory
from tests.tui.support import until
from tui.screens.logs import LogsScreen

SIZE = (120, 36)
TUI = Path(__file__).resolve().parents[2] / "tui"
NAMESPACE = f"logs{os.getpid()}"


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ctrdeck-tuilogs-", dir="/tmp"))
    make_rootfs(d)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def nsclient(engine: EngineProcess) -> AsyncIterator[Client]:
    c = Client(str(engine.address), NAMESPACE)
    try:
        yield c
    finally:
        with contextlib.suppress(Exception):
            await cleanup_namespace(c)
        c.close()
        remove_namespace_cgroups(NAMESPACE)


async def run(client: Client, workdir: Path, cid: str, script: str) -> None:
    await create_container(client, cid, ["sh", "-c", script])
    await client.tasks.create(
        tasks.CreateTaskRequest(container_id=cid, rootfs=rootfs_mounts(workdir / "rootfs"))
    )
    await client.tasks.start(tasks.StartRequest(container_id=cid))


def lines_of(screen: LogsScreen) -> list[str]:
    return [s.text for s in screen.query_one("#logs-view", RichLog).lines]


def title_of(screen: LogsScreen) -> str:
    return str(screen.query_one("#logs-title", Static).render())


@pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")
@pytest.mark.skipif(BUSYBOX is None, reason="busybox-static is not installed")
async def test_the_log_view_follows_a_task_through_the_api_until_it_exits(
    console: AppFactory, nsclient: Client, workdir: Path
) -> None:
    go = workdir / "rootfs" / "tmp" / "go"
    script = "echo one; echo two; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo three"
    await run(nsclient, workdir, "talker", script)
    app = console(namespace=NAMESPACE)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.table("containers").selected_key() == "talker")
        await until(pilot, lambda: app.state.containers["talker"].status == "RUNNING")
        # Started before the console: its uptime comes from the engine, not from /proc.
        starts = await nsclient.task_starts()
        await until(pilot, lambda: app.state.containers["talker"].started is not None)
        assert app.state.containers["talker"].started == starts["talker"]

        await pilot.press("l")
        assert isinstance(app.screen, LogsScreen)
        logs = app.screen
        await until(pilot, lambda: lines_of(logs) == ["one", "two"])
        assert "following" in title_of(logs) and "ended" not in title_of(logs)
        go.touch()
        await until(pilot, lambda: lines_of(logs) == ["one", "two", "three"], timeout=30)
        await until(pilot, lambda: "ended: the task exited" in title_of(logs), timeout=30)
        await pilot.press("escape")
        assert not isinstance(app.screen, LogsScreen)


async def test_the_console_opens_no_engine_path_and_reads_no_proc() -> None:
    """The one-way door, read off the source: no log paths rebuilt, no /proc, no file reads.

    The launcher manages the bundled engine's own process (its pid file, its
    start, `ctrdeck engine stop`); that is its job, and it alone may.
    """
    # The processes view (issue 16) reads this host's /proc (through core.procfs) only for an
    # engine without TaskDetails whose pids it proved to be this host's; it builds no log path.
    allowed = {"launcher.py", "procs.py"}
    for source in sorted(TUI.rglob("*.py")):
        if source.name in allowed:
            continue
        text = source.read_text()
        assert "/proc" not in text, source
        # A task's log rebuilt as <state>/<ns>/<id>/log from Introspection's exports.
        assert not re.search(r'/ "log"|exports\.get\("state"\)', text), source


@pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")
@pytest.mark.skipif(BUSYBOX is None, reason="busybox-static is not installed")
async def test_the_log_view_follows_on_after_the_engine_restarts(
    engine: EngineProcess, console: AppFactory, nsclient: Client, workdir: Path
) -> None:
    go = workdir / "rootfs" / "tmp" / "go"
    script = "echo before; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo after"
    await run(nsclient, workdir, "steady", script)
    app = console(namespace=NAMESPACE)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.table("containers").selected_key() == "steady")
        await pilot.press("l")
        assert isinstance(app.screen, LogsScreen)
        logs = app.screen
        await until(pilot, lambda: lines_of(logs) == ["before"])
        # The task's monitor outlives the engine; the view asks again once it is back.
        engine.kill()
        engine.start()
        go.touch()
        await until(pilot, lambda: "ended: the task exited" in title_of(logs), timeout=60)
        assert lines_of(logs) == ["before", "after"]
