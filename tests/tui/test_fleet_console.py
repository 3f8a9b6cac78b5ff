"""The fleet console on real engines: the Nodes pane, switching, the all-nodes view, one log.

Two engines of ours are two nodes (a third is the same engine reached over
Debian's sshd on 127.0.0.1, tests/sshd.py); a malformed URL, a name used
twice and a key the host refuses are three more, each with its reason on its
row, and the console opens all the same. `:node NAME` and `ctrl+n` switch the node
the panes show, `0` lists every node's containers with a NODE column (moving
onto a row selects its node, so an action goes there and its toast names
it), and the event log carries every node's lines with a node column and a
`node:NAME` filter. A remote task's log comes through the engine's API over
the SSH tunnel.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.client import Client
from tests.engine_proc import EngineProcess
from tests.integration.test_tasks import (
    BUSYBOX,
    cleanup_namespace,
    make_rootfs,
    remove_namespace_cgroups,
)
from tests.sshd import SSHServer, sshd
from tests.tui.support import seed_container, until
from tests.tui.test_logs import lines_of, run
from tui.app import Settings
from tui.fleet import INVALID, UP
from tui.fleet_app import FleetApp
from tui.nodes import parse_url
from tui.nodes_cli import FleetPlan
from tui.screens.dialogs import ConfirmScreen
from tui.screens.fleet import ALL
from tui.screens.logs import LogsScreen
from tui.widgets.fleet_tables import AllContainersTable, NodesTable
from tui.widgets.tables import ResourceTable

pytestmark = pytest.mark.integration
SIZE = (160, 45)
NAMESPACE = f"fleetlogs{os.getpid()}"


@pytest.fixture
def engines() -> Iterator[tuple[EngineProcess, EngineProcess]]:
    a, b = EngineProcess().start(), EngineProcess().start()
    try:
        yield a, b
    finally:
        a.stop(cleanup=True)
        b.stop(cleanup=True)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    make_rootfs(tmp_path)
    return tmp_path


@pytest.fixture
def server() -> Iterator[SSHServer]:
    with sshd("testhost") as found:
        yield found


@pytest.fixture
async def seeded(engines: tuple[EngineProcess, EngineProcess]) -> AsyncIterator[None]:
    for engine, cid in zip(engines, ("web-on-a", "db-on-b"), strict=True):
        client = Client(str(engine.address), "default")
        try:
            await seed_container(client, cid, "example.com/app:1")
        finally:
            client.close()
    yield


def fleet_app(engines: tuple[EngineProcess, EngineProcess], server: SSHServer) -> FleetApp:
    a, b = engines
    specs = [
        parse_url("a", str(a.address)),
        parse_url("b", f"unix://{b.address}"),
        parse_url("remote", f"ssh://testhost{b.address}"),
        parse_url("broken", "tcp://no-port"),
        parse_url("a", "/elsewhere.sock"),
        parse_url("refused", "ssh://nobody@testhost/x.sock"),
    ]
    settings = Settings(address="", namespace="default", teaching=True)
    return FleetApp(settings, FleetPlan(specs, server.ssh_config))


def node_rows(app: FleetApp) -> dict[str, list[Any]]:
    table = app.screen.query_one(NodesTable)
    return {str(key.value): table.get_row(key) for key in table.rows}


def all_up(app: FleetApp, *names: str) -> bool:
    return all(app.fleet.nodes[n].status.phase == UP for n in names)


def log_text(app: FleetApp) -> str:
    log = app.main.event_log
    return "\n".join(log.format(line).plain for line in log.buffer)


def logged_nodes(app: FleetApp) -> set[str]:
    return {line.node for line in app.main.event_log.buffer if line.topic}


def shown_log(app: FleetApp) -> str:
    return "\n".join(strip.text for strip in app.main.event_log.lines)


async def test_nodes_pane_switching_and_bad_rows(
    engines: tuple[EngineProcess, EngineProcess], server: SSHServer, seeded: None
) -> None:
    app = fleet_app(engines, server)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: all_up(app, "a", "b", "remote"), 30)
        await pilot.pause(0.2)
        rows = node_rows(app)
        assert set(rows) == {"a", "b", "remote", "broken", "a#2", "refused"}
        await until(pilot, lambda: "refused the key" in app.fleet.nodes["refused"].status.reason)
        assert app.fleet.nodes["broken"].status.phase == INVALID
        assert "needs a port" in str(rows["broken"][-1])
        assert "used twice" in str(rows["a#2"][-1])
        assert str(rows["a"][2]) == "ctrdeck"
        assert str(rows["a"][0]).startswith("▸")
        # The first node's containers show; `:node b` shows b's.
        containers = app.main.query_one("#containers", ResourceTable)
        await until(pilot, lambda: containers.row_count == 1)
        assert app.state.containers.keys() == {"web-on-a"}
        await pilot.press("colon", *"node b", "enter")
        await until(pilot, lambda: "db-on-b" in app.state.containers)
        assert app.selected == "b"
        await until(pilot, lambda: str(node_rows(app)["b"][0]).startswith("▸"))
        # `ctrl+n` moves on to the next node, in the operator's order.
        await pilot.press("ctrl+n")
        assert app.selected == "remote"
        await pilot.press("ctrl+n")
        assert app.selected == "broken"
        await pilot.pause(0.1)
        banner = str(app.main.query_one("#banner").render())
        assert "needs a port" in banner
        await pilot.press("colon", *"node nosuch", "enter")
        assert app.selected == "broken"
        # `:nodes` focuses the Nodes pane; enter there shows the node under the cursor.
        await pilot.press("colon", *"nodes", "enter")
        assert isinstance(app.main.focused, NodesTable)
        await pilot.press("question_mark")
        assert app.screen is not app.main
        await pilot.press("escape")
        await pilot.press("g", "enter")
        assert app.selected == "a"


async def test_all_nodes_view_and_actions_go_to_the_rows_node(
    engines: tuple[EngineProcess, EngineProcess], server: SSHServer, seeded: None
) -> None:
    app = fleet_app(engines, server)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: all_up(app, "a", "b", "remote"), 30)
        await pilot.press("0")
        table = app.main.query_one(f"#{ALL}", AllContainersTable)
        await until(pilot, lambda: table.row_count == 3)
        nodes_shown = sorted(str(table.get_row(k)[0]) for k in table.rows)
        assert nodes_shown == ["a", "b", "remote"]
        assert app.main.focused is table
        # Moving onto b's row selects node b; an action goes there and says so.
        while table.selected_node() != "b":
            await pilot.press("j")
        assert table.selected_key() == "db-on-b"
        assert app.selected == "b"
        await pilot.press("D")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        # The resync a second after each node came up may list it before the delete:
        # the delete's event still wins (tests/tui/test_syncer_races.py).
        await until(pilot, lambda: "db-on-b" not in app.fleet.nodes["b"].state.containers)
        # The same engine reached over ssh:// ("remote") loses it too.
        await until(pilot, lambda: "db-on-b" not in app.fleet.nodes["remote"].state.containers)
        await until(pilot, lambda: table.row_count == 1)
        assert "web-on-a" in app.fleet.nodes["a"].state.containers
        titles = [n.title for n in app._notifications]
        assert any(t.startswith("b · ") for t in titles), titles
        # `:node a` leaves the all-nodes view for node a's own table.
        await pilot.press("colon", *"node a", "enter")
        assert not app.main.all_nodes and app.selected == "a"


async def test_merged_log_with_node_column_filter_and_remote_teaching(
    engines: tuple[EngineProcess, EngineProcess], server: SSHServer, seeded: None
) -> None:
    app = fleet_app(engines, server)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: all_up(app, "a", "b", "remote"), 30)
        # Each node's backlog arrives on its own connection, the tunnel's last.
        await until(pilot, lambda: logged_nodes(app) >= {"a", "b", "remote"})
        assert any(
            text.split()[1] == "b" and "/containers/create" in text
            for text in log_text(app).splitlines()
        )
        app.main.event_log.set_filter("node:a")
        await pilot.pause(0.1)
        shown = shown_log(app)
        assert "db-on-b" not in shown and "web-on-a" in shown
        app.main.event_log.set_filter("")
        # Teaching on the ssh:// node is the command typed on the operator's shell.
        await pilot.press("colon", *"node remote", "enter")
        await until(pilot, lambda: "db-on-b" in app.state.containers)
        await pilot.press("colon", *"run example.com/app:1 true", "enter")
        await until(pilot, lambda: "ssh testhost ctr -a" in log_text(app))
        taught = [line for line in app.main.event_log.buffer if line.kind == "ctr"]
        assert taught and all(line.node == "remote" for line in taught)
        assert taught[0].detail.startswith("ssh testhost ctr -a ")


@pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")
@pytest.mark.skipif(BUSYBOX is None, reason="busybox-static is not installed")
async def test_a_remote_tasks_log_comes_through_the_engine_api(
    engines: tuple[EngineProcess, EngineProcess], server: SSHServer, workdir: Path
) -> None:
    """`l` on a task of the ssh:// node: its lines through `TaskDetails.Log` over the tunnel."""
    remote_engine = engines[1]
    client = Client(str(remote_engine.address), NAMESPACE)
    try:
        await run(client, workdir, "talker", "echo far; echo away; sleep 30")
        specs = [
            parse_url("remote", f"ssh://testhost{remote_engine.address}?namespace={NAMESPACE}")
        ]
        app = FleetApp(
            Settings(address="", namespace="default"), FleetPlan(specs, server.ssh_config)
        )
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: all_up(app, "remote"), 30)
            await until(pilot, lambda: app.state.containers["talker"].status == "RUNNING")
            await until(pilot, lambda: app.main.table("containers").selected_key() == "talker")
            await pilot.press("l")
            assert isinstance(app.screen, LogsScreen)
            logs = app.screen
            await until(pilot, lambda: lines_of(logs) == ["far", "away"])
            await pilot.press("escape")
    finally:
        with contextlib.suppress(Exception):
            await cleanup_namespace(client)
        client.close()
        remove_namespace_cgroups(NAMESPACE)
