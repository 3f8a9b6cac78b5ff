"""The pull dialog's registry user and password, against a registry behind htpasswd.

The password field never echoes; the pull uses the credentials for this request; the
teaching line shows `--user NAME` and never the password, and neither does anything the
console shows or keeps in its event log. Without a user, Docker's config.json is used for the
call, and the job never holds it.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Input

from tests.engine_proc import EngineProcess
from tests.registry import Registry, busybox_image, running_registry
from tests.tui.conftest import AppFactory
from tests.tui.support import until
from tui.screens.pull import PullScreen

SIZE = (120, 40)
SECRET = "Pa55-w0rd-never-shown"


@pytest.fixture
def private() -> Iterator[tuple[Registry, str]]:
    with running_registry(users={"alice": SECRET}) as reg:
        yield reg, reg.push(busybox_image(), "test/private", "v1")


async def test_pull_dialog_with_user_and_masked_password(
    engine: EngineProcess, console: AppFactory, private: tuple[Registry, str]
) -> None:
    _, ref = private
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.connected)
        app.main.do_app_teach("")
        await pilot.press("p")
        form = app.screen
        assert isinstance(form, PullScreen)
        form.query_one("#pull-ref", Input).value = ref
        form.query_one("#pull-user", Input).value = "alice"
        password = form.query_one("#pull-password", Input)
        assert password.password
        password.value = SECRET
        await pilot.click("#pull-plain-http")
        await pilot.click("#pull-go")
        assert isinstance(app.screen, PullScreen) and app.screen.job is not None
        job = app.screen.job
        await until(pilot, lambda: job.finished, timeout=60)
        assert not job.error
        await until(pilot, lambda: ref in app.state.images)
        lines = [line.detail for line in app.main.event_log.buffer]
        taught = [line.detail for line in app.main.event_log.buffer if line.kind == "ctr"]
        assert any("images pull --plain-http --user alice " in t and ref in t for t in taught)
        assert not any(SECRET in line for line in lines)


async def test_pull_dialog_uses_docker_config_without_a_user(
    engine: EngineProcess, console: AppFactory, private: tuple[Registry, str]
) -> None:
    reg, ref = private
    docker = Path(os.environ["DOCKER_CONFIG"])
    docker.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"alice:{SECRET}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
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
        assert job.request.user == ""


async def test_pull_line_with_user_asks_for_the_password(
    engine: EngineProcess, console: AppFactory, private: tuple[Registry, str]
) -> None:
    _, ref = private
    app = console()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.connected)
        # A secret on the command line is refused: it would stay on the screen.
        app.main.run_line(f"pull {ref} --user alice:{SECRET}")
        await pilot.pause()
        assert not isinstance(app.screen, PullScreen)
        app.main.run_line(f"pull {ref} --plain-http --user alice")
        await until(pilot, lambda: isinstance(app.screen, PullScreen))
        form = app.screen
        assert isinstance(form, PullScreen)
        await until(pilot, lambda: bool(form.query("#pull-password")))
        assert form.query_one("#pull-ref", Input).value == ref
        assert form.query_one("#pull-user", Input).value == "alice"
        password = form.query_one("#pull-password", Input)
        await until(pilot, lambda: password.has_focus)
        await pilot.press(*SECRET, "enter")
        await until(pilot, lambda: app.pull_job is not None)
        job = app.pull_job
        assert job is not None and job.request.plain_http
        await until(pilot, lambda: job.finished, timeout=60)
        assert not job.error
        await until(pilot, lambda: ref in app.state.images)
        assert not any(SECRET in line.detail for line in app.main.event_log.buffer)
