"""Tasks through our client: real containers under runc, crun and runsc.

Each test builds its containers from a busybox rootfs made from the host's
busybox-static, passes it as a bind mount the way `ctr` passes snapshot
mounts, talks through FIFOs it creates itself, and removes every task,
container, cgroup and directory it made, even when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from grpclib import GRPCError
from grpclib.const import Status as Code

from core import oci
from core.api.containerd import events as ev
from core.api.containerd import types
from core.api.containerd.services.containers import v1 as containers
from core.api.containerd.services.events import v1 as events_api
from core.api.containerd.services.tasks import v1 as tasks
from core.api.containerd.v1.types import Status
from core.api.google.protobuf import Any
from core.api.io.containerd.cgroups import v1 as cgroups_v1
from core.client import Client
from core.runtime import cgroups
from core.runtime.cgroups import hierarchies
from core.runtime.tasks import TASK_DIR
from core.typeurl import PROCESS_URL, RESOURCES_URL, SPEC_URL, pack, unpack
from tests.engine_proc import EngineProcess
from tests.helpers import eventually

BUSYBOX = shutil.which("busybox")
APPLETS = ["sh", "echo", "sleep", "true", "false", "cat", "ls", "ps", "kill", "tty", "stty", "id"]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(BUSYBOX is None, reason="busybox-static is not installed"),
]


def make_rootfs(parent: Path) -> Path:
    """A minimal busybox root filesystem with applet links and an /etc/passwd."""
    assert BUSYBOX is not None
    root = parent / "rootfs"
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "run", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return root


def rootfs_mounts(root: Path) -> list[types.Mount]:
    return [types.Mount(type="bind", source=str(root), options=["rbind", "rw"])]


def spec_any(namespace: str, cid: str, args: list[str], terminal: bool = False) -> Any:
    spec = oci.default_spec(namespace, cid)
    spec["process"]["args"] = args
    spec["process"]["terminal"] = terminal
    return Any(type_url=SPEC_URL, value=json.dumps(spec).encode())


async def create_container(
    client: Client, cid: str, args: list[str], runtime: str = "io.containerd.runc.v2"
) -> None:
    await client.containers.create(
        containers.CreateContainerRequest(
            container=containers.Container(
                id=cid,
                runtime=containers.ContainerRuntime(name=runtime),
                spec=spec_any(client.namespace, cid, args),
            )
        )
    )


class Fifos:
    """stdio FIFOs made by the test, as ctr makes them, with readers open."""

    def __init__(self, parent: Path, name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
        self.paths = {k: self.dir / k for k in ("stdin", "stdout", "stderr")}
        for p in self.paths.values():
            os.mkfifo(p)
        self.readers = {
            k: os.open(self.paths[k], os.O_RDONLY | os.O_NONBLOCK) for k in ("stdout", "stderr")
        }
        self.data = {"stdout": b"", "stderr": b""}
        self.eof = {"stdout": False, "stderr": False}

    def pump(self) -> None:
        for k, fd in self.readers.items():
            while not self.eof[k]:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    # EOF is only real once a writer has been here (the engine).
                    self.eof[k] = bool(self.data[k]) or self.eof[k]
                    break
                self.data[k] += chunk

    async def until(self, stream: str, text: bytes) -> bytes:
        def seen() -> bool:
            self.pump()
            return text in self.data[stream]

        await eventually(seen, timeout=20)
        return self.data[stream]

    def close(self) -> None:
        for fd in self.readers.values():
            os.close(fd)
        shutil.rmtree(self.dir, ignore_errors=True)


def stdin_writer(f: Fifos) -> int:
    return os.open(f.paths["stdin"], os.O_RDWR | os.O_NONBLOCK)


def resources_any(resources: dict[str, object]) -> Any:
    return Any(type_url=RESOURCES_URL, value=json.dumps(resources).encode())


def process_any(args: list[str], terminal: bool = False) -> Any:
    process = {"args": args, "cwd": "/", "env": [oci.DEFAULT_PATH], "terminal": terminal,
               "user": {"uid": 0, "gid": 0}}  # fmt: skip
    return Any(type_url=PROCESS_URL, value=json.dumps(process).encode())


async def cleanup_namespace(client: Client) -> None:
    """Kill, wait for and delete every task; delete every container."""
    listed = await client.tasks.list(tasks.ListTasksRequest())
    for t in listed.tasks:
        with contextlib.suppress(GRPCError):
            await client.tasks.kill(tasks.KillRequest(container_id=t.id, signal=9, all=True))
        with contextlib.suppress(GRPCError):
            await client.tasks.wait(tasks.WaitRequest(container_id=t.id), timeout=20)
        with contextlib.suppress(GRPCError):
            await client.tasks.delete(tasks.DeleteTaskRequest(container_id=t.id))
    found = await client.containers.list(containers.ListContainersRequest())
    for c in found.containers:
        with contextlib.suppress(GRPCError):
            await client.containers.delete(containers.DeleteContainerRequest(id=c.id))


def remove_namespace_cgroups(namespace: str) -> None:
    # runc also makes the cgroup in a hybrid host's cgroup2 tree.
    unified = cgroups.detect().unified
    for mount in set(hierarchies().values()) | ({unified} if unified else set()):
        d = mount / namespace
        if d.is_dir():
            for sub in sorted(d.rglob("*"), reverse=True):
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()
            with contextlib.suppress(OSError):
                d.rmdir()


def monitors_of(state: Path) -> list[int]:
    """Pids of monitor processes still running for bundles under `state`.

    Warm monitors carry their template's command line but work in their bundle; the
    template itself (in `/`) is no monitor.
    """
    found = []
    needle = str(state / TASK_DIR).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if needle in cmdline and not (
                b"--template" in cmdline and os.readlink(entry / "cwd") == "/"
            ):
                found.append(int(entry.name))
    return found


def mounts_under(path: Path) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text()
    return [line.split()[4] for line in text.splitlines() if line.split()[4].startswith(str(path))]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ctrdeck-tasks-", dir="/tmp"))
    make_rootfs(d)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def tengine() -> Iterator[EngineProcess]:
    proc = EngineProcess().start()
    try:
        yield proc
    finally:
        proc.stop(cleanup=True)


_counter = iter(range(1_000_000))


@pytest.fixture
async def nsclient(tengine: EngineProcess) -> AsyncIterator[Client]:
    """A client in a fresh namespace that is emptied and un-cgrouped afterwards."""
    ns = f"t{os.getpid()}x{next(_counter)}"
    c = Client(str(tengine.address), ns)
    try:
        yield c
    finally:
        with contextlib.suppress(Exception):
            await cleanup_namespace(c)
        c.close()
        remove_namespace_cgroups(ns)


class EventLog:
    def __init__(self, client: Client, namespace: str) -> None:
        self.client = client
        self.filters = [f"namespace=={namespace}"]
        self.seen: list[events_api.Envelope] = []
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventLog:
        async def listen() -> None:
            request = events_api.SubscribeRequest(filters=self.filters)
            async for env in self.client.events.subscribe(request):
                self.seen.append(env)

        self.task = asyncio.create_task(listen())
        # A marker event that arrives proves the subscription is live.
        marker = ev.NamespaceUpdate(name="marker")
        while not self.seen:
            await self.client.events.publish(
                events_api.PublishRequest(topic="/test/marker", event=pack(marker))
            )
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        self.seen.clear()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task

    def topics(self) -> list[str]:
        return [e.topic for e in self.seen]

    def payloads(self, topic: str) -> list[object]:
        return [unpack(e.event) for e in self.seen if e.topic == topic and e.event is not None]


RUNTIMES = {
    "runc": "io.containerd.runc.v2",
    "crun": "crun",
    "runsc": "runsc",
}

LONG_RUNNER = ["sh", "-c", 'trap "exit 42" TERM; echo hello; echo oops >&2; sleep 1000 & wait']


@pytest.mark.parametrize("runtime", ["runc", "crun", "runsc"])
async def test_lifecycle(
    runtime: str, nsclient: Client, tengine: EngineProcess, workdir: Path
) -> None:
    if shutil.which(runtime) is None:
        pytest.skip(f"{runtime} is not installed (Debian package {runtime})")
    c, ns = nsclient, nsclient.namespace
    cid = f"life-{runtime}"
    await create_container(c, cid, LONG_RUNNER, runtime=RUNTIMES[runtime])
    io = Fifos(workdir, cid)
    try:
        async with EventLog(c, ns) as log:
            created = await c.tasks.create(
                tasks.CreateTaskRequest(
                    container_id=cid,
                    rootfs=rootfs_mounts(workdir / "rootfs"),
                    stdout=str(io.paths["stdout"]),
                    stderr=str(io.paths["stderr"]),
                )
            )
            assert created.pid > 0
            got = await c.tasks.get(tasks.GetRequest(container_id=cid))
            assert got.process is not None
            assert (got.process.id, got.process.status) == (cid, Status.CREATED)
            assert got.process.exited_at is not None and got.process.exited_at.year == 1
            waiter = asyncio.create_task(c.tasks.wait(tasks.WaitRequest(container_id=cid)))
            started = await c.tasks.start(tasks.StartRequest(container_id=cid))
            assert started.pid == created.pid
            await io.until("stdout", b"hello\n")
            await io.until("stderr", b"oops\n")

            await c.tasks.pause(tasks.PauseTaskRequest(container_id=cid))
            got = await c.tasks.get(tasks.GetRequest(container_id=cid))
            assert got.process is not None and got.process.status == Status.PAUSED
            await c.tasks.resume(tasks.ResumeTaskRequest(container_id=cid))
            listed = await c.tasks.list(tasks.ListTasksRequest())
            assert [(t.id, t.status) for t in listed.tasks] == [(cid, Status.RUNNING)]

            pids = await c.tasks.list_pids(tasks.ListPidsRequest(container_id=cid))
            assert created.pid in [p.pid for p in pids.processes]

            metrics = await c.tasks.metrics(tasks.MetricsRequest(filters=[f"id=={cid}"]))
            assert [m.id for m in metrics.metrics] == [cid]
            data = metrics.metrics[0].data
            assert data is not None and data.type_url == "io.containerd.cgroups.v1.Metrics"
            stats = cgroups_v1.Metrics.parse(data.value)
            assert stats.memory is not None and stats.memory.usage is not None
            assert stats.cpu is not None and stats.cpu.usage is not None
            if runtime != "runsc":
                assert stats.memory.usage.usage > 0
                assert stats.pids is not None and stats.pids.current >= 2

            exec_io = Fifos(workdir, f"{cid}-exec")
            try:
                await c.tasks.exec(
                    tasks.ExecProcessRequest(
                        container_id=cid,
                        exec_id="second",
                        stdout=str(exec_io.paths["stdout"]),
                        spec=process_any(["sh", "-c", "echo exec-out; exit 3"]),
                    )
                )
                exec_wait = asyncio.create_task(
                    c.tasks.wait(tasks.WaitRequest(container_id=cid, exec_id="second"))
                )
                await c.tasks.start(tasks.StartRequest(container_id=cid, exec_id="second"))
                assert (await exec_wait).exit_status == 3
                await exec_io.until("stdout", b"exec-out\n")
                deleted = await c.tasks.delete_process(
                    tasks.DeleteProcessRequest(container_id=cid, exec_id="second")
                )
                assert (deleted.id, deleted.exit_status) == ("second", 3)
            finally:
                exec_io.close()

            if runtime != "runsc":
                limit = 64 * 1024 * 1024
                await c.tasks.update(
                    tasks.UpdateTaskRequest(
                        container_id=cid, resources=resources_any({"memory": {"limit": limit}})
                    )
                )
                metrics = await c.tasks.metrics(tasks.MetricsRequest(filters=[f"id=={cid}"]))
                stats = cgroups_v1.Metrics.parse(metrics.metrics[0].data.value)  # type: ignore[union-attr]
                assert stats.memory.usage.limit == limit  # type: ignore[union-attr]

            log_file = tengine.state / TASK_DIR / ns / cid / "log"
            assert b"hello\n" in log_file.read_bytes()
            assert b"oops\n" in log_file.read_bytes()

            await c.tasks.kill(tasks.KillRequest(container_id=cid, signal=signal.SIGTERM))
            waited = await waiter
            assert waited.exit_status == 42
            got = await c.tasks.get(tasks.GetRequest(container_id=cid))
            assert got.process is not None
            assert (got.process.status, got.process.exit_status) == (Status.STOPPED, 42)
            await eventually(lambda: io.pump() or io.eof["stdout"])

            deleted_task = await c.tasks.delete(tasks.DeleteTaskRequest(container_id=cid))
            assert (deleted_task.pid, deleted_task.exit_status) == (created.pid, 42)
            with pytest.raises(GRPCError) as err:
                await c.tasks.get(tasks.GetRequest(container_id=cid))
            assert err.value.status == Code.NOT_FOUND
            await eventually(lambda: "/tasks/delete" in log.topics())
        assert log.topics() == [
            "/tasks/create",
            "/tasks/start",
            "/tasks/paused",
            "/tasks/resumed",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/exit",
            "/tasks/delete",
        ]
        exits = log.payloads("/tasks/exit")
        assert [(e.id, e.exit_status) for e in exits] == [("second", 3), (cid, 42)]  # type: ignore[attr-defined]
        (delete_event,) = log.payloads("/tasks/delete")
        assert isinstance(delete_event, ev.TaskDelete)
        assert (delete_event.container_id, delete_event.exit_status) == (cid, 42)
    finally:
        io.close()
    bundle = tengine.state / TASK_DIR / ns / cid
    assert not bundle.exists()
    assert mounts_under(bundle) == []
    assert monitors_of(tengine.state) == []
    for controller in ("memory", "pids"):
        assert not (hierarchies()[controller] / ns / cid).exists()


async def test_wait_before_start_and_fifo_closed(nsclient: Client, workdir: Path) -> None:
    c = nsclient
    await create_container(c, "quick", ["echo", "hello"])
    io = Fifos(workdir, "quick")
    try:
        await c.tasks.create(
            tasks.CreateTaskRequest(
                container_id="quick",
                rootfs=rootfs_mounts(workdir / "rootfs"),
                stdout=str(io.paths["stdout"]),
                stderr=str(io.paths["stderr"]),
            )
        )
        waiter = asyncio.create_task(c.tasks.wait(tasks.WaitRequest(container_id="quick")))
        await asyncio.sleep(0)
        await c.tasks.start(tasks.StartRequest(container_id="quick"))
        assert (await waiter).exit_status == 0
        await io.until("stdout", b"hello\n")
        await eventually(lambda: io.pump() or io.eof["stdout"])
        again = await c.tasks.wait(tasks.WaitRequest(container_id="quick"))
        assert again.exit_status == 0
        await c.tasks.delete(tasks.DeleteTaskRequest(container_id="quick"))
    finally:
        io.close()


def cgroup_fds(engine: EngineProcess, namespace: str, cid: str) -> int:
    """The engine's descriptors open on files of the task's cgroup."""
    assert engine.proc is not None
    fd_dir = Path(f"/proc/{engine.proc.pid}/fd")
    found = 0
    for name in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            found += f"/{namespace}/{cid}/" in os.readlink(fd_dir / name)
    return found


async def test_metrics_hold_the_cgroup_files_until_the_task_is_deleted(
    nsclient: Client, tengine: EngineProcess, workdir: Path
) -> None:
    c, ns, cid = nsclient, nsclient.namespace, "held"
    await create_container(c, cid, ["sleep", "1000"])
    io = Fifos(workdir, cid)
    try:
        await c.tasks.create(
            tasks.CreateTaskRequest(container_id=cid, rootfs=rootfs_mounts(workdir / "rootfs"))
        )
        await c.tasks.start(tasks.StartRequest(container_id=cid))
        assert cgroup_fds(tengine, ns, cid) == 0
        first, together = await asyncio.gather(
            c.tasks.metrics(tasks.MetricsRequest(filters=[f"id=={cid}"])),
            c.tasks.metrics(tasks.MetricsRequest(filters=[f"namespace=={ns}"])),
        )
        # Asked at once, both are answered from one read, stamped with its time.
        assert first.metrics == together.metrics
        held = cgroup_fds(tengine, ns, cid)
        assert held > 0
        await asyncio.sleep(1.1)  # past the window in which samples are shared
        second = await c.tasks.metrics(tasks.MetricsRequest(filters=[f"id=={cid}"]))
        assert cgroup_fds(tengine, ns, cid) == held
        stamps = [m.metrics[0].timestamp for m in (first, second)]
        assert stamps[0] is not None and stamps[1] is not None and stamps[1] > stamps[0]
        stats = cgroups_v1.Metrics.parse(second.metrics[0].data.value)  # type: ignore[union-attr]
        assert stats.pids is not None and stats.pids.current >= 1
        waiter = asyncio.create_task(c.tasks.wait(tasks.WaitRequest(container_id=cid)))
        await c.tasks.kill(tasks.KillRequest(container_id=cid, signal=signal.SIGKILL))
        await waiter
        await c.tasks.delete(tasks.DeleteTaskRequest(container_id=cid))
        assert cgroup_fds(tengine, ns, cid) == 0
    finally:
        io.close()


async def test_stdin_and_close_io(nsclient: Client, workdir: Path) -> None:
    c = nsclient
    await create_container(c, "cat", ["cat"])
    io = Fifos(workdir, "cat")
    writer = stdin_writer(io)
    try:
        await c.tasks.create(
            tasks.CreateTaskRequest(
                container_id="cat",
                rootfs=rootfs_mounts(workdir / "rootfs"),
                stdin=str(io.paths["stdin"]),
                stdout=str(io.paths["stdout"]),
                stderr=str(io.paths["stderr"]),
            )
        )
        await c.tasks.start(tasks.StartRequest(container_id="cat"))
        os.write(writer, b"through stdin\n")
        await io.until("stdout", b"through stdin\n")
        await c.tasks.close_io(tasks.CloseIoRequest(container_id="cat", stdin=True))
        waited = await c.tasks.wait(tasks.WaitRequest(container_id="cat"))
        assert waited.exit_status == 0
        await c.tasks.delete(tasks.DeleteTaskRequest(container_id="cat"))
    finally:
        os.close(writer)
        io.close()


async def test_terminal(nsclient: Client, workdir: Path) -> None:
    c = nsclient
    await c.containers.create(
        containers.CreateContainerRequest(
            container=containers.Container(
                id="tty",
                runtime=containers.ContainerRuntime(name="io.containerd.runc.v2"),
                spec=spec_any(c.namespace, "tty", ["sh", "-c", "tty; read line; echo got-$line"],
                              terminal=True),
            )
        )
    )  # fmt: skip
    io = Fifos(workdir, "tty")
    writer = stdin_writer(io)
    try:
        await c.tasks.create(
            tasks.CreateTaskRequest(
                container_id="tty",
                rootfs=rootfs_mounts(workdir / "rootfs"),
                stdin=str(io.paths["stdin"]),
                stdout=str(io.paths["stdout"]),
                terminal=True,
            )
        )
        await c.tasks.start(tasks.StartRequest(container_id="tty"))
        await io.until("stdout", b"/dev/pts/")
        await c.tasks.resize_pty(tasks.ResizePtyRequest(container_id="tty", width=100, height=40))
        os.write(writer, b"line\n")
        await io.until("stdout", b"got-line")
        assert (await c.tasks.wait(tasks.WaitRequest(container_id="tty"))).exit_status == 0
        got = await c.tasks.get(tasks.GetRequest(container_id="tty"))
        assert got.process is not None and got.process.terminal
        await c.tasks.delete(tasks.DeleteTaskRequest(container_id="tty"))
    finally:
        os.close(writer)
        io.close()


async def _code(call: object) -> tuple[Code, str]:
    try:
        await call  # type: ignore[misc]
    except GRPCError as exc:
        return exc.status, exc.message or ""
    raise AssertionError("the call succeeded")


async def test_bad_input_codes(nsclient: Client, tengine: EngineProcess, workdir: Path) -> None:
    c = nsclient
    mounts = rootfs_mounts(workdir / "rootfs")
    code, msg = await _code(
        c.tasks.create(tasks.CreateTaskRequest(container_id="ghost", rootfs=mounts))
    )
    assert code == Code.NOT_FOUND and "ghost" in msg
    code, _ = await _code(c.tasks.get(tasks.GetRequest(container_id="ghost")))
    assert code == Code.NOT_FOUND

    await create_container(c, "short", ["true"])
    await c.tasks.create(tasks.CreateTaskRequest(container_id="short", rootfs=mounts))
    code, msg = await _code(
        c.tasks.create(tasks.CreateTaskRequest(container_id="short", rootfs=mounts))
    )
    assert code == Code.ALREADY_EXISTS and "short" in msg
    code, msg = await _code(c.containers.delete(containers.DeleteContainerRequest(id="short")))
    assert code == Code.FAILED_PRECONDITION and "task" in msg
    for bad in (0, 99):
        code, msg = await _code(c.tasks.kill(tasks.KillRequest(container_id="short", signal=bad)))
        assert code == Code.INVALID_ARGUMENT and "signal" in msg
    code, msg = await _code(c.tasks.checkpoint(tasks.CheckpointTaskRequest(container_id="short")))
    assert code == Code.UNIMPLEMENTED and "checkpoint" in msg
    code, _ = await _code(
        c.tasks.exec(tasks.ExecProcessRequest(container_id="short", exec_id="bad id!",
                                              spec=process_any(["true"])))
    )  # fmt: skip
    assert code == Code.INVALID_ARGUMENT
    await c.tasks.start(tasks.StartRequest(container_id="short"))
    await c.tasks.wait(tasks.WaitRequest(container_id="short"))
    code, msg = await _code(c.tasks.pause(tasks.PauseTaskRequest(container_id="short")))
    assert code == Code.FAILED_PRECONDITION and "stopped" in msg
    code, _ = await _code(c.tasks.kill(tasks.KillRequest(container_id="short", signal=9)))
    assert code == Code.NOT_FOUND
    await c.tasks.delete(tasks.DeleteTaskRequest(container_id="short"))

    await c.containers.create(
        containers.CreateContainerRequest(
            container=containers.Container(
                id="badspec",
                runtime=containers.ContainerRuntime(name="io.containerd.runc.v2"),
                spec=Any(type_url=SPEC_URL, value=b'{"process": {"args": []}}'),
            )
        )
    )
    code, msg = await _code(
        c.tasks.create(tasks.CreateTaskRequest(container_id="badspec", rootfs=mounts))
    )
    assert code == Code.INVALID_ARGUMENT and "args" in msg
    await c.containers.update(
        containers.UpdateContainerRequest(
            container=containers.Container(
                id="badspec",
                runtime=containers.ContainerRuntime(name="io.containerd.runc.v2"),
                spec=Any(type_url=SPEC_URL, value=b"not json"),
            )
        )
    )
    code, msg = await _code(
        c.tasks.create(tasks.CreateTaskRequest(container_id="badspec", rootfs=mounts))
    )
    assert code == Code.INVALID_ARGUMENT and "JSON" in msg

    await create_container(c, "nobin", ["/no/such/binary"])
    code, msg = await _code(
        c.tasks.create(tasks.CreateTaskRequest(container_id="nobin", rootfs=mounts))
    )
    assert code == Code.UNKNOWN and "/no/such/binary" in msg
    listed = await c.tasks.list(tasks.ListTasksRequest())
    assert listed.tasks == []
    # The failed creates left nothing behind.
    assert not (tengine.state / TASK_DIR / c.namespace / "nobin").exists()
    assert mounts_under(tengine.state / TASK_DIR) == []
    assert monitors_of(tengine.state) == []
    assert not (hierarchies()["memory"] / c.namespace / "nobin").exists()


async def test_missing_runtime_binary_is_named(workdir: Path) -> None:
    config = """
