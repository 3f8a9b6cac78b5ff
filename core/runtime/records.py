"""A task and its processes as records, and their persisted form in the bundle.

A `Task` is one container's task: its bundle, runtime, cgroup, rootfs mounts,
init `Process` and execs. Each is written to its bundle as it changes
(`task.json`, and `process.json` in the init's `init/` or an exec's
`execs/<exec id>/` directory) and the monitor writes a process's `exit` file,
so `load_task` can rebuild a task from its bundle after the engine restarts.
Loading only reads: whether a loaded process is still running is for the task
manager to find out.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.api.containerd.v1.types import Status
from core.errors import NotFound
from core.runtime import bundle as bundles
from core.runtime import rootfs as rootfs_mod
from core.runtime.cgroups import Cgroup, Layout, OomWatch
from core.runtime.runtimes import Runtime, Runtimes
from core.snapshots.mount import Mount


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


def write_json(path: Path, data: dict[str, Any]) -> None:
    bundles.write_private(path, json.dumps(data).encode())


def read_json(path: Path) -> dict[str, Any] | None:
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
        # The pidfd the engine watches the monitor through (`monitor_protocol.watch`).
        self.pidfd: int | None = None

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
        write_json(self.dir / "process.json", self.record())

    def read_exit(self) -> Exit | None:
        data = read_json(self.dir / "exit")
        if data is None:
            return None
        return Exit(int(data.get("status", 255)), int(data.get("exited_at", 0)), self.pid)


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

    @property
    def processes(self) -> list[Process]:
        """The init process first, then the execs."""
        return [self.process, *self.execs.values()]

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
        write_json(self.bundle / "task.json", self.record())

    def lookup(self, exec_id: str) -> Process:
        if not exec_id:
            return self.process
        try:
            return self.execs[exec_id]
        except KeyError:
            raise NotFound(f"process {exec_id} of task {self.id} not found") from None


def load_task(
    namespace: str, bundle: Path, runtimes: Runtimes, layout: Layout | None
) -> Task | None:
    """The task a bundle records, or None for a create that never finished.

    Raises a `CtrdeckError` when the record names a runtime this engine lacks.
    """
    record = read_json(bundle / "task.json")
    init_record = read_json(bundle / "init" / "process.json")
    if record is None or init_record is None or not init_record.get("monitor_pid"):
        return None
    runtime = runtimes.by_name(str(record["runtime"]))
    task = Task(namespace, str(record["id"]), bundle, runtime, str(record["cgroups_path"]), layout)
    task.mounts = [rootfs_mod.from_json(m) for m in record.get("mounts") or []]
    task.created_at = int(record.get("created_at", 0))
    task.init = _load_process(task, "", bundle / "init", init_record)
    execs = bundle / "execs"
    if execs.is_dir():
        for d in sorted(execs.iterdir()):
            data = read_json(d / "process.json")
            if data is not None:
                task.execs[d.name] = _load_process(task, d.name, d, data)
    return task


def _load_process(task: Task, exec_id: str, directory: Path, data: dict[str, Any]) -> Process:
    stdio = Stdio(
        str(data.get("stdin", "")), str(data.get("stdout", "")),
        str(data.get("stderr", "")), bool(data.get("terminal")),
    )  # fmt: skip
    proc = Process(task, exec_id, directory, stdio)
    proc.pid = int(data.get("pid", 0))
    proc.monitor_pid = int(data.get("monitor_pid", 0))
    proc.status = Status[str(data.get("status", "CREATED"))]
    proc.exit_reported = bool(data.get("exit_reported"))
    return proc
