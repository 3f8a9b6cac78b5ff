"""Keys typed ahead: a burst from one terminal read lands where slow typing would put it.

Each test hands the console a whole string at once, the way one read of the
terminal delivers it (a paste without bracketed paste, a laggy SSH link): the
bytes go through Textual's own xterm parser and driver, so the keys reach
the app back to back, before any of them is handled. Then the test checks
that the text landed in the input or dialog that the first key opened, and
that no key fired an action elsewhere (the engine is asked too).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from textual import events
from textual._xterm_parser import XTermParser
from textual.pilot import Pilot
from textual.widgets import Input

from core.client import Client
from tests.engine_proc import EngineProcess
from tests.helpers import ctr
from tests.registry import Registry
from tests.tui.conftest import AppFactory
from tests.tui.support import chatty_image, seed_image, seed_namespace, tool_image, until
from tui.app import CtrdeckApp
from tui.screens.dialogs import ConfirmScreen, PickScreen, RunScreen
from tui.screens.logs import LogsScreen
from tui.screens.main import MainScreen
from tui.screens.pull import PullScreen

BUSYBOX = "127.0.0.1:5000/library/busybox:1.36"
TOOLS = "127.0.0.1:5000/tools/sleeper:1"
SIZE = (120, 36)
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"


def terminal_read(app: CtrdeckApp, data: str) -> int:
    """Deliver `data` as one read of the terminal: parsed by Textual, posted back to back.

    Returns how many keys and pastes the app has settled once it has settled these too.
    """
    driver = app._driver
    assert driver is not None
    parsed = list(XTermParser().feed(data))
    for event in parsed:
        driver.process_message(event)
    return app.keys_settled + len(parsed)


def burst(app: CtrdeckApp, *keys: str) -> int:
    """Post key events straight onto the app's queue, with no turn for the app in between."""
    for key in keys:
        char = key if len(key) == 1 else None
        app.post_message(events.Key(key, char))
    return app.keys_settled + len(keys)


async def settled(pilot: Pilot[object], app: CtrdeckApp, count: int) -> None:
    """Wait until the app has settled `count` keys in all (what `terminal_read` returned)."""
    await until(pilot, lambda: app.keys_settled >= count and app.keys_held == 0)
    await pilot.pause()


def focused_input(app: CtrdeckApp) -> Input:
    focused = app.focused
    assert isinstance(focused, Input), focused
    return focused


def notices(app: CtrdeckApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


@pytest.fixture
def created(engine: EngineProcess, registry: Registry) -> Iterator[str]:
    """A container, pulled and created with ctr, whose task has never started."""
    ref = registry.push(chatty_image(), "tools/typeahead", "1")
    ctr(engine.address, "images", "pull", "--plain-http", ref)
    ctr(engine.address, "containers", "create", ref, "ta1")
    yield "ta1"
    for args in (("task", "kill", "-s", "SIGKILL", "ta1"), ("task", "rm", "-f", "ta1")):
        ctr(engine.address, *args, check=False)
    ctr(engine.address, "containers", "rm", "ta1", check=False)


async def test_slash_then_s_filters_and_never_starts_the_task(
    engine: EngineProcess, console: AppFactory, created: str
) -> None:
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        table = app.main.table("containers")
        await until(pilot, lambda: table.selected_key() == created)
        await settled(pilot, app, terminal_read(app, "/s"))
        assert focused_input(app).id == "filter"
        assert focused_input(app).value == "s"
        assert table.filter_text == "s"
        # Long enough for a start to have reached the engine and come back as an event.
        await pilot.pause(1.0)
        assert not any("started" in n for n in notices(app))
        assert created not in ctr(engine.address, "task", "ls").stdout
        assert app.state.containers[created].status in ("", "STOPPED", "UNKNOWN")


async def test_command_line_typed_ahead(client: Client, console: AppFactory) -> None:
    await seed_image(client, BUSYBOX)
    await seed_namespace(client, "scale")
    await seed_image(client.with_namespace("scale"), TOOLS, tool_image("scale"))
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: BUSYBOX in app.state.images)
        await settled(pilot, app, terminal_read(app, ":ns scale\r"))
        await until(pilot, lambda: app.state.namespace == "scale")
        await until(pilot, lambda: list(app.state.images) == [TOOLS])
        assert isinstance(app.screen, MainScreen)
        assert app.main.query_one("#cmdline").has_class("hidden")
        assert app.main.focused_pane() == "containers"
        # And straight on, in one more read: a jump, then a filter on the new pane.
        await settled(pilot, app, terminal_read(app, ":images\r/sleep"))
        assert app.main.focused_pane() == "images"
        assert focused_input(app).value == "sleep"
        assert app.main.table("images").filter_text == "sleep"


