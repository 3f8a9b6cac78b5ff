"""Record a console session against the real engine, and replay it without one.

The live console records itself (`:record`) while it pulls, runs, pauses,
resumes, kills and deletes a container from the keyboard, with teaching on;
at each step the test notes the recording's clock, the containers table as
shown and the event log. The recording replayed at 10x, paused at each of
those points, shows the same rows and the same lines. Replay also works on a
file cut short, refuses changes with its own reason, inspects recorded rows,
seeks and steps, and runs as user nobody with no engine anywhere.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input

from tests.engine_proc import EngineProcess, run_cli
from tests.helpers import ctr
from tests.registry import Registry
from tests.tui.conftest import AppFactory
from tests.tui.support import chatty_image, until
from tests.tui.terminal import Terminal, console_argv, console_env
from tests.unit.test_recording import write_session
from tui import recording
from tui.app import CtrdeckApp
from tui.replay import ReplayApp, Timeline
from tui.screens.dialogs import ConfirmScreen, Pick, PickScreen, RunScreen
from tui.screens.inspect import InspectScreen

SIZE = (120, 36)
Shown = tuple[dict[str, dict[str, str]], list[tuple[str, str, str]]]


def shown(app: CtrdeckApp, since: int = 0) -> Shown:
    """The containers table as drawn (but its clock-driven uptime) and the event log's lines."""
    app.repaint()
    table = app.main.table("containers")
    columns = [c.key.value for c in table.ordered_columns]
    rows = {}
    for key in table.rows:
        cells = table.get_row(key)
        rows[str(key.value)] = {
            c: getattr(v, "plain", str(v)) for c, v in zip(columns, cells, strict=True) if c != "up"
        }
    lines = [(x.topic, x.detail, x.kind) for x in list(app.main.event_log.buffer)[since:]]
    return rows, lines


def status(app: CtrdeckApp, cid: str) -> str:
    row = app.state.containers.get(cid)
    return "" if row is None else row.status


@pytest.fixture
def pushed(engine: EngineProcess, registry: Registry) -> Iterator[str]:
    ref = registry.push(chatty_image(), "tools/recorded", "1")
    yield ref
    for args in (("task", "kill", "-s", "SIGKILL", "r1"), ("task", "rm", "-f", "r1")):
        ctr(engine.address, *args, check=False)
    ctr(engine.address, "containers", "rm", "r1", check=False)


async def test_a_recorded_session_replays_as_the_live_console_showed_it(
    console: AppFactory, pushed: str, tmp_path: Path
) -> None:
    path = tmp_path / "session.rec"
    points: list[tuple[float, Shown]] = []
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.connected)
        await pilot.press("t")
        since = len(app.main.event_log.buffer)
        app.main.run_line(f"record {path}")
        assert app.recording is not None
        writer = app.recording.recorder.writer

        async def point() -> None:
            # Let the log settle (the flush after a burst), then look, all in one go.
            await pilot.pause(0.3)
            points.append((writer.elapsed(), shown(app, since)))
            # Times are to the millisecond: what comes next must not share this one's.
            await pilot.pause(0.05)

        await point()
        app.main.run_line(f"pull --plain-http {pushed}")
        await until(pilot, lambda: pushed in app.state.images, timeout=30)
        await pilot.press("escape")
        await point()
        await pilot.press("2")
        await until(pilot, lambda: app.main.table("images").selected_key() == pushed)
        await pilot.press("r")
        assert isinstance(app.screen, RunScreen)
        app.screen.query_one("#run-id", Input).value = "r1"
        await pilot.press("enter")
        await until(pilot, lambda: status(app, "r1") == "RUNNING", timeout=30)
        await point()
        await pilot.press("1")
        await until(pilot, lambda: app.main.table("containers").selected_key() == "r1")
        await pilot.press("space")
        await until(pilot, lambda: status(app, "r1") == "PAUSED")
        await point()
        await pilot.press("space")
        await until(pilot, lambda: status(app, "r1") == "RUNNING")
        await point()
        await pilot.press("ctrl+k")
        assert isinstance(app.screen, PickScreen)
        app.screen.dismiss(Pick("SIGKILL"))
        await until(pilot, lambda: status(app, "r1") == "STOPPED", timeout=30)
        await point()
        await pilot.press("D")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: "r1" not in app.state.containers, timeout=30)
        await point()
        app.main.run_line("record stop")
        assert app.recording is None

    statuses = [next(iter(rows.values()), {}).get("status", "") for _, (rows, _) in points]
    assert statuses == ["", "", "RUNNING", "PAUSED", "RUNNING", "SIGKILL(137)", ""]
    taught = [d for _, (_, lines) in points[-1:] for _t, d, kind in lines if kind == "ctr"]
    assert "ctr -n default task pause r1" in taught

    rec = recording.read(path)
    assert rec.cut == ""
    replay = ReplayApp(rec, speed=10.0, paused=True)
    async with replay.run_test(size=SIZE) as pilot:
        player = replay.player
        for at, live in points:
            player.pause_at = at
            player.paused = False
            await until(pilot, lambda: player.paused, timeout=30)
            # Nothing was recorded after the last record: the replay ends there.
            assert player.position == min(at, player.duration)
            await pilot.pause(0.1)
            assert shown(replay) == live, f"at {at}s"


