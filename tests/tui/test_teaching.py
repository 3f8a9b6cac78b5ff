"""Every `ctr` line teaching mode prints runs, with Debian's real `ctr`, and succeeds.

The console (teaching on) pulls an image from a test registry on 127.0.0.1, runs
containers from it through the Run form (environment, working directory, a bind
mount, a terminal, `--rm`) and `:run`, pauses, resumes, kills, starts, inspects
and deletes them, inspects and deletes a snapshot, a blob and a namespace, then
the image, and opens the engine view. Each action's taught lines are
then replayed in order with `/usr/bin/ctr --address SOCK` in a fresh namespace of
the same engine, under a pseudo-terminal (as an operator's shell would give `ctr
run -t`), at an operator's pace: after an action's lines, the replayed container
reaches the state the console's did before the next action. Every line must exit 0.
"""

from __future__ import annotations

import os
import pty
import select
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Checkbox, Input

from tests.engine_proc import EngineProcess
from tests.helpers import ctr
from tests.registry import Registry
from tests.tui.conftest import AppFactory
from tests.tui.support import chatty_image, until
from tui.app import CtrdeckApp
from tui.screens.dialogs import ConfirmScreen, Pick, PickScreen, RunScreen
from tui.screens.main import MainScreen
from tui.screens.pull import PullScreen

CTR = "/usr/bin/ctr"
SIZE = (120, 36)
REPLAY_NS = "replay"
SPARE, REPLAY_SPARE = "spare", "replay-spare"
IDS = ("t1", "t2", "t3", "chatty-1-1")

pytestmark = pytest.mark.skipif(not Path(CTR).exists(), reason="Debian's ctr is not installed")