async def test_filter_typed_ahead_as_one_burst(client: Client, console: AppFactory) -> None:
    await seed_image(client, BUSYBOX)
    await seed_image(client, TOOLS, tool_image("burst"))
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(app.state.images) == 2)
        await settled(pilot, app, burst(app, "2", "slash", *"busy"))
        assert focused_input(app).value == "busy"
        table = app.main.table("images")
        assert [str(table.get_row_at(i)[0]) for i in range(table.row_count)] == [BUSYBOX]


async def test_pull_then_paste_lands_in_the_reference(client: Client, console: AppFactory) -> None:
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.connected)
        await settled(pilot, app, terminal_read(app, f"p{PASTE_START}{TOOLS}{PASTE_END}"))
        assert isinstance(app.screen, PullScreen)
        assert focused_input(app).value == TOOLS
        # Typed rather than pasted, the same.
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        await settled(pilot, app, terminal_read(app, f"p{BUSYBOX}"))
        assert isinstance(app.screen, PullScreen)
        assert focused_input(app).value == BUSYBOX


async def test_a_dialog_gets_the_keys_after_the_one_that_opened_it(
    client: Client, console: AppFactory
) -> None:
    await seed_image(client, BUSYBOX)
    await seed_image(client, TOOLS, tool_image("dialog"))
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(app.state.images) == 2)
        # `D` then `n`: the confirmation gets the `n`, and nothing is deleted.
        await settled(pilot, app, terminal_read(app, "2Dn"))
        assert isinstance(app.screen, MainScreen)
        assert len(app.state.images) == 2
        # `D` then `y`: the confirmation gets the `y`.
        await settled(pilot, app, terminal_read(app, "gDy"))
        await until(pilot, lambda: len(app.state.images) == 1)
        # `n` opens the namespace picker; `j` moves in it, not in the table behind it.
        await seed_namespace(client, "zzz")
        await until(pilot, lambda: "zzz" in app.state.namespaces)
        await settled(pilot, app, terminal_read(app, "nj"))
        assert isinstance(app.screen, PickScreen)
        assert app.screen.query_one("OptionList").highlighted == 1
        await pilot.press("escape")
        assert not isinstance(app.screen, ConfirmScreen)


async def test_paste_works_in_every_input(
    engine: EngineProcess, client: Client, console: AppFactory, created: str
) -> None:
    app = console()
    pasted = "pasted text"
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.table("containers").selected_key() == created)
        for opener, where in ((":", "cmdline"), ("/", "filter")):
            await settled(
                pilot, app, terminal_read(app, f"{opener}{PASTE_START}{pasted}{PASTE_END}")
            )
            assert focused_input(app).id == where
            assert focused_input(app).value == pasted
            await pilot.press("escape")
        await settled(pilot, app, terminal_read(app, f"l/{PASTE_START}{pasted}{PASTE_END}"))
        assert isinstance(app.screen, LogsScreen)
        assert focused_input(app).value == pasted
        await pilot.press("escape", "escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        await settled(pilot, app, terminal_read(app, f"2r{PASTE_START}-x{PASTE_END}"))
        assert isinstance(app.screen, RunScreen)
        assert focused_input(app).value.endswith("-x")
        await pilot.press("escape")
        await settled(pilot, app, terminal_read(app, f"\x10{PASTE_START}delete{PASTE_END}"))
        assert focused_input(app).value == "delete"
