"""What each console action asks of the engine, through `core.client` only.

One async function per action (pull, run, start, pause or resume, kill,
delete, inspect, follow a log), each taking a client already set to the
console's namespace. Failures come out as `ConsoleError` carrying the engine's
own message; a service the engine does not serve yet (UNIMPLEMENTED) becomes a
plain sentence naming it, so an action lights up by itself once the engine side
lands. No widgets here: the screens call these from workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal as signals
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from core.api.containerd.services.containers import v1 as containers_api
from core.api.containerd.services.content import v1 as content_api
from core.api.containerd.services.images import v1 as images_api
from core.api.containerd.services.namespaces import v1 as namespaces_api
from core.api.containerd.services.snapshots import v1 as snapshots_api
from core.api.containerd.services.tasks import v1 as tasks_api
from core.api.containerd.v1.types import Process
from core.api.containerd.v1.types import Status as TaskStatus
from core.api.ctrdeck.services.tasks.v1 import LogChunk
from core.client import Client
from core.errors import CtrdeckError
from tui import oci
from tui import spec as specs

DEFAULT_RUNTIME = specs.DEFAULT_RUNTIME
STOP_SIGNAL_LABEL = "io.containerd.image.config.stop-signal"
KILL_WAIT = 10.0
# A task that ends this soon after its start is reported as exited, not "started".
EARLY_EXIT = 1.5
TAIL_LINES = 5
NO_LOGS = "no logs for this container"
# Seconds between asking again for a log whose engine went away.
LOG_RETRY = 1.0
# Lines asked for to find the last TAIL_LINES that are not blank.
TAIL_READ_LINES = 50

SIGNALS: tuple[tuple[str, int], ...] = tuple(
    (s.name, int(s))
    for s in (
        signals.SIGTERM,
        signals.SIGKILL,
        signals.SIGINT,
        signals.SIGHUP,
        signals.SIGQUIT,
        signals.SIGUSR1,
        signals.SIGUSR2,
        signals.SIGSTOP,
        signals.SIGCONT,
    )
)

UNSERVED = {
    "Logs": "logs are not available from this engine (containerd keeps no task log; a task's "
    "output goes only to the client that started it, such as `ctr run` without -d)",
    "Pull": "this engine has no server-side pull (Images.Pull is ctrdeck's own); "
    "use `ctr images pull` against it instead",
}

# Hears the name of each step an action takes that a `ctr` command line matches.
Steps = Callable[[str], None]

CONNECTION_ERRORS = (OSError, ConnectionError, StreamTerminatedError, asyncio.TimeoutError)


class ConsoleError(Exception):
    """An action failed; the message is what the operator reads in the notification."""

    def __init__(self, message: str, *, unimplemented: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.unimplemented = unimplemented


def unserved_message(service: str) -> str:
    return UNSERVED.get(service, f"this engine does not serve {service} yet")


def pull_elsewhere(address: str, namespace: str, request: images_api.PullImageRequest) -> str:
    """What to do when the engine has no `Images.Pull` (containerd has none): the ctr line."""
    flags = " --plain-http" if request.plain_http else ""
    if request.snapshotter:
        flags += f" --snapshotter {shlex.quote(request.snapshotter)}"
    if request.platform:
        flags += f" --platform {shlex.quote(request.platform)}"
    line = (
        f"ctr -a {shlex.quote(address)} -n {shlex.quote(namespace)} images pull{flags} "
        f"{shlex.quote(request.ref)}"
    )
    return (
        f"The engine at {address} has no server-side pull (Images.Pull is ctrdeck's own; "
        f"containerd pulls in its clients). Pull with ctr, and the image shows up here: {line}"
    )


# grpclib servers answer a method they do not register with a trailers-only
# response that lacks content-type; grpclib clients report that as UNKNOWN with
# this message instead of UNIMPLEMENTED.
UNREGISTERED_METHOD = "Missing content-type header"


def is_unimplemented(exc: BaseException) -> bool:
    if not isinstance(exc, GRPCError):
        return False
    return exc.status is Status.UNIMPLEMENTED or (
        exc.status is Status.UNKNOWN and exc.message == UNREGISTERED_METHOD
    )


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, GRPCError) and exc.status is Status.NOT_FOUND


@contextlib.contextmanager
def engine_call(service: str, what: str) -> Iterator[None]:
    """Turn whatever a call raises into a `ConsoleError` that says what was being done."""
    try:
        yield
    except ConsoleError:
        raise
    except GRPCError as exc:
        if is_unimplemented(exc):
            raise ConsoleError(unserved_message(service), unimplemented=True) from None
        raise ConsoleError(f"{what}: {exc.message or exc.status.name.lower()}") from None
    except oci.ImageWalkError as exc:
        raise ConsoleError(f"{what}: {exc}") from None
    except CONNECTION_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        raise ConsoleError(f"{what}: the engine is not reachable ({reason})") from None


def task_status(process: Process) -> str:
    return TaskStatus(process.status).name


async def get_task(client: Client, container_id: str) -> Process | None:
    """The container's task, or None when it has none (or the engine serves no Tasks)."""
    try:
        resp = await client.tasks.get(tasks_api.GetRequest(container_id=container_id))
    except GRPCError as exc:
        if exc.status is Status.NOT_FOUND or is_unimplemented(exc):
            return None
        raise
    return resp.process


