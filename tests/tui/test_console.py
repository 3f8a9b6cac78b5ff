"""The console against a real engine subprocess, driven by Pilot.

Each test seeds the engine through `core.client` (real image blobs, containers
with a spec), opens the console on it and presses keys as an operator would,
then checks both the screen and the engine.
"""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from textual.widgets import Static

from core.api.containerd.services.images import v1 as images_api
from core.client import Client
from tests.engine_proc import EngineProcess
from tests.tui.conftest import AppFactory
from tests.tui.support import seed_container, seed_image, seed_namespace, tool_image, until
from tui.app import CtrdeckApp
from tui.screens.dialogs import ConfirmScreen, PickScreen
from tui.screens.help import HelpScreen
from tui.screens.inspect import InspectScreen
from tui.screens.main import MainScreen
from tui.screens.pull import PullScreen

BUSYBOX = "127.0.0.1:5000/library/busybox:1.36"
TOOLS = "127.0.0.1:5000/tools/sleeper:1"
SIZE = (120, 36)


def main(app: CtrdeckApp) -> MainScreen:
    return app.main


def rows(app: CtrdeckApp, pane: str) -> list[str]:
    table = main(app).table(pane)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


def plain(widget: Static) -> str:
    """What a Static shows, as plain text."""
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


def notices(app: CtrdeckApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


def log_text(app: CtrdeckApp) -> list[str]:
    log = main(app).event_log
    return [f"{line.topic} {line.detail}" for line in log.buffer]


async def image_names(client: Client) -> list[str]:
    resp = await client.images.list(images_api.ListImagesRequest())
    return sorted(i.name for i in resp.images)


async def test_main_screen_shows_the_node(client: Client, console: AppFactory) -> None:
    await seed_image(client, BUSYBOX)
    await seed_container(client, "web-1", BUSYBOX)
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app, "containers") == ["web-1"])
        await until(pilot, lambda: rows(app, "images") == [BUSYBOX])
        top = plain(app.main.query_one("#topbar", Static))
        assert "ns default" in top
        assert app.state.version in top
        assert app.main.query_one("#banner").has_class("hidden")
        # Snapshots and content come from their own services; the image's blobs are listed.
        await until(pilot, lambda: len(rows(app, "content")) == 3)


async def test_namespace_switch_by_command_and_pane(client: Client, console: AppFactory) -> None:
    await seed_image(client, BUSYBOX)
    k8s = client.with_namespace("k8s.io")
    await seed_namespace(client, "k8s.io")
    await seed_image(k8s, TOOLS, tool_image("k8s"))
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app, "images") == [BUSYBOX])
        await pilot.press("colon", *"ns k8s.io", "enter")
        await until(pilot, lambda: rows(app, "images") == [TOOLS])
        assert app.state.namespace == "k8s.io"
        # Back through the namespaces pane: focus it, pick `default`, enter.
        await until(pilot, lambda: len(rows(app, "namespaces")) == 2)
        app.main.table("namespaces").focus()
        await pilot.press("g", "enter")
        await until(pilot, lambda: rows(app, "images") == [BUSYBOX])
        assert app.state.namespace == "default"


async def test_filter_the_focused_table(client: Client, console: AppFactory) -> None:
    await seed_image(client, BUSYBOX)
    await seed_image(client, TOOLS, tool_image("filter"))
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: len(rows(app, "images")) == 2)
        await pilot.press("slash", *"sleeper")
        await until(pilot, lambda: rows(app, "images") == [TOOLS])
        assert "/ sleeper · 1 of 2" in str(app.main.query_one("#resources").border_subtitle)
        await pilot.press("enter")
        # The filter stays while the table has focus again; esc clears it.
        assert rows(app, "images") == [TOOLS]
        await pilot.press("escape")
        await until(pilot, lambda: len(rows(app, "images")) == 2)


async def test_command_line(client: Client, console: AppFactory) -> None:
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"images", "enter")
        assert app.main.focused_pane() == "images"
        await pilot.press("colon", *"snapshots", "enter")
        assert app.main.focused_pane() == "snapshots"
        await pilot.press("colon", *"bogus", "enter")
        await pilot.pause()
        assert any("unknown command :bogus" in n for n in notices(app))
        await pilot.press("colon", "q", "enter")
        await pilot.pause()
    assert app.return_code == 0


async def test_help_is_for_the_focused_pane(client: Client, console: AppFactory) -> None:
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert app.screen.pane == "images"
        text = plain(app.screen.query_one(Static))
        assert "image.run" in text and "container.kill" not in text
        await pilot.press("escape", "1", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "container.kill" in plain(app.screen.query_one(Static))


async def test_delete_image_asks_first(client: Client, console: AppFactory) -> None:
    await seed_image(client, BUSYBOX)
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: rows(app, "images") == [BUSYBOX])
        await pilot.press("D")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert isinstance(app.screen, MainScreen)
        assert await image_names(client) == [BUSYBOX]
        await pilot.press("D", "y")
        await until(pilot, lambda: rows(app, "images") == [])
        assert await image_names(client) == []
        await until(pilot, lambda: any("/images/delete" in line for line in log_text(app)))


