"""Task and pull actions from the keyboard against a real engine, runtime and registry.

An image is pushed to a test registry on 127.0.0.1 and pulled into the engine
with Debian's `ctr`; the console then runs it (`r`), pauses and resumes it
(space), follows its log (`l`), kills it with a chosen signal (`ctrl+k`), starts it
again (`s`) and deletes it (`D`), checking each step with `ctr` too. Whatever a
test leaves running is killed and removed at the end.
"""

from __future__ import annotations

import io
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Checkbox, Input, RichLog

from tests.engine_proc import EngineProcess
from tests.helpers import ctr
from tests.registry import Registry, free_port
from tests.tui.conftest import AppFactory
from tests.tui.support import chatty_image, until
from tui.app import CtrdeckApp
from tui.screens.dialogs import ConfirmScreen, Pick, PickScreen, RunScreen
from tui.screens.logs import LogsScreen
from tui.screens.main import MainScreen
from tui.screens.pull import PullScreen, render_job

SIZE = (120, 36)


@pytest.fixture
def pulled(engine: EngineProcess, registry: Registry) -> Iterator[str]:
    ref = registry.push(chatty_image(), "tools/chatty", "1")
    ctr(engine.address, "images", "pull", "--plain-http", ref)
    yield ref
    # The engine never stops containers by itself: end what the test started.
    for args in (("task", "kill", "-s", "SIGKILL", "t1"), ("task", "rm", "-f", "t1")):
        ctr(engine.address, *args, check=False)
    ctr(engine.address, "containers", "rm", "t1", check=False)


def status(app: CtrdeckApp, cid: str) -> str:
    row = app.state.containers.get(cid)
    return "" if row is None else row.status


def ctr_status(address: Path, cid: str) -> str:
    for line in ctr(address, "task", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[-1]
    return ""


async def test_run_pause_logs_kill_start_delete(
    engine: EngineProcess, console: AppFactory, pulled: str
) -> None:
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t", "2")
        await until(pilot, lambda: pulled in app.state.images)
        await pilot.press("r")
        assert isinstance(app.screen, RunScreen)
        app.screen.query_one("#run-id", Input).value = "t1"
        await pilot.press("enter")
        await until(pilot, lambda: status(app, "t1") == "RUNNING", timeout=30)
        assert ctr_status(engine.address, "t1") == "RUNNING"

        await pilot.press("1")
        await until(pilot, lambda: app.main.table("containers").selected_key() == "t1")
        await pilot.press("space")
        await until(pilot, lambda: status(app, "t1") == "PAUSED")
        assert ctr_status(engine.address, "t1") == "PAUSED"
        await pilot.press("space")
        await until(pilot, lambda: status(app, "t1") == "RUNNING")

        await pilot.press("l")
        assert isinstance(app.screen, LogsScreen)
        logs = app.screen
        view = logs.query_one("#logs-view", RichLog)
        await until(pilot, lambda: any("hello from the console test" in s.text for s in view.lines))
        await pilot.press("slash", *"nothing-like-this")
        await until(pilot, lambda: not any("hello" in s.text for s in view.lines))
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, MainScreen)

        await pilot.press("ctrl+k")
        assert isinstance(app.screen, PickScreen)
        app.screen.dismiss(Pick("SIGKILL"))
        await until(pilot, lambda: status(app, "t1") == "STOPPED", timeout=30)
        assert app.state.containers["t1"].exit_status == 137

        await pilot.press("s")
        await until(pilot, lambda: status(app, "t1") == "RUNNING", timeout=30)

        await pilot.press("D")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: "t1" not in app.state.containers, timeout=30)
        assert "t1" not in ctr(engine.address, "containers", "ls").stdout

        taught = [line.detail for line in app.main.event_log.buffer if line.kind == "ctr"]
        assert taught == [
            f"ctr -n default run -d --snapshotter overlayfs {pulled} t1",
            "ctr -n default task pause t1",
            "ctr -n default task resume t1",
            "ctr -n default task kill -s SIGKILL t1",
            # The stopped task goes first; ctr's `task start` refuses while it exists.
            "ctr -n default task rm t1",
            "ctr -n default task start -d t1",
            # ctr refuses to remove a container whose task runs: the console killed it first.
            "ctr -n default task rm -f t1",
            "ctr -n default containers rm t1",
        ]


async def test_logs_of_a_container_without_a_task(
    engine: EngineProcess, console: AppFactory, pulled: str
) -> None:
    ctr(engine.address, "containers", "create", pulled, "t1")
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.table("containers").selected_key() == "t1")
        await pilot.press("l")
        view = app.screen.query_one("#logs-view", RichLog)
        await until(pilot, lambda: bool(view.lines))
        assert "no logs for this container" in "".join(s.text for s in view.lines)