def run_in_pty(argv: list[str], timeout: float = 60.0) -> tuple[int, str]:
    """Run `argv` with a terminal on stdin, stdout and stderr; its status and output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=max(deadline - time.monotonic(), 1)), out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def replay_status(address: Path, cid: str) -> str:
    for line in ctr(address, "task", "ls", namespace=REPLAY_NS).stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[-1]
    containers = ctr(address, "containers", "ls", "-q", namespace=REPLAY_NS).stdout.split()
    return "CREATED" if cid in containers else ""


def wait_replay(address: Path, cid: str, want: str) -> None:
    deadline = time.monotonic() + 30
    while replay_status(address, cid) != want:
        if time.monotonic() > deadline:
            raise AssertionError(f"replayed {cid} is {replay_status(address, cid)!r}, not {want!r}")
        time.sleep(0.1)


@pytest.fixture
def cleanup(engine: EngineProcess) -> Iterator[None]:
    yield
    for name in (SPARE, REPLAY_SPARE):
        ctr(engine.address, "namespaces", "rm", name, check=False)
    for ns in ("default", REPLAY_NS):
        for cid in IDS:
            ctr(engine.address, "task", "rm", "-f", cid, namespace=ns, check=False)
            ctr(engine.address, "containers", "rm", cid, namespace=ns, check=False)


async def shown(pilot: Pilot[int], app: CtrdeckApp, kind: type[Screen[Any]]) -> None:
    await until(pilot, lambda: isinstance(app.screen, kind))
    await pilot.pause()  # until the dialog has mounted its widgets


async def run_form(pilot: Pilot[int], app: CtrdeckApp) -> RunScreen:
    await shown(pilot, app, RunScreen)
    assert isinstance(app.screen, RunScreen)
    return app.screen


def status(app: CtrdeckApp, cid: str) -> str:
    row = app.state.containers.get(cid)
    return "" if row is None else row.status


def taught(app: CtrdeckApp) -> list[str]:
    return [line.detail for line in app.main.event_log.buffer if line.kind == "ctr"]


async def test_every_taught_line_runs_with_ctr(
    engine: EngineProcess,
    console: AppFactory,
    registry: Registry,
    tmp_path: Path,
    cleanup: None,
) -> None:
    ref = registry.push(chatty_image(), "tools/chatty", "1")
    # An empty namespace to delete; the replay deletes its own twin.
    for name in (SPARE, REPLAY_SPARE):
        ctr(engine.address, "namespaces", "create", name)
    shared = tmp_path / "shared"
    shared.mkdir()
    # (the lines one action taught, the container to check, its state once the action is done)
    actions: list[tuple[str, list[str], str, str]] = []
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        main = app.main
        seen = 0

        def record(what: str, cid: str = "", state: str = "") -> None:
            nonlocal seen
            lines = taught(app)
            assert len(lines) > seen, f"{what} taught nothing"
            actions.append((what, lines[seen:], cid, state))
            seen = len(lines)

        async def back_to_main() -> None:
            while not isinstance(app.screen, MainScreen):
                app.screen.dismiss(None)
                await pilot.pause()

        await until(pilot, lambda: app.state.connected)
        main.do_app_teach("")

        # Pull: at once from the command line, as the operator typed it (no --plain-http:
        # the loopback registry is found without TLS by the engine).
        main.run_line(f"pull {ref} --snapshotter overlayfs")
        await pilot.pause()
        assert isinstance(app.screen, PullScreen) and app.screen.job is not None
        job = app.screen.job
        await until(pilot, lambda: job.finished, timeout=60)
        assert not job.error
        record("pull")
        await back_to_main()
        await until(pilot, lambda: ref in app.state.images)

        # Run through the form: environment, working directory, a bind mount.
        main.show_pane("images")
        await pilot.pause()
        await until(pilot, lambda: main.table("images").selected_key() == ref)
        main.action_command("image.run")
        form = await run_form(pilot, app)
        form.query_one("#run-id", Input).value = "t1"
        form.query_one("#run-env", Input).value = "GREETING='hello there' MODE=test"
        form.query_one("#run-cwd", Input).value = "/bin"
        form.query_one("#run-mount", Input).value = f"{shared}:/shared:ro"
        form.submit()
        await until(pilot, lambda: status(app, "t1") == "RUNNING", timeout=30)
        record("run", "t1", "RUNNING")

        main.show_pane("containers")

        await pilot.pause()
        await until(pilot, lambda: main.table("containers").selected_key() == "t1")
        for verb, state in (("pause", "PAUSED"), ("resume", "RUNNING")):
            main.action_command("container.pause")
            await until(pilot, lambda state=state: status(app, "t1") == state)
            record(verb, "t1", state)

        main.action_command("container.kill")
        await shown(pilot, app, PickScreen)
        app.screen.dismiss(Pick("SIGKILL"))
        await until(pilot, lambda: status(app, "t1") == "STOPPED", timeout=30)
        record("kill", "t1", "STOPPED")

        main.action_command("container.start")
        await until(pilot, lambda: status(app, "t1") == "RUNNING", timeout=30)
        record("start", "t1", "RUNNING")

        main.action_command("table.inspect")
        await pilot.pause()
        record("inspect container")
        await back_to_main()

        main.action_command("table.delete")
        await shown(pilot, app, ConfirmScreen)
        app.screen.dismiss(True)
        await until(pilot, lambda: "t1" not in app.state.containers, timeout=30)
        record("delete running container", "t1", "")

        def told(text: str) -> bool:
            return any(text in str(n.message) for n in app._notifications)

        # From the command line, with arguments: it ends at once, and the console says so.
        t2 = main.suggested_id(ref)
        main.run_line(f"run {ref} /bin/echo done")
        await until(pilot, lambda: told(f"{t2} exited with code 0"), timeout=30)
        await until(pilot, lambda: status(app, t2) == "STOPPED")
        record("run from the command line", t2, "STOPPED")
        main.show_pane("containers")
        await pilot.pause()
        main.table("containers").select_key(t2)
        await pilot.pause()
        main.action_command("table.delete")
        await shown(pilot, app, ConfirmScreen)
        app.screen.dismiss(True)
        await until(pilot, lambda: t2 not in app.state.containers, timeout=30)
        record("delete a stopped container", t2, "")

        # --rm: removed when it exits, as `ctr run --rm` does.
        main.show_pane("images")
        await pilot.pause()
        main.action_command("image.run")
        form = await run_form(pilot, app)
        form.query_one("#run-id", Input).value = "t2"
        form.query_one(
            "#run-args", Input
        ).value = "/bin/sh -c 'echo bye; echo sh: no such thing >&2'"
        form.query_one("#run-rm", Checkbox).value = True
        form.submit()
        await until(pilot, lambda: told("t2 exited with code 0 and was removed"), timeout=30)
        assert told("bye")
        assert "t2" not in app.state.containers
        record("run --rm", "t2", "")

        # A terminal.
        main.action_command("image.run")
        form = await run_form(pilot, app)
        form.query_one("#run-id", Input).value = "t3"
        form.query_one("#run-tty", Checkbox).value = True
        form.submit()
        await until(pilot, lambda: status(app, "t3") == "RUNNING", timeout=30)
        record("run with a terminal", "t3", "RUNNING")

        main.show_pane("containers")

        await pilot.pause()
        main.table("containers").select_key("t3")
        await pilot.pause()
        main.action_command("table.delete")
        await shown(pilot, app, ConfirmScreen)
        app.screen.dismiss(True)
        await until(pilot, lambda: "t3" not in app.state.containers, timeout=30)
        record("delete a terminal container", "t3", "")

        # The image's snapshot and its config blob: inspect, then delete.
        chain = chatty_image().images[0].layers[0].diff_id
        config = chatty_image().images[0].config_descriptor.digest
        for pane, key, what in (
            ("snapshots", ("overlayfs", chain), "snapshot"),
            ("content", config, "blob"),
        ):
            rows = app.state.snapshots if pane == "snapshots" else app.state.content
            main.show_pane(pane)
            await until(pilot, lambda key=key, rows=rows: key in rows)
            await pilot.pause(0.1)
            main.table(pane).select_key(key)
            await pilot.pause()
            main.action_command("table.inspect")
            await pilot.pause()
            record(f"inspect {what}")
            await back_to_main()
            main.table(pane).focus()
            await pilot.pause()
            main.action_command("table.delete")
            await shown(pilot, app, ConfirmScreen)
            app.screen.dismiss(True)
            await until(
                pilot,
                lambda key=key, pane=pane: (
                    key not in (app.state.snapshots if pane == "snapshots" else app.state.content)
                ),
            )
            record(f"delete {what}")

        main.show_pane("namespaces")
        await until(pilot, lambda: SPARE in app.state.namespaces)
        await pilot.pause(0.1)
        main.table("namespaces").select_key(SPARE)
        await pilot.pause()
        main.action_command("table.delete")
        await shown(pilot, app, ConfirmScreen)
        app.screen.dismiss(True)
        await until(pilot, lambda: SPARE not in app.state.namespaces)
        record("delete namespace")

        main.show_pane("images")
        await pilot.pause()
        main.action_command("table.inspect")
        await pilot.pause()
        record("inspect image")
        await back_to_main()

        main.action_command("table.delete")
        await shown(pilot, app, ConfirmScreen)
        app.screen.dismiss(True)
        await until(pilot, lambda: ref not in app.state.images, timeout=30)
        record("delete image")

        main.action_command("app.engine")
        await pilot.pause()
        record("engine")
        await back_to_main()

    every = "\n".join(line for _what, lines, *_ in actions for line in lines)
    for expected in (
        f"images pull --snapshotter overlayfs {ref}",
        "run -d --snapshotter overlayfs --env 'GREETING=hello there' --env MODE=test --cwd /bin "
        f"--mount type=bind,src={shared},dst=/shared,options=rbind:ro {ref} t1",
        "task pause t1",
        "task resume t1",
        "task kill -s SIGKILL t1",
        "task rm t1\nctr -n default task start -d t1",
        "task rm -f t1\nctr -n default containers rm t1",
        f"run -d --snapshotter overlayfs {ref} {t2} /bin/echo done",
        "run --rm --snapshotter overlayfs",
        "run -d -t --snapshotter overlayfs",
        "containers info t1",
        f"snapshots --snapshotter overlayfs info {chain}",
        f"snapshots --snapshotter overlayfs rm {chain}",
        f"content get {config}",
        f"content rm {config}",
        f"namespaces rm {SPARE}",
        f"images ls name=={ref}",
        f"images rm {ref}",
        "ctr plugins ls",
    ):
        assert expected in every, expected
    for what, lines, cid, state in actions:
        for line in lines:
            words = shlex.split(line)
            assert words[0] == "ctr", line
            if words[1:3] == ["-n", "default"]:
                words = [*words[:2], REPLAY_NS, *words[3:]]
            if words[1:] == ["namespaces", "rm", SPARE]:
                words[-1] = REPLAY_SPARE
            code, output = run_in_pty([CTR, "--address", str(engine.address), *words[1:]])
            assert code == 0, f"{what}: `{line}` failed ({code}):\n{output}"
        if cid:
            wait_replay(engine.address, cid, state)
