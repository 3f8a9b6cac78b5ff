"""Fixtures for console tests: an isolated config dir, UTC, and apps wired to a real engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from core.client import Client
from tests.engine_proc import EngineProcess
from tui.app import CtrdeckApp, Settings


@pytest.fixture(autouse=True)
def isolated_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No developer keymap or registry login leaks in, and times render the same everywhere."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    # A CI without a terminal may say TERM=dumb, which draws without colour.
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(autouse=True)
def press_waits_for_typed_ahead_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pilot.press` returns once the keys are handled, as tests assume.

    Pilot waits until the process looks idle; on a loaded machine it can look
    idle while a key still waits its turn in the console's type-ahead queue.
    """
    press = Pilot.press

    async def press_and_settle(pilot: Pilot[Any], *keys: str) -> None:
        await press(pilot, *keys)
        while pilot.app.is_running and getattr(pilot.app, "keys_held", 0):
            await asyncio.sleep(0.005)

    monkeypatch.setattr(Pilot, "press", press_and_settle)


AppFactory = Callable[..., CtrdeckApp]


@pytest.fixture
def console(engine: EngineProcess) -> AppFactory:
    """Build a console app connected to the test engine."""

    def make(
        *, namespace: str = "default", read_only: bool = False, keymap: dict[str, str] | None = None
    ) -> CtrdeckApp:
        address = str(engine.address)
        settings = Settings(
            address=address, namespace=namespace, read_only=read_only, keymap=keymap or {}
        )
        return CtrdeckApp(settings, connect=lambda: Client(address, namespace))

    return make