def write_fixed(tmp_path: Path) -> Path:
    path = tmp_path / "fixed.rec"
    write_session(path)
    return path


async def test_replay_refuses_changes_and_inspects_what_was_recorded(tmp_path: Path) -> None:
    rec = recording.read(write_fixed(tmp_path))
    app = ReplayApp(rec, paused=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: app.main.table("images").selected_key() == "busybox:1")
        await pilot.press("r")
        assert not isinstance(app.screen, RunScreen)
        assert any("a replay is read-only" in n.message for n in app._notifications)
        await pilot.press("enter")
        assert isinstance(app.screen, InspectScreen)
        await pilot.pause(0.1)
        drawn = app.export_screenshot()
        assert "linux/amd64" in drawn and "recorded" in drawn
        await pilot.press("escape")
        app.main.run_line("pull busybox")
        app.main.run_line("record")
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert any("would change the node" in m for m in messages)
        assert any("a recording already" in m for m in messages)


async def test_seek_step_and_speed(tmp_path: Path) -> None:
    # A record every 10 seconds from 0:10 on.
    rec = recording.read(write_fixed(tmp_path))
    app = ReplayApp(rec, paused=True)
    async with app.run_test(size=SIZE) as pilot:
        player = app.player
        assert player.position == 10
        await pilot.press("right")
        assert player.position == 20
        await pilot.press("shift+right")
        assert player.position == 80
        app.main.run_line("seek 1h")
        assert player.position == player.duration
        app.main.run_line("seek 0:20")
        assert player.position == 20
        await pilot.press("left")
        assert player.position == 10
        await pilot.press("full_stop")
        assert player.paused
        event_times = [
            t for t, k in zip(rec.records.times, rec.records.kinds, strict=True) if k == "log"
        ]
        assert player.position == min(t for t in event_times if t > 10)
        await pilot.press("greater_than_sign", "greater_than_sign")
        assert player.speed == 5.0
        app.main.run_line("speed 10")
        assert player.speed == 10.0
        app.main.run_line("seek soon")
        await pilot.pause()
        assert any("not a duration" in n.message for n in app._notifications)
        timeline = str(app.main.query_one(Timeline).render())
        assert "paused" in timeline and "10x" in timeline
        # The filter box keeps its arrows.
        await pilot.press("1", "slash", "a", "left")
        assert player.position == min(t for t in event_times if t > 10)


async def test_a_cut_recording_replays_to_its_last_record(tmp_path: Path) -> None:
    path = write_fixed(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])
    rec = recording.read(path)
    assert rec.cut and rec.records
    app = ReplayApp(rec, paused=True)
    async with app.run_test(size=SIZE) as pilot:
        app.main.run_line(f"seek {rec.duration}")
        await pilot.pause(0.1)
        assert app.player.position == rec.duration
        lines = [x.detail for x in app.main.event_log.buffer]
        assert any("ends early" in line for line in lines)
        assert "c1 RUNNING" in lines


def test_the_command_refuses_a_damaged_header(tmp_path: Path) -> None:
    path = tmp_path / "bad.rec"
    path.write_bytes(b"CDRF" + os.urandom(40))
    result = run_cli("replay", str(path))
    assert result.returncode == 2
    assert "is not a ctrdeck recording: its header is damaged" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    result = run_cli("replay", str(tmp_path / "missing.rec"))
    assert result.returncode == 2 and "cannot open" in result.stderr


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory user nobody can read (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="replay-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_replay_runs_as_nobody_with_no_engine(shared_dir: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("switching to user nobody needs root")
    path = write_fixed(shared_dir)
    path.chmod(0o644)
    env: dict[str, Any] = console_env(shared_dir / "config", HOME="/nonexistent")
    env.pop("CONTAINERD_ADDRESS", None)
    argv = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--",
        *console_argv("")[:3],
        "replay",
        str(path),
        "--paused",
    ]
    terminal = Terminal(argv, cols=120, rows=36, env=env).start()
    try:
        terminal.wait_for(lambda out: b"0:10" in out)
        terminal.press("2")
        terminal.wait_for(lambda out: b"linux/amd64" in out)
        terminal.press("q")
        assert terminal.exit_code() == 0
    finally:
        terminal.stop()