version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
  runtime_type = "io.containerd.kata.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata.options]
    BinaryName = "kata-runtime"
"""
    engine = EngineProcess(config=config).start()
    c = Client(str(engine.address), "kata")
    try:
        await create_container(c, "k1", ["true"], runtime="kata")
        code, msg = await _code(
            c.tasks.create(
                tasks.CreateTaskRequest(container_id="k1", rootfs=rootfs_mounts(workdir / "rootfs"))
            )
        )
        assert code == Code.FAILED_PRECONDITION and "kata-runtime" in msg
        assert not mounts_under(engine.state)
    finally:
        c.close()
        engine.stop(cleanup=True)


async def _subscribe_with_retry(
    address: str, namespace: str, seen: list[events_api.Envelope]
) -> None:
    """Stay subscribed to exits, reconnecting until an engine answers."""
    while True:
        c = Client(address, namespace)
        try:
            request = events_api.SubscribeRequest(filters=["topic==/tasks/exit"])
            async for env in c.events.subscribe(request):
                seen.append(env)
        except (GRPCError, OSError, ConnectionError):
            await asyncio.sleep(0.05)
        finally:
            c.close()


async def test_restart_keeps_tasks_and_reports_exits(workdir: Path) -> None:
    engine = EngineProcess().start()
    ns = "restart"
    c = Client(str(engine.address), ns)
    ids = [f"r{i}" for i in range(10)]
    runner = ["sh", "-c", 'trap "exit 7" TERM; sleep 1000 & wait']
    try:
        pids = {}
        for cid in ids:
            await create_container(c, cid, runner)
            created = await c.tasks.create(
                tasks.CreateTaskRequest(container_id=cid, rootfs=rootfs_mounts(workdir / "rootfs"))
            )
            await c.tasks.start(tasks.StartRequest(container_id=cid))
            pids[cid] = created.pid
        c.close()
        engine.kill()

        # Both end while no engine is there to see it.
        os.kill(pids["r0"], signal.SIGKILL)
        os.kill(pids["r1"], signal.SIGTERM)
        for cid in ("r0", "r1"):
            exit_file = engine.state / TASK_DIR / ns / cid / "init" / "exit"
            await eventually(exit_file.exists, timeout=20)

        seen: list[events_api.Envelope] = []
        listener = asyncio.create_task(_subscribe_with_retry(str(engine.address), ns, seen))
        try:
            engine = EngineProcess(base=engine.base).start()
            c = Client(str(engine.address), ns)
            listed = await c.tasks.list(tasks.ListTasksRequest())
            states = {t.id: (t.status, t.exit_status) for t in listed.tasks}
            assert states["r0"] == (Status.STOPPED, 137)
            assert states["r1"] == (Status.STOPPED, 7)
            assert [i for i in ids if states[i][0] == Status.RUNNING] == ids[2:]
            await eventually(lambda: len(seen) >= 2, timeout=20)
        finally:
            listener.cancel()
            with contextlib.suppress(BaseException):
                await listener
        exits = sorted(
            (e.container_id, e.exit_status) for e in map(unpack, (s.event for s in seen))
        )  # type: ignore[attr-defined]
        assert exits == [("r0", 137), ("r1", 7)]

        # Restored tasks are still manageable.
        await c.tasks.pause(tasks.PauseTaskRequest(container_id="r2"))
        await c.tasks.resume(tasks.ResumeTaskRequest(container_id="r2"))
        await c.tasks.kill(tasks.KillRequest(container_id="r3", signal=signal.SIGTERM))
        assert (await c.tasks.wait(tasks.WaitRequest(container_id="r3"))).exit_status == 7
        assert (await c.tasks.wait(tasks.WaitRequest(container_id="r0"))).exit_status == 137
    finally:
        with contextlib.suppress(Exception):
            await cleanup_namespace(c)
        c.close()
        remaining = monitors_of(engine.state)
        engine.stop(cleanup=False)
        leftover_mounts = mounts_under(engine.base)
        remove_namespace_cgroups(ns)
        shutil.rmtree(engine.base, ignore_errors=True)
    assert remaining == []
    assert leftover_mounts == []


def templates_of(state: Path) -> list[int]:
    """Pids of warm-monitor templates serving `state`."""
    needle = str(state / TASK_DIR).encode()
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if needle in cmdline and b"--template" in cmdline and os.readlink(entry / "cwd") == "/":
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


async def test_warm_monitors_outlive_an_engine_sigkill(workdir: Path) -> None:
    engine = EngineProcess().start()
    ns = "warm"
    c = Client(str(engine.address), ns)
    runner = ["sh", "-c", "sleep 1000"]
    try:
        await create_container(c, "w0", runner)
        created = await c.tasks.create(
            tasks.CreateTaskRequest(container_id="w0", rootfs=rootfs_mounts(workdir / "rootfs"))
        )
        await c.tasks.start(tasks.StartRequest(container_id="w0"))
        [template] = templates_of(engine.state)
        [monitor] = monitors_of(engine.state)
        assert b"--template" in Path(f"/proc/{monitor}/cmdline").read_bytes()
        assert os.readlink(f"/proc/{monitor}/cwd") == str(engine.state / TASK_DIR / ns / "w0/init")
        # Its own process group (the engine kills it with its runtime command), in the
        # template's session, which is the engine's: not a new one (a scheduler autogroup
        # of its own, in which runc waits on a loaded host).
        assert os.getpgid(monitor) == monitor
        assert engine.proc is not None
        assert os.getsid(monitor) == os.getsid(template) == os.getsid(engine.proc.pid)
        c.close()
        engine.kill()

        assert _alive(template) and _alive(monitor)
        os.kill(created.pid, signal.SIGKILL)
        await eventually((engine.state / TASK_DIR / ns / "w0/init/exit").exists, timeout=20)
        engine = EngineProcess(base=engine.base).start()
        c = Client(str(engine.address), ns)
        assert (await c.tasks.wait(tasks.WaitRequest(container_id="w0"))).exit_status == 137

        # The restarted engine forks from the same template.
        await create_container(c, "w1", runner)
        await c.tasks.create(
            tasks.CreateTaskRequest(container_id="w1", rootfs=rootfs_mounts(workdir / "rootfs"))
        )
        assert templates_of(engine.state) == [template]
        await c.tasks.kill(tasks.KillRequest(container_id="w1", signal=signal.SIGKILL))
        assert (await c.tasks.wait(tasks.WaitRequest(container_id="w1"))).exit_status == 137
    finally:
        with contextlib.suppress(Exception):
            await cleanup_namespace(c)
        c.close()
        remaining = monitors_of(engine.state)
        engine.stop(cleanup=False)
        remove_namespace_cgroups(ns)
    try:
        assert remaining == []
        # A graceful stop lets the template go.
        await eventually(lambda: templates_of(engine.state) == [], timeout=20)
    finally:
        shutil.rmtree(engine.base, ignore_errors=True)


async def test_warm_monitor_reports_an_exit_after_its_template_died(
    nsclient: Client, tengine: EngineProcess, workdir: Path
) -> None:
    """A monitor forked from the template does not need it: the template may die first."""
    c = nsclient
    await create_container(c, "orphaned", ["sh", "-c", "sleep 1000"])
    created = await c.tasks.create(
        tasks.CreateTaskRequest(container_id="orphaned", rootfs=rootfs_mounts(workdir / "rootfs"))
    )
    await c.tasks.start(tasks.StartRequest(container_id="orphaned"))
    [template] = templates_of(tengine.state)
    task_dir = tengine.state / TASK_DIR / c.namespace / "orphaned"
    [monitor] = [m for m in monitors_of(tengine.state) if os.readlink(f"/proc/{m}/cwd") == str(
        task_dir / "init"
    )]  # fmt: skip
    os.kill(template, signal.SIGKILL)
    await eventually(lambda: not _alive(template), timeout=20)
    assert _alive(monitor)
    waiter = asyncio.create_task(c.tasks.wait(tasks.WaitRequest(container_id="orphaned")))
    await asyncio.sleep(0.1)
    os.kill(created.pid, signal.SIGKILL)
    assert (await asyncio.wait_for(waiter, 20)).exit_status == 137
    got = await c.tasks.get(tasks.GetRequest(container_id="orphaned"))
    assert got.process is not None and got.process.status == Status.STOPPED


async def test_create_after_the_template_was_killed_starts_a_new_one(
    nsclient: Client, tengine: EngineProcess, workdir: Path
) -> None:
    """A killed template leaves its socket behind; the next Create forks from a new one."""
    c = nsclient
    mounts = rootfs_mounts(workdir / "rootfs")
    await create_container(c, "before", ["sh", "-c", "sleep 1000"])
    await c.tasks.create(tasks.CreateTaskRequest(container_id="before", rootfs=mounts))
    [old] = templates_of(tengine.state)
    os.kill(old, signal.SIGKILL)
    await eventually(lambda: not _alive(old), timeout=20)

    await create_container(c, "after", ["sh", "-c", "echo started; sleep 1000"])
    io = Fifos(workdir, "after")
    try:
        await c.tasks.create(
            tasks.CreateTaskRequest(container_id="after", rootfs=mounts,
                                    stdout=str(io.paths["stdout"]))
        )  # fmt: skip
        await c.tasks.start(tasks.StartRequest(container_id="after"))
        await io.until("stdout", b"started")
        [new] = templates_of(tengine.state)
        assert new != old
        init = str(tengine.state / TASK_DIR / c.namespace / "after" / "init")
        [monitor] = [m for m in monitors_of(tengine.state) if os.readlink(f"/proc/{m}/cwd") == init]
        assert b"--template" in Path(f"/proc/{monitor}/cmdline").read_bytes()
        await c.tasks.kill(tasks.KillRequest(container_id="after", signal=signal.SIGKILL))
        assert (await c.tasks.wait(tasks.WaitRequest(container_id="after"))).exit_status == 137
    finally:
        io.close()


async def test_a_monitor_not_told_to_go_leaves_nothing(
    nsclient: Client, tengine: EngineProcess, workdir: Path
) -> None:
    """The rootfs fails to mount while a warm monitor waits: it ends, and so does the bundle."""
    c = nsclient
    await create_container(c, "warmfail", ["sh", "-c", "sleep 1000"])
    bad = [types.Mount(type="bind", source=str(workdir / "no-such-dir"), options=["rbind"])]
    code, msg = await _code(
        c.tasks.create(tasks.CreateTaskRequest(container_id="warmfail", rootfs=bad))
    )
    assert code != Code.OK and msg
    assert templates_of(tengine.state) != []
    assert not (tengine.state / TASK_DIR / c.namespace / "warmfail").exists()
    assert mounts_under(tengine.state / TASK_DIR / c.namespace) == []
    assert [
        m for m in monitors_of(tengine.state) if c.namespace in os.readlink(f"/proc/{m}/cwd")
    ] == []
    # The same container's task is created once the mounts are right.
    await c.tasks.create(
        tasks.CreateTaskRequest(container_id="warmfail", rootfs=rootfs_mounts(workdir / "rootfs"))
    )


async def test_a_spec_refused_while_the_rootfs_mounts_leaves_nothing(
    nsclient: Client, tengine: EngineProcess, workdir: Path
) -> None:
    """The rootfs mounts in a worker while the spec is fitted: a spec refused meanwhile
    waits for the mount, then takes it down with the bundle."""
    c = nsclient
    mounts = rootfs_mounts(workdir / "rootfs")
    for cid, bad in (("rootbad", {"root": "x"}), ("linuxbad", {"linux": []})):
        spec = {"process": {"args": ["true"], "cwd": "/"}, **bad}
        await c.containers.create(
            containers.CreateContainerRequest(
                container=containers.Container(
                    id=cid,
                    runtime=containers.ContainerRuntime(name="io.containerd.runc.v2"),
                    spec=Any(type_url=SPEC_URL, value=json.dumps(spec).encode()),
                )
            )
        )
        for _ in range(3):
            code, msg = await _code(
                c.tasks.create(tasks.CreateTaskRequest(container_id=cid, rootfs=mounts))
            )
            assert code == Code.INVALID_ARGUMENT and "must be an object" in msg
            assert not (tengine.state / TASK_DIR / c.namespace / cid).exists()
            assert mounts_under(tengine.state / TASK_DIR / c.namespace) == []
        await c.containers.delete(containers.DeleteContainerRequest(id=cid))
    assert (await c.tasks.list(tasks.ListTasksRequest())).tasks == []


def test_state_dir_has_no_stray_fifos(tengine: EngineProcess) -> None:
    """Runs last in the module: nothing the tasks made stays in the engine's state."""
    task_root = tengine.state / TASK_DIR
    leftovers = [
        p for p in task_root.rglob("*") if p.exists() and stat.S_ISFIFO(p.lstat().st_mode)
    ] if task_root.exists() else []  # fmt: skip
    assert leftovers == []


