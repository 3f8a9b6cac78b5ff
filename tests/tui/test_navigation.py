"""Keys and navigation against a real engine: vim's `k`, kill on `ctrl+k`, tabs, namespaces,
the palette, a footer that offers only what applies, and zoom.

Containers are pulled from a registry on 127.0.0.1 and run with Debian's `ctr`,
so the console sees real tasks (running, killed with an exit status); the
test checks the engine with `ctr` as well as the screen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot
from textual.widgets import ContentSwitcher
from textual.widgets._footer import FooterKey

from core.client import Client
from tests.engine_proc import EngineProcess
from tests.helpers import ctr
from tests.registry import Registry
from tests.tui.conftest import AppFactory
from tests.tui.support import chatty_image, seed_container, seed_image, seed_namespace, until
from tui.app import CtrdeckApp
from tui.screens.dialogs import ConfirmScreen, PickScreen, RunScreen
from tui.screens.inspect import InspectScreen
from tui.screens.main import MainScreen
from tui.screens.pull import PullScreen

BUSYBOX = "127.0.0.1:5000/library/busybox:1.36"
SIZE = (120, 36)
IDS = ("nav-1", "nav-2")


@pytest.fixture
def running(engine: EngineProcess, registry: Registry) -> Iterator[tuple[str, str]]:
    """Two containers with running tasks, started by ctr."""
    ref = registry.push(chatty_image(), "tools/nav", "1")
    ctr(engine.address, "images", "pull", "--plain-http", ref)
    for cid in IDS:
        ctr(engine.address, "run", "-d", ref, cid)
    yield IDS
    for cid in IDS:
        for args in (("task", "kill", "-s", "SIGKILL", cid), ("task", "rm", "-f", cid)):
            ctr(engine.address, *args, check=False)
        ctr(engine.address, "containers", "rm", cid, check=False)


def status(app: CtrdeckApp, cid: str) -> str:
    row = app.state.containers.get(cid)
    return "" if row is None else row.status


def ctr_tasks(address: Any) -> dict[str, str]:
    lines = ctr(address, "task", "ls").stdout.splitlines()[1:]
    return {f[0]: f[-1] for f in (line.split() for line in lines) if f}


def footer(app: CtrdeckApp) -> dict[str, str]:
    """The footer's keys as shown: key display to description."""
    return {
        str(k.key_display): str(k.description) for k in app.screen.query(FooterKey) if k.display
    }


def shown_tab(app: CtrdeckApp) -> str:
    """The tab that the strip above the tables, as drawn, highlights."""
    resources = app.main.query_one("#resources")
    border = app.main._compositor.render_strips()[resources.region.y]
    marked = [
        seg.text.strip()
        for seg in border
        if seg.style is not None and seg.style.bold and seg.text.strip()[:1].isdigit()
    ]
    assert len(marked) == 1, list(border)
    return marked[0].split(" ", 1)[1].lower()


def drawn(app: CtrdeckApp, y: int) -> str:
    """Line `y` of the screen as drawn."""
    return app.main._compositor.render_strips()[y].text


def table_line(app: CtrdeckApp, pane: str, row: int) -> str:
    table = app.main.table(pane)
    return drawn(app, table.region.y + 1 + row)  # the header comes first


async def all_running(pilot: Pilot[Any], app: CtrdeckApp) -> None:
    await until(pilot, lambda: all(status(app, cid) == "RUNNING" for cid in IDS), timeout=30)


async def test_k_moves_up_and_ctrl_k_kills_from_sigterm(
    engine: EngineProcess, console: AppFactory, running: tuple[str, str]
) -> None:
    first, second = running
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await all_running(pilot, app)
        table = app.main.table("containers")
        # What once sent SIGSTOP: G, k k k, enter. Now it moves up and inspects.
        await pilot.press("G")
        assert table.selected_key() == second
        await pilot.press("k", "k", "k", "enter")
        assert table.selected_key() == first
        assert isinstance(app.screen, InspectScreen)
        await pilot.press("escape")
        assert ctr_tasks(engine.address) == {first: "RUNNING", second: "RUNNING"}

        await pilot.press("ctrl+k")
        assert isinstance(app.screen, PickScreen)
        signals = app.screen.query_one("StopAtEnds")
        assert app.screen.options[signals.highlighted][0] == "SIGTERM"
        # Up from the first signal stays there: the list does not wrap to SIGCONT or SIGSTOP.
        await pilot.press("k", "k", "up")
        assert app.screen.options[signals.highlighted][0] == "SIGTERM"
        await pilot.press("G")
        last = signals.highlighted
        await pilot.press("j", "down")
        assert signals.highlighted == last
        await pilot.press("g", "j", "enter")  # SIGKILL, second in the list
        await until(pilot, lambda: status(app, first) == "STOPPED", timeout=30)
        assert app.state.containers[first].exit_status == 137
        assert ctr_tasks(engine.address)[first] == "STOPPED"
        assert ctr_tasks(engine.address)[second] == "RUNNING"

        # SIGKILL(137), the exit status with its signal's name, is never cut, down to 80 columns.
        for width, height in ((120, 36), (80, 24)):
            await pilot.resize_terminal(width, height)
            await until(pilot, lambda: "SIGKILL(137)" in table_line(app, "containers", 0))


async def test_keymap_file_still_remaps_kill(console: AppFactory, running: tuple[str, str]) -> None:
    app = console(keymap={"container.kill": "K"})
    async with app.run_test(size=SIZE) as pilot:
        await all_running(pilot, app)
        await pilot.press("ctrl+k")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("K")
        assert isinstance(app.screen, PickScreen)


