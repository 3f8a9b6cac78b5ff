"""Tasks: the containerd v1 Tasks service over the engine's task manager.

Thin as every service: it looks up the container, turns messages into the
runtime's terms (mounts, stdio, OCI JSON Anys), calls `core.runtime.tasks`
and turns processes back into `containerd.v1.types.Process` the way
containerd fills it (`id` is the container id for the init process, and
`exited_at` is Go's zero time while a process runs). Checkpointing is not
supported and says so.
"""

from __future__ import annotations

from core import context, typeurl
from core.api.containerd.runc.v1 import ProcessDetails
from core.api.containerd.services.tasks import v1 as api
from core.api.containerd.v1 import types as ttypes
from core.api.google.protobuf import Any, Empty
from core.engine import Engine
from core.errors import Internal, InvalidArgument, NotImplementedYet
from core.runtime import spec as specs
from core.runtime.cgroup_sample import encode_metric
from core.runtime.tasks import Exit, Process, Stdio, TaskManager
from core.services.codec import Preencoded, repeated
from core.services.convert import GO_ZERO
from core.snapshots.mount import Mount


def process_out(p: Process) -> ttypes.Process:
    return ttypes.Process(
        id=p.id,
        pid=p.pid,
        status=p.status,
        stdin=p.stdio.stdin,
        stdout=p.stdio.stdout,
        stderr=p.stdio.stderr,
        terminal=p.stdio.terminal,
        exit_status=p.exit.status if p.exit else 0,
        exited_at=p.exit.time if p.exit else GO_ZERO,
    )


def exit_of(proc: Process, what: str) -> Exit:
    """The exit of a deleted process, which the runtime must have collected by then."""
    if proc.exit is None:
        raise Internal(f"{what} was deleted but its exit status was never collected")
    return proc.exit


def json_any(value: Any | None, kind: str, what: str) -> bytes:
    """The JSON body of an OCI Any, refusing any other payload."""
    if value is None or not value.value:
        raise InvalidArgument(f"{what} is required")
    if not value.type_url.endswith("/" + kind):
        raise InvalidArgument(
            f"{what} must be {typeurl.OCI_PREFIX}{kind} JSON, not {value.type_url!r}"
        )
    return bytes(value.value)


class TasksService(api.TasksBase):
    PARTS: tuple[str, ...] = ("metadata", "tasks")
    """The engine's parts it uses: Introspection lists their types as its `requires`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def tasks(self) -> TaskManager:
        return self.engine.tasks

    async def create(self, message: api.CreateTaskRequest) -> api.CreateTaskResponse:
        ns = context.namespace()
        if message.checkpoint is not None and message.checkpoint.digest:
            raise NotImplementedYet("restoring a task from a checkpoint is not supported")
        container = self.engine.metadata.containers.get(ns, message.container_id)
        mounts = [Mount(m.type, m.source, tuple(m.options)) for m in message.rootfs]
        stdio = Stdio(message.stdin, message.stdout, message.stderr, message.terminal)
        task = await self.tasks.create(ns, container, mounts, stdio)
        return api.CreateTaskResponse(container_id=task.id, pid=task.process.pid)

    async def start(self, message: api.StartRequest) -> api.StartResponse:
        proc = await self.tasks.start(context.namespace(), message.container_id, message.exec_id)
        return api.StartResponse(pid=proc.pid)

    async def delete(self, message: api.DeleteTaskRequest) -> api.DeleteResponse:
        proc = await self.tasks.delete(context.namespace(), message.container_id)
        exit_ = exit_of(proc, f"task {message.container_id}")
        return api.DeleteResponse(pid=proc.pid, exit_status=exit_.status, exited_at=exit_.time)

    async def delete_process(self, message: api.DeleteProcessRequest) -> api.DeleteResponse:
        proc = await self.tasks.delete_process(
            context.namespace(), message.container_id, message.exec_id
        )
        exit_ = exit_of(proc, f"exec {message.exec_id} of task {message.container_id}")
        return api.DeleteResponse(
            id=proc.exec_id,
            pid=proc.pid,
            exit_status=exit_.status,
            exited_at=exit_.time if exit_.exited_at else GO_ZERO,
        )

    async def get(self, message: api.GetRequest) -> api.GetResponse:
        task = self.tasks.get(context.namespace(), message.container_id)
        return api.GetResponse(process=process_out(task.lookup(message.exec_id)))

    async def list(self, message: api.ListTasksRequest) -> api.ListTasksResponse:
        return api.ListTasksResponse(
            tasks=[process_out(t.process) for t in self.tasks.list(context.namespace())]
        )

    async def kill(self, message: api.KillRequest) -> Empty:
        await self.tasks.kill(
            context.namespace(),
            message.container_id,
            message.signal,
            exec_id=message.exec_id,
            all=message.all,
        )
        return Empty()

    async def exec(self, message: api.ExecProcessRequest) -> Empty:
        what = f"exec {message.exec_id} process spec"
        process = specs.parse_json(json_any(message.spec, "Process", what), what)
        stdio = Stdio(message.stdin, message.stdout, message.stderr, message.terminal)
        await self.tasks.exec(
            context.namespace(), message.container_id, message.exec_id, process, stdio
        )
        return Empty()

    async def resize_pty(self, message: api.ResizePtyRequest) -> Empty:
        self.tasks.resize_pty(
            context.namespace(),
            message.container_id,
            message.exec_id,
            message.width,
            message.height,
        )
        return Empty()

    async def close_io(self, message: api.CloseIoRequest) -> Empty:
        if message.stdin:
            self.tasks.close_io(context.namespace(), message.container_id, message.exec_id)
        return Empty()

    async def pause(self, message: api.PauseTaskRequest) -> Empty:
        await self.tasks.pause(context.namespace(), message.container_id)
        return Empty()

    async def resume(self, message: api.ResumeTaskRequest) -> Empty:
        await self.tasks.resume(context.namespace(), message.container_id)
        return Empty()

    async def list_pids(self, message: api.ListPidsRequest) -> api.ListPidsResponse:
        found = self.tasks.pids(context.namespace(), message.container_id)
        return api.ListPidsResponse(
            processes=[
                ttypes.ProcessInfo(
                    pid=pid,
                    info=typeurl.pack(ProcessDetails(exec_id=exec_id)) if exec_id else None,
                )
                for pid, exec_id in found
            ]
        )

    async def checkpoint(self, message: api.CheckpointTaskRequest) -> api.CheckpointTaskResponse:
        raise NotImplementedYet(
            f"checkpointing task {message.container_id} is not supported by this engine "
            "(no CRIU integration)"
        )

    async def update(self, message: api.UpdateTaskRequest) -> Empty:
        what = f"resources for task {message.container_id}"
        resources = specs.parse_json(json_any(message.resources, "LinuxResources", what), what)
        await self.tasks.update(context.namespace(), message.container_id, resources)
        return Empty()

    async def metrics(self, message: api.MetricsRequest) -> api.MetricsResponse:
        found = await self.tasks.metrics(context.namespace(), list(message.filters))
        # Encoded by hand (betterproto2 takes ~90 us a Metric, most of a poll's
        # cost): each stamped with when its sample was read, which a shared
        # sample (`Sampler`) may predate this call by, so rates stay right.
        return Preencoded(repeated(1, (encode_metric(t.id, s) for t, s in found)))  # type: ignore[return-value]

    async def wait(self, message: api.WaitRequest) -> api.WaitResponse:
        exit_ = await self.tasks.wait(context.namespace(), message.container_id, message.exec_id)
        return api.WaitResponse(exit_status=exit_.status, exited_at=exit_.time)
