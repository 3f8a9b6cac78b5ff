"""Shared fixtures: a real engine subprocess and a client connected to it."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import pytest

from core.client import Client
from tests.engine_proc import EngineProcess

pytest_plugins = ["tests.registry", "tests.skips"]


@pytest.fixture
def engine() -> Iterator[EngineProcess]:
    proc = EngineProcess().start()
    try:
        yield proc
    finally:
        proc.stop(cleanup=True)


@pytest.fixture
async def client(engine: EngineProcess) -> AsyncIterator[Client]:
    c = Client(str(engine.address), "default")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def ctr_bin() -> str:
    path = shutil.which("ctr")
    if path is None:
        pytest.skip("ctr (Debian's containerd package) is not installed")
    return path
