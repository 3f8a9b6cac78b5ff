"""Hostile text through every pane, dialog and toast, held by a real engine.

The engine is seeded (through `core.client` and Debian's `ctr`) with images,
snapshots, container images and labels, and a container's log, named with
every string of `tests/tui/hostile.py`: markup tags, `[/]`, `[error]`,
escape sequences that would retitle or clear the terminal, BEL, zero-width and
right-to-left characters, a 10 kB name, newlines inside labels. The console
opens on it and walks every pane, inspect, the dialogs, the log view with a
search, the event log with a filter, help, and error toasts. It must not
crash, it must show the brackets as typed, and no control character may be
on the screen it would send to the terminal.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.containers import VerticalScroll
from textual.pilot import Pilot
from textual.widgets import RichLog

from core.api.containerd.services.containers import v1 as containers_api
from core.api.containerd.services.snapshots import v1 as snapshots_api
from core.api.google.protobuf import FieldMask
from core.client import Client
from tests.engine_proc import EngineProcess
from tests.helpers import ctr
from tests.registry import Registry, build_image, busybox_layer, single
from tests.tui.hostile import CORPUS, ERROR_TAG, MARKUP, REGEX, forbidden_in
from tests.tui.support import seed_container, seed_image, until
from tui import operations
from tui.app import CtrdeckApp, Settings
from tui.screens.dialogs import ConfirmScreen, PickScreen
from tui.screens.help import HelpScreen
from tui.screens.inspect import InspectScreen
from tui.screens.logs import LogsScreen
from tui.screens.main import MainScreen
from tui.screens.pull import PullScreen

SIZE = (120, 36)
BUSYBOX = "127.0.0.1:5000/library/busybox:1.36"
# Labels hold at most 4 kB (key and value); the 10 kB string goes in as a name.
LABEL_ROOM = 4000


LINE = re.compile(r'<text [^>]*clip-path="url\(#terminal-\d+-line-(\d+)\)">(.*?)</text>', re.S)


def screen_text(app: CtrdeckApp) -> str:
    """Every character on the screen, line by line, as the terminal would get it."""
    lines: dict[int, list[str]] = {}
    for number, text in LINE.findall(app.export_screenshot()):
        lines.setdefault(int(number), []).append(html.unescape(text).replace("\xa0", " "))
    return "\n".join("".join(lines[n]) for n in sorted(lines))


def assert_safe(app: CtrdeckApp) -> str:
    shown = screen_text(app)
    assert not forbidden_in(shown), sorted(map(hex, map(ord, forbidden_in(shown))))
    return shown


def loaded(app: CtrdeckApp) -> bool:
    return bool(app.screen.query(".section, .error"))


def toasts(app: CtrdeckApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def settle(pilot: Pilot[Any]) -> None:
    await pilot.pause(0.2)


async def seed_hostile(client: Client) -> None:
    await seed_image(client, BUSYBOX)
    for i, (name, text) in enumerate(sorted(CORPUS.items())):
        await seed_image(client, text)
        await client.snapshots.prepare(
            snapshots_api.PrepareSnapshotRequest(
                snapshotter="overlayfs",
                key=text,
                labels={"containerd.io/gc.root": "x", "note": text[:LABEL_ROOM]},
            )
        )
        await seed_container(client, f"c{i:02d}-{name}", text)
        await client.containers.update(_labelled(f"c{i:02d}-{name}", text))


def _labelled(container_id: str, text: str) -> containers_api.UpdateContainerRequest:
    return containers_api.UpdateContainerRequest(
        container=containers_api.Container(
            id=container_id,
            labels={"note": text[:LABEL_ROOM], text[:200] or "empty": "key"},
        ),
        update_mask=FieldMask(paths=["labels"]),
    )


def hostile_app(engine: EngineProcess, keymap_path: Path) -> CtrdeckApp:
    address = str(engine.address)
    settings = Settings(address=address, namespace="default", keymap_path=keymap_path)
    return CtrdeckApp(settings, connect=lambda: Client(address, "default"))


async def test_hostile_names_through_every_pane_dialog_and_toast(
    engine: EngineProcess, client: Client, tmp_path: Path
) -> None:
    await seed_hostile(client)
    keymap_path = tmp_path / "[/x]\x1b]0;pwned\x07" / "keymap.toml"
    app = hostile_app(engine, keymap_path)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await until(pilot, lambda: len(app.state.containers) == len(CORPUS))
        await until(pilot, lambda: len(app.state.snapshots) >= len(CORPUS))
        await until(pilot, lambda: len(app.state.images) == len(CORPUS) + 1)
        await settle(pilot)
        shown = assert_safe(app)
        assert "c00-bel" in shown

        # Each resource pane, and inspect of every row in it.
        for key, pane in (
            ("1", "containers"),
            ("2", "images"),
            ("3", "snapshots"),
            ("4", "content"),
        ):
            await pilot.press(key)
            await settle(pilot)
            shown = assert_safe(app)
            table = app.main.table(pane)
            for row in range(table.row_count):
                table.move_cursor(row=row)
                await pilot.press("enter")
                assert isinstance(app.screen, InspectScreen)
                await until(pilot, lambda: loaded(app))
                await settle(pilot)
                assert_safe(app)
                await pilot.press("escape")
                assert isinstance(app.screen, MainScreen)
        await pilot.press("2")
        await settle(pilot)
        assert ERROR_TAG in assert_safe(app)

        await pilot.press("3")
        await settle(pilot)
        assert MARKUP in assert_safe(app)
        # A snapshot's labels, newlines and all, in inspect.
        table = app.main.table("snapshots")
        key = ("overlayfs", MARKUP)
        table.select_key(key)
        await pilot.press("enter")
        await until(pilot, lambda: loaded(app))
        await settle(pilot)
        shown = assert_safe(app)
        assert f"Snapshot ▸ {MARKUP}" in shown
        await pilot.press("escape")

        # A container whose labels are hostile; its image is the regex with brackets.
        await pilot.press("1")
        table = app.main.table("containers")
        for cid in sorted(app.state.containers):
            if cid.endswith("-regex"):
                table.select_key(cid)
        await pilot.press("enter")
        await until(pilot, lambda: loaded(app))
        await settle(pilot)
        shown = assert_safe(app)
        assert REGEX in shown
        await pilot.press("escape")

        # Dialogs that name the row: delete's question, the namespace picker.
        await pilot.press("3")
        table = app.main.table("snapshots")
        table.select_key(("overlayfs", "[/]"))
        await pilot.press("D")
        assert isinstance(app.screen, ConfirmScreen)
        await settle(pilot)
        assert "Remove snapshot [/]" in assert_safe(app)
        await pilot.press("n")

        # The table filter and its subtitle, the event log's filter and its title.
        await pilot.press("slash", *"[/x]")
        await settle(pilot)
        assert "/ [/x]" in assert_safe(app)
        await pilot.press("escape")
        app.main.event_log.focus()
        await pilot.press("slash", *"[/x]")
        await settle(pilot)
        assert "filter: [/x]" in assert_safe(app)
        await pilot.press("escape")

        # An event that names a hostile key reaches the log as text.
        await client.snapshots.prepare(
            snapshots_api.PrepareSnapshotRequest(
                snapshotter="overlayfs",
                key="[/y] \x1b]0;pwned\x07 new",
                labels={"containerd.io/gc.root": "x"},
            )
        )
        await until(pilot, lambda: any("[/y]" in line.detail for line in app.main.event_log.buffer))
        await settle(pilot)
        assert "[/y] ␛]0;pwned␇ new" in assert_safe(app)

        # Error toasts from the engine and from the command line, with markup in them.
        scoped = client.with_namespace("default")
        for text in CORPUS.values():
            app.main.perform(
                "delete", lambda t=text: operations.delete_image(scoped, t + "-gone"), ""
            )
        await until(pilot, lambda: len(toasts(app)) >= 2)
        await pilot.press("colon", *"[/x] [error]", "enter")
        await until(pilot, lambda: any("unknown command :[/x] [error]" in t for t in toasts(app)))
        await settle(pilot)
        assert_safe(app)
        assert all(len(t) < 250 for t in toasts(app))

        # A reference with markup and an escape typed into Pull: its dialog, its failure.
        app.main.open_pull("[/x] \x1b]0;pwned\x07 [error]")
        await settle(pilot)
        assert isinstance(app.screen, PullScreen)
        await pilot.press("enter")
        job = app.pull_job
        assert job is not None
        await until(pilot, lambda: job.finished)
        await settle(pilot)
        assert job.error and "[/x] ␛]0;pwned␇ [error]" in assert_safe(app)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)

        # Help names the keymap file, whose path holds markup and an escape (no toast over it).
        app.clear_notifications()
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await settle(pilot)
        # The note is the help's last line, below the window once the Pods keys joined it.
        app.screen.query_one(VerticalScroll).scroll_end(animate=False)
        await settle(pilot)
        assert "[/x]␛]0;pwned␇" in assert_safe(app)
        await pilot.press("escape")

        # The namespace picker: names come from the engine (and validated there).
        app.main.do_app_namespace("containers")
        await settle(pilot)
        assert isinstance(app.screen, PickScreen)
        assert_safe(app)
        await pilot.press("escape")


def hostile_log_image() -> Any:
    lines = [
        r"[/x] log line",
        r"\033]0;pwned\007 osc title",
        r"\033[2J\033[H csi clear",
        r"\033[31mred\033[0m [error]",
        r"bell\007 zero\342\200\213width rtl\342\200\256gnp.exe",
        r"crlf\r",
    ]
    script = (
        "printf '"
        + r"\n".join(lines)
        + r"\n'"
        + "; head -c 10000 /dev/zero | tr '\\0' A; echo; exec sleep 1000"
    )
    return single(build_image([busybox_layer()], cmd=("/bin/sh", "-c", script)))


@pytest.fixture
def hostile_task(engine: EngineProcess, registry: Registry) -> Iterator[str]:
    ref = registry.push(hostile_log_image(), "tools/hostile", "1")
    ctr(engine.address, "images", "pull", "--plain-http", ref)
    ctr(engine.address, "run", "-d", ref, "h1")
    yield "h1"
    for args in (("task", "kill", "-s", "SIGKILL", "h1"), ("task", "rm", "-f", "h1")):
        ctr(engine.address, *args, check=False)
    ctr(engine.address, "containers", "rm", "h1", check=False)


async def test_hostile_log_lines_and_search(
    engine: EngineProcess, client: Client, hostile_task: str, tmp_path: Path
) -> None:
    app = hostile_app(engine, tmp_path / "keymap.toml")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.table("containers").selected_key() == hostile_task)
        await until(pilot, lambda: app.state.containers[hostile_task].status == "RUNNING")
        await pilot.press("l")
        assert isinstance(app.screen, LogsScreen)
        view = app.screen.query_one("#logs-view", RichLog)
        await until(pilot, lambda: any("A" * 100 in s.text for s in view.lines))
        await settle(pilot)
        shown = assert_safe(app)
        assert "[/x] log line" in shown
        assert "␛]0;pwned␇ osc title" in shown
        assert "[error]" in shown
        text = "\n".join(s.text for s in view.lines)
        assert not forbidden_in(text)
        assert "crlf\n" in text + "\n" and "crlf␍" not in text
        assert any(len(s.text) >= 10_000 for s in view.lines)

        await pilot.press("slash", *"[/x]")
        await settle(pilot)
        shown = assert_safe(app)
        assert "search: [/x]" in shown
        await until(pilot, lambda: [s.text.rstrip() for s in view.lines] == ["[/x] log line"])
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, MainScreen)
