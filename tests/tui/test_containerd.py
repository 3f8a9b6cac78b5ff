"""The console against Debian's real containerd, on temp dirs of its own.

containerd is seeded through `core.client` (an image with real blobs, a
container, a second namespace, a snapshot) and the console must show what
Debian's `ctr` lists there; the event log starts empty (containerd skips the
console's request for history); an event from another client reaches the screen;
a pull says plainly that containerd has no server-side pull, with the
`ctr` line that does it instead; the log view says containerd keeps no task
log rather than failing; and a resync, which reads containerd's reply bytes
itself, still finds a label changed behind the console's back.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from textual.widgets import Input, RichLog

from core.api.containerd.services.containers import v1 as containers_api
from core.api.containerd.services.snapshots import v1 as snapshots_api
from core.client import Client
from tests.engine_proc import Running
from tests.engine_proc import containerd as start_containerd
from tests.helpers import ctr
from tests.tui.support import seed_container, seed_image, seed_namespace, until
from tests.tui.test_console import BUSYBOX, log_text, rows
from tests.tui.test_syncer_cost import relabelled
from tui.app import CtrdeckApp, Settings
from tui.screens.logs import LogsScreen
from tui.screens.pull import PullScreen
from tui.state import NodeState
from tui.syncer import Syncer

pytestmark = pytest.mark.skipif(
    shutil.which("containerd") is None,
    reason="Debian's containerd binary is missing (apt-get install containerd)",
)

SIZE = (120, 36)
SNAPSHOTTER = "native"


@pytest.fixture
async def containerd() -> AsyncIterator[tuple[Running, Client]]:
    """containerd on its own root, state and socket; stopped and removed afterwards."""
    with start_containerd() as running:
        client = Client(str(running.address), "default")
        try:
            yield running, client
        finally:
            client.close()


def ctr_column(address: str, *args: str, namespace: str = "default") -> set[str]:
    """The first column of a `ctr … ls` listing, without its header."""
    out = ctr(address, *args, namespace=namespace).stdout.splitlines()
    return {line.split()[0] for line in out[1:] if line.strip()}


async def test_the_console_shows_what_ctr_shows_on_containerd(
    containerd: tuple[Running, Client],
) -> None:
    running, client = containerd
    address = str(running.address)
    await seed_image(client, BUSYBOX)
    await seed_container(client, "web-1", BUSYBOX)
    await seed_namespace(client, "k8s.io")
    # A gc root: containerd collects an active snapshot nothing else refers to.
    await client.snapshots.prepare(
        snapshots_api.PrepareSnapshotRequest(
            snapshotter=SNAPSHOTTER, key="scratch", labels={"containerd.io/gc.root": "now"}
        )
    )
    settings = Settings(address=address, namespace="default")
    app = CtrdeckApp(settings, connect=lambda: Client(address, "default"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app, "containers") == ["web-1"])
        assert app.state.version and "ctrdeck" not in app.state.version
        # containerd skips the console's request for history: the log starts empty.
        assert not any("web-1" in t for t in log_text(app))
        namespaces = ctr_column(address, "namespaces", "ls")
        await until(pilot, lambda: set(app.state.namespaces) == namespaces)
        assert set(rows(app, "containers")) == ctr_column(address, "containers", "ls")
        assert set(rows(app, "images")) == ctr_column(address, "images", "ls")
        await until(pilot, lambda: len(rows(app, "content")) == 3)
        snapshots = ctr_column(address, "snapshots", "--snapshotter", SNAPSHOTTER, "ls")
        assert snapshots == {"scratch"}
        await pilot.press("3")
        await until(pilot, lambda: "scratch" in rows(app, "snapshots"))

        # An event from another client: its log line, then its row.
        await seed_container(client, "web-2", BUSYBOX)
        await until(pilot, lambda: any("/containers/create web-2" in t for t in log_text(app)))
        await pilot.press("1")
        await until(pilot, lambda: rows(app, "containers") == ["web-1", "web-2"])
        await until(pilot, lambda: app.state.namespaces["default"].containers == 2)

        # containerd pulls in its clients: the console says so and gives the ctr line.
        await pilot.press("p")
        assert isinstance(app.screen, PullScreen)
        app.screen.query_one("#pull-ref", Input).value = "127.0.0.1:5000/library/busybox:1.36"
        await pilot.click("#pull-go")
        job = app.pull_job
        assert job is not None
        await until(pilot, lambda: job.finished)
        assert f"The engine at {address} has no server-side pull" in job.error
        assert f"ctr -a {address} -n default images pull" in job.error
        # It says so in the pull's dialog, once: no toast repeats it.
        assert isinstance(app.screen, PullScreen) and app.screen.job is job
        assert not any(job.error in str(n.message) for n in app._notifications)


async def test_logs_say_containerd_keeps_none(containerd: tuple[Running, Client]) -> None:
    """containerd has no TaskDetails.Log (ctrdeck's own) and keeps no task log: said in words."""
    running, client = containerd
    address = str(running.address)
    await seed_image(client, BUSYBOX)
    await seed_container(client, "web-1", BUSYBOX)
    app = CtrdeckApp(
        Settings(address=address, namespace="default"),
        connect=lambda: Client(address, "default"),
    )
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app, "containers") == ["web-1"])
        await until(pilot, lambda: app.main.table("containers").selected_key() == "web-1")
        await pilot.press("l")
        assert isinstance(app.screen, LogsScreen)
        view = app.screen.query_one("#logs-view", RichLog)
        await until(pilot, lambda: bool(view.lines))
        shown = " ".join(s.text for s in view.lines)
        assert shown.startswith(
            "logs are not available from this engine (containerd keeps no task log;"
        )
        # A plain answer, not a failure: no error toast.
        assert not any(n.severity == "error" for n in app._notifications)


async def test_a_resync_on_containerd_finds_a_label_changed_behind_its_back(
    containerd: tuple[Running, Client],
) -> None:
    """The resync reads containerd's reply bytes itself: what changed still reaches the rows."""
    running, client = containerd
    address = str(running.address)
    ids = ["calm-1", "calm-2", "calm-3"]
    for cid in ids:
        await seed_container(client, cid, BUSYBOX)
    await client.containers.update(relabelled("calm-2", {"b": "2", "a": "1", "c": "3"}))
    base = Client(address, "default")
    state = NodeState("default", address)
    # Not running: no events reach it, so the change below is missed and left to the resync.
    syncer = Syncer(base, state, on_log=lambda _: None, on_connection=lambda *_: None)
    try:
        await syncer.resync()
        assert set(state.containers) == set(ids)
        assert state.containers["calm-2"].labels == {"a": "1", "b": "2", "c": "3"}
        await syncer.resync()
        await client.containers.update(relabelled("calm-3", {"tier": "web"}))
        await syncer.resync()
        assert state.containers["calm-3"].labels == {"tier": "web"}
        assert state.containers["calm-2"].labels == {"a": "1", "b": "2", "c": "3"}
        assert state.containers["calm-1"].image == BUSYBOX
        await client.containers.delete(containers_api.DeleteContainerRequest(id="calm-1"))
        await syncer.resync()
        assert set(state.containers) == {"calm-2", "calm-3"}
    finally:
        base.close()