# --- images -----------------------------------------------------------------


def pull_request(
    ref: str, snapshotter: str, platform: str, plain_http: bool
) -> images_api.PullImageRequest:
    return images_api.PullImageRequest(
        ref=ref, snapshotter=snapshotter, platform=platform, plain_http=plain_http
    )


async def pull(
    client: Client, request: images_api.PullImageRequest
) -> AsyncIterator[images_api.PullImageProgress]:
    with engine_call("Pull", f"pull {request.ref}"):
        async for progress in client.images.pull(request):
            yield progress


async def delete_image(client: Client, name: str) -> None:
    with engine_call("Images", f"delete image {name}"):
        await client.images.delete(images_api.DeleteImageRequest(name=name))


async def image_detail(client: Client, name: str) -> oci.ImageDetail:
    with engine_call("Images", f"inspect image {name}"):
        resp = await client.images.get(images_api.GetImageRequest(name=name))
        assert resp.image is not None and resp.image.target is not None
        return await oci.walk(client, resp.image.target)


@dataclass(frozen=True)
class RunResult:
    """A task just started; `exit_status` is set when it ended within `EARLY_EXIT` seconds."""

    pid: int
    exit_status: int | None = None
    output: tuple[str, ...] = ()


async def run(client: Client, image: str, options: specs.RunOptions) -> RunResult:
    """A new container from `image` on a fresh snapshot of its top layer, then its task.

    The spec is built here from the image config and the operator's options, as `ctr
    run` builds it. A task that exits at once is reported as such, with its last
    output; with `options.remove` it is then deleted with its container.
    """
    detail = await image_detail(client, image)
    stop_signal = ((detail.config or {}).get("config") or {}).get("StopSignal") or "SIGTERM"
    container_id = options.container_id
    try:
        spec = specs.from_image(client.namespace, container_id, detail.config or {}, options)
    except CtrdeckError as exc:
        raise ConsoleError(f"run {container_id}: {exc.message}") from None
    with engine_call("Leases", f"run {container_id}"):
        async with client.lease() as leased:
            with engine_call("Snapshots", f"prepare the snapshot of {container_id}"):
                await leased.snapshots.prepare(
                    snapshots_api.PrepareSnapshotRequest(
                        snapshotter=options.snapshotter, key=container_id, parent=detail.chain_id
                    )
                )
            with engine_call("Containers", f"create container {container_id}"):
                await leased.containers.create(
                    containers_api.CreateContainerRequest(
                        container=containers_api.Container(
                            id=container_id,
                            image=image,
                            labels={STOP_SIGNAL_LABEL: stop_signal},
                            runtime=containers_api.ContainerRuntime(name=options.runtime),
                            spec=specs.pack(spec),
                            snapshotter=options.snapshotter,
                            snapshot_key=container_id,
                        )
                    )
                )
    pid = await start(client, container_id)
    status = await wait_exit(client, container_id, EARLY_EXIT)
    if status is None:
        return RunResult(pid)
    output = await output_tail(client, container_id)
    if options.remove:
        await delete_container(client, container_id)
    return RunResult(pid, status, output)


async def wait_exit(client: Client, container_id: str, timeout: float | None) -> int | None:
    """The task's exit status once it exits, or None if it still runs after `timeout` seconds."""
    with engine_call("Tasks", f"wait for {container_id}"):
        try:
            resp = await asyncio.wait_for(
                client.tasks.wait(tasks_api.WaitRequest(container_id=container_id)), timeout
            )
        except TimeoutError:
            return None
    return resp.exit_status


async def output_tail(
    client: Client, container_id: str, lines: int = TAIL_LINES
) -> tuple[str, ...]:
    """The last lines the task wrote, when the engine serves its log (ctrdeck's does)."""
    data = b""
    try:
        async for chunk in client.task_log(container_id, tail_lines=TAIL_READ_LINES):
            data += chunk.data
    except (GRPCError, *CONNECTION_ERRORS):
        return ()
    text = data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    return tuple(line for line in text.splitlines() if line.strip())[-lines:]


# --- containers and tasks ---------------------------------------------------


