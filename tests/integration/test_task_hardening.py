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
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib import GRPCError
from grpclib.const import Status as Code

from core.api.containerd.services.containers import v1 as containers
from core.api.containerd.services.tasks import v1 as tasks
from core.api.containerd.v1.types import Status
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


# --- item 5: what another local user can read -------------------------------------

SECRET = "s3cr3t-c0ffee-7e57"
# Each path on stdin (FIFOs and sockets are left alone): R when nobody can
# open it, L when nobody can list it, S when what nobody can read holds the secret.
PROBE = r"""
while IFS= read -r f; do
  if [ -d "$f" ]; then
    ls -- "$f" >/dev/null 2>&1 && echo "L $f"
  elif [ -f "$f" ]; then
    head -c0 -- "$f" 2>/dev/null && echo "R $f"
    grep -qsF -- "$SECRET" "$f" && echo "S $f"
  fi
done
exit 0
"""


def read_as_nobody(paths: list[Path], secret: str) -> dict[str, list[str]]:
    """What user nobody (no groups) can list, read, and read the secret in."""
    result = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         "/bin/sh", "-c", PROBE],
        input="".join(f"{p}\n" for p in paths), capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "SECRET": secret}, check=True,
    )  # fmt: skip
    found: dict[str, list[str]] = {"L": [], "R": [], "S": []}
    for line in result.stdout.splitlines():
        kind, _, path = line.partition(" ")
        found[kind].append(path)
    return found


def everything_under(*roots: Path) -> list[Path]:
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            found.append(Path(dirpath))
            # The container's root filesystem is the container's own business.
            dirnames[:] = [d for d in dirnames if d != "rootfs"]
            found.extend(Path(dirpath, f) for f in filenames)
    return found


async def create_with_secret(c: Client, cid: str, args: list[str]) -> None:
    """A runc container whose environment holds SECRET_TOKEN."""
    spec = spec_any(c.namespace, cid, args)
    body = json.loads(spec.value)
    body["process"]["env"].append(f"SECRET_TOKEN={SECRET}")
    spec.value = json.dumps(body).encode()
    await c.containers.create(
        containers.CreateContainerRequest(
            container=containers.Container(
                id=cid,
                runtime=containers.ContainerRuntime(name="io.containerd.runc.v2"),
                spec=spec,
            )
        )
    )


async def test_another_user_reads_no_bundle_spec_log_or_database(
    nsclient: Client, tengine: EngineProcess, workdir: Path
) -> None:
    c = nsclient
    await create_with_secret(c, "secretive", ["sh", "-c", "echo $SECRET_TOKEN; sleep 1000"])
    await c.tasks.create(
        tasks.CreateTaskRequest(container_id="secretive", rootfs=rootfs_mounts(workdir / "rootfs"))
    )
    await c.tasks.start(tasks.StartRequest(container_id="secretive"))
    exec_env = process_any(["sleep", "1000"])
    body = json.loads(exec_env.value)
    body["env"].append(f"SECRET_TOKEN={SECRET}")
    exec_env.value = json.dumps(body).encode()
    await c.tasks.exec(
        tasks.ExecProcessRequest(container_id="secretive", exec_id="peek", spec=exec_env)
    )
    await c.tasks.start(tasks.StartRequest(container_id="secretive", exec_id="peek"))
    log = tengine.state / TASK_DIR / c.namespace / "secretive" / "log"
    await eventually(lambda: SECRET.encode() in log.read_bytes())

    seen = read_as_nobody(everything_under(tengine.root, tengine.state), SECRET)
    assert seen["S"] == []
    bundles = str(tengine.state / TASK_DIR / c.namespace)
    assert [p for p in seen["R"] + seen["L"] if p.startswith(bundles)] == []
    assert [p for p in seen["R"] if "meta.db" in p] == []
    assert [p for p in seen["R"] if p.endswith(".log")] == []
    assert [p for p in seen["L"] if p.startswith(str(tengine.state / "runc"))] == []


async def test_an_older_engines_bundles_and_database_are_tightened_at_start(
    workdir: Path,
) -> None:
    engine = EngineProcess().start()
    ns = "loose"
    c = Client(str(engine.address), ns)
    try:
        await create_with_secret(c, "old", ["sleep", "1000"])
        await c.tasks.create(
            tasks.CreateTaskRequest(container_id="old", rootfs=rootfs_mounts(workdir / "rootfs"))
        )
        await c.tasks.start(tasks.StartRequest(container_id="old"))
        c.close()
        engine.stop()
        # What an engine before the fix left: world-readable everything.
        for path in everything_under(engine.root, engine.state):
            if path.is_dir():
                path.chmod(0o755)
            elif path.is_file():
                path.chmod(0o644)
        assert read_as_nobody(everything_under(engine.root, engine.state), SECRET)["S"]

        engine = EngineProcess(base=engine.base).start()
        c = Client(str(engine.address), ns)
        seen = read_as_nobody(everything_under(engine.root, engine.state), SECRET)
        assert seen["S"] == []
        bundles = str(engine.state / TASK_DIR / ns)
        assert [p for p in seen["R"] + seen["L"] if p.startswith(bundles)] == []
        assert [p for p in seen["R"] if "meta.db" in p] == []
        listed = await c.tasks.list(tasks.ListTasksRequest())
        assert [t.id for t in listed.tasks] == ["old"]
    finally:
        with contextlib.suppress(Exception):
            await cleanup_namespace(c)
        c.close()
        engine.stop(cleanup=True)
        remove_namespace_cgroups(ns)


