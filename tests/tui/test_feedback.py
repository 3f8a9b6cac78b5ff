"""What the console tells the operator, against a real engine subprocess.

Error toasts are short and never stack over half the screen (a long message
goes whole to the event log); a new console's event log starts with the
engine's recent history; deleting an image says which containers still use
it; the header's uptime is written as the engine view writes it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from textual.widgets import Label, Static
from textual.widgets._toast import Toast, ToastRack

from core.client import Client
from core.status import format_uptime
from tests.engine_proc import EngineProcess
from tests.tui.conftest import AppFactory
from tests.tui.fixed import NOW
from tests.tui.support import seed_container, seed_image, until
from tests.tui.test_console import BUSYBOX, TOOLS, log_text, plain
from tests.tui.test_engine_view import engine_view, fixed_app_with_health, top
from tui import operations
from tui.app import CtrdeckApp
from tui.screens.dialogs import ConfirmScreen
from tui.state import LogLine

SIZE = (120, 36)


def toasts(app: CtrdeckApp) -> list[Any]:
    return list(app._notifications)


async def test_error_toasts_are_short_and_never_cover_half_the_screen(
    client: Client, console: AppFactory
) -> None:
    app = console()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await until(pilot, lambda: app.state.connected)
        scoped = client.with_namespace("default")
        # Twenty failures at once, each with a long engine message naming a long reference.
        for i in range(20):
            ref = f"127.0.0.1:5000/missing/image-{i}:" + "t" * 300
            app.main.perform("delete", lambda r=ref: operations.delete_image(scoped, r), "")
        await until(pilot, lambda: len(toasts(app)) >= 2)
        await pilot.pause(0.3)
        shown = toasts(app)
        assert 2 <= len(shown) < 20
        assert all(len(n.message) <= 200 for n in shown)
        assert all(n.message.endswith("(all of it in the event log)") for n in shown)
        rack = app.screen.get_child_by_type(ToastRack)
        assert rack.outer_size.height <= SIZE[1] // 2
        assert sum(t.outer_size.height for t in rack.query(Toast)) <= SIZE[1] // 2
        # The whole message, once for each failure, in the event log.
        whole = [line.detail for line in app.main.event_log.buffer if line.kind == "note"]
        assert sum("t" * 300 in detail for detail in whole) == 20

        # The same message again replaces its toast instead of stacking a copy.
        app.clear_notifications()
        for _ in range(5):
            app.notify("the same thing failed", severity="error", title="again")
        await pilot.pause(0.1)
        assert [n.message for n in toasts(app)] == ["the same thing failed"]


async def test_a_new_console_starts_with_recent_history(
    client: Client, console: AppFactory
) -> None:
    await seed_image(client, BUSYBOX)
    await seed_container(client, "before-1", BUSYBOX)
    await seed_container(client, "before-2", BUSYBOX)
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: any("before-2" in t for t in log_text(app)))
        lines = log_text(app)
        assert any(t.startswith("/images/create " + BUSYBOX) for t in lines)
        assert lines.index("/containers/create before-1  " + BUSYBOX) < lines.index(
            "/containers/create before-2  " + BUSYBOX
        )
        # History goes to the log only: the rows come from the listing, once each.
        assert sorted(app.state.containers) == ["before-1", "before-2"]
        # Live events follow, and a reconnect does not write the history twice.
        await seed_container(client, "after-1", BUSYBOX)
        await until(pilot, lambda: any("after-1" in t for t in log_text(app)))
        assert app.syncer is not None
        app.syncer.request_resync()
        app.run_worker(app.syncer._follow(), group="again", exit_on_error=False)
        await pilot.pause(1.0)
        assert sum("/containers/create before-1" in t for t in log_text(app)) == 1
        assert sum("/containers/create after-1" in t for t in log_text(app)) == 1


async def test_deleting_an_image_in_use_names_its_containers(
    client: Client, console: AppFactory
) -> None:
    await seed_image(client, BUSYBOX)
    await seed_image(client, TOOLS)
    for cid in ("web-1", "web-2"):
        await seed_container(client, cid, BUSYBOX)
    await seed_container(client, "tool-1", TOOLS)
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(app.state.containers) == 3)
        await pilot.press("2")
        await until(pilot, lambda: app.main.table("images").row_count == 2)
        app.main.table("images").select_key(BUSYBOX)
        await pilot.press("D")
        assert isinstance(app.screen, ConfirmScreen)
        detail = plain(app.screen.query_one(".dialog-detail", Label))
        assert "Still used by 2 containers: web-1, web-2." in detail
        assert "tool-1" not in detail
        await pilot.press("n")
        # An image nothing uses says only what goes.
        await seed_image(client, "127.0.0.1:5000/unused:1")
        await until(pilot, lambda: app.main.table("images").row_count == 3)
        app.main.table("images").select_key("127.0.0.1:5000/unused:1")
        await pilot.press("D")
        assert isinstance(app.screen, ConfirmScreen)
        detail = plain(app.screen.query_one(".dialog-detail", Label))
        assert "Still used" not in detail and "go once unused" in detail
        await pilot.press("n")


async def test_header_uptime_is_written_as_the_engine_view_writes_it() -> None:
    app = fixed_app_with_health()
    status = app.state.engine
    assert status is not None and status.started_at is not None
    uptime = format_uptime(NOW - status.started_at)
    async with app.run_test(size=(200, 36)) as pilot:
        await pilot.pause()
        app.main.retitle()
        assert f"up {uptime} ·" in top(app)
        await pilot.press("e")
        screen = await engine_view(pilot)
        text = "\n".join(plain(s) for s in screen.query(Static))
        assert f"uptime    {uptime} (since" in text.replace("\xa0", " ")


async def test_the_console_says_it_started_the_bundled_engine(engine: EngineProcess) -> None:
    from tui import launcher
    from tui.app import Settings

    address = str(engine.address)
    log_path = engine.state / "ctrdeck.log"
    app = CtrdeckApp(
        Settings(address=address, namespace="default"),
        connect=lambda: Client(address, "default"),
        launched=launcher.EngineLaunch(address=address, started=True, log_path=log_path),
        log_lines=[LogLine(datetime.now().astimezone(), "default", "", "hello", "note")],
    )
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.connected)
        notes = [line.detail for line in app.main.event_log.buffer if line.kind == "note"]
        assert any(
            f"started the bundled engine: socket {address}, log {log_path}" in n for n in notes
        )
        toast = next(n for n in toasts(app) if n.title == "started the bundled engine")
        assert toast.message == f"socket {address}\nlog {log_path}"