async def test_read_only_hides_and_refuses(client: Client, console: AppFactory) -> None:
    await seed_image(client, BUSYBOX)
    await seed_container(client, "web-1", BUSYBOX)
    app = console(read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app, "containers") == ["web-1"])
        shown = {b.binding.id for b in app.active_bindings.values() if b.enabled and b.binding.show}
        assert "table.delete" not in shown and "container.kill" not in shown
        assert "table.inspect" in shown
        for key in ("D", "ctrl+k", "s", "space", "p"):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, MainScreen), key
        await pilot.press("2")
        await until(pilot, lambda: rows(app, "images") == [BUSYBOX])
        await pilot.press("D", "r")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        # Each refusal says so; the toasts stack no higher than half the screen, newest last.
        refused = [n for n in notices(app) if "read-only" in n]
        assert len(refused) >= 3 and refused[-1].startswith("read-only: 'run'")
        assert await image_names(client) == [BUSYBOX]
        await pilot.press("colon", *"pull busybox", "enter")
        await pilot.pause()
        assert not isinstance(app.screen, PullScreen)


async def test_event_from_another_client_reaches_the_log(
    engine: EngineProcess, client: Client, console: AppFactory
) -> None:
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.connected)
        other = Client(str(engine.address), "elsewhere")
        try:
            await seed_image(other, TOOLS, tool_image("elsewhere"))
            await seed_image(client, BUSYBOX)
        finally:
            other.close()
        await until(pilot, lambda: f"/images/create {TOOLS}" in log_text(app))
        await until(pilot, lambda: rows(app, "images") == [BUSYBOX])
        # The event log filters by namespace; the other namespace's line goes away.
        app.main.event_log.focus()
        await pilot.press("slash", *"ns:default", "enter")
        await until(pilot, lambda: "ns:default" in str(app.main.event_log.border_title))
        shown = [line.namespace for line in app.main.event_log.pending]
        assert "elsewhere" not in shown
        await pilot.press("space")
        assert "paused" in str(app.main.event_log.border_title)


async def test_inspect_image_and_container(client: Client, console: AppFactory) -> None:
    await seed_image(client, BUSYBOX)
    await seed_container(client, "web-1", BUSYBOX)
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app, "containers") == ["web-1"])
        await pilot.press("enter")
        assert isinstance(app.screen, InspectScreen)
        await until(pilot, lambda: len(app.screen.query(".section")) >= 4)
        titles = [str(w.border_title) for w in app.screen.query(".section")]
        assert titles[:3] == ["Container", "Task", "Spec"]
        spec = app.screen.query(".section")[2]
        assert isinstance(spec, Static)
        assert "/bin/sleep 1000" in plain(spec)
        await pilot.press("escape", "2")
        await until(pilot, lambda: rows(app, "images") == [BUSYBOX])
        await pilot.press("enter")
        await until(pilot, lambda: len(app.screen.query(".section")) >= 4)
        titles = [str(w.border_title) for w in app.screen.query(".section")]
        assert titles == ["Image", "Manifest", "Config", "Layers (1)"]


async def test_teaching_writes_the_ctr_line(client: Client, console: AppFactory) -> None:
    await seed_image(client, BUSYBOX)
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t", "2")
        await until(pilot, lambda: rows(app, "images") == [BUSYBOX])
        await pilot.press("D", "y")
        await until(pilot, lambda: rows(app, "images") == [])
        ctr_lines = [line.detail for line in app.main.event_log.buffer if line.kind == "ctr"]
        assert ctr_lines == [f"ctr -n default images rm {BUSYBOX}"]


async def test_keymap_file_remaps_a_binding(
    client: Client, console: AppFactory, tmp_path: Path
) -> None:
    await seed_image(client, BUSYBOX)
    app = console(keymap={"table.delete": "x"})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: rows(app, "images") == [BUSYBOX])
        await pilot.press("D")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)


async def test_kill_without_a_task_explains_itself(client: Client, console: AppFactory) -> None:
    await seed_image(client, BUSYBOX)
    await seed_container(client, "web-1", BUSYBOX)
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: rows(app, "containers") == ["web-1"])
        await pilot.press("ctrl+k")
        await pilot.pause()
        assert not isinstance(app.screen, PickScreen)
        assert "web-1 has no task: nothing to kill" in notices(app)


async def test_lost_engine_shows_a_banner_and_reconnects(
    engine: EngineProcess, console: AppFactory
) -> None:
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.connected)
        banner = app.main.query_one("#banner")
        engine.stop()
        await until(pilot, lambda: not banner.has_class("hidden"))
        assert isinstance(banner, Static)
        assert "engine lost" in plain(banner)
        again = EngineProcess(base=engine.base).start()
        try:
            await until(pilot, lambda: banner.has_class("hidden"), timeout=30)
            assert app.state.connected
        finally:
            # The fixture stops the engine it started, not this second one.
            again.stop()
