"""Task metrics in the console: its columns fill, from the namespace it shows.

Two namespaces hold a running container of the same id; the one the console
does not show fills 48 MiB of its /dev/shm. The console's memory column for
its own container must be its own container's, not the other one's. While the
terminal reports it lost focus, the console polls metrics less often.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual import events

from core.api.containerd.services.tasks import v1 as tasks
from core.client import Client
from core.typeurl import unpack
from tests.engine_proc import EngineProcess
from tests.integration.test_tasks import (
    BUSYBOX,
    cleanup_namespace,
    create_container,
    make_rootfs,
    remove_namespace_cgroups,
    rootfs_mounts,
)
from tests.tui.conftest import AppFactory
from tests.tui.support import until
from tui.syncer import UNWATCHED_POLL_TICKS, metric_sample

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(BUSYBOX is None, reason="busybox-static is not installed"),
]

FILL = 48 * 1024 * 1024


@pytest.fixture
def rootfs() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="ctrdeck-twins-", dir="/tmp"))
    root = make_rootfs(base)
    (root / "bin" / "dd").symlink_to("busybox")
    try:
        yield root
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def _memory(client: Client, cid: str) -> int:
    listed = await client.tasks.metrics(tasks.MetricsRequest(filters=[f"id=={cid}"]))
    return max((metric_sample(unpack(m.data))[1] or 0 for m in listed.metrics), default=0)


async def test_same_container_id_in_two_namespaces(
    engine: EngineProcess, console: AppFactory, rootfs: Path
) -> None:
    # "aa" sorts before "zz": an engine listing every namespace's tasks
    # would hand the console the filled container last.
    mine = Client(str(engine.address), "aa")
    other = Client(str(engine.address), "zz")
    fill = f"dd if=/dev/zero of=/dev/shm/fill bs=1M count={FILL >> 20}; sleep 1000"
    try:
        for client, args in ((mine, ["sleep", "1000"]), (other, ["sh", "-c", fill])):
            await create_container(client, "twin", args)
            await client.tasks.create(
                tasks.CreateTaskRequest(container_id="twin", rootfs=rootfs_mounts(rootfs))
            )
            await client.tasks.start(tasks.StartRequest(container_id="twin"))
        for _ in range(200):
            other_usage = await _memory(other, "twin")
            if other_usage >= FILL:
                break
            await asyncio.sleep(0.1)
        assert other_usage >= FILL, "the other namespace's container never filled its memory"

        app = console(namespace="aa")
        async with app.run_test(size=(120, 36)) as pilot:

            def sampled() -> bool:
                row = app.state.containers.get("twin")
                return row is not None and row.memory is not None

            await until(pilot, sampled, timeout=20)
            row = app.state.containers["twin"]
            assert row.memory is not None and row.memory < FILL // 2
            assert row.memory < other_usage
    finally:
        for client in (mine, other):
            with contextlib.suppress(Exception):
                await cleanup_namespace(client)
            client.close()
            remove_namespace_cgroups(client.namespace)


async def test_metric_columns_fill_and_polls_thin_out_while_nobody_looks(
    engine: EngineProcess, console: AppFactory, rootfs: Path
) -> None:
    client = Client(str(engine.address), "watch")
    try:
        await create_container(client, "busy", ["sleep", "1000"])
        await client.tasks.create(
            tasks.CreateTaskRequest(container_id="busy", rootfs=rootfs_mounts(rootfs))
        )
        await client.tasks.start(tasks.StartRequest(container_id="busy"))
        app = console(namespace="watch")
        async with app.run_test(size=(120, 36)) as pilot:

            def both() -> bool:
                row = app.state.containers.get("busy")
                return row is not None and row.memory is not None and row.cpu is not None

            # CPU is a rate: it takes two polls (shared samples are never reused
            # past a second, so the second poll reads afresh).
            await until(pilot, both, timeout=20)
            syncer = app.syncer
            assert syncer is not None and syncer.watched()
            app.post_message(events.AppBlur())
            await pilot.pause()
            assert not syncer.watched()
            due = [syncer.metrics_due() for _ in range(2 * UNWATCHED_POLL_TICKS)]
            assert due.count(True) == 2
            app.post_message(events.AppFocus())
            await pilot.pause()
            assert syncer.watched() and syncer.metrics_due()
    finally:
        with contextlib.suppress(Exception):
            await cleanup_namespace(client)
        client.close()
        remove_namespace_cgroups(client.namespace)
