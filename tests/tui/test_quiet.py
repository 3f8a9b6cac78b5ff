"""Quiet over SSH, and at home on any terminal: the real console on a pty, counted in bytes.

The console runs as `python -m tui.cli` on a pseudo-terminal that is its
controlling terminal, as under sshd, against a real engine with real busybox
containers running (`ctr run -d`). The assertions are on the bytes it writes:
nothing while nothing visible changes, a bounded frame for a key, no colour
codes under NO_COLOR or TERM=dumb, no `\\u256d` escapes on an ISO-8859-1
terminal, and a non-zero exit status when the UI crashes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.color import ColorSystem
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from textual._compositor import LayoutUpdate
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import Checkbox

from tests.engine_proc import EngineProcess
from tests.helpers import ctr
from tests.registry import busybox_image
from tests.tui.fixed import fixed_app, fixed_pull_job
from tests.tui.terminal import Terminal, console_argv, console_env
from tui.app import CtrdeckApp
from tui.frames import Alphabet, Shadow
from tui.screens import dialogs, pull
from tui.screens.dialogs import PickScreen
from tui.screens.pull import PullScreen

IMAGE = "docker.io/library/quiet-busybox:latest"
RUNNING = 5
# Every SGR parameter that sets a colour: 30-39, 40-49, 90-97, 100-107 (38/48 take more).
COLOUR_PARAMS = {*range(30, 50), *range(90, 98), *range(100, 108)}
SGR = re.compile(rb"\x1b\[([0-9;:]*)m")


def colour_codes(output: bytes) -> list[bytes]:
    found = []
    for match in SGR.finditer(output):
        params = [p for p in re.split(rb"[;:]", match.group(1)) if p]
        if any(int(p) in COLOUR_PARAMS for p in params):
            found.append(match.group(0))
    return found


def import_busybox(address: Path, work: Path) -> None:
    layout = busybox_image().write_layout(work / "layout", "latest")
    archive = work / "image.tar"
    with tarfile.open(archive, "w") as tar:
        for entry in sorted(layout.rglob("*")):
            tar.add(entry, arcname=str(entry.relative_to(layout)), recursive=False)
    ctr(address, "images", "import", "--base-name", IMAGE.rsplit(":", 1)[0], str(archive))


@pytest.fixture
def busy(engine: EngineProcess, tmp_path: Path) -> Iterator[EngineProcess]:
    """The engine with five busybox containers running `sleep` (first in the table), 30 more."""
    import_busybox(engine.address, tmp_path)
    fifos = engine.base / "fifo"
    started: list[str] = []
    try:
        for i in range(RUNNING):
            ctr(
                engine.address,
                "run",
                "-d",
                "--fifo-dir",
                str(fifos),
                IMAGE,
                f"run-{i}",
                "sleep",
                "1000",
            )
            started.append(f"run-{i}")
        for i in range(30):
            ctr(engine.address, "containers", "create", IMAGE, f"zz-idle-{i:02d}")
        yield engine
    finally:
        for cid in started:
            ctr(engine.address, "task", "kill", "-s", "SIGKILL", cid, check=False)
            ctr(engine.address, "task", "rm", "-f", cid, check=False)
        listed = ctr(engine.address, "containers", "ls", "-q", check=False).stdout.split()
        for cid in listed:
            ctr(engine.address, "containers", "rm", cid, check=False)


@pytest.fixture
def terminals(tmp_path: Path) -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.stop()


def open_console(
    terminals: list[Terminal],
    address: Path,
    home: Path,
    *,
    cols: int = 80,
    rows: int = 24,
    **env: str,
) -> Terminal:
    terminal = Terminal(
        console_argv(str(address)), cols=cols, rows=rows, env=console_env(home, **env)
    )
    terminals.append(terminal.start())
    return terminal


def outside_top_bar(output: bytes) -> bytes:
    """What `output` writes anywhere but the first row, by its cursor moves."""
    pieces = re.split(rb"(\x1b\[\d+;\d+H)", output)
    kept, row = [], 0
    for piece in pieces:
        move = re.fullmatch(rb"\x1b\[(\d+);\d+H", piece)
        if move:
            row = int(move.group(1))
        elif row != 1:
            kept.append(piece)
    return b"".join(kept)


def shows_running(output: bytes) -> bool:
    return output.count(b"RUNNING") >= RUNNING


def test_idle_console_with_running_containers_writes_only_what_moves(
    busy: EngineProcess, terminals: list[Terminal], tmp_path: Path
) -> None:
    # At 160 columns the UP column moves on every age refresh (5 s) and MEM with the
    # metrics (2 s); those cells are all that may go out, far under htop's 1.4 KB/s.
    term = open_console(terminals, busy.address, tmp_path, cols=160, rows=45)
    term.wait_for(lambda out: shows_running(out) and b" UP " in out)
    # Past the "connected" toast, whose going away is a change on screen.
    time.sleep(7.0)
    before = term.written
    time.sleep(15.0)
    idle = term.output(before)
    assert len(idle) / 15.0 < 200, idle
    # No row is sent again whole: no write carries a container's id.
    assert b"run-" not in idle


def test_open_dialog_over_changing_rows_writes_nothing_while_they_are_hidden(
    busy: EngineProcess, terminals: list[Terminal], tmp_path: Path
) -> None:
    # At 160 columns the UP column shows, and moves on every age refresh (5 s);
    # the help dialog hides it, so the screen does not change.
    term = open_console(terminals, busy.address, tmp_path, cols=160, rows=45)
    term.wait_for(lambda out: shows_running(out) and b" UP " in out)
    assert term.frame("?")
    time.sleep(7.0)
    before = term.written
    time.sleep(11.0)
    # The top bar stays in view (dimmed) and counts a young engine's uptime in
    # seconds: that row may move; nothing behind the dialog may.
    assert outside_top_bar(term.output(before)) == b""
    # Closing it draws the rows again as they are now, not as they were.
    assert term.frame("\x1b")


def test_j_in_a_scrolled_table_writes_under_2kb(
    busy: EngineProcess, terminals: list[Terminal], tmp_path: Path
) -> None:
    term = open_console(terminals, busy.address, tmp_path)
    term.wait_for(lambda out: b"run-4" in out and shows_running(out))
    term.settle(quiet=1.0)
    costs = []
    # 35 rows in a table 12 rows high at 80x24: most of these presses scroll it.
    for _ in range(30):
        costs.append(len(term.frame("j")))
    assert all(cost > 0 for cost in costs), costs
    assert max(costs) < 2048, costs


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {"TERM": "dumb", "COLORTERM": ""}])
def test_no_colour_codes_under_no_color_or_a_dumb_terminal(
    engine: EngineProcess, terminals: list[Terminal], tmp_path: Path, env: dict[str, str]
) -> None:
    term = open_console(terminals, engine.address, tmp_path, **env)
    term.wait_for(lambda out: b"Containers" in out and b"connected" in out)
    term.press("?")
    term.settle(quiet=1.0)
    out = term.output()
    assert colour_codes(out) == []
    # State still shows: the tab strip and the cursor are drawn in reverse.
    assert b"\x1b[7m" in out or b";7m" in out or b"[7;" in out


def test_a_colour_terminal_gets_colour(
    engine: EngineProcess, terminals: list[Terminal], tmp_path: Path
) -> None:
    term = open_console(terminals, engine.address, tmp_path)
    term.wait_for(lambda out: b"Containers" in out)
    assert colour_codes(term.output())


@pytest.fixture
def latin1_locale(tmp_path: Path) -> Path:
    """An en_US.ISO-8859-1 locale compiled into a directory of the test's own."""
    if shutil.which("localedef") is None:
        pytest.skip("localedef (Debian's locales) is not installed")
    where = tmp_path / "locales"
    where.mkdir()
    subprocess.run(
        ["localedef", "-i", "en_US", "-f", "ISO-8859-1", str(where / "en_US.ISO-8859-1")],
        check=True,
        capture_output=True,
    )
    return where