async def test_pull_dialog(engine: EngineProcess, console: AppFactory, registry: Registry) -> None:
    ref = registry.push(chatty_image(), "tools/pulled", "1")
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.connected)
        await pilot.press("p")
        assert isinstance(app.screen, PullScreen)
        app.screen.query_one("#pull-ref", Input).value = ref
        await pilot.click("#pull-plain-http")
        await pilot.click("#pull-go")
        assert isinstance(app.screen, PullScreen) and app.screen.job is not None
        job = app.screen.job
        await until(pilot, lambda: job.finished, timeout=60)
        assert not job.error
        await until(pilot, lambda: ref in app.state.images)
        assert job.layers
        assert all(layer.state in ("unpacked", "exists") for layer in job.layers.values())


async def test_run_form_reports_an_early_exit_and_bad_fields(
    engine: EngineProcess, console: AppFactory, pulled: str
) -> None:
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        main = app.main
        await until(pilot, lambda: pulled in app.state.images)
        main.show_pane("images")
        await pilot.pause()
        main.action_command("image.run")
        await until(pilot, lambda: isinstance(app.screen, RunScreen))
        await pilot.pause()
        form = app.screen
        assert isinstance(form, RunScreen)
        # The command field shows the image's own command, not a value.
        assert "echo hello from the console test" in str(form.query_one("#run-args").placeholder)
        form.query_one("#run-id", Input).value = "t1"
        for field, value, problem in (
            ("#run-env", "JUSTANAME", "is not NAME=VALUE"),
            ("#run-cwd", "relative/dir", "not an absolute path"),
            ("#run-mount", "/tmp", "SRC:DST"),
            ("#run-args", "sh -c 'unbalanced", "command:"),
        ):
            form.query_one(field, Input).value = value
            form.submit()
            await pilot.pause()
            assert app.screen is form
            assert problem in str(form.query_one("#run-problem").render())
            form.query_one(field, Input).value = ""
        form.query_one(
            "#run-args", Input
        ).value = "/bin/sh -c 'echo first; echo last words; exit 7'"
        form.query_one("#run-env", Input).value = "A=1"
        form.submit()
        await until(pilot, lambda: status(app, "t1") == "STOPPED", timeout=30)
        await until(pilot, lambda: any("exited" in str(n.message) for n in app._notifications))
        told = [str(n.message) for n in app._notifications]
        assert not any(m.startswith("started") for m in told)
        exited = next(m for m in told if "exited" in m)
        assert exited.startswith("t1 exited with code 7:")
        assert exited.rstrip().endswith("first\nlast words")
        assert app.state.containers["t1"].exit_status == 7


async def test_pull_command_line_and_a_failed_pull(
    engine: EngineProcess, console: AppFactory, registry: Registry
) -> None:
    ref = registry.push(chatty_image(), "tools/pulled", "1")
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        main = app.main
        await until(pilot, lambda: app.state.connected)
        # Bad options are refused with the usage.
        main.run_line(f"pull {ref} --nope")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert any(":pull REF [--plain-http]" in str(n.message) for n in app._notifications)

        # A pull that fails: the dialog says so, and no toast repeats it.
        notices = len(app._notifications)
        main.run_line(f"pull {ref}-missing --plain-http --snapshotter=overlayfs")
        await pilot.pause()
        assert isinstance(app.screen, PullScreen) and app.screen.job is not None
        job = app.screen.job
        assert job.request.plain_http and job.request.snapshotter == "overlayfs"
        await until(pilot, lambda: job.finished, timeout=60)
        await pilot.pause(0.3)
        assert job.error
        box = app.screen.query_one(".pull")
        assert box.border_subtitle == "failed · esc closes"
        shown = Console(width=200, record=True, file=io.StringIO())
        shown.print(render_job(job))
        assert "failed: " in shown.export_text()
        assert len(app._notifications) == notices
        await pilot.press("escape")

        # The plain-HTTP choice is remembered per registry for the session.
        main.open_pull()
        await until(pilot, lambda: isinstance(app.screen, PullScreen))
        await pilot.pause()
        form = app.screen
        assert isinstance(form, PullScreen) and form.job is None
        ref_box = form.query_one("#pull-ref", Input)
        assert ref_box.value == "" and "reference" in ref_box.placeholder
        box = form.query_one("#pull-plain-http", Checkbox)
        ref_box.value = "quay.io/some/image:1"
        await pilot.pause()
        assert box.value is False
        ref_box.value = ref
        await pilot.pause()
        assert box.value is True
        await pilot.press("escape")

        # A pull that works, at once from the command line: done, and the subtitle says so.
        main.run_line(f"pull {ref}")
        await pilot.pause()
        assert isinstance(app.screen, PullScreen) and app.screen.job is not None
        job = app.screen.job
        await until(pilot, lambda: job.finished, timeout=60)
        await pilot.pause(0.3)
        assert not job.error
        assert app.screen.query_one(".pull").border_subtitle == "done · esc closes"


