"""What keeps a `NodeState` current from one engine, and reconnects when it is lost.

`Syncer` does a full resync on connect, follows the global `Events.Subscribe`
stream (rows change as events arrive; what an event does not carry is fetched
aside, a burst of created containers in one filtered list call), runs a slow
periodic resync as a safety net that stretches while it finds nothing the events
missed (the engine's health, `NodeState.engine`, keeps its own 30 s pace; the
container records come through `tui.container_list`, which decodes only those
whose bytes changed), and
polls task metrics for CPU and memory, less often while nobody looks (`watched`).
It reports through two callbacks (a log line, connection up or down); the screen
picks up changed tables from `NodeState.dirty` at its own pace. Its subscription
asks for the engine's recent history (ctrdeck's `SubscribeRequest.history`; a
containerd ignores it and the log starts empty): those events go to the log
only, the model comes from the resync, and after a reconnect the ones already
logged are not logged again. Services the engine answers UNIMPLEMENTED for are
remembered in `NodeState.unserved` and retried on each resync, so tables fill in
by themselves once the engine serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import replace
from datetime import datetime
from typing import Any

from grpclib.exceptions import GRPCError

from core import status as engine_status
from core import typeurl
from core.api.containerd import events as ev
from core.api.containerd.services.containers import v1 as containers_api
from core.api.containerd.services.content import v1 as content_api
from core.api.containerd.services.events import v1 as events_api
from core.api.containerd.services.images import v1 as images_api
from core.api.containerd.services.introspection import v1 as introspection_api
from core.api.containerd.services.namespaces import v1 as namespaces_api
from core.api.containerd.services.snapshots import v1 as snapshots_api
from core.api.containerd.services.tasks import v1 as tasks_api
from core.api.containerd.v1.types import Status as TaskStatus
from core.api.io.containerd.cgroups import v1 as cgroups_v1
from core.api.io.containerd.cgroups import v2 as cgroups_v2
from core.client import Client
from tui import container_list, oci
from tui.container_list import ContainerList, record_row
from tui.operations import CONNECTION_ERRORS, is_unimplemented
from tui.state import (
    CONTAINERS,
    CONTENT,
    COUNTS,
    ENGINE,
    IMAGES,
    NAMESPACES,
    SNAPSHOTS,
    ContainerRow,
    ContentRow,
    ImageRow,
    LogLine,
    NamespaceRow,
    NodeState,
    SnapshotRow,
    utc_now,
)

SNAPSHOTTER_PLUGIN = "io.containerd.snapshotter.v1"

# The safety net under the event stream. At 10,000 containers a resync costs the
# console ~0.1 s of CPU when no record changed (~1.5 s the first time, which
# decodes them all), and ctrdeck's engine 60 ms.
RESYNC_INTERVAL = 30.0
# A resync that finds nothing the events missed doubles the wait for the next
# one, up to this many resync intervals; one that finds a difference resets it.
RESYNC_STRETCH = 8
METRICS_INTERVAL = 2.0
# While nobody looks (the terminal reports it lost focus), task metrics are
# polled on every this many ticks of METRICS_INTERVAL: the CPU and memory
# columns are for eyes, and each poll costs the engine a read of every task.
UNWATCHED_POLL_TICKS = 5
RELIST_DELAY = 0.3
# Containers fetched per list call after a burst of creates (ids in its filters).
FETCH_BATCH = 100
RECONNECT_MAX = 5.0
# How long the OOM check after a 137 exit may take.
OOM_CHECK_TIMEOUT = 5.0
# Past events a new console asks for, to start its log with recent history.
EVENT_HISTORY = 500


def summarize_event(topic: str, payload: Any) -> str:
    """The few words of an event payload worth a log line."""
    match payload:
        case ev.TaskExit():
            return f"{payload.container_id} exit {payload.exit_status}"
        case ev.TaskStart() | ev.TaskCreate():
            return f"{payload.container_id} pid {payload.pid}"
        case ev.TaskDelete():
            return f"{payload.container_id} exit {payload.exit_status}"
        case ev.TaskExecAdded() | ev.TaskExecStarted():
            return f"{payload.container_id} exec {payload.exec_id}"
        case ev.SnapshotCommit():
            return f"{payload.name}  (from {payload.key})"
        case ev.SnapshotPrepare():
            return f"{payload.key}  parent {payload.parent or '-'}"
        case ev.ContentDelete():
            return payload.digest
        case ev.ContainerCreate():
            return f"{payload.id}  {payload.image}"
    for attr in ("container_id", "id", "name", "key", "digest"):
        value = getattr(payload, attr, "")
        if value:
            return str(value)
    return ""


def decode(envelope: events_api.Envelope) -> tuple[Any, str]:
    """The event payload (None when it cannot be decoded) and its log detail."""
    if envelope.event is None:
        return None, ""
    try:
        payload = typeurl.unpack(envelope.event)
    except Exception:
        # An event type this console does not know still gets its log line.
        return None, envelope.event.type_url
    return payload, summarize_event(envelope.topic, payload)


def image_row(image: images_api.Image, summary: oci.ImageDetail | None = None) -> ImageRow:
    target = image.target
    return ImageRow(
        name=image.name,
        digest=target.digest if target else "",
        media_type=target.media_type if target else "",
        size=summary.size if summary else None,
        platforms=",".join(summary.platforms) if summary else "",
        created=image.created_at,
    )


def container_row(c: containers_api.Container, previous: ContainerRow | None) -> ContainerRow:
    return with_task_of(record_row(c), previous)


def same_record(a: ContainerRow, b: ContainerRow) -> bool:
    """Whether two rows say the same of the container record (their tasks aside)."""
    return a is b or (
        a.id == b.id
        and a.image == b.image
        and a.runtime == b.runtime
        and a.snapshotter == b.snapshotter
        and a.snapshot_key == b.snapshot_key
        and a.created == b.created
        and a.labels == b.labels
    )


def with_task_of(row: ContainerRow, previous: ContainerRow | None) -> ContainerRow:
    """`row` (a container record's) with what `previous` knew of its task.

    The previous row itself when its record is the same, and `row` itself when
    there was no task: a resync that finds nothing new hands back the rows it
    had, which the model and the table then compare by identity.
    """
    if previous is None or previous is row:
        return row
    if same_record(previous, row):
        return previous
    task = {name: getattr(previous, name) for name in TASK_FIELDS}
    if all(value == getattr(_NO_TASK, name) for name, value in task.items()):
        return row
    return replace(row, **task)


# What a row says of its container's task, and a row without one.
TASK_FIELDS = (
    "status",
    "pid",
    "exit_status",
    "started",
    "cpu",
    "memory",
    "oom",
    "oom_kills",
    "exited_at",
    "ran_for",
)
_NO_TASK = ContainerRow("", "", "")


def oom_kills(data: Any) -> int:
    """The cgroup's OOM-kill counter from a cgroups v1 or v2 Metrics message (0 if absent)."""
    if isinstance(data, cgroups_v2.Metrics) and data.memory_events is not None:
        return data.memory_events.oom_kill
    if isinstance(data, cgroups_v1.Metrics) and data.memory_oom_control is not None:
        return data.memory_oom_control.oom_kill
    return 0


def metric_sample(data: Any) -> tuple[int | None, int | None]:
    """(CPU nanoseconds used, memory bytes) from a cgroups v1 or v2 Metrics message."""
    if isinstance(data, cgroups_v2.Metrics):
        cpu = data.cpu.usage_usec * 1000 if data.cpu else None
        mem = data.memory.usage if data.memory else None
        return cpu, mem
    if isinstance(data, cgroups_v1.Metrics):
        cpu = data.cpu.usage.total if data.cpu and data.cpu.usage else None
        mem = data.memory.usage.usage if data.memory and data.memory.usage else None
        return cpu, mem
    return None, None


class Syncer:
    """Keeps a `NodeState` current from one engine, and reconnects when it is lost."""

    def __init__(
        self,
        client: Client,
        state: NodeState,
        *,
        on_log: Callable[[LogLine], None],
        on_connection: Callable[[bool, str], None],
        resync_interval: float = RESYNC_INTERVAL,
        on_exit: Callable[[ContainerRow], None] | None = None,
        watched: Callable[[], bool] = lambda: True,
    ) -> None:
        self.base = client
        # Whether anyone is looking at the console now (its terminal has focus).
        self.watched = watched
        self._unwatched_ticks = 0
        self.state = state
        self.on_log = on_log
        self.on_connection = on_connection
        # Hears each task exit of the current namespace as it happens (not from history).
        self.on_exit = on_exit
        self.resync_interval = resync_interval
        self._resync_every = resync_interval
        self._summaries: dict[str, oci.ImageDetail | None] = {}
        self._listing = ContainerList()
        self._relist: set[str] = set()
        self._stale_counts: set[str] = set()
        self._relist_task: asyncio.Task[None] | None = None
        self._fetch_ids: set[str] = set()
        self._fetch_task: asyncio.Task[None] | None = None
        self._cpu: dict[tuple[str, str], tuple[int, datetime]] = {}
        self._resync_now = asyncio.Event()
        self._reported_down = False
        self._last_event: datetime | None = None
        # Work started aside from the event stream (an OOM check after an exit).
        self._aside: set[asyncio.Future[None]] = set()

    @property
    def client(self) -> Client:
        return self.base.with_namespace(self.state.namespace)

    async def run(self) -> None:
        """Connect, resync, follow events; on a lost engine, say so and try again."""
        delay = 0.5
        while True:
            try:
                await self._connect()
                delay = 0.5
                await self._follow()
            except asyncio.CancelledError:
                raise
            except (*CONNECTION_ERRORS, GRPCError) as exc:
                # An engine that fails a listing is as unusable as one that is
                # gone: say so on the banner and keep trying.
                if self.state.connected or not self._reported_down:
                    self.state.connected = False
                    self._reported_down = True
                    self.on_connection(False, _describe(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)

    async def _connect(self) -> None:
        resp = await self.base.server_version()
        self.state.version = resp.version
        await self.resync()
        if not self.state.connected:
            self.state.connected = True
            self._reported_down = False
            self.on_connection(True, resp.version)

    async def _follow(self) -> None:
        """Events and the periodic work side by side, until either fails; its error is raised."""
        tasks = [asyncio.ensure_future(self._events()), asyncio.ensure_future(self._periodic())]
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()

    async def _events(self) -> None:
        request = events_api.SubscribeRequest(history=EVENT_HISTORY)
        async for envelope in self.base.events.subscribe(request):
            if envelope.from_history:
                self.log_past(envelope)
            else:
                await self.apply_envelope(envelope)
        raise ConnectionError("the event stream ended")

    async def _periodic(self) -> None:
        waited = health = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resync_now.wait(), METRICS_INTERVAL)
            waited += METRICS_INTERVAL
            health += METRICS_INTERVAL
            if self._resync_now.is_set() or waited >= self._resync_every:
                self._resync_now.clear()
                waited = health = 0.0
                await self.resync()
            elif health >= self.resync_interval:
                # The engine's health keeps its pace while the lists' safety net stretches.
                health = 0.0
                await self._engine()
                await self._metrics()
            elif self.metrics_due():
                await self._metrics()

    def metrics_due(self) -> bool:
        """Whether this tick polls metrics: each one while watched, else every few."""
        self._unwatched_ticks += 1
        if self.watched() or self._unwatched_ticks >= UNWATCHED_POLL_TICKS:
            self._unwatched_ticks = 0
            return True
        return False

    def request_resync(self) -> None:
        self._resync_now.set()

    async def switch_namespace(self, namespace: str) -> None:
        self.state.namespace = namespace
        self.state.clear_namespaced()
        self._cpu.clear()
        self.request_resync()

    # --- resync ---------------------------------------------------------------

    async def resync(self) -> None:
        before = self.state.seq
        await self._images()
        await self._containers()
        # After the current namespace's lists: its counts come from them.
        await self._namespaces()
        await self._snapshots()
        await self._content()
        # Judged before the metrics: a task's CPU figure moves on every poll.
        drifted = self.state.seq != before
        await self._metrics()
        await self._engine()
        if drifted:
            self._resync_every = self.resync_interval
        else:
            # The events missed nothing: the safety net (every container listed,
            # the engine's costliest call on a big node) can wait longer.
            self._resync_every = min(self._resync_every * 2, self.resync_interval * RESYNC_STRETCH)

    async def _served(self, service: str, call: Awaitable[Any]) -> Any:
        """The call's result, or None when the engine does not serve `service` (yet)."""
        try:
            result = await call
        except GRPCError as exc:
            if is_unimplemented(exc):
                self.state.unserved.add(service)
                return None
            raise
        self.state.unserved.discard(service)
        return result

    async def _engine(self) -> None:
        """The engine's health, at the resync's pace: uptime moves on, plugins rarely change."""
        found = await self._served("Introspection", engine_status.from_client(self.base))
        if found is not None:
            self.state.engine = found
            self.state.mark(ENGINE)

    async def _namespaces(self) -> None:
        resp = await self.base.namespaces.list(namespaces_api.ListNamespacesRequest())
        rows: dict[Hashable, NamespaceRow] = {}
        for ns in resp.namespaces:
            rows[ns.name] = await self._counted(NamespaceRow(ns.name, dict(ns.labels)))
        if self.state.namespace not in rows:
            # Namespaces appear on their first write; the current one is usable before that.
            rows[self.state.namespace] = await self._counted(NamespaceRow(self.state.namespace))
        self.state.replace_all(NAMESPACES, rows)

    async def _counted(self, row: NamespaceRow) -> NamespaceRow:
        """`row` with its container and image counts.

        The current namespace's tables are already here; counting another one
        means listing it (containers carry their whole spec, so that is the
        expensive part of a resync on a busy node).
        """
        state = self.state
        if row.name == state.namespace:
            return replace(row, containers=len(state.containers), images=len(state.images))
        scoped = self.base.with_namespace(row.name)
        found = await container_list.count(scoped)
        imgs = await scoped.images.list(images_api.ListImagesRequest())
        return replace(row, containers=found, images=len(imgs.images))

    async def _recount(self) -> None:
        for name in sorted(self._stale_counts):
            self._stale_counts.discard(name)
            row = self.state.namespaces.get(name)
            if row is None:
                # A namespace this console has not seen yet: its name comes with a full list.
                await self._namespaces()
                return
            self.state.upsert(NAMESPACES, name, await self._counted(row))

    def _count_current(self) -> None:
        row = self.state.namespaces.get(self.state.namespace)
        if row is not None:
            current = replace(
                row, containers=len(self.state.containers), images=len(self.state.images)
            )
            self.state.upsert(NAMESPACES, row.name, current)

    def _listing_began(self) -> tuple[str, int]:
        """Where a listing starts from: the namespace it lists and the state's change number."""
        return self.state.namespace, self.state.seq

    def _listed(self, table: str, rows: dict[Hashable, Any], began: tuple[str, int]) -> None:
        """A listing's rows into the state, under what events did while it was under way.

        Events keep running beside a resync: a row they deleted, added or changed
        after the engine answered is newer than the listing's. A listing of a
        namespace the console has left is dropped; the switch asked for a resync.
        """
        namespace, seq = began
        if namespace == self.state.namespace:
            self.state.replace_all(table, rows, listed_at=seq)

    async def _images(self) -> None:
        began = self._listing_began()
        client = self.client
        resp = await client.images.list(images_api.ListImagesRequest())
        rows = {}
        for image in resp.images:
            rows[image.name] = image_row(image, await self._summary(client, image))
        self._listed(IMAGES, rows, began)

    async def _summary(self, client: Client, image: images_api.Image) -> oci.ImageDetail | None:
        digest = image.target.digest if image.target else ""
        if digest not in self._summaries:
            try:
                self._summaries[digest] = await oci.walk(client, image.target)
            except (GRPCError, oci.ImageWalkError, KeyError, ValueError):
                # An image whose blobs are absent (or not an image) still gets its row.
                self._summaries[digest] = None
        return self._summaries[digest]

    async def _containers(self) -> None:
        began = self._listing_began()
        listed = await self._listing.rows(self.client)
        previous = self.state.containers
        rows = {row.id: with_task_of(row, previous.get(row.id)) for row in listed}
        tasks = await self._served("Tasks", self.client.tasks.list(tasks_api.ListTasksRequest()))
        if tasks is not None:
            by_id = {p.id or p.container_id: p for p in tasks.tasks}
            starts = await self._starts(rows, by_id)
            for cid, row in rows.items():
                p = by_id.get(cid)
                if p is None:
                    if row.status or row.pid or row.exit_status is not None or row.started:
                        rows[cid] = replace(row, status="", pid=0, exit_status=None, started=None)
                    continue
                status = TaskStatus(p.status).name
                started = row.started or starts.get(cid)
                stopped = status == "STOPPED"
                rows[cid] = replace(
                    row,
                    status=status,
                    pid=p.pid,
                    exit_status=p.exit_status if stopped else None,
                    started=started if status in ("RUNNING", "PAUSED") else None,
                    exited_at=p.exited_at if stopped else None,
                    oom=row.oom and stopped,
                    ran_for=row.ran_for if stopped else None,
                )
        self._listed(CONTAINERS, rows, began)

    async def _starts(
        self, rows: dict[str, ContainerRow], by_id: dict[str, Any]
    ) -> dict[str, datetime]:
        """When the running tasks started that this console has not seen start: asked of the engine.

        A task that started before the console did has no `/tasks/start` event
        here; ctrdeck's `TaskDetails.Started` says when it started (a containerd
        does not serve it, and those tasks show no uptime).
        """
        live = (TaskStatus.RUNNING, TaskStatus.PAUSED)
        if not any(
            p.status in live and cid in rows and not rows[cid].started for cid, p in by_id.items()
        ):
            return {}
        return await self._served("TaskDetails", self.client.task_starts()) or {}

    async def _snapshots(self) -> None:
        began = self._listing_began()
        plugins = await self.base.introspection.plugins(
            introspection_api.PluginsRequest(filters=[f"type=={SNAPSHOTTER_PLUGIN}"])
        )
        self.state.snapshotters = sorted(p.id for p in plugins.plugins if p.init_err is None)
        rows: dict[Hashable, SnapshotRow] = {}
        for name in self.state.snapshotters:
            listing = self._list_snapshots(name)
            infos = await self._served("Snapshots", listing)
            if infos is None:
                break
            for info in infos:
                rows[(name, info.name)] = SnapshotRow(
                    snapshotter=name,
                    key=info.name,
                    parent=info.parent,
                    kind=snapshots_api.Kind(info.kind).name.capitalize(),
                    created=info.created_at,
                )
        self._listed(SNAPSHOTS, rows, began)

    async def _list_snapshots(self, snapshotter: str) -> list[snapshots_api.Info]:
        out: list[snapshots_api.Info] = []
        request = snapshots_api.ListSnapshotsRequest(snapshotter=snapshotter)
        async for batch in self.client.snapshots.list(request):
            out.extend(batch.info)
        return out

    async def _content(self) -> None:
        began = self._listing_began()
        rows: dict[Hashable, ContentRow] = {}
        async for batch in self.client.content.list(content_api.ListContentRequest()):
            for info in batch.info:
                rows[info.digest] = ContentRow(
                    info.digest, info.size, info.created_at, dict(info.labels)
                )
        self._listed(CONTENT, rows, began)

    async def _metrics(self) -> None:
        if "Tasks" in self.state.unserved or not any(
            c.status == "RUNNING" for c in self.state.containers.values()
        ):
            return
        # A Metric names only its container, so the namespace it belongs to is
        # the one asked about: asked by header and by filter (an engine that
        # ignored the header would otherwise mix in same-named containers of
        # other namespaces), and dropped if the console moved on meanwhile.
        namespace = self.state.namespace
        request = tasks_api.MetricsRequest(filters=[f"namespace=={namespace}"])
        resp = await self._served("Tasks", self.client.tasks.metrics(request))
        if resp is None or namespace != self.state.namespace:
            return
        for metric in resp.metrics:
            if metric.data is None:
                continue
            try:
                data = typeurl.unpack(metric.data)
                cpu_ns, memory = metric_sample(data)
            except Exception:
                continue
            when = metric.timestamp or utc_now()
            cpu_pct = None
            key = (namespace, metric.id)
            before = self._cpu.get(key)
            if cpu_ns is not None:
                if before is not None and when > before[1]:
                    elapsed = (when - before[1]).total_seconds() * 1e9
                    cpu_pct = max(0.0, (cpu_ns - before[0]) / elapsed * 100)
                self._cpu[key] = (cpu_ns, when)
            self.state.update_container(
                metric.id, cpu=cpu_pct, memory=memory, oom_kills=oom_kills(data)
            )

    # --- events ---------------------------------------------------------------

    def log_past(self, envelope: events_api.Envelope) -> None:
        """An event from before the subscription: a log line, unless one was already written."""
        when = envelope.timestamp or utc_now()
        if self._last_event is not None and when <= self._last_event:
            return
        self._last_event = when
        payload, detail = decode(envelope)
        self.on_log(LogLine(when, envelope.namespace, envelope.topic, detail))
        if envelope.namespace == self.state.namespace:
            # The model comes from the resync, except what only events say: an OOM kill.
            match payload:
                case ev.TaskOom():
                    self._mark_oom(payload.container_id)
                case ev.TaskStart():
                    self.state.update_container(payload.container_id, oom=False)

    async def apply_envelope(self, envelope: events_api.Envelope) -> None:
        payload, detail = decode(envelope)
        when = envelope.timestamp or utc_now()
        self._last_event = max(when, self._last_event or when)
        self.on_log(LogLine(when, envelope.namespace, envelope.topic, detail))
        topic = envelope.topic
        if topic.startswith("/namespaces/"):
            self._relist_soon(NAMESPACES)
        elif envelope.namespace != self.state.namespace:
            if topic.startswith(("/containers/", "/images/")):
                # Another namespace's counts moved: recount that one only.
                self._stale_counts.add(envelope.namespace)
                self._relist_soon(COUNTS)
        else:
            await self._apply_here(topic, payload, when)

    async def _apply_here(self, topic: str, payload: Any, when: datetime) -> None:
        state = self.state
        match payload:
            case images_api.ImageDelete():
                state.remove(IMAGES, payload.name)
                self._count_current()
                self._relist_soon(CONTENT)
            case images_api.ImageCreate() | images_api.ImageUpdate():
                await self._fetch_image(payload.name)
                self._count_current()
                self._relist_soon(CONTENT)
            case ev.ContainerDelete():
                state.remove(CONTAINERS, payload.id)
                self._count_current()
            case ev.ContainerCreate():
                if payload.id not in state.containers:
                    # The event's own data first; the rest (labels, snapshot) is fetched aside.
                    runtime = payload.runtime.name if payload.runtime else ""
                    state.upsert(
                        CONTAINERS, payload.id, ContainerRow(payload.id, payload.image, runtime)
                    )
                self._fetch_soon(payload.id)
                self._count_current()
            case ev.ContainerUpdate():
                self._fetch_soon(payload.id)
            case ev.TaskCreate():
                state.update_container(
                    payload.container_id, status="CREATED", pid=payload.pid, exit_status=None
                )
            case ev.TaskStart():
                state.update_container(
                    payload.container_id,
                    status="RUNNING",
                    pid=payload.pid,
                    started=when,
                    oom=False,
                    oom_kills=0,
                    exited_at=None,
                    ran_for=None,
                )
            case ev.TaskOom():
                self._mark_oom(payload.container_id)
            case ev.TaskPaused():
                state.update_container(payload.container_id, status="PAUSED")
            case ev.TaskResumed():
                state.update_container(payload.container_id, status="RUNNING")
            case ev.TaskExit() if payload.id in ("", payload.container_id):
                self._exited(payload, when)
            case ev.TaskDelete() if payload.id in ("", payload.container_id):
                state.update_container(
                    payload.container_id, status="", pid=0, exit_status=None, started=None
                )
            case ev.ContentDelete():
                state.remove(CONTENT, payload.digest)
            case ev.SnapshotPrepare() | ev.SnapshotCommit() | ev.SnapshotRemove():
                self._relist_soon(SNAPSHOTS)

    def _mark_oom(self, container_id: str) -> None:
        self.state.update_container(container_id, oom=True)

    def _exited(self, payload: ev.TaskExit, when: datetime) -> None:
        before = self.state.containers.get(payload.container_id)
        if before is None:
            return
        exited_at = payload.exited_at or when
        ran_for = (exited_at - before.started).total_seconds() if before.started else None
        oom = before.oom or (before.oom_kills > 0 and payload.exit_status == 137)
        if not oom and payload.exit_status == 137:
            # No /tasks/oom (an engine on cgroup v2 may send none): the cgroup's counter,
            # still there until the task is deleted, may say the OOM killer did it. Asked
            # aside, so the event stream never waits on it.
            self._spawn(self._check_oom(payload.container_id))
        self.state.update_container(
            payload.container_id,
            status="STOPPED",
            exit_status=payload.exit_status,
            started=None,
            cpu=None,
            memory=None,
            exited_at=exited_at,
            ran_for=ran_for,
            oom=oom,
        )
        after = self.state.containers.get(payload.container_id)
        if self.on_exit is not None and after is not None:
            self.on_exit(after)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._aside.add(task)
        task.add_done_callback(self._aside.discard)

    async def _check_oom(self, container_id: str) -> None:
        request = tasks_api.MetricsRequest(filters=[f"id=={container_id}"])
        try:
            resp = await asyncio.wait_for(self.client.tasks.metrics(request), OOM_CHECK_TIMEOUT)
        except (*CONNECTION_ERRORS, GRPCError):
            return
        for metric in resp.metrics:
            if metric.id == container_id and metric.data is not None:
                with contextlib.suppress(Exception):
                    if oom_kills(typeurl.unpack(metric.data)) > 0:
                        self._mark_oom(container_id)

    async def _fetch_image(self, name: str) -> None:
        client = self.client
        try:
            resp = await client.images.get(images_api.GetImageRequest(name=name))
        except GRPCError:
            self.state.remove(IMAGES, name)
            return
        if resp.image is not None:
            summary = await self._summary(client, resp.image)
            self.state.upsert(IMAGES, name, image_row(resp.image, summary))

    def _fetch_soon(self, container_id: str) -> None:
        """Fetch a created or updated container, with the others of its burst in one list call.

        One `Containers.Get` per event held up every later event of the node
        behind a round trip; the event stream now goes on while a filtered
        `Containers.List` fetches whatever ids have gathered meanwhile.
        """
        self._fetch_ids.add(container_id)
        if self._fetch_task is None or self._fetch_task.done():
            self._fetch_task = asyncio.ensure_future(self._fetch_containers())

    async def _fetch_containers(self) -> None:
        while self._fetch_ids:
            ids = sorted(self._fetch_ids)[:FETCH_BATCH]
            self._fetch_ids.difference_update(ids)
            namespace = self.state.namespace
            request = containers_api.ListContainersRequest(filters=[f'id=="{i}"' for i in ids])
            try:
                resp = await self.client.containers.list(request)
            except (*CONNECTION_ERRORS, GRPCError):
                # The next resync (or the reconnect) brings the rows in line.
                return
            if namespace != self.state.namespace:
                continue
            found = {c.id: c for c in resp.containers}
            for cid in ids:
                previous = self.state.containers.get(cid)
                if previous is None or cid in self._fetch_ids:
                    # Deleted meanwhile (its delete event came after the list), or
                    # changed again: the next fetch has it.
                    continue
                c = found.get(cid)
                if c is None:
                    self.state.remove(CONTAINERS, cid)
                else:
                    self.state.upsert(CONTAINERS, cid, container_row(c, previous))
            self._count_current()

    def _relist_soon(self, *tables: str) -> None:
        """Re-list whole tables a moment later, once for a burst of events (a pull sends many)."""
        self._relist.update(tables)
        if self._relist_task is None or self._relist_task.done():
            self._relist_task = asyncio.ensure_future(self._relist_later())

    async def _relist_later(self) -> None:
        await asyncio.sleep(RELIST_DELAY)
        tables, self._relist = self._relist, set()
        listers = {
            NAMESPACES: self._namespaces,
            COUNTS: self._recount,
            SNAPSHOTS: self._snapshots,
            CONTENT: self._content,
        }
        try:
            for table in tables:
                await listers[table]()
        except (*CONNECTION_ERRORS, GRPCError):
            # The next resync (or the reconnect) brings these tables back in line.
            return


def _describe(exc: BaseException) -> str:
    if isinstance(exc, GRPCError):
        return exc.message or exc.status.name
    return str(exc) or type(exc).__name__
