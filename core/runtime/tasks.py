"""The task manager: running containers, their processes, and their states.

This module owns a task's whole life. A task lives in a bundle directory
`<state>/io.containerd.runtime.v2.task/<namespace>/<id>` holding `config.json`,
the `rootfs` mount point, the engine's record `task.json`, the init process's
monitor files under `init/`, each exec's under `execs/<exec id>/`, and the
size-capped output log `log` (rotated to `log.1`) that `log_path` names for
the console; no other local user can read any of it (`bundle.py`). Every
process has its own monitor (`core/runtime/monitor.py`), which runs the
runtime's `create` or `exec`, holds the stdio and persists the exit status;
the engine watches the monitor's pid through a pidfd and, after a restart,
finds everything again from the bundle directories: live processes are
watched anew, exits that happened meanwhile are reported with
their real status. States follow containerd (CREATED, RUNNING, PAUSED,
STOPPED) and so do the events (`/tasks/create`, `/tasks/start`, `/tasks/exit`,
`/tasks/delete`, `/tasks/paused`, `/tasks/resumed`, `/tasks/oom`,
`/tasks/exec-added`, `/tasks/exec-started`). Stopping the engine never stops
a container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import marshal
import os
import shutil
import signal as signals
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import betterproto2

from core import filters, identifiers, oci
from core.api.containerd import events
from core.api.containerd import types as ctypes
from core.api.containerd.runc.v1 import Options as RuncOptions
from core.api.containerd.v1.types import Status
from core.errors import (
    AlreadyExists,
    CtrdeckError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from core.metadata.containers import Container
from core.runtime import bundle as bundles
from core.runtime import cgroups
from core.runtime import rootfs as rootfs_mod
from core.runtime import spec as specs
from core.runtime.cgroups import Cgroup, Layout, OomWatch
from core.runtime.runtimes import Runtime, RuntimeFailed, Runtimes, kill_group
from core.snapshots.mount import Mount

log = logging.getLogger("ctrdeck.tasks")

TASK_DIR = "io.containerd.runtime.v2.task"
MONITOR = Path(__file__).with_name("monitor.py")
# The monitor is imported rather than run as a script so that Python loads its
# cached bytecode instead of compiling the source on every Tasks.Create. Its
# path stays on the command line (as argv[1]) so it is still plain to see.
MONITOR_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1].rpartition('/')[0]); import monitor; monitor.boot()"
)
DEFAULT_LOG_MAX = 1 << 20
# Exits found at a restart wait this long for a subscriber before they are
# published anyway: an event nobody can receive yet would be lost.
RESTORED_EXIT_GRACE = 5.0
MAX_SIGNAL = 64
# An exec's monitor ends within its drain time of the container's end; one
# that does not has lost its process and is stopped.
EXEC_LINGER = 5.0
RUNC_OPTIONS_URL = "containerd.runc.v1.Options"

Publish = Callable[[str, str, betterproto2.Message], None]
RootfsLookup = Callable[[str, Container], Awaitable[list[Mount] | None]]


@dataclass
class Stdio:
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


@dataclass
class Exit:
    status: int
    exited_at: int  # nanoseconds since the epoch
    pid: int

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.exited_at / 1e9, UTC)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    bundles.write_private(path, json.dumps(data).encode())


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Process:
    """The init process (exec_id "") or one exec of a task."""

    def __init__(self, task: Task, exec_id: str, directory: Path, stdio: Stdio) -> None:
        self.task = task
        self.exec_id = exec_id
        self.dir = directory
        self.stdio = stdio
        self.pid = 0
        self.monitor_pid = 0
        self.status = Status.CREATED
        self.exit: Exit | None = None
        self.exit_reported = False
        self.done = asyncio.Event()
        self.starting: asyncio.Event | None = None
        self._pidfd: int | None = None

    @property
    def id(self) -> str:
        return self.exec_id or self.task.id

    @property
    def log_path(self) -> Path:
        return self.task.bundle / "log" if not self.exec_id else self.dir / "log"

    def record(self) -> dict[str, Any]:
        return {
            "exec_id": self.exec_id,
            "pid": self.pid,
            "monitor_pid": self.monitor_pid,
            "status": self.status.name,
            "stdin": self.stdio.stdin,
            "stdout": self.stdio.stdout,
            "stderr": self.stdio.stderr,
            "terminal": self.stdio.terminal,
            "exit_reported": self.exit_reported,
        }

    def save(self) -> None:
        _write_json(self.dir / "process.json", self.record())

    def read_exit(self) -> Exit | None:
        data = _read_json(self.dir / "exit")
        if data is None:
            return None
        return Exit(int(data.get("status", 255)), int(data.get("exited_at", 0)), self.pid)

    def control(self, line: str, doing: str) -> None:
        """Tell the monitor something; an error when no monitor is there to hear it.

        The monitor holds the control FIFO open for reading as long as it
        runs, so opening it without a reader (ENXIO) or finding it missing
        means the process is gone, whatever the engine recorded so far.
        """
        what = f"{doing} process {self.id}"
        if self.exit is not None:
            raise NotFound(f"cannot {what}: it has already exited")
        if not self.monitor_pid:
            raise FailedPrecondition(f"cannot {what}: it is not started")
        try:
            fd = os.open(self.dir / "control", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise NotFound(f"cannot {what}: its monitor is gone ({exc.strerror})") from None
        try:
            os.write(fd, (line + "\n").encode())
        except BlockingIOError:
            raise Unavailable(f"cannot {what}: its monitor is not keeping up; try again") from None
        except OSError as exc:
            raise NotFound(f"cannot {what}: its monitor is gone ({exc.strerror})") from None
        finally:
            os.close(fd)

    def stop_watching(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


class Task:
    def __init__(
        self,
        namespace: str,
        container_id: str,
        bundle: Path,
        runtime: Runtime,
        cgroups_path: str,
        layout: Layout | None = None,
    ) -> None:
        self.namespace = namespace
        self.id = container_id
        self.bundle = bundle
        self.runtime = runtime
        self.cgroup = Cgroup(cgroups_path, layout)
        self.cgroups_path = cgroups_path
        self.mounts: list[Mount] = []
        self.init: Process | None = None
        self.execs: dict[str, Process] = {}
        self.lock = asyncio.Lock()
        self.oom: OomWatch | None = None
        self.created_at = time.time_ns()

    @property
    def process(self) -> Process:
        assert self.init is not None
        return self.init

    def record(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "id": self.id,
            "runtime": self.runtime.name,
            "cgroups_path": self.cgroups_path,
            "mounts": [rootfs_mod.to_json(m) for m in self.mounts],
            "created_at": self.created_at,
        }

    def save(self) -> None:
        _write_json(self.bundle / "task.json", self.record())

    def lookup(self, exec_id: str) -> Process:
        if not exec_id:
            return self.process
        try:
            return self.execs[exec_id]
        except KeyError:
            raise NotFound(f"process {exec_id} of task {self.id} not found") from None


def validate_signal(sig: int) -> int:
    if not 1 <= sig <= MAX_SIGNAL:
        raise InvalidArgument(f"invalid signal {sig}: must be between 1 and {MAX_SIGNAL}")
    return sig


def runc_binary_name(options: Any) -> str:
    """BinaryName from a container's `containerd.runc.v1.Options`, if it set one."""
    if options is None or not options.value:
        return ""
    if options.type_url.rsplit("/", 1)[-1] != RUNC_OPTIONS_URL:
        return ""
    return RuncOptions.parse(options.value).binary_name