async def test_run_form_tty_read_only_mount_env_cwd(
    engine: EngineProcess, console: AppFactory, pulled: str, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "note").write_text("from the host\n")
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        main = app.main
        await until(pilot, lambda: pulled in app.state.images)
        main.show_pane("images")
        await pilot.pause()
        main.action_command("image.run")
        await until(pilot, lambda: isinstance(app.screen, RunScreen))
        await pilot.pause()
        form = app.screen
        assert isinstance(form, RunScreen)
        script = (
            'cat /shared/note; echo "$GREETING in $(pwd)"; '
            "test -t 1 && echo on a tty; touch /x 2>/dev/null || echo rootfs read-only; "
            "touch /shared/y 2>/dev/null || echo mount read-only"
        )
        for field, value in (
            ("#run-id", "t1"),
            ("#run-args", f"/bin/sh -c {shlex.quote(script)}"),
            ("#run-env", "GREETING='hi there'"),
            ("#run-cwd", "/bin"),
            ("#run-mount", f"{shared}:/shared:ro"),
        ):
            form.query_one(field, Input).value = value
        for box in ("#run-tty", "#run-read-only"):
            form.query_one(box, Checkbox).value = True
        form.submit()
        await until(pilot, lambda: any("exited" in str(n.message) for n in app._notifications), 30)
        toast = next(str(n.message) for n in app._notifications if "exited" in str(n.message))
        assert toast.startswith("t1 exited with code 0:"), toast
        # The toast is short; the whole report is in the event log.
        notes = [line.detail for line in app.main.event_log.buffer if line.kind == "note"]
        exited = next(note for note in notes if "t1 exited with code 0:" in note)
        for said in (
            "from the host",
            "hi there in /bin",
            "on a tty",
            "read-only",
            "mount read-only",
        ):
            assert said in exited, exited
        assert not (shared / "y").exists()


async def test_run_rm_removes_a_container_that_exits_later(
    engine: EngineProcess, console: AppFactory, pulled: str
) -> None:
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        main = app.main
        await until(pilot, lambda: pulled in app.state.images)
        main.show_pane("images")
        await pilot.pause()
        main.action_command("image.run")
        await until(pilot, lambda: isinstance(app.screen, RunScreen))
        await pilot.pause()
        form = app.screen
        assert isinstance(form, RunScreen)
        form.query_one("#run-id", Input).value = "t1"
        form.query_one("#run-args", Input).value = "/bin/sleep 3"
        form.query_one("#run-rm", Checkbox).value = True
        form.submit()
        await until(
            pilot, lambda: any(str(n.message).startswith("started t1") for n in app._notifications)
        )
        await until(pilot, lambda: "t1" not in app.state.containers, timeout=30)
        assert "t1" not in ctr(engine.address, "containers", "ls", "-q").stdout.split()
        notes = [line.detail for line in main.event_log.buffer if line.kind == "note"]
        assert "t1 exited with code 0 and was removed" in notes


async def test_a_failed_pull_behind_a_hidden_dialog_points_to_it(
    engine: EngineProcess, console: AppFactory
) -> None:
    # Nothing listens there: the engine retries a few times, then the pull fails.
    ref = f"127.0.0.1:{free_port()}/nothing/here:1"
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        main = app.main
        await until(pilot, lambda: app.state.connected)
        main.run_line(f"pull {ref}")
        await pilot.pause()
        job = app.pull_job
        assert job is not None
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        await until(pilot, lambda: job.finished, timeout=60)
        told = [str(n.message) for n in app._notifications]
        # A short pointer, not the error repeated: the dialog holds it.
        assert f"pull of {ref} failed; p shows why" in told
        assert not any(job.error in m for m in told)
        main.action_command("app.pull")
        await pilot.pause(0.3)
        assert isinstance(app.screen, PullScreen) and app.screen.job is job
        assert job.error_seen
        await pilot.press("escape")
        # Once seen, p offers a new pull.
        main.action_command("app.pull")
        await pilot.pause()
        assert isinstance(app.screen, PullScreen) and app.screen.job is None