async def test_footer_offers_what_applies_to_the_selected_row(
    engine: EngineProcess, console: AppFactory, running: tuple[str, str]
) -> None:
    first, second = running
    ctr(engine.address, "task", "kill", "-s", "SIGKILL", first)
    app = console()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: status(app, first) == "STOPPED", timeout=30)
        await until(pilot, lambda: status(app, second) == "RUNNING", timeout=30)
        table = app.main.table("containers")
        await pilot.press("g")
        assert table.selected_key() == first
        await until(pilot, lambda: "start" in footer(app).values())
        keys = footer(app)
        assert "kill…" not in keys.values() and "pause/resume" not in keys.values()
        # At 80 columns the keys that lead everywhere stay.
        assert {"?", ":", "q"} <= set(keys)
        await pilot.press("j")
        assert table.selected_key() == second
        await until(pilot, lambda: "start" not in footer(app).values())
        keys = footer(app)
        assert "kill…" in keys.values() and "pause/resume" in keys.values()
        assert {"?", ":", "q"} <= set(keys)
        # The key of what does not apply says why, and does nothing.
        await pilot.press("s")
        await pilot.pause()
        assert any(f"{second} is running: nothing to start" in str(n.message)
                   for n in app._notifications)  # fmt: skip
        assert ctr_tasks(engine.address)[second] == "RUNNING"


async def test_jump_keeps_tab_table_and_footer_together(
    client: Client, console: AppFactory
) -> None:
    await seed_image(client, BUSYBOX)
    await seed_container(client, "web-1", BUSYBOX)
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "web-1" in app.state.containers and app.state.images)
        switcher = app.main.query_one(ContentSwitcher)
        for keys, pane in (
            (("2",), "images"),
            (("colon", *"containers", "enter"), "containers"),
            (("colon", *"images", "enter"), "images"),
            (("colon", *"snapshots", "enter"), "snapshots"),
            (("1",), "containers"),
        ):
            await pilot.press(*keys)
            await pilot.pause()
            assert switcher.current == pane, keys
            assert app.main.focused_pane() == pane, keys
            assert app.focused is app.main.table(pane), keys
            assert shown_tab(app) == pane, keys
            offered = set(footer(app).values())
            assert ("run" in offered) == (pane == "images"), (keys, offered)
        # `r` on the containers tab never runs the image the hidden images tab has selected.
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)


async def test_namespace_marker_follows_the_switch(client: Client, console: AppFactory) -> None:
    await seed_image(client, BUSYBOX)
    await seed_namespace(client, "k8s.io")
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(app.state.namespaces) == 2)

        def marked() -> list[str]:
            table = app.main.table("namespaces")
            cells = (str(table.get_row_at(i)[0]) for i in range(table.row_count))
            return [c[2:] for c in cells if c.startswith("▸ ")]

        await until(pilot, lambda: marked() == ["default"])
        await pilot.press("colon", *"ns k8s.io", "enter")
        await until(pilot, lambda: marked() == ["k8s.io"])
        await until(pilot, lambda: "ns k8s.io" in drawn(app, 0))
        await pilot.press("n")
        assert isinstance(app.screen, PickScreen)
        await pilot.press("g", "enter")
        await until(pilot, lambda: marked() == ["default"])
        assert app.state.namespace == "default"


async def palette_pick(pilot: Pilot[Any], app: CtrdeckApp, name: str) -> str:
    """Open the palette, type `name`, and choose the best hit; return that hit's text."""
    await pilot.press("ctrl+p")
    assert isinstance(app.screen, CommandPalette)
    await pilot.press(*name)
    results = app.screen.query_one(CommandList)
    await until(pilot, lambda: results.option_count > 0)
    await pilot.pause(0.2)
    best = str(results.get_option_at_index(0).prompt)
    assert results.highlighted == 0
    await pilot.press("enter")
    await until(pilot, lambda: not isinstance(app.screen, CommandPalette))
    return best


async def test_palette_finds_every_action_by_its_name(
    console: AppFactory, running: tuple[str, str]
) -> None:
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await all_running(pilot, app)
        await until(pilot, lambda: app.state.images)
        for name, screen in (
            ("kill", PickScreen),
            ("run", RunScreen),
            ("pull", PullScreen),
            ("delete", ConfirmScreen),
        ):
            best = await palette_pick(pilot, app, name)
            assert name in best.lower(), (name, best)
            await until(pilot, lambda screen=screen: isinstance(app.screen, screen))
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
        # `run` acted on an image from the containers pane: it showed the images.
        assert app.main.focused_pane() == "images"


async def test_zoom_any_pane_and_back(client: Client, console: AppFactory) -> None:
    await seed_image(client, BUSYBOX)
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.images)
        main = app.main
        await pilot.press("z")
        assert main.maximized is main.query_one("#resources")
        await pilot.press("2")
        assert main.maximized is main.query_one("#resources")
        assert main.focused_pane() == "images"
        await pilot.press("z")
        assert main.maximized is None
        await pilot.press("plus")
        assert main.maximized is not None
        await pilot.press("escape")
        assert main.maximized is None
        # `:events` zooms the event log.
        await pilot.press("colon", *"events", "enter")
        await pilot.pause()
        assert main.maximized is main.event_log
        assert app.focused is main.event_log
        await pilot.press("plus")
        assert main.maximized is None
        # The namespaces pane zooms too.
        main.table("namespaces").focus()
        await pilot.press("z")
        assert main.maximized is main.table("namespaces")
        # The zoom follows focus to where a jump goes: what has focus is what shows.
        await pilot.press("2")
        assert main.focused_pane() == "images"
        assert main.maximized is main.query_one("#resources")
        await pilot.press("colon", *"events", "enter", "colon", *"containers", "enter")
        await pilot.pause()
        assert main.focused_pane() == "containers"
        assert main.maximized is main.query_one("#resources")
        await pilot.press("escape")
        assert main.maximized is None