def _read_stats(tasks: list[Task]) -> list[tuple[Task, cgroups.Stats]]:
    found = []
    for task in tasks:
        try:
            found.append((task, task.cgroup.stats()))
        except NotFound:
            log.debug("no metrics for task %s/%s: its cgroup is gone", task.namespace, task.id)
    return found


class TaskManager:
    def __init__(
        self,
        state: Path,
        runtimes: Runtimes,
        publish: Publish,
        *,
        log_max: int = DEFAULT_LOG_MAX,
        rootfs_lookup: RootfsLookup | None = None,
        subscribers: Callable[[], int] | None = None,
        cgroups_layout: Layout | None = None,
    ) -> None:
        self.root = state / TASK_DIR
        self.cgroups = cgroups_layout if cgroups_layout is not None else cgroups.detect()
        self.runtimes = runtimes
        self.publish = publish
        self.log_max = log_max
        self.rootfs_lookup = rootfs_lookup
        self.subscribers = subscribers or (lambda: 0)
        self.tasks: dict[tuple[str, str], Task] = {}
        self._reserved: set[tuple[str, str]] = set()
        self._background: set[asyncio.Task[None]] = set()

    # --- lookup ---------------------------------------------------------------

    def get(self, namespace: str, container_id: str) -> Task:
        task = self.tasks.get((namespace, container_id))
        if task is None:
            raise NotFound(f"task {container_id} not found")
        return task

    def exists(self, namespace: str, container_id: str) -> bool:
        key = (namespace, container_id)
        return key in self.tasks or key in self._reserved

    def list(self, namespace: str | None = None) -> list[Task]:
        return [t for (ns, _), t in sorted(self.tasks.items()) if namespace in (None, ns)]

    def namespaces(self) -> set[str]:
        return {ns for ns, _ in self.tasks} | {ns for ns, _ in self._reserved}

    def log_path(self, namespace: str, container_id: str) -> Path:
        """Where a task's output log is; the console follows it (rotation: `log.1`)."""
        return self.root / namespace / container_id / "log"

    # --- create ---------------------------------------------------------------

    async def create(
        self,
        namespace: str,
        container: Container,
        mounts: list[Mount],
        stdio: Stdio,
    ) -> Task:
        key = (namespace, container.id)
        if self.exists(namespace, container.id):
            raise AlreadyExists(f"task {container.id}: already exists")
        self._reserved.add(key)
        try:
            return await self._create(namespace, container, mounts, stdio)
        finally:
            self._reserved.discard(key)

    def _container_spec(self, container: Container) -> dict[str, Any]:
        if container.spec is None or not container.spec.value:
            raise InvalidArgument(f'container "{container.id}" has no runtime spec')
        if not container.spec.type_url.endswith("/Spec"):
            raise InvalidArgument(
                f'container "{container.id}" spec has type {container.spec.type_url!r}, '
                f"not {oci.OCI_VERSION} runtime-spec Spec JSON"
            )
        return specs.parse_json(container.spec.value, f'container "{container.id}" spec')

    async def _create(
        self, namespace: str, container: Container, mounts: list[Mount], stdio: Stdio
    ) -> Task:
        runtime = self.runtimes.select(
            container.runtime_name, runc_binary_name(container.runtime_options)
        )
        raw_spec = self._container_spec(container)
        specs.validate_process(raw_spec.get("process"), f'container "{container.id}" spec')
        bundle = self.root / namespace / container.id
        # The monitor's interpreter loads while the bundle is prepared.
        monitor = await self._start_monitor(bundle / "init")
        task: Task | None = None
        try:
            if not mounts and self.rootfs_lookup is not None and container.snapshot_key:
                mounts = await self.rootfs_lookup(namespace, container) or []
            if bundle.exists():
                await self._remove_bundle(bundle)
            bundles.make_bundle(self.root, namespace, container.id)
            root = bundle / "rootfs"
            if mounts:
                await rootfs_mod.mount_all(mounts, root)
            else:
                given = (raw_spec.get("root") or {}).get("path", "")
                if not (isinstance(given, str) and given.startswith("/") and Path(given).is_dir()):
                    raise InvalidArgument(
                        f"task {container.id}: no rootfs mounts were given and the container "
                        "has neither a snapshot nor an absolute root.path in its spec"
                    )
                root = Path(given)
            fitted = specs.fit(raw_spec, namespace, container.id, root)
            if stdio.terminal != specs.terminal(fitted):
                fitted["process"]["terminal"] = stdio.terminal
            if stdio.terminal:
                stdio.stderr = ""
            bundles.share_with_remapped_root(bundle, fitted)
            bundles.write_private(bundle / "config.json", json.dumps(fitted).encode())
            task = Task(
                namespace, container.id, bundle, runtime, fitted["linux"]["cgroupsPath"],
                self.cgroups,
            )  # fmt: skip
            task.mounts = list(mounts)
            task.save()
            init = Process(task, "", bundle / "init", stdio)
            bundles.make_dir(init.dir, bundles.BUNDLE_MODE)
            task.init = init
            argv = runtime.argv(
                namespace, "create", "--bundle", str(bundle), "--pid-file",
                str(init.dir / "pid"), *self._console(stdio), container.id,
                log=init.dir / "runtime.log",
            )  # fmt: skip
            await self._spawn(init, argv, "create", monitor)
        except BaseException:
            await self._abandon(monitor)
            if task is not None:
                with contextlib.suppress(CtrdeckError):
                    await runtime.run(namespace, "delete", "--force", container.id)
            await self._remove_bundle(bundle)
            raise
        self.tasks[(namespace, container.id)] = task
        init.save()
        self._watch(init)
        self._watch_oom(task)
        self.publish(
            namespace,
            "/tasks/create",
            events.TaskCreate(
                container_id=container.id,
                bundle=str(bundle),
                rootfs=[
                    ctypes.Mount(type=m.type, source=m.source, options=list(m.options))
                    for m in mounts
                ],
                io=events.TaskIo(
                    stdin=stdio.stdin, stdout=stdio.stdout, stderr=stdio.stderr,
                    terminal=stdio.terminal,
                ),
                pid=init.pid,
            ),
        )  # fmt: skip
        return task

    @staticmethod
    def _console(stdio: Stdio) -> list[str]:
        # The monitor puts the real socket path in place of the placeholder.
        return ["--console-socket", "-"] if stdio.terminal else []

    @staticmethod
    async def _start_monitor(directory: Path) -> asyncio.subprocess.Process:
        """Start the interpreter of the monitor that will use `directory`.

        It loads and then waits: a byte on its stdin says its config is
        written, end of file that it is not needed.
        """
        return await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", "-c", MONITOR_BOOT, str(MONITOR),
            str(directory / "monitor.cfg"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip

    @staticmethod
    async def _abandon(monitor: asyncio.subprocess.Process) -> None:
        """Let a monitor that was never told to go end, and reap it."""
        if monitor.returncode is not None:
            return
        assert monitor.stdin is not None
        monitor.stdin.close()
        await monitor.communicate()

    async def _spawn(
        self,
        proc: Process,
        argv: list[str],
        action: str,
        child: asyncio.subprocess.Process | None = None,
    ) -> None:
        """Have a monitor for `proc` run `argv`; learn the pids or the runtime's error.

        `child` is a monitor `_start_monitor` started ahead for `proc.dir`;
        without one, one is started now.
        """
        proc.task.runtime.make_root(proc.task.namespace)
        control = proc.dir / "control"
        if not control.exists():
            os.mkfifo(control, 0o600)
        cfg = {
            "dir": str(proc.dir),
            "argv": argv,
            "action": action,
            "runtime_name": proc.task.runtime.name,
            "runtime_log": str(proc.dir / "runtime.log"),
            "terminal": proc.stdio.terminal,
            "console_socket_index": argv.index("--console-socket") + 1
            if proc.stdio.terminal
            else -1,
            "stdin": proc.stdio.stdin,
            "stdout": proc.stdio.stdout,
            "stderr": proc.stdio.stderr,
            "log": str(proc.log_path),
            "log_max": self.log_max,
            "exit_file": str(proc.dir / "exit"),
            "pid_file": str(proc.dir / "pid"),
        }
        # marshal, not JSON: the monitor then needs no json (and re) import.
        bundles.write_private(proc.dir / "monitor.cfg", marshal.dumps(cfg))
        if child is None:
            child = await self._start_monitor(proc.dir)
        runtime = proc.task.runtime
        try:
            out, err = await asyncio.wait_for(child.communicate(b"\n"), runtime.timeout)
        except TimeoutError:
            # The monitor and the runtime command it runs share its session.
            await asyncio.shield(kill_group(child))
            raise DeadlineExceeded(
                f"{runtime.name} {action} of {proc.id}: {runtime.binary} did not finish "
                f"within {runtime.timeout:g} seconds and was killed"
            ) from None
        except BaseException:
            await asyncio.shield(kill_group(child))
            raise
        lines = out.decode(errors="replace").splitlines()
        word, _, rest = (lines[0] if lines else "").partition(" ")
        if word == "error":
            raise RuntimeFailed(rest)
        pids = rest.split()
        if word != "ok" or len(pids) != 2 or not all(p.isdigit() for p in pids):
            detail = err.decode(errors="replace").strip() or f"exit status {child.returncode}"
            raise RuntimeFailed(f"the task monitor did not start: {detail}")
        proc.pid, proc.monitor_pid = int(pids[0]), int(pids[1])

    # --- watching exits ---------------------------------------------------------

    def _watch(self, proc: Process) -> None:
        try:
            pidfd = os.pidfd_open(proc.monitor_pid)
        except (ProcessLookupError, OSError):
            self._spawn_background(self._exited(proc))
            return
        if not self._is_our_monitor(proc):
            os.close(pidfd)
            self._spawn_background(self._exited(proc))
            return
        proc._pidfd = pidfd
        asyncio.get_running_loop().add_reader(pidfd, self._monitor_gone, proc)

    @staticmethod
    def _is_our_monitor(proc: Process) -> bool:
        try:
            cmdline = Path(f"/proc/{proc.monitor_pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(proc.dir / "monitor.cfg").encode() in cmdline

    def _monitor_gone(self, proc: Process) -> None:
        proc.stop_watching()
        self._spawn_background(self._exited(proc))

    def _spawn_background(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _exited(self, proc: Process) -> None:
        exit_ = proc.read_exit()
        if exit_ is None:
            log.warning(
                "monitor of %s/%s%s ended without an exit status",
                proc.task.namespace, proc.task.id, f" exec {proc.exec_id}" if proc.exec_id else "",
            )  # fmt: skip
            exit_ = Exit(255, time.time_ns(), proc.pid)
        if proc.starting is not None:
            # /tasks/start goes out before the exit it led to.
            await proc.starting.wait()
        self._record_exit(proc, exit_)
        self._publish_exit(proc)

    def _record_exit(self, proc: Process, exit_: Exit) -> None:
        proc.exit = exit_
        proc.status = Status.STOPPED
        proc.done.set()
        if not proc.exec_id and proc.task.oom is not None:
            # /tasks/oom goes out before the exit the kill caused, even if its wakeup is late.
            proc.task.oom.check()
            proc.task.oom.stop()
            proc.task.oom = None

    def _publish_exit(self, proc: Process) -> None:
        assert proc.exit is not None
        self.publish(
            proc.task.namespace,
            "/tasks/exit",
            events.TaskExit(
                container_id=proc.task.id,
                id=proc.id,
                pid=proc.pid,
                exit_status=proc.exit.status,
                exited_at=proc.exit.time,
            ),
        )
        proc.exit_reported = True
        if proc.dir.exists():
            proc.save()

    def _watch_oom(self, task: Task) -> None:
        def fired() -> None:
            self.publish(task.namespace, "/tasks/oom", events.TaskOom(container_id=task.id))

        watch = OomWatch(task.cgroup, fired)
        if watch.start():
            task.oom = watch

    # --- lifecycle ------------------------------------------------------------

    async def start(self, namespace: str, container_id: str, exec_id: str = "") -> Process:
        task = self.get(namespace, container_id)
        async with task.lock:
            if exec_id:
                return await self._start_exec(task, task.lookup(exec_id))
            proc = task.process
            if proc.status != Status.CREATED or proc.exit is not None:
                raise FailedPrecondition(
                    f"task {container_id}: cannot start a task that is {self._state(proc)}"
                )
            proc.starting = asyncio.Event()
            try:
                await task.runtime.run(namespace, "start", container_id)
                if proc.exit is None:
                    proc.status = Status.RUNNING
                proc.save()
                self.publish(
                    namespace, "/tasks/start",
                    events.TaskStart(container_id=container_id, pid=proc.pid),
                )  # fmt: skip
            finally:
                proc.starting.set()
                proc.starting = None
            return proc

    async def _start_exec(self, task: Task, proc: Process) -> Process:
        if proc.status != Status.CREATED or proc.monitor_pid:
            raise FailedPrecondition(
                f"exec {proc.exec_id} of task {task.id} is {self._state(proc)}, not created"
            )
        self._require_running(task, f"start exec {proc.exec_id} in")
        argv = task.runtime.argv(
            task.namespace, "exec", "--detach", "--pid-file", str(proc.dir / "pid"),
            "--process", str(proc.dir / "spec.json"), *self._console(proc.stdio), task.id,
            log=proc.dir / "runtime.log",
        )  # fmt: skip
        await self._spawn(proc, argv, "exec")
        proc.status = Status.RUNNING
        proc.save()
        self.publish(
            task.namespace, "/tasks/exec-started",
            events.TaskExecStarted(container_id=task.id, exec_id=proc.exec_id, pid=proc.pid),
        )  # fmt: skip
        self._watch(proc)
        return proc

    @staticmethod
    def _state(proc: Process) -> str:
        return proc.status.name.lower()

    def _require_running(self, task: Task, doing: str) -> None:
        proc = task.process
        if proc.exit is not None or proc.status not in (Status.RUNNING, Status.PAUSED):
            raise FailedPrecondition(
                f"cannot {doing} task {task.id}: it is {self._state(proc)}, not running"
            )

    async def wait(self, namespace: str, container_id: str, exec_id: str = "") -> Exit:
        proc = self.get(namespace, container_id).lookup(exec_id)
        await proc.done.wait()
        assert proc.exit is not None
        return proc.exit

    async def kill(
        self, namespace: str, container_id: str, sig: int, *, exec_id: str = "", all: bool = False
    ) -> None:
        validate_signal(sig)
        task = self.get(namespace, container_id)
        proc = task.lookup(exec_id)
        if proc.exit is not None:
            raise NotFound(f"process {proc.id} already finished")
        if exec_id:
            if not proc.pid:
                raise FailedPrecondition(f"exec {exec_id} of task {container_id} is not started")
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                raise NotFound(f"process {exec_id} already finished") from None
            return
        args = ["kill", *(["--all"] if all else []), container_id, str(sig)]
        try:
            await task.runtime.run(namespace, *args)
        except RuntimeFailed:
            if proc.exit is not None or not await self._alive(task):
                raise NotFound(f"process {proc.id} already finished") from None
            raise
        if proc.status == Status.PAUSED and sig == signals.SIGKILL:
            # A frozen process cannot act on SIGKILL until it is thawed.
            with contextlib.suppress(RuntimeFailed):
                await task.runtime.run(namespace, "resume", container_id)

    async def _alive(self, task: Task) -> bool:
        state = await task.runtime.state(task.namespace, task.id)
        return state is not None and state.get("status") not in ("stopped", None)

    async def pause(self, namespace: str, container_id: str) -> None:
        task = self.get(namespace, container_id)
        async with task.lock:
            proc = task.process
            if proc.exit is not None or proc.status != Status.RUNNING:
                raise FailedPrecondition(
                    f"cannot pause task {container_id}: it is {self._state(proc)}, not running"
                )
            await task.runtime.run(namespace, "pause", container_id)
            proc.status = Status.PAUSED
            proc.save()
            self.publish(namespace, "/tasks/paused", events.TaskPaused(container_id=container_id))

    async def resume(self, namespace: str, container_id: str) -> None:
        task = self.get(namespace, container_id)
        async with task.lock:
            proc = task.process
            if proc.exit is not None or proc.status != Status.PAUSED:
                raise FailedPrecondition(
                    f"cannot resume task {container_id}: it is {self._state(proc)}, not paused"
                )
            await task.runtime.run(namespace, "resume", container_id)
            proc.status = Status.RUNNING
            proc.save()
            self.publish(namespace, "/tasks/resumed", events.TaskResumed(container_id=container_id))

    async def exec(
        self,
        namespace: str,
        container_id: str,
        exec_id: str,
        process: dict[str, Any],
        stdio: Stdio,
    ) -> Process:
        identifiers.validate(exec_id)
        task = self.get(namespace, container_id)
        async with task.lock:
            self._require_running(task, f"exec {exec_id} in")
            if exec_id in task.execs:
                raise AlreadyExists(f"id {exec_id}: already exists")
            specs.validate_process(process, f"exec {exec_id}")
            fitted = specs.fit_process(process)
            fitted["terminal"] = stdio.terminal
            if stdio.terminal:
                stdio.stderr = ""
            directory = task.bundle / "execs" / exec_id
            bundles.make_dir(directory.parent, bundles.BUNDLE_MODE)
            directory.mkdir(mode=bundles.BUNDLE_MODE)
            bundles.write_private(directory / "spec.json", json.dumps(fitted).encode())
            proc = Process(task, exec_id, directory, stdio)
            proc.save()
            task.execs[exec_id] = proc
            self.publish(
                namespace, "/tasks/exec-added",
                events.TaskExecAdded(container_id=container_id, exec_id=exec_id),
            )  # fmt: skip
            return proc

    async def delete(self, namespace: str, container_id: str) -> Process:
        task = self.get(namespace, container_id)
        async with task.lock:
            proc = task.process
            if proc.exit is None and proc.status in (Status.RUNNING, Status.PAUSED):
                raise FailedPrecondition(
                    f"cannot delete task {container_id}: it is {self._state(proc)}; "
                    "kill it and wait for it to stop first"
                )
            with contextlib.suppress(RuntimeFailed):
                await task.runtime.run(namespace, "delete", "--force", container_id)
            await proc.done.wait()
            for ex in task.execs.values():
                if ex.monitor_pid:
                    await self._finish_exec(ex)
            await self._forget(task)
        assert proc.exit is not None
        self.publish(
            namespace,
            "/tasks/delete",
            events.TaskDelete(
                container_id=container_id,
                pid=proc.pid,
                exit_status=proc.exit.status,
                exited_at=proc.exit.time,
            ),
        )
        return proc

    async def _finish_exec(self, proc: Process) -> None:
        """Wait for an exec's monitor once its container is gone; end it if it lingers."""
        try:
            await asyncio.wait_for(proc.done.wait(), EXEC_LINGER)
        except TimeoutError:
            if self._is_our_monitor(proc):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.monitor_pid, signals.SIGKILL)
            await proc.done.wait()

    async def _forget(self, task: Task) -> None:
        for p in [task.process, *task.execs.values()]:
            p.stop_watching()
        if task.oom is not None:
            task.oom.stop()
            task.oom = None
        self.tasks.pop((task.namespace, task.id), None)
        await self._remove_bundle(task.bundle)

    async def delete_process(self, namespace: str, container_id: str, exec_id: str) -> Process:
        if not exec_id:
            raise InvalidArgument("exec id is required to delete a process; delete the task")
        task = self.get(namespace, container_id)
        async with task.lock:
            proc = task.lookup(exec_id)
            if proc.monitor_pid and proc.exit is None:
                raise FailedPrecondition(
                    f"cannot delete exec {exec_id} of task {container_id}: it is still running"
                )
            if proc.exit is None:
                proc.exit = Exit(0, 0, 0)
            proc.stop_watching()
            del task.execs[exec_id]
            shutil.rmtree(proc.dir, ignore_errors=True)
            return proc

    async def _remove_bundle(self, bundle: Path) -> None:
        await rootfs_mod.unmount_all(bundle / "rootfs")
        await asyncio.to_thread(shutil.rmtree, bundle, True)

    # --- inspection and control ------------------------------------------------

    def pids(self, namespace: str, container_id: str) -> list[tuple[int, str]]:
        """(pid, exec id) of every process in the task's cgroup; "" for non-exec ones."""
        task = self.get(namespace, container_id)
        by_pid = {p.pid: p.exec_id for p in task.execs.values() if p.pid and p.exit is None}
        found = task.cgroup.pids()
        if not found and task.process.exit is None and task.process.pid:
            found = [task.process.pid]
        return [(pid, by_pid.get(pid, "")) for pid in found]

    async def update(self, namespace: str, container_id: str, resources: dict[str, Any]) -> None:
        task = self.get(namespace, container_id)
        async with task.lock:
            if task.process.exit is not None:
                raise FailedPrecondition(f"cannot update task {container_id}: it has stopped")
            path = task.bundle / "resources.json"
            bundles.write_private(path, json.dumps(resources).encode())
            await task.runtime.run(
                namespace, "update", "--resources", str(path), container_id,
                what=f"updating resources of task {container_id}",
            )  # fmt: skip

    async def metrics(
        self, namespace: str, filter_strings: list[str]
    ) -> list[tuple[Task, cgroups.Stats]]:
        """The cgroup statistics of the namespace's tasks matching containerd's filters.

        Scoped to the caller's namespace as containerd's is: a `Metric` names
        only the container id, so another namespace's task of the same name
        would be indistinguishable. A task whose cgroup is gone is left out,
        as containerd leaves out a task whose shim cannot read it; a host
        without cgroups is an error, never zeros. The files are read off the
        event loop.
        """
        match = filters.parse_all(filter_strings)
        chosen = [
            task
            for task in self.list(namespace)
            if match.match(filters.field_adaptor({"id": task.id, "namespace": task.namespace}))
        ]
        if not chosen:
            return []
        return await asyncio.to_thread(_read_stats, chosen)

    def resize_pty(
        self, namespace: str, container_id: str, exec_id: str, width: int, height: int
    ) -> None:
        proc = self.get(namespace, container_id).lookup(exec_id)
        if not proc.stdio.terminal:
            raise FailedPrecondition(f"process {proc.id} has no terminal to resize")
        proc.control(f"resize {width} {height}", "resize the terminal of")

    def close_io(self, namespace: str, container_id: str, exec_id: str) -> None:
        self.get(namespace, container_id).lookup(exec_id).control("close-stdin", "close stdin of")

    # --- restart ----------------------------------------------------------------

    async def restore(self) -> None:
        """Find the tasks of a previous engine run; report exits that happened meanwhile."""
        if not self.root.is_dir():
            return
        tightened = await asyncio.to_thread(bundles.tighten, self.root)
        if tightened:
            log.info("made %d task bundle files and directories private", tightened)
        pending: list[Process] = []
        for ns_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for bundle in sorted(p for p in ns_dir.iterdir() if p.is_dir()):
                try:
                    task = self._load(ns_dir.name, bundle)
                except CtrdeckError as exc:
                    log.warning("cannot restore task in %s: %s", bundle, exc)
                    task = None
                if task is None:
                    await self._remove_bundle(bundle)
                    continue
                self.tasks[(task.namespace, task.id)] = task
                for proc in [task.process, *task.execs.values()]:
                    if proc.exit is not None and not proc.exit_reported:
                        pending.append(proc)
                if task.process.exit is None:
                    self._watch_oom(task)
        log.info("restored %d tasks, %d exits to report", len(self.tasks), len(pending))
        if pending:
            self._spawn_background(self._report_restored(pending))

    def _load(self, namespace: str, bundle: Path) -> Task | None:
        record = _read_json(bundle / "task.json")
        init_record = _read_json(bundle / "init" / "process.json")
        if record is None or init_record is None or not init_record.get("monitor_pid"):
            return None  # a create that never finished
        runtime = self.runtimes.by_name(str(record["runtime"]))
        task = Task(
            namespace, str(record["id"]), bundle, runtime, str(record["cgroups_path"]),
            self.cgroups,
        )  # fmt: skip
        task.mounts = [rootfs_mod.from_json(m) for m in record.get("mounts") or []]
        task.created_at = int(record.get("created_at", 0))
        task.init = self._load_process(task, "", bundle / "init", init_record)
        execs = bundle / "execs"
        if execs.is_dir():
            for d in sorted(execs.iterdir()):
                data = _read_json(d / "process.json")
                if data is not None:
                    task.execs[d.name] = self._load_process(task, d.name, d, data)
        return task

    def _load_process(
        self, task: Task, exec_id: str, directory: Path, data: dict[str, Any]
    ) -> Process:
        stdio = Stdio(
            str(data.get("stdin", "")), str(data.get("stdout", "")),
            str(data.get("stderr", "")), bool(data.get("terminal")),
        )  # fmt: skip
        proc = Process(task, exec_id, directory, stdio)
        proc.pid = int(data.get("pid", 0))
        proc.monitor_pid = int(data.get("monitor_pid", 0))
        proc.status = Status[str(data.get("status", "CREATED"))]
        proc.exit_reported = bool(data.get("exit_reported"))
        exit_ = proc.read_exit()
        if exit_ is not None:
            self._record_exit(proc, exit_)
        elif proc.monitor_pid:
            if self._is_our_monitor(proc):
                self._watch(proc)
            else:
                self._record_exit(proc, Exit(255, time.time_ns(), proc.pid))
        return proc

    async def _report_restored(self, pending: list[Process]) -> None:
        deadline = time.monotonic() + RESTORED_EXIT_GRACE
        while self.subscribers() == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for proc in pending:
            if not proc.exit_reported:
                self._publish_exit(proc)

    async def close(self) -> None:
        """Stop watching; every container and monitor keeps running."""
        for task in list(self.tasks.values()):
            for p in [task.process, *task.execs.values()]:
                p.stop_watching()
            if task.oom is not None:
                task.oom.stop()
                task.oom = None
        for bg in list(self._background):
            bg.cancel()
        self._background.clear()