async def test_a_create_cancelled_at_any_point_leaves_a_task_or_nothing(
    nsclient: Client, tengine: EngineProcess, workdir: Path
) -> None:
    """A Create whose deadline passes (while the rootfs mounts in its worker, while the
    runtime creates, ...) either made its task or left no bundle and no mount behind."""
    c = nsclient
    await create_container(c, "hurried", ["sleep", "60"])
    mounts = rootfs_mounts(workdir / "rootfs")
    bundle = tengine.state / TASK_DIR / c.namespace / "hurried"

    async def settled() -> bool:
        listed = [t.id for t in (await c.tasks.list(tasks.ListTasksRequest())).tasks]
        if "hurried" in listed:
            return bundle.is_dir() and mounts_under(bundle) != []
        return not bundle.exists() and mounts_under(bundle) == []

    for deadline in (0.0005, 0.001, 0.002, 0.003, 0.005, 0.008, 0.013, 0.021, 0.034, 0.055):
        with contextlib.suppress(GRPCError, TimeoutError):
            await c.tasks.create(
                tasks.CreateTaskRequest(container_id="hurried", rootfs=mounts), timeout=deadline
            )
        await eventually(settled, timeout=20)
        if "hurried" in [t.id for t in (await c.tasks.list(tasks.ListTasksRequest())).tasks]:
            await c.tasks.delete(tasks.DeleteTaskRequest(container_id="hurried"))
        assert not bundle.exists() and mounts_under(bundle) == []
    await c.containers.delete(containers.DeleteContainerRequest(id="hurried"))


async def test_template_and_monitors_keep_the_engines_session_in_groups_of_their_own(
    nsclient: Client, tengine: EngineProcess, workdir: Path
) -> None:
    """A session of its own would be a scheduler autogroup of its own, in which every
    runtime command of the monitors waits on a loaded host; a process group of its own
    keeps what signals the engine's group away from them."""
    c = nsclient
    await create_container(c, "grouped", ["sleep", "60"])
    await c.tasks.create(
        tasks.CreateTaskRequest(container_id="grouped", rootfs=rootfs_mounts(workdir / "rootfs"))
    )
    assert tengine.proc is not None
    engine = tengine.proc.pid
    mine = [
        m for m in monitors_of(tengine.state) if c.namespace in os.readlink(f"/proc/{m}/cwd")
    ]  # fmt: skip
    for pid in [*templates_of(tengine.state), *mine]:
        assert os.getsid(pid) == os.getsid(engine)
        assert os.getpgid(pid) == pid != os.getpgid(engine)
    assert mine
    await c.tasks.delete(tasks.DeleteTaskRequest(container_id="grouped"))
    await c.containers.delete(containers.DeleteContainerRequest(id="grouped"))