# --- item 9: a hung runtime command does not wedge its task ---------------------------

# A runc that hangs (in a marked sleep) when its subcommand is the one its
# container id names, `hang-on-<subcommand>`; real runc for everything else.
HANGING_RUNC = """#!/bin/sh
for a; do
  for b; do
    [ "$b" = "hang-on-$a" ] && exec sleep 424242
  done
done
exec runc "$@"
"""


def hung_sleeps() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == b"sleep\x00424242\x00":
                found.append(int(entry.name))
    return found


@pytest.fixture
def hang_engine(tmp_path: Path) -> Iterator[EngineProcess]:
    script = tmp_path / "runc-hang"
    script.write_text(HANGING_RUNC)
    script.chmod(0o755)
    config = f"""
version = 2
[plugins."io.containerd.runtime.v2.task"]
  runtime_timeout = 3
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hang]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hang.options]
    BinaryName = "{script}"
"""
    engine = EngineProcess(config=config).start()
    try:
        yield engine
    finally:
        engine.stop(cleanup=True)
        remove_namespace_cgroups("hang")
        for pid in hung_sleeps():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_a_hung_runtime_start_times_out_and_frees_the_task(
    hang_engine: EngineProcess, workdir: Path
) -> None:
    c = Client(str(hang_engine.address), "hang")
    try:
        await create_container(c, "hang-on-start", ["sleep", "1000"], runtime="hang")
        await c.tasks.create(
            tasks.CreateTaskRequest(
                container_id="hang-on-start", rootfs=rootfs_mounts(workdir / "rootfs")
            )
        )
        code, msg = await _code(
            c.tasks.start(tasks.StartRequest(container_id="hang-on-start"), timeout=30)
        )
        assert code == Code.DEADLINE_EXCEEDED and "did not finish within 3 seconds" in msg
        assert hung_sleeps() == []
        # The task lock is free: a call that takes it answers at once.
        code, msg = await _code(
            c.tasks.pause(tasks.PauseTaskRequest(container_id="hang-on-start"), timeout=10)
        )
        assert code == Code.FAILED_PRECONDITION and "created" in msg
    finally:
        with contextlib.suppress(Exception):
            await cleanup_namespace(c)
        c.close()


async def test_a_cancelled_runtime_command_is_killed_and_frees_the_task(
    hang_engine: EngineProcess, workdir: Path
) -> None:
    c = Client(str(hang_engine.address), "hang")
    try:
        await create_container(c, "hang-on-pause", ["sleep", "1000"], runtime="hang")
        await c.tasks.create(
            tasks.CreateTaskRequest(
                container_id="hang-on-pause", rootfs=rootfs_mounts(workdir / "rootfs")
            )
        )
        await c.tasks.start(tasks.StartRequest(container_id="hang-on-pause"))
        # The client gives up long before the engine's own timeout.
        with pytest.raises(TimeoutError):
            await c.tasks.pause(tasks.PauseTaskRequest(container_id="hang-on-pause"), timeout=0.5)
        await eventually(lambda: hung_sleeps() == [], timeout=5)
        got = await c.tasks.get(tasks.GetRequest(container_id="hang-on-pause"))
        assert got.process is not None and got.process.status == Status.RUNNING
        code, _ = await _code(
            c.tasks.resume(tasks.ResumeTaskRequest(container_id="hang-on-pause"), timeout=10)
        )
        assert code == Code.FAILED_PRECONDITION
    finally:
        with contextlib.suppress(Exception):
            await cleanup_namespace(c)
        c.close()


async def test_a_hung_runtime_create_times_out_and_leaves_nothing(
    hang_engine: EngineProcess, workdir: Path
) -> None:
    c = Client(str(hang_engine.address), "hang")
    try:
        await create_container(c, "hang-on-create", ["sleep", "1000"], runtime="hang")
        code, msg = await _code(
            c.tasks.create(
                tasks.CreateTaskRequest(
                    container_id="hang-on-create", rootfs=rootfs_mounts(workdir / "rootfs")
                ),
                timeout=30,
            )
        )
        assert code == Code.DEADLINE_EXCEEDED and "did not finish within 3 seconds" in msg
        await eventually(lambda: hung_sleeps() == [], timeout=5)
        assert not (hang_engine.state / TASK_DIR / "hang" / "hang-on-create").exists()
        await c.containers.delete(containers.DeleteContainerRequest(id="hang-on-create"))
    finally:
        with contextlib.suppress(Exception):
            await cleanup_namespace(c)
        c.close()
