"""ctrdeck's TaskDetails extension against the real engine: task logs and start times.

Real containers (runc, a busybox rootfs) print lines; the tests read their
logs through `Client.task_log` from an offset and from the last lines, follow
them while they write (a container waits for a trigger file the test creates,
so "new output" is new without any timing), see the stream end when the task
exits, cross a log rotation, and get NOT_FOUND or INVALID_ARGUMENT for what is
not there or not sensible.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from grpclib import GRPCError
from grpclib.const import Status as Code

from core.api.containerd.services.tasks import v1 as tasks
from core.api.ctrdeck.services.tasks import v1 as details
from core.client import Client
from core.runtime.tasks import TASK_DIR
from tests.engine_proc import EngineProcess
from tests.helpers import eventually
from tests.integration.test_tasks import (
    BUSYBOX,
    cleanup_namespace,
    create_container,
    make_rootfs,
    process_any,
    remove_namespace_cgroups,
    rootfs_mounts,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(BUSYBOX is None, reason="busybox-static is not installed"),
]

LOG_MAX = 4096
CONFIG = f'version = 2\n[plugins."io.containerd.runtime.v2.task"]\nlog_size_max = {LOG_MAX}\n'


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ctrdeck-logs-", dir="/tmp"))
    make_rootfs(d)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def lengine() -> Iterator[EngineProcess]:
    proc = EngineProcess(config=CONFIG).start()
    try:
        yield proc
    finally:
        proc.stop(cleanup=True)


_counter = iter(range(1_000_000))


@pytest.fixture
async def nsclient(lengine: EngineProcess) -> AsyncIterator[Client]:
    ns = f"l{os.getpid()}x{next(_counter)}"
    c = Client(str(lengine.address), ns)
    try:
        yield c
    finally:
        with contextlib.suppress(Exception):
            await cleanup_namespace(c)
        c.close()
        remove_namespace_cgroups(ns)


async def run(client: Client, workdir: Path, cid: str, script: str) -> None:
    """Create and start a task running `sh -c script`, with no stdio of its own."""
    await create_container(client, cid, ["sh", "-c", script])
    await client.tasks.create(
        tasks.CreateTaskRequest(container_id=cid, rootfs=rootfs_mounts(workdir / "rootfs"))
    )
    await client.tasks.start(tasks.StartRequest(container_id=cid))


async def exit_status(client: Client, cid: str) -> int:
    resp = await client.tasks.wait(tasks.WaitRequest(container_id=cid), timeout=30)
    return resp.exit_status


async def read_all(client: Client, cid: str, **kwargs: object) -> tuple[bytes, list[int]]:
    data, offsets = b"", []
    async for chunk in client.task_log(cid, **kwargs):  # type: ignore[arg-type]
        data += chunk.data
        offsets.append(chunk.offset)
    return data, offsets


def trigger(workdir: Path, name: str) -> tuple[str, Path]:
    """A path the container waits for, as it sees it and as the host makes it."""
    return f"/tmp/{name}", workdir / "rootfs" / "tmp" / name


async def test_a_log_reads_whole_from_an_offset_and_by_its_last_lines(
    nsclient: Client, workdir: Path
) -> None:
    await run(nsclient, workdir, "five", "for i in 1 2 3 4 5; do echo line$i; done")
    assert await exit_status(nsclient, "five") == 0
    whole = b"".join(f"line{i}\n".encode() for i in range(1, 6))
    assert await read_all(nsclient, "five") == (whole, [0])
    assert (await read_all(nsclient, "five", offset=6))[0] == whole[6:]
    assert await read_all(nsclient, "five", tail_lines=2) == (b"line4\nline5\n", [18])
    assert (await read_all(nsclient, "five", tail_lines=50))[0] == whole
    assert (await read_all(nsclient, "five", offset=len(whole)))[0] == b""
    # Following a task that has already exited gives what it wrote, then ends.
    assert (await read_all(nsclient, "five", follow=True))[0] == whole


async def test_follow_sees_new_lines_and_ends_when_the_task_exits(
    nsclient: Client, workdir: Path
) -> None:
    inside, go = trigger(workdir, f"go-{nsclient.namespace}")
    script = f"echo before; while [ ! -e {inside} ]; do sleep 0.05; done; echo after; exit 3"
    await run(nsclient, workdir, "follow", script)
    seen = b""
    try:
        async with asyncio.timeout(60):
            async for chunk in nsclient.task_log("follow", follow=True):
                seen += chunk.data
                if seen == b"before\n":
                    # The task waits for this file: "after" is written only now.
                    go.touch()
        assert seen == b"before\nafter\n"
        assert await exit_status(nsclient, "follow") == 3
    finally:
        go.unlink(missing_ok=True)


async def test_follow_crosses_a_log_rotation(nsclient: Client, workdir: Path) -> None:
    inside, go = trigger(workdir, f"rot-{nsclient.namespace}")
    # Two writes of 3000 bytes: the second does not fit under the 4096-byte cap.
    first, second = "a" * 2999, "b" * 2999
    script = f"echo {first}; while [ ! -e {inside} ]; do sleep 0.05; done; echo {second}"
    await run(nsclient, workdir, "rotate", script)
    seen, offsets, files = b"", [], []
    try:
        async with asyncio.timeout(60):
            async for chunk in nsclient.task_log("rotate", follow=True):
                seen += chunk.data
                offsets.append(chunk.offset)
                files.append(chunk.file)
                if seen == f"{first}\n".encode():
                    go.touch()
        assert seen == f"{first}\n{second}\n".encode()
        # The second line is in the fresh file, from its beginning.
        assert offsets == [0, 0] and files[0] != files[1]
        assert (await read_all(nsclient, "rotate"))[0] == f"{second}\n".encode()
        # A client that had read the first line resumes in the rotated file, then the fresh one.
        resumed = [
            (c.file, c.offset, c.data)
            async for c in nsclient.task_log("rotate", file=files[0], offset=3000)
        ]
        assert resumed == [(files[1], 0, f"{second}\n".encode())]
        # A file the engine no longer keeps: the current one from its start.
        gone = await read_all(nsclient, "rotate", file="0:0", offset=3000)
        assert gone == (f"{second}\n".encode(), [0])
    finally:
        go.unlink(missing_ok=True)


def engine_opens(engine: EngineProcess, path: Path) -> bool:
    """Whether the engine process holds `path` open."""
    assert engine.proc is not None
    fds = Path(f"/proc/{engine.proc.pid}/fd")
    found = False
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            found = found or os.readlink(fd) == str(path)
    return found


async def test_a_client_that_cancels_a_follow_ends_it_in_the_engine(
    lengine: EngineProcess, nsclient: Client, workdir: Path
) -> None:
    await run(nsclient, workdir, "quiet", "echo hello; sleep 600")
    log = lengine.state / TASK_DIR / nsclient.namespace / "quiet" / "log"
    seen = asyncio.Event()

    async def follow() -> None:
        async for _ in nsclient.task_log("quiet", follow=True):
            seen.set()

    reader = asyncio.create_task(follow())
    async with asyncio.timeout(30):
        await seen.wait()
    # The task runs on: only the engine's follow holds the log open.
    assert not reader.done() and engine_opens(lengine, log)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    await eventually(lambda: not engine_opens(lengine, log), timeout=30)
    assert await read_all(nsclient, "quiet", tail_lines=1) == (b"hello\n", [0])


async def test_an_exec_has_its_own_log(nsclient: Client, workdir: Path) -> None:
    await run(nsclient, workdir, "host", "sleep 600")
    await nsclient.tasks.exec(
        tasks.ExecProcessRequest(
            container_id="host", exec_id="hi", spec=process_any(["echo", "from the exec"])
        )
    )
    await nsclient.tasks.start(tasks.StartRequest(container_id="host", exec_id="hi"))
    data = b""
    async with asyncio.timeout(60):
        async for chunk in nsclient.task_log("host", exec_id="hi", follow=True):
            data += chunk.data
    assert data == b"from the exec\n"
    assert (await read_all(nsclient, "host"))[0] == b""


async def test_what_is_not_there_is_not_found(nsclient: Client, workdir: Path) -> None:
    async def code_of(cid: str, client: Client = nsclient, **kwargs: object) -> tuple[Code, str]:
        with pytest.raises(GRPCError) as caught:
            await read_all(client, cid, **kwargs)
        return caught.value.status, caught.value.message or ""

    status, message = await code_of("nobody")
    assert status is Code.NOT_FOUND and "nobody" in message
    await create_container(nsclient, "idle", ["true"])
    status, message = await code_of("idle")
    assert status is Code.NOT_FOUND and "task idle not found" in message
    await run(nsclient, workdir, "busy", "sleep 600")
    status, message = await code_of("busy", exec_id="nope")
    assert status is Code.NOT_FOUND and "nope" in message
    # The same container asked for from another namespace is not there.
    other = nsclient.with_namespace(f"{nsclient.namespace}-other")
    status, message = await code_of("busy", other)
    assert status is Code.NOT_FOUND and other.namespace in message


async def test_bad_offsets_and_line_counts_are_invalid(nsclient: Client, workdir: Path) -> None:
    await run(nsclient, workdir, "short", "echo hi")
    await exit_status(nsclient, "short")
    for kwargs, words in [
        ({"offset": -1}, "must not be negative"),
        ({"tail_lines": -2}, "must not be negative"),
        ({"offset": 1, "tail_lines": 1}, "not both"),
        ({"offset": 4}, "past the end of the log of task short (3 bytes)"),
        ({}, "container_id is required"),
    ]:
        cid = "" if not kwargs else "short"
        with pytest.raises(GRPCError) as caught:
            await read_all(nsclient, cid, **kwargs)
        assert caught.value.status is Code.INVALID_ARGUMENT, kwargs
        assert words in (caught.value.message or ""), kwargs


async def test_started_tells_when_running_tasks_started(nsclient: Client, workdir: Path) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    await run(nsclient, workdir, "up", "sleep 600")
    await run(nsclient, workdir, "gone", "true")
    await exit_status(nsclient, "gone")
    resp = await nsclient.task_details.started(details.StartedRequest())
    listed = {t.container_id: t for t in resp.tasks}
    assert set(listed) == {"up"}
    got = await nsclient.tasks.get(tasks.GetRequest(container_id="up"))
    assert got.process is not None and listed["up"].pid == got.process.pid
    started = (await nsclient.task_starts())["up"]
    assert before <= started <= datetime.now(UTC) + timedelta(seconds=5)


async def test_processes_tell_user_command_state_cpu_and_memory(
    nsclient: Client, workdir: Path
) -> None:
    await run(nsclient, workdir, "busy", "sleep 600 & while :; do :; done")
    got = await nsclient.tasks.get(tasks.GetRequest(container_id="busy"))
    assert got.process is not None

    async def sampled() -> dict[str, details.TaskProcess]:
        return {p.command: p for p in await nsclient.task_processes("busy")}

    first = await sampled()
    await asyncio.sleep(0.5)
    later = await sampled()
    assert "sleep 600" in later
    init = next(p for p in later.values() if p.pid == got.process.pid)
    assert init.user in ("root", "0") and init.exec_id == "" and init.rss_bytes > 0
    # The shell spinning in its loop uses CPU between two answers; the sleeper does not.
    assert init.cpu_ns > first[init.command].cpu_ns
    assert later["sleep 600"].state == "S"

    with pytest.raises(GRPCError) as unknown:
        await nsclient.task_processes("no-such")
    assert unknown.value.status == Code.NOT_FOUND
    with pytest.raises(GRPCError) as empty:
        await nsclient.task_processes("")
    assert empty.value.status == Code.INVALID_ARGUMENT