def test_iso_8859_1_terminal_gets_ascii_borders_not_escapes(
    engine: EngineProcess, terminals: list[Terminal], tmp_path: Path, latin1_locale: Path
) -> None:
    term = open_console(
        terminals,
        engine.address,
        tmp_path,
        LANG="en_US.ISO-8859-1",
        LC_ALL="en_US.ISO-8859-1",
        LOCPATH=str(latin1_locale),
    )
    term.wait_for(lambda out: b"Containers" in out)
    term.settle(quiet=1.0)
    out = term.output()
    assert b"\\u" not in out and b"\\x" not in out
    text = out.decode("latin-1")
    assert "+-" in text and "ctrdeck > " in text


CRASHING = """
import sys
from tui.screens.main import MainScreen
def crash(self):
    raise RuntimeError("the UI fell over")
MainScreen.on_mount = crash
from tui.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_crash_of_the_ui_exits_non_zero(
    engine: EngineProcess, terminals: list[Terminal], tmp_path: Path
) -> None:
    argv = [sys.executable, "-c", CRASHING, "--address", str(engine.address), "--no-start"]
    term = Terminal(argv, env=console_env(tmp_path)).start()
    terminals.append(term)
    assert term.exit_code() != 0
    assert b"the UI fell over" in term.output()


def test_quitting_exits_zero(
    engine: EngineProcess, terminals: list[Terminal], tmp_path: Path
) -> None:
    term = open_console(terminals, engine.address, tmp_path)
    term.wait_for(lambda out: b"Containers" in out)
    term.press("q")
    assert term.exit_code() == 0


def screen_text(app: CtrdeckApp) -> str:
    """The screen as plain text, from the compositor (what a terminal would show)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def test_checkbox_state_reads_in_text_everywhere() -> None:
    app = fixed_app()
    async with app.run_test(size=(120, 36)) as pilot:
        app.push_screen(
            PickScreen("Kill web-1: which signal?", [("SIGTERM", "SIGTERM")], offer_all=True)
        )
        await pilot.pause()
        assert "[ ] all processes" in screen_text(app)
        await pilot.press("a")
        await pilot.pause()
        assert "[x] all processes" in screen_text(app)
        await pilot.press("escape")
        app.push_screen(PullScreen(snapshotters=["overlayfs"]))
        await pilot.pause()
        assert "[ ] plain HTTP" in screen_text(app)
        app.screen.query_one("#pull-plain-http", Checkbox).value = True
        await pilot.pause()
        assert "[x] plain HTTP" in screen_text(app)
    # Every checkbox the console shows is one that reads in text.
    for module in (dialogs, pull):
        assert "Checkbox(" not in Path(module.__file__).read_text()


