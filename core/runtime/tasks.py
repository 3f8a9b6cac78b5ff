"""The task manager: the task state machine.

This module owns a task's life: create, start, exec, pause, resume, kill,
wait, delete, and what a restarted engine finds again. A task lives in a
bundle directory `<state>/io.containerd.runtime.v2.task/<namespace>/<id>`
holding `config.json`, the `rootfs` mount point, the engine's records
(`records.py`: `task.json`, each process's `process.json`), the init
process's monitor files under `init/`, each exec's under `execs/<exec id>/`,
and the size-capped output log `log` (rotated to `log.1`) that the
TaskDetails service reads (`tasklog.py`); no other local user can read any of it
(`bundle.py`). Every process has its own monitor (`core/runtime/monitor.py`),
which runs the runtime's `create` or `exec`, holds the stdio and persists the
exit status; `monitor_protocol.py` starts, tells and watches it (a pidfd).
After a restart the manager loads every bundle again: live processes are
watched anew, exits that happened meanwhile are reported with their real
status. States follow containerd (CREATED, RUNNING, PAUSED, STOPPED) and so
do the events (`/tasks/create`, `/tasks/start`, `/tasks/exit`,
`/tasks/delete`, `/tasks/paused`, `/tasks/resumed`, `/tasks/oom`,
`/tasks/exec-added`, `/tasks/exec-started`). Stopping the engine never stops
a container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal as signals
import time
from collections.abc import Awaitable, Callable, Iterator
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
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from core.metadata.containers import Container
from core.runtime import bundle as bundles
from core.runtime import cgroups
from core.runtime import monitor_protocol as monitors
from core.runtime import rootfs as rootfs_mod
from core.runtime import spec as specs
from core.runtime.cgroup_sample import Sample
from core.runtime.cgroups import Layout, OomWatch
from core.runtime.records import Exit, Process, Stdio, Task, load_task
from core.runtime.runtimes import RuntimeFailed, Runtimes
from core.runtime.sampler import Sampler
from core.snapshots.mount import Mount

log = logging.getLogger("ctrdeck.tasks")

TASK_DIR = "io.containerd.runtime.v2.task"
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


async def _to_the_end(work: Awaitable[None]) -> None:
    """Await `work` to its end, even through cancellations of the caller meanwhile.

    For undoing what a refused or cancelled call began: a client's deadline cancels
    its handler, and a reset of its stream may cancel it again while it cleans up,
    which must not leave a runtime container, a mount or a bundle behind.
    """
    undoing = asyncio.ensure_future(work)
    while True:
        try:
            await asyncio.shield(undoing)
            return
        except asyncio.CancelledError:
            if undoing.done():
                raise


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
        self.sampler = Sampler()
        self.runtimes = runtimes
        self.publish = publish
        self.log_max = log_max
        self.rootfs_lookup = rootfs_lookup
        self.subscribers = subscribers or (lambda: 0)
        self.tasks: dict[tuple[str, str], Task] = {}
        self._reserved: set[tuple[str, str]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._busy = 0
        self._busy_until = time.monotonic()

    def quiet_for(self) -> float:
        """Seconds since the last create, start or delete of a task ended; 0 while one runs."""
        return 0.0 if self._busy else time.monotonic() - self._busy_until

    @contextlib.contextmanager
    def _working(self) -> Iterator[None]:
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            self._busy_until = time.monotonic()

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
            with self._working():
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
        # A cold monitor's interpreter loads while the bundle is made.
        monitor = await monitors.start(bundle / "init", self.root)
        task: Task | None = None
        prepared = False
        mounting: asyncio.Future[None] | None = None
        try:
            if not mounts and self.rootfs_lookup is not None and container.snapshot_key:
                mounts = await self.rootfs_lookup(namespace, container) or []
            if bundle.exists():
                await self._remove_bundle(bundle)
            bundles.make_bundle(self.root, namespace, container.id)
            root = bundle / "rootfs"
            if mounts:
                # In a worker while the spec is fitted and the monitor readied.
                mounting = rootfs_mod.start_mount(mounts, root)
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
            task = Task(
                namespace, container.id, bundle, runtime, fitted["linux"]["cgroupsPath"],
                self.cgroups,
            )  # fmt: skip
            task.mounts = list(mounts)
            init = Process(task, "", bundle / "init", stdio)
            bundles.make_dir(init.dir, bundles.BUNDLE_MODE)
            task.init = init
            argv = runtime.argv(
                namespace, "create", "--bundle", str(bundle), "--pid-file",
                str(init.dir / "pid"), *monitors.console_args(stdio), container.id,
                log=init.dir / "runtime.log",
            )  # fmt: skip

            async def prepare() -> None:
                # What the runtime command needs, done while a warm monitor readies itself.
                nonlocal prepared
                assert task is not None
                bundles.share_with_remapped_root(bundle, fitted)
                bundles.write_private(bundle / "config.json", json.dumps(fitted).encode())
                task.save()
                if mounting is not None:
                    # Shielded: a Create cancelled here still waits for the worker below.
                    await asyncio.shield(mounting)
                prepared = True

            await monitors.spawn(init, argv, "create", self.log_max, monitor, prepare)
        except BaseException:

            async def undo() -> None:
                if mounting is not None:
                    # The bundle goes only once the worker is done with its rootfs.
                    await asyncio.wait([mounting])
                    if not mounting.cancelled():
                        mounting.exception()
                await monitors.abandon(monitor)
                if prepared:
                    with contextlib.suppress(CtrdeckError):
                        await runtime.run(namespace, "delete", "--force", container.id)
                await self._remove_bundle(bundle)

            await _to_the_end(undo())
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

    # --- watching exits ---------------------------------------------------------

    def _watch(self, proc: Process) -> None:
        if not monitors.watch(proc, self._monitor_gone):
            self._spawn_background(self._exited(proc))

    def _monitor_gone(self, proc: Process) -> None:
        monitors.unwatch(proc)
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
        if not proc.exec_id:
            # A shared sample from before the exit would hide what the exit
            # changed, such as the OOM-kill counter a console checks next.
            self.sampler.forget(proc.task.cgroup)
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
            self.sampler.forget(task.cgroup)
            self.publish(task.namespace, "/tasks/oom", events.TaskOom(container_id=task.id))

        watch = OomWatch(task.cgroup, fired)
        if watch.start():
            task.oom = watch

    # --- lifecycle ------------------------------------------------------------

    async def start(self, namespace: str, container_id: str, exec_id: str = "") -> Process:
        task = self.get(namespace, container_id)
        async with task.lock:
            with self._working():
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
            "--process", str(proc.dir / "spec.json"), *monitors.console_args(proc.stdio), task.id,
            log=proc.dir / "runtime.log",
        )  # fmt: skip
        await monitors.spawn(proc, argv, "exec", self.log_max)
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
            with self._working():
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
            if monitors.is_ours(proc):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.monitor_pid, signals.SIGKILL)
            await proc.done.wait()

    async def _forget(self, task: Task) -> None:
        for p in task.processes:
            monitors.unwatch(p)
        if task.oom is not None:
            task.oom.stop()
            task.oom = None
        self.tasks.pop((task.namespace, task.id), None)
        self.sampler.forget(task.cgroup)
        task.cgroup.close()
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
            monitors.unwatch(proc)
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
            # The next sample shows the new limits, not one read before them.
            self.sampler.forget(task.cgroup)

    async def metrics(self, namespace: str, filter_strings: list[str]) -> list[tuple[Task, Sample]]:
        """The cgroup statistics of the namespace's tasks matching containerd's filters.

        Scoped to the caller's namespace as containerd's is: a `Metric` names
        only the container id, so another namespace's task of the same name
        would be indistinguishable. A task whose cgroup is gone is left out,
        as containerd leaves out a task whose shim cannot read it; a host
        without cgroups is an error, never zeros. The files are read off the
        event loop, at most once a second for all callers (`Sampler`).
        """
        match = filters.parse_all(filter_strings)
        chosen = [
            task
            for task in self.list(namespace)
            if match.match(filters.field_adaptor({"id": task.id, "namespace": task.namespace}))
        ]
        return await self.samples(chosen)

    async def samples(self, tasks: list[Task]) -> list[tuple[Task, Sample]]:
        """Each task's latest cgroup sample, leaving out those whose cgroup is gone."""
        if not tasks:
            return []
        found = await self.sampler.samples([t.cgroup for t in tasks])
        for task, sample in zip(tasks, found, strict=True):
            if sample is None:
                log.debug("no metrics for task %s/%s: its cgroup is gone", task.namespace, task.id)
        return [(t, s) for t, s in zip(tasks, found, strict=True) if s is not None]

    def resize_pty(
        self, namespace: str, container_id: str, exec_id: str, width: int, height: int
    ) -> None:
        proc = self.get(namespace, container_id).lookup(exec_id)
        if not proc.stdio.terminal:
            raise FailedPrecondition(f"process {proc.id} has no terminal to resize")
        monitors.control(proc, f"resize {width} {height}", "resize the terminal of")

    def close_io(self, namespace: str, container_id: str, exec_id: str) -> None:
        proc = self.get(namespace, container_id).lookup(exec_id)
        monitors.control(proc, "close-stdin", "close stdin of")

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
                    task = load_task(ns_dir.name, bundle, self.runtimes, self.cgroups)
                except CtrdeckError as exc:
                    log.warning("cannot restore task in %s: %s", bundle, exc)
                    task = None
                if task is None:
                    await self._remove_bundle(bundle)
                    continue
                self.tasks[(task.namespace, task.id)] = task
                for proc in task.processes:
                    self._find_again(proc)
                    if proc.exit is not None and not proc.exit_reported:
                        pending.append(proc)
                if task.process.exit is None:
                    self._watch_oom(task)
        log.info("restored %d tasks, %d exits to report", len(self.tasks), len(pending))
        if pending:
            self._spawn_background(self._report_restored(pending))

    def _find_again(self, proc: Process) -> None:
        """Take up a restored process: its exit if it had one, else its live monitor."""
        exit_ = proc.read_exit()
        if exit_ is not None:
            self._record_exit(proc, exit_)
        elif proc.monitor_pid:
            if monitors.is_ours(proc):
                self._watch(proc)
            else:
                self._record_exit(proc, Exit(255, time.time_ns(), proc.pid))

    async def _report_restored(self, pending: list[Process]) -> None:
        deadline = time.monotonic() + RESTORED_EXIT_GRACE
        while self.subscribers() == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for proc in pending:
            if not proc.exit_reported:
                self._publish_exit(proc)

    async def close(self) -> None:
        """Stop watching; every container and monitor keeps running, the template ends."""
        monitors.stop_template(self.root)
        for task in list(self.tasks.values()):
            for p in task.processes:
                monitors.unwatch(p)
            if task.oom is not None:
                task.oom.stop()
                task.oom = None
        for bg in list(self._background):
            bg.cancel()
        self._background.clear()