async def start(client: Client, container_id: str, *, steps: Steps | None = None) -> int:
    """Start the container's task, creating it (again) when it has none or it stopped.

    `steps` hears each `ctr`-visible step as it is taken: `task.rm` (a stopped
    task deleted first), then `task.start`.
    """
    with engine_call("Tasks", f"start {container_id}"):
        task = await get_task(client, container_id)
        if task is not None and task.status in (TaskStatus.RUNNING, TaskStatus.PAUSED):
            raise ConsoleError(f"{container_id} is already {task_status(task).lower()}")
        if task is not None and task.status is TaskStatus.STOPPED:
            _step(steps, "task.rm")
            await client.tasks.delete(tasks_api.DeleteTaskRequest(container_id=container_id))
            task = None
        _step(steps, "task.start")
        if task is None:
            found = await client.containers.get(containers_api.GetContainerRequest(id=container_id))
            spec = found.container.spec if found.container else None
            await client.tasks.create(
                tasks_api.CreateTaskRequest(
                    container_id=container_id, terminal=specs.terminal(_spec_json(spec))
                )
            )
        resp = await client.tasks.start(tasks_api.StartRequest(container_id=container_id))
        return resp.pid


def _step(steps: Steps | None, name: str) -> None:
    if steps is not None:
        steps(name)


def _spec_json(spec: Any) -> dict[str, Any] | None:
    if spec is None or not spec.value:
        return None
    try:
        value = json.loads(spec.value)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def pause_or_resume(client: Client, container_id: str) -> str:
    """Pause a running task or resume a paused one; returns the ctr verb used."""
    with engine_call("Tasks", f"pause or resume {container_id}"):
        task = await get_task(client, container_id)
        if task is None:
            raise ConsoleError(f"{container_id} has no task to pause; start it first (s)")
        if task.status is TaskStatus.PAUSED:
            await client.tasks.resume(tasks_api.ResumeTaskRequest(container_id=container_id))
            return "resume"
        if task.status is TaskStatus.RUNNING:
            await client.tasks.pause(tasks_api.PauseTaskRequest(container_id=container_id))
            return "pause"
        state = task_status(task).lower()
        raise ConsoleError(f"{container_id} is {state}; only a running task pauses")


async def kill(client: Client, container_id: str, signal: int, all_processes: bool) -> None:
    with engine_call("Tasks", f"kill {container_id}"):
        await client.tasks.kill(
            tasks_api.KillRequest(container_id=container_id, signal=signal, all=all_processes)
        )


async def delete_container(
    client: Client, container_id: str, *, steps: Steps | None = None
) -> None:
    """Delete a container as `ctr containers rm` does, ending a live task first.

    `steps` hears `task.rm.force` for a live task (SIGKILL to all, wait, delete:
    what `ctr task rm -f` does), then `containers.rm` (which also deletes a stopped
    task and the snapshot, as ctr's does).
    """
    with engine_call("Containers", f"delete container {container_id}"):
        found = await client.containers.get(containers_api.GetContainerRequest(id=container_id))
        container = found.container or containers_api.Container(id=container_id)
    with engine_call("Tasks", f"delete the task of {container_id}"):
        task = await get_task(client, container_id)
        live = task is not None and task.status is not TaskStatus.STOPPED and bool(task.pid)
        if live:
            _step(steps, "task.rm.force")
        if task is not None:
            if live:
                waiter = asyncio.ensure_future(
                    client.tasks.wait(tasks_api.WaitRequest(container_id=container_id))
                )
                await client.tasks.kill(
                    tasks_api.KillRequest(container_id=container_id, signal=9, all=True)
                )
                try:
                    await asyncio.wait_for(waiter, KILL_WAIT)
                except TimeoutError:
                    raise ConsoleError(
                        f"{container_id} did not exit within {KILL_WAIT:.0f}s of SIGKILL"
                    ) from None
            await client.tasks.delete(tasks_api.DeleteTaskRequest(container_id=container_id))
    if container.snapshot_key and container.snapshotter:
        try:
            await client.snapshots.remove(
                snapshots_api.RemoveSnapshotRequest(
                    snapshotter=container.snapshotter, key=container.snapshot_key
                )
            )
        except GRPCError as exc:
            # A snapshot already gone, or an engine without Snapshots, leaves
            # nothing for the console to remove.
            if not (exc.status is Status.NOT_FOUND or is_unimplemented(exc)):
                raise ConsoleError(
                    f"remove snapshot {container.snapshot_key} of {container_id}: {exc.message}"
                ) from None
    _step(steps, "containers.rm")
    with engine_call("Containers", f"delete container {container_id}"):
        await client.containers.delete(containers_api.DeleteContainerRequest(id=container_id))


@dataclass
class ContainerDetail:
    container: containers_api.Container
    spec: dict[str, Any] | None
    task: Process | None


