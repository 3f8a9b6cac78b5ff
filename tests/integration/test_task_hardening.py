"""Tasks under faults: gone monitors, hung runtimes, other local users, namespaces.

Real engine, real runc, the busybox rootfs and FIFOs of `test_tasks.py`. The
hung runtime is a test-only runtime configured through `config.toml`
(`BinaryName` pointing at a script that hangs on `start`); everything else
the engine runs is the real code path.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest
from grpclib import GRPCError
from grpclib.const import Status as Code

from core.api.containerd.services.containers import v1 as containers
from core.api.containerd.services.tasks import v1 as tasks
from core.client import Client
from core.runtime.tasks import TASK_DIR
from core.typeurl import unpack
from tests.engine_proc import EngineProcess
from tests.helpers import eventually
from tests.integration.test_tasks import (
    BUSYBOX,
    Fifos,
    cleanup_namespace,
    create_container,
    nsclient,
    process_any,
    remove_namespace_cgroups,
    rootfs_mounts,
    spec_any,
    stdin_writer,
    tengine,
    workdir,
)

__all__ = ["nsclient", "tengine", "workdir"]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(BUSYBOX is None, reason="busybox-static is not installed"),
]


async def _code(call: object) -> tuple[Code, str]:
    try:
        await call  # type: ignore[misc]
    except GRPCError as exc:
        return exc.status, exc.message or ""
    raise AssertionError("the call succeeded")


def _dead(pid: int) -> bool:
    """Gone, or a zombie: either way its open files are closed."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


# --- item 8: control of a process whose monitor is gone -----------------------------


async def test_resize_and_close_io_after_exit_are_errors(
    nsclient: Client, tengine: EngineProcess, workdir: Path
) -> None:
    c = nsclient
    await c.containers.create(
        containers.CreateContainerRequest(
            container=containers.Container(
                id="gone-tty",
                runtime=containers.ContainerRuntime(name="io.containerd.runc.v2"),
                spec=spec_any(c.namespace, "gone-tty", ["true"], terminal=True),
            )
        )
    )
    io = Fifos(workdir, "gone-tty")
    try:
        await c.tasks.create(
            tasks.CreateTaskRequest(
                container_id="gone-tty",
                rootfs=rootfs_mounts(workdir / "rootfs"),
                stdout=str(io.paths["stdout"]),
                terminal=True,
            )
        )
        await c.tasks.start(tasks.StartRequest(container_id="gone-tty"))
        await c.tasks.wait(tasks.WaitRequest(container_id="gone-tty"))
        code, msg = await _code(
            c.tasks.resize_pty(tasks.ResizePtyRequest(container_id="gone-tty", width=80, height=24))
        )
        assert code == Code.NOT_FOUND and "exited" in msg
        code, msg = await _code(
            c.tasks.close_io(tasks.CloseIoRequest(container_id="gone-tty", stdin=True))
        )
        assert code == Code.NOT_FOUND and "exited" in msg
    finally:
        io.close()


async def test_close_io_when_the_monitor_was_killed_is_an_error(
    nsclient: Client, tengine: EngineProcess, workdir: Path
) -> None:
    c = nsclient
    await create_container(c, "orphan", ["cat"])
    io = Fifos(workdir, "orphan")
    writer = stdin_writer(io)
    try:
        await c.tasks.create(
            tasks.CreateTaskRequest(
                container_id="orphan",
                rootfs=rootfs_mounts(workdir / "rootfs"),
                stdin=str(io.paths["stdin"]),
                stdout=str(io.paths["stdout"]),
            )
        )
        await c.tasks.start(tasks.StartRequest(container_id="orphan"))
        record = tengine.state / TASK_DIR / c.namespace / "orphan" / "init" / "process.json"
        monitor_pid = json.loads(record.read_text())["monitor_pid"]
        os.kill(monitor_pid, signal.SIGKILL)
        await eventually(lambda: _dead(monitor_pid))
        # Whether or not the engine has noticed yet, nothing took the request.
        code, _ = await _code(
            c.tasks.close_io(tasks.CloseIoRequest(container_id="orphan", stdin=True))
        )
        assert code in (Code.NOT_FOUND, Code.FAILED_PRECONDITION)
    finally:
        os.close(writer)
        io.close()


async def test_close_io_of_an_unstarted_exec_is_an_error(nsclient: Client, workdir: Path) -> None:
    c = nsclient
    await create_container(c, "host", ["sleep", "1000"])
    await c.tasks.create(
        tasks.CreateTaskRequest(container_id="host", rootfs=rootfs_mounts(workdir / "rootfs"))
    )
    await c.tasks.start(tasks.StartRequest(container_id="host"))
    await c.tasks.exec(
        tasks.ExecProcessRequest(container_id="host", exec_id="idle", spec=process_any(["true"]))
    )
    code, msg = await _code(
        c.tasks.close_io(tasks.CloseIoRequest(container_id="host", exec_id="idle", stdin=True))
    )
    assert code == Code.FAILED_PRECONDITION and "not started" in msg


# --- item 6: Tasks.Metrics is scoped to the caller's namespace -----------------------


async def test_metrics_are_scoped_to_the_namespace(
    nsclient: Client, tengine: EngineProcess, workdir: Path
) -> None:
    here = nsclient
    there = Client(str(tengine.address), here.namespace + "b")
    try:
        for c in (here, there):
            await create_container(c, "twin", ["sleep", "1000"])
            await c.tasks.create(
                tasks.CreateTaskRequest(
                    container_id="twin", rootfs=rootfs_mounts(workdir / "rootfs")
                )
            )
            await c.tasks.start(tasks.StartRequest(container_id="twin"))
        for c in (here, there):
            listed = await c.tasks.metrics(tasks.MetricsRequest())
            assert [m.id for m in listed.metrics] == ["twin"]
            stats = unpack(listed.metrics[0].data)
            assert stats.pids is not None and stats.pids.current >= 1
        elsewhere = await here.tasks.metrics(
            tasks.MetricsRequest(filters=[f"namespace=={there.namespace}"])
        )
        assert elsewhere.metrics == []
    finally:
        with contextlib.suppress(Exception):
            await cleanup_namespace(there)
        there.close()
        remove_namespace_cgroups(there.namespace)
