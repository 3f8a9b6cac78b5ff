"""TaskDetails: ctrdeck's extension for what containerd's Tasks service does not say.

Thin as every service: `Log` finds the process (an unknown container, a
container without a task, an unknown exec: NOT_FOUND) and streams its output
log through `core.runtime.tasklog`, following it until the process has exited
when asked to; `Started` reports when each running task started, read on the
engine's own host (`core.runtime.proctime`); `Processes` lists a task's
processes with what the engine's /proc says of each (`core.procfs`). A client on any host thus needs
neither the engine's files nor its /proc. Not part of containerd's API: a
containerd answers UNIMPLEMENTED, and clients say so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from core import context, procfs
from core.api.containerd.v1.types import Status
from core.api.ctrdeck.services.tasks import v1 as api
from core.engine import Engine
from core.errors import InvalidArgument
from core.runtime import proctime, tasklog


class TaskDetailsService(api.TaskDetailsBase):
    PARTS: tuple[str, ...] = ("metadata", "tasks")
    """The engine's parts it uses: Introspection lists their types as its `requires`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _log_of(
        self, namespace: str, container_id: str, exec_id: str
    ) -> tuple[Path, asyncio.Event, str]:
        """The process's log, the event set when it exits, and its name for errors."""
        if not container_id:
            raise InvalidArgument("container_id is required")
        # An unknown container says so before a known one without a task does.
        self.engine.metadata.containers.get(namespace, container_id)
        proc = self.engine.tasks.get(namespace, container_id).lookup(exec_id)
        what = f"exec {exec_id} of task {container_id}" if exec_id else f"task {container_id}"
        return proc.log_path, proc.done, what

    async def log(self, message: api.LogRequest) -> AsyncIterator[api.LogChunk]:
        tasklog.validate(message.offset, message.tail_lines)
        path, exited, what = self._log_of(
            context.namespace(), message.container_id, message.exec_id
        )
        chunks = tasklog.read(
            path,
            what,
            offset=message.offset,
            tail_lines=message.tail_lines,
            file=message.file,
            exited=exited if message.follow else None,
        )
        async for file, offset, data in chunks:
            yield api.LogChunk(data=data, offset=offset, file=file)

    async def started(self, message: api.StartedRequest) -> api.StartedResponse:
        running = [
            (t.id, t.process.pid)
            for t in self.engine.tasks.list(context.namespace())
            if t.process.pid and t.process.status in (Status.RUNNING, Status.PAUSED)
        ]
        return api.StartedResponse(tasks=await asyncio.to_thread(_starts, running))

    async def processes(self, message: api.ProcessesRequest) -> api.ProcessesResponse:
        if not message.container_id:
            raise InvalidArgument("container_id is required")
        namespace = context.namespace()
        self.engine.metadata.containers.get(namespace, message.container_id)
        found = self.engine.tasks.pids(namespace, message.container_id)
        return api.ProcessesResponse(processes=await asyncio.to_thread(_processes, found))


def _starts(running: list[tuple[str, int]]) -> list[api.TaskStarted]:
    boot = proctime.boot_time()
    if boot is None:
        return []
    out = []
    for container_id, pid in running:
        when = proctime.start_time(pid, boot)
        if when is not None:
            out.append(api.TaskStarted(container_id=container_id, pid=pid, started_at=when))
    return out


def _processes(found: list[tuple[int, str]]) -> list[api.TaskProcess]:
    users = procfs.container_users(found[0][0]) if found else {}
    out = []
    for pid, exec_id in found:
        facts = procfs.read(pid, users)
        if facts is None:
            continue
        out.append(
            api.TaskProcess(
                pid=pid,
                exec_id=exec_id,
                user=facts.user,
                command=facts.command,
                state=facts.state,
                cpu_ns=facts.cpu_ns,
                rss_bytes=facts.rss or 0,
            )
        )
    return out
