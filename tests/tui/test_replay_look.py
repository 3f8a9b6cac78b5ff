"""An SVG snapshot of a replay: the console on a recording, paused mid-way, with its timeline.

The recording is written with a ticking clock (`tests.unit.test_recording`),
and a paused replay's clock is the recorded one, so the SVG is the same on
every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from tests.tui.test_snapshots import settle
from tests.unit.test_recording import write_session
from tui import recording
from tui.replay import ReplayApp


def test_replay_paused_mid_way(snap_compare: Any, tmp_path: Path) -> None:
    path = tmp_path / "session.rec"
    write_session(path)
    app = ReplayApp(recording.read(path), paused=True)

    async def seek(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        app.main.run_line("seek 1:10")
        await settle(pilot)

    assert snap_compare(app, terminal_size=(120, 36), run_before=seek)
