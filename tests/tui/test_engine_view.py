"""The engine's health in the console: the top bar's summary and the `:engine` view.

Against the real engine subprocess the top bar gains the uptime and plugin
counts once they are known (and drops them when the bar is too narrow), and
`:engine`, `e` and the palette open the view with every plugin the engine
lists, btrfs among them as skip on a non-btrfs root. Against Debian's
containerd, which does not say when it started, the bar shows the plugins and
no uptime. The summary itself is pure and tested on fixed statuses, and the
view has SVG snapshots on fixed data.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from core.client import Client
from core.status import EngineStatus, PluginStatus
from tests.engine_proc import Running
from tests.engine_proc import containerd as start_containerd
from tests.tui.conftest import AppFactory
from tests.tui.fixed import ADDRESS, NOW, fixed_app
from tests.tui.support import until
from tests.tui.test_console import plain
from tui.app import CtrdeckApp, Settings
from tui.palette import ConsoleCommands
from tui.screens.engine import EngineScreen, health_text
from tui.screens.main import MainScreen
from tui.state import ENGINE

WIDE = (200, 36)
SNAPSHOTTER = "io.containerd.snapshotter.v1"


def top(app: CtrdeckApp) -> str:
    return plain(app.main.query_one("#topbar", Static))


def view_text(screen: EngineScreen) -> str:
    return "\n".join(plain(s) for s in screen.query(Static))


async def engine_view(pilot: Pilot[Any]) -> EngineScreen:
    """The engine view on top, once it has loaded."""
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, EngineScreen) and app.screen.status)
    screen = app.screen
    assert isinstance(screen, EngineScreen)
    await until(pilot, lambda: "version" in view_text(screen))
    return screen


def fixed_status() -> EngineStatus:
    """What this engine reports on a non-btrfs root, up for 3h02m at the fixed clock."""
    ok = [
        ("io.containerd.event.v1", "exchange"),
        ("io.containerd.content.v1", "content"),
        (SNAPSHOTTER, "native"),
        (SNAPSHOTTER, "overlayfs"),
        ("io.containerd.metadata.v1", "sqlite"),
        ("io.containerd.gc.v1", "scheduler"),
        ("io.containerd.differ.v1", "walking"),
        *(
            ("io.containerd.runtime.v2", name)
            for name in ("runtime.runc", "runtime.crun", "runtime.runsc", "task")
        ),
        ("io.containerd.monitor.v1", "cgroups"),
        *(
            ("io.containerd.grpc.v1", name)
            for name in ("containers", "content", "diff", "events", "healthcheck", "images")
        ),
        *(
            ("io.containerd.grpc.v1", name)
            for name in ("introspection", "leases", "namespaces", "snapshots", "tasks", "version")
        ),
    ]
    btrfs = PluginStatus(
        SNAPSHOTTER,
        "btrfs",
        "skip",
        f"skip plugin: path /var/lib/ctrdeck/{SNAPSHOTTER}.btrfs must be a btrfs filesystem "
        "to be used with the btrfs snapshotter",
    )
    plugins = [PluginStatus(t, i, "ok") for t, i in ok[:2]] + [btrfs]
    plugins += [PluginStatus(t, i, "ok") for t, i in ok[2:]]
    return EngineStatus(
        address=ADDRESS,
        answering=True,
        checked_at=NOW,
        version="1.6.20+ctrdeck.0.1.0",
        revision="ctrdeck-0.1.0",
        uuid="5d3c1e0a-8f47-4b1e-9a52-0c6f2b7d9e31",
        started_at=NOW - timedelta(hours=3, minutes=2),
        root="/var/lib/ctrdeck",
        state="/run/ctrdeck",
        plugins=plugins,
    )


def fixed_app_with_health() -> CtrdeckApp:
    app = fixed_app()
    app.state.engine = fixed_status()
    return app


# --- the summary -----------------------------------------------------------------


def test_health_says_only_what_is_known() -> None:
    status = fixed_status()
    assert health_text(status).plain == "up 3h 2m · plugins 24 ok 1 skip"
    containerd = replace(status, started_at=None)
    assert health_text(containerd).plain == "plugins 24 ok 1 skip"
    broken = replace(
        status,
        plugins=[*status.plugins, PluginStatus("io.containerd.grpc.v1", "cri", "error", "boom")],
    )
    text = health_text(broken, error_style="bold red")
    assert text.plain == "up 3h 2m · plugins 24 ok 1 skip 1 error"
    assert any(span.style == "bold red" for span in text.spans)
    assert health_text(replace(status, plugins=[])).plain == "up 3h 2m"
    down = EngineStatus(ADDRESS, answering=False, checked_at=NOW, problem="no socket")
    assert health_text(down).plain == ""
    assert health_text(None).plain == ""


# --- against the real engine --------------------------------------------------------


async def test_header_shows_uptime_and_plugin_counts(console: AppFactory) -> None:
    app = console()
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: app.state.engine is not None)
        status = app.state.engine
        assert status is not None and status.started_at is not None
        counts = status.plugin_counts()
        assert counts["skip"] >= 1 and counts["error"] == 0
        summary = f"plugins {counts['ok']} ok {counts['skip']} skip"
        await until(pilot, lambda: summary in top(app))
        bar = top(app)
        assert " · up " in bar and "unknown" not in bar
        # Between the engine's version and the namespace, where the engine's facts are.
        assert bar.index(app.state.version) < bar.index(summary) < bar.index("ns default")

        # No room at 80 columns: the health goes first, the rest of the bar stays.
        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: summary not in top(app))
        assert "ns default" in top(app) and "? help" in top(app)
        await pilot.resize_terminal(*WIDE)
        await until(pilot, lambda: summary in top(app))


async def test_engine_view_lists_every_plugin(console: AppFactory) -> None:
    app = console()
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: app.state.engine is not None)
        await pilot.press("colon", *"engine", "enter")
        screen = await engine_view(pilot)
        status = screen.status
        assert status is not None and status.answering
        text = view_text(screen)
        for fact in (status.version, status.revision, status.uuid, status.address):
            assert fact in text
        assert str(status.root) in text and str(status.state) in text
        assert "unknown" not in text
        snapshotters = {p.id: p for p in status.plugins if p.type == SNAPSHOTTER}
        assert snapshotters["overlayfs"].status == "ok"
        assert snapshotters["btrfs"].status == "skip"
        assert "btrfs" in text and "skip plugin" in text
        assert text.count(SNAPSHOTTER) >= len(snapshotters)
        assert f"Plugins ({len(status.plugins)}:" in " ".join(
            str(s.border_title) for s in screen.query(".section")
        )

        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        # The key opens the same view.
        await pilot.press("e")
        await engine_view(pilot)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))


# --- against Debian's containerd ---------------------------------------------------------


@pytest.fixture
async def containerd() -> AsyncIterator[Running]:
    if shutil.which("containerd") is None:
        pytest.skip("Debian's containerd binary is missing (apt-get install containerd)")
    with start_containerd() as running:
        yield running


async def test_containerd_gets_plugins_and_no_uptime(containerd: Running) -> None:
    address = str(containerd.address)
    app = CtrdeckApp(
        Settings(address=address, namespace="default"),
        connect=lambda: Client(address, "default"),
    )
    async with app.run_test(size=(240, 36)) as pilot:
        await until(pilot, lambda: app.state.engine is not None)
        status = app.state.engine
        assert status is not None and status.started_at is None
        await until(pilot, lambda: " · plugins " in top(app))
        assert " up " not in top(app) and "unknown" not in top(app)
        await pilot.press("colon", *"engine", "enter")
        screen = await engine_view(pilot)
        assert "io.containerd.grpc.v1" in view_text(screen)


# --- fixed data: the palette and the snapshots ---------------------------------------------


async def test_palette_opens_the_engine_view() -> None:
    app = fixed_app_with_health()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        entries = ConsoleCommands(app.main)._entries()
        assert any(name == "console: engine" and "app.engine" in h for name, h, _cb in entries)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"console: engine")
        await pilot.pause(0.5)
        await pilot.press("enter")
        screen = await engine_view(pilot)
        # Without a connection the view shows the last status the node had.
        assert screen.status == app.state.engine


async def settle(pilot: Pilot[Any]) -> None:
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause(0.3)


def test_header_with_health_snapshot(snap_compare: Any) -> None:
    async def shown(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        app = pilot.app
        assert isinstance(app, CtrdeckApp)
        app.state.mark(ENGINE)
        await settle(pilot)

    assert snap_compare(fixed_app_with_health(), terminal_size=(160, 30), run_before=shown)


def test_engine_view_snapshot(snap_compare: Any) -> None:
    async def opened(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("colon", *"engine", "enter")
        await engine_view(pilot)
        await settle(pilot)

    assert snap_compare(fixed_app_with_health(), terminal_size=(120, 36), run_before=opened)