async def container_detail(client: Client, container_id: str) -> ContainerDetail:
    with engine_call("Containers", f"inspect container {container_id}"):
        resp = await client.containers.get(containers_api.GetContainerRequest(id=container_id))
        container = resp.container or containers_api.Container(id=container_id)
        task = await get_task(client, container_id)
    spec: dict[str, Any] | None = None
    if container.spec is not None and container.spec.value:
        try:
            spec = json.loads(container.spec.value)
        except ValueError:
            spec = None
    return ContainerDetail(container=container, spec=spec, task=task)


async def follow_log(client: Client, container_id: str, tail_lines: int) -> AsyncIterator[bytes]:
    """The task's output from its last `tail_lines` lines on, as it is written, until it exits.

    Through ctrdeck's `TaskDetails.Log`: the console never opens the engine's
    files, so this works the same for an engine on another host. A containerd
    serves no such call and keeps no log; that says so in words. When the
    engine goes away after output arrived (a restart, a dropped link), it asks
    again, until the engine answers, from the byte after the last one shown,
    in the file that byte came from (the engine continues in its rotated log
    if it started a fresh one meanwhile).
    """
    resume: tuple[str, int] | None = None
    while True:
        try:
            with engine_call("Logs", f"follow the log of {container_id}"):
                async for chunk in _follow_once(client, container_id, tail_lines, resume):
                    resume = (chunk.file, chunk.offset + len(chunk.data))
                    yield chunk.data
            return
        except _Lost as lost:
            if resume is None:
                raise ConsoleError(
                    f"follow the log of {container_id}: the engine is not reachable ({lost})"
                ) from None
            await asyncio.sleep(LOG_RETRY)


class _Lost(Exception):
    """The engine went away while a log was followed; ask again."""


async def _follow_once(
    client: Client, container_id: str, tail_lines: int, resume: tuple[str, int] | None
) -> AsyncIterator[LogChunk]:
    file, offset = resume or ("", 0)
    try:
        async for chunk in client.task_log(
            container_id,
            offset=offset,
            tail_lines=0 if resume else tail_lines,
            follow=True,
            file=file,
        ):
            yield chunk
    except CONNECTION_ERRORS as exc:
        raise _Lost(str(exc) or type(exc).__name__) from None
    except GRPCError as exc:
        if exc.status is Status.UNAVAILABLE:
            raise _Lost(exc.message or "unavailable") from None
        if not is_not_found(exc):
            raise
        raise ConsoleError(
            f"{NO_LOGS}: {exc.message or 'not found'} "
            "(a container's log begins when its task is started)"
        ) from None


# --- snapshots, content, namespaces -----------------------------------------


async def delete_snapshot(client: Client, snapshotter: str, key: str) -> None:
    with engine_call("Snapshots", f"remove snapshot {key}"):
        await client.snapshots.remove(
            snapshots_api.RemoveSnapshotRequest(snapshotter=snapshotter, key=key)
        )


@dataclass
class SnapshotDetail:
    info: snapshots_api.Info
    usage: snapshots_api.UsageResponse | None


async def snapshot_detail(client: Client, snapshotter: str, key: str) -> SnapshotDetail:
    with engine_call("Snapshots", f"inspect snapshot {key}"):
        stat = await client.snapshots.stat(
            snapshots_api.StatSnapshotRequest(snapshotter=snapshotter, key=key)
        )
        try:
            usage = await client.snapshots.usage(
                snapshots_api.UsageRequest(snapshotter=snapshotter, key=key)
            )
        except GRPCError:
            usage = None
    return SnapshotDetail(info=stat.info or snapshots_api.Info(name=key), usage=usage)


async def delete_content(client: Client, digest: str) -> None:
    with engine_call("Content", f"delete blob {digest}"):
        await client.content.delete(content_api.DeleteContentRequest(digest=digest))


@dataclass
class ContentDetail:
    info: content_api.Info
    preview: str


async def content_detail(client: Client, digest: str, preview_bytes: int = 4096) -> ContentDetail:
    with engine_call("Content", f"inspect blob {digest}"):
        resp = await client.content.info(content_api.InfoRequest(digest=digest))
        info = resp.info or content_api.Info(digest=digest)
        data = b""
        if info.size <= oci.MAX_JSON_BLOB:
            async for chunk in client.content.read(
                content_api.ReadContentRequest(digest=digest, size=min(info.size, preview_bytes))
            ):
                data += chunk.data
    try:
        preview = json.dumps(json.loads(data), indent=2) if info.size <= preview_bytes else ""
    except ValueError:
        preview = ""
    if not preview and data:
        printable = data.decode("utf-8", "replace")
        preview = printable if printable.isprintable() or "\n" in printable else ""
    return ContentDetail(info=info, preview=preview)


async def delete_namespace(client: Client, name: str) -> None:
    with engine_call("Namespaces", f"delete namespace {name}"):
        await client.namespaces.delete(namespaces_api.DeleteNamespaceRequest(name=name))