async def test_finished_pull_dialog_stops_redrawing() -> None:
    app = fixed_app()
    job = fixed_pull_job()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = PullScreen(job=job)
        app.push_screen(screen)
        await pilot.pause()
        assert screen._timer is not None
        job.finish()
        await pilot.pause(0.5)
        assert screen._timer is None
        assert "done:" in screen_text(app)


def test_shadow_writes_only_changed_cells_and_nothing_twice() -> None:
    shadow = Shadow(Alphabet("utf-8"))
    bold = Style(bold=True)

    def frame(*cells: str) -> LayoutUpdate:
        line = [Strip([Segment(text, bold if i == 1 else None) for i, text in enumerate(cells)])]
        return LayoutUpdate([line], Region(0, 0, 12, 1))

    first = shadow.update(frame("id  ", "RUNNING", " "), ColorSystem.TRUECOLOR)
    assert first is not None and "RUNNING" in first.render_segments(Console())
    assert shadow.update(frame("id  ", "RUNNING", " "), ColorSystem.TRUECOLOR) is None
    changed = shadow.update(frame("id  ", "PAUSED ", " "), ColorSystem.TRUECOLOR)
    assert changed is not None
    text = changed.render_segments(Console())
    assert "PAUSED" in text and "id" not in text
    shadow.reset()
    assert shadow.update(frame("id  ", "PAUSED ", " "), ColorSystem.TRUECOLOR) is not None


def test_alphabet_folds_what_the_encoding_cannot_carry() -> None:
    latin1 = Alphabet("iso-8859-1")
    assert latin1.fold("╭─ ctrdeck ▸ · é ─╮") == "+- ctrdeck > · é -+"
    assert latin1.fold("日本") == "????"
    assert Alphabet("utf-8").fold("╭─╮") == "╭─╮"
