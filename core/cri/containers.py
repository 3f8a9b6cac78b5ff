"""CRI containers: a container record, a snapshot and (once started) a task in the pod.

CreateContainer prepares the snapshot, builds the spec (`spec.py`) and stores
the record; StartContainer creates and starts the task with its output also
written in the CRI log format to the client's path, and watches for its exit
to record the exit code and reason (`OOMKilled` when the kernel killed it for
memory, from the cgroup's OOM count). Stop sends the stop signal, waits the
timeout, then SIGKILLs. Stop and Remove succeed on a container that is
already stopped or gone. ExecSync runs a process to completion through FIFOs
the engine reads, killing it at the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from core import typeurl
from core.api.runtime import v1 as cri
from core.cri import (
    ANN_CONTAINER_NAME,
    ANN_CONTAINER_TYPE,
    ANN_IMAGE_NAME,
    ANN_SANDBOX_ID,
    ANN_SANDBOX_NAME,
    ANN_SANDBOX_NAMESPACE,
    ANN_SANDBOX_UID,
    CONTAINER_KIND,
    KIND_LABEL,
    LABEL_CONTAINER_NAME,
    NAMESPACE,
    files,
    objects,
    pod_labels,
    spec,
)
from core.cri.config import CriConfig
from core.cri.images import CriImages
from core.cri.pods import Pods, pod_config
from core.cri.store import ContainerRecord, Store, encode, parsed
from core.engine import Engine
from core.errors import (
    AlreadyExists,
    CtrdeckError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from core.metadata.containers import AnyValue, Container
from core.runtime import monitor_protocol
from core.runtime import rootfs as rootfs_mod
from core.runtime.records import Stdio

log = logging.getLogger("ctrdeck.cri")

OOM_EXIT = 137


def container_config(record: ContainerRecord) -> cri.ContainerConfig:
    return parsed(cri.ContainerConfig, record.config)


class Containers:
    def __init__(
        self, engine: Engine, cfg: CriConfig, store: Store, images: CriImages, pods: Pods
    ) -> None:
        self.engine = engine
        self.cfg = cfg
        self.store = store
        self.images = images
        self.pods = pods
        self.records: dict[str, ContainerRecord] = {r.id: r for r in store.containers()}
        self.watchers: dict[str, asyncio.Task[None]] = {}
        pods.stop_containers = self.stop_all
        pods.remove_containers = self.remove_all

    # --- lookup -----------------------------------------------------------------

    def get(self, ref: str) -> ContainerRecord:
        record = self.records.get(ref)
        if record is None and ref:
            found = [r for r in self.records.values() if r.id.startswith(ref)]
            record = found[0] if len(found) == 1 else None
        if record is None:
            raise NotFound(f'an error occurred when try to find container "{ref}": not found')
        return record

    def state(self, record: ContainerRecord) -> cri.ContainerState:
        if record.finished_at:
            return cri.ContainerState.CONTAINER_EXITED
        if record.started_at:
            return cri.ContainerState.CONTAINER_RUNNING
        return cri.ContainerState.CONTAINER_CREATED

    # --- create -------------------------------------------------------------------

    async def _user_rootfs(self, mounts: list[Any], needs: bool) -> tuple[Path | None, Path | None]:
        """A temporary mount of the new rootfs when a user name must be looked up in it."""
        if not needs:
            return None, None
        tmp = Path(tempfile.mkdtemp(prefix="cri-user-", dir=self.engine.state))
        await rootfs_mod.mount_all(mounts, tmp)
        return tmp, tmp

    async def create(
        self, sandbox_id: str, config: cri.ContainerConfig | None,
        sandbox_config: cri.PodSandboxConfig | None,
    ) -> str:  # fmt: skip
        if config is None or config.metadata is None or not config.metadata.name:
            raise InvalidArgument("container config must include metadata with a name")
        sandbox = self.pods.get(sandbox_id)
        if self.pods.state(sandbox) != cri.PodSandboxState.SANDBOX_READY:
            raise FailedPrecondition(f'sandbox "{sandbox.id}" is not ready')
        pod = pod_config(sandbox)
        pmeta = pod.metadata or cri.PodSandboxMetadata()
        meta = config.metadata
        name = f"k8s_{meta.name}_{pmeta.name}_{pmeta.namespace}_{pmeta.uid}_{meta.attempt}"
        if any(r.name == name for r in self.records.values()):
            raise AlreadyExists(f'failed to reserve container name "{name}": name is reserved')
        if config.image is None or not config.image.image:
            raise InvalidArgument("container config must name an image")
        image = self.images.get(config.image.image)
        cid = secrets.token_hex(32)
        snapshotter = self.engine.snapshotters.get(self.cfg.snapshotter)
        if snapshotter is None:
            raise InvalidArgument(f'snapshotter "{self.cfg.snapshotter}" is not loaded')
        mounts = await snapshotter.prepare(NAMESPACE, cid, image.chain_id)
        try:
            sc = (config.linux or cri.LinuxContainerConfig()).security_context
            user = image.user.partition(":")[0]
            needs_lookup = bool(
                (sc is not None and sc.run_as_username)
                or (user and not user.isdigit())
                or (sc is not None and sc.run_as_user is not None)
            )
            tmp, rootfs = await self._user_rootfs(mounts, needs_lookup)
            try:
                oci_spec = spec.container_spec(
                    cid, config, image.config, rootfs, sandbox.pid, pod,
                    files.mounts(self.pods.files_dir(sandbox.id)),
                    self.cfg.restrict_oom_score_adj, NAMESPACE,
                )  # fmt: skip
            finally:
                if tmp is not None:
                    await rootfs_mod.unmount_all(tmp)
                    with contextlib.suppress(OSError):
                        tmp.rmdir()
            oci_spec["annotations"] = {
                ANN_CONTAINER_TYPE: CONTAINER_KIND, ANN_SANDBOX_ID: sandbox.id,
                ANN_SANDBOX_NAME: pmeta.name, ANN_SANDBOX_NAMESPACE: pmeta.namespace,
                ANN_SANDBOX_UID: pmeta.uid, ANN_CONTAINER_NAME: meta.name,
                ANN_IMAGE_NAME: config.image.image,
            }  # fmt: skip
            labels = (
                pod_labels(pmeta.name, pmeta.namespace, pmeta.uid)
                | {LABEL_CONTAINER_NAME: meta.name}
                | dict(config.labels)
                | {KIND_LABEL: CONTAINER_KIND}
            )
            objects.create(
                self.engine,
                Container(
                    id=cid, runtime_name=self.pods.runtime_name(sandbox.runtime_handler),
                    spec=AnyValue(typeurl.SPEC_URL, json.dumps(oci_spec).encode()),
                    image=image.repo_tags[0] if image.repo_tags else image.id, labels=labels,
                    snapshotter=self.cfg.snapshotter, snapshot_key=cid,
                ),
            )  # fmt: skip
        except BaseException:
            with contextlib.suppress(NotFound):
                await snapshotter.remove(NAMESPACE, cid)
            raise
        log_path = ""
        if pod.log_directory and config.log_path:
            log_path = os.path.join(pod.log_directory, config.log_path)
        record = ContainerRecord(
            id=cid, sandbox_id=sandbox.id, name=name, config=encode(bytes(config)),
            image_ref=image.id, image_name=config.image.image, log_path=log_path,
            created_at=time.time_ns(),
        )  # fmt: skip
        self.store.save_container(record)
        self.records[cid] = record
        return cid

    # --- start, exit, stop ----------------------------------------------------------

    async def start(self, ref: str) -> None:
        record = self.get(ref)
        if record.started_at or record.finished_at:
            raise FailedPrecondition(f'container "{record.id}" is not in created state')
        if record.log_path:
            Path(record.log_path).parent.mkdir(parents=True, exist_ok=True)
        config = container_config(record)
        container = self.engine.metadata.containers.get(NAMESPACE, record.id)
        stdin = ""
        if config.stdin:
            # A FIFO the monitor holds open, so an Attach can write the container's input.
            stdin = self.stdin_path(record.id)
            Path(stdin).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkfifo(stdin, 0o600)
        stdio = Stdio(stdin=stdin, terminal=config.tty, cri_log=record.log_path)
        tasks = self.engine.tasks
        try:
            await tasks.create(NAMESPACE, container, [], stdio)
            await tasks.start(NAMESPACE, record.id)
        except BaseException as exc:
            with contextlib.suppress(NotFound):
                await tasks.delete(NAMESPACE, record.id)
            record.started_at = record.finished_at = time.time_ns()
            record.exit_code, record.reason = 128, "StartError"
            record.message = str(getattr(exc, "message", exc))
            self.store.save_container(record)
            raise
        record.started_at = time.time_ns()
        self.store.save_container(record)
        self._watch(record)

    def _watch(self, record: ContainerRecord) -> None:
        self.watchers[record.id] = asyncio.create_task(self._wait_exit(record))

    async def _wait_exit(self, record: ContainerRecord) -> None:
        tasks = self.engine.tasks
        try:
            exit_ = await tasks.wait(NAMESPACE, record.id)
        except NotFound:
            exit_ = None
        oom = False
        with contextlib.suppress(NotFound):
            task = tasks.get(NAMESPACE, record.id)
            with contextlib.suppress(OSError):
                oom = task.cgroup.oom_kills() > 0 or (task.oom is not None and task.oom.seen > 0)
        record.finished_at = exit_.exited_at if exit_ and exit_.exited_at else time.time_ns()
        record.exit_code = exit_.status if exit_ else 255
        if oom and record.exit_code == OOM_EXIT:
            record.reason = "OOMKilled"
        elif not record.reason:
            record.reason = "Completed" if record.exit_code == 0 else "Error"
        if record.id in self.records:
            self.store.save_container(record)
        with contextlib.suppress(NotFound, FailedPrecondition):
            await tasks.delete(NAMESPACE, record.id)
        self.watchers.pop(record.id, None)

    def _stop_signal(self, record: ContainerRecord) -> int:
        with contextlib.suppress(CtrdeckError, KeyError, ValueError):
            image = self.images.get(record.image_ref)
            name = str((image.config.get("config") or {}).get("StopSignal") or "")
            if name:
                sig = name if name.startswith("SIG") else f"SIG{name}"
                return int(signal.Signals[sig]) if not name.isdigit() else int(name)
        return signal.SIGTERM

    async def stop(self, ref: str, timeout: int) -> None:
        try:
            record = self.get(ref)
        except NotFound:
            return
        watcher = self.watchers.get(record.id)
        if watcher is None or record.finished_at:
            return
        tasks = self.engine.tasks
        if timeout > 0:
            with contextlib.suppress(NotFound):
                await tasks.kill(NAMESPACE, record.id, self._stop_signal(record))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watcher), timeout)
        if not watcher.done():
            with contextlib.suppress(NotFound):
                await tasks.kill(NAMESPACE, record.id, signal.SIGKILL, all=True)
            await asyncio.shield(watcher)

    async def remove(self, ref: str) -> None:
        try:
            record = self.get(ref)
        except NotFound:
            return
        await self.stop(record.id, 0)
        objects.delete(self.engine, record.id)
        snapshotter = self.engine.snapshotters.get(self.cfg.snapshotter)
        if snapshotter is not None:
            with contextlib.suppress(NotFound):
                await snapshotter.remove(NAMESPACE, record.id)
        self.store.delete_container(record.id)
        self.records.pop(record.id, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.stdin_path(record.id))

    def stdin_path(self, container_id: str) -> str:
        return str(self.store.root / "stdin" / container_id)

    async def stop_all(self, sandbox_id: str) -> None:
        for record in [r for r in self.records.values() if r.sandbox_id == sandbox_id]:
            await self.stop(record.id, 0)

    async def remove_all(self, sandbox_id: str) -> None:
        for record in [r for r in self.records.values() if r.sandbox_id == sandbox_id]:
            await self.remove(record.id)

    def restore(self) -> None:
        """Watch again the containers a previous run of the engine started."""
        for record in self.records.values():
            if record.started_at and not record.finished_at:
                self._watch(record)

    # --- status -------------------------------------------------------------------

    def summary(self, record: ContainerRecord) -> cri.Container:
        config = container_config(record)
        return cri.Container(
            id=record.id,
            pod_sandbox_id=record.sandbox_id,
            metadata=config.metadata,
            image=cri.ImageSpec(image=record.image_name),
            image_ref=record.image_ref,
            state=self.state(record),
            created_at=record.created_at,
            labels=dict(config.labels),
            annotations=dict(config.annotations),
        )

    def status(self, record: ContainerRecord) -> cri.ContainerStatus:
        config = container_config(record)
        return cri.ContainerStatus(
            id=record.id,
            metadata=config.metadata,
            state=self.state(record),
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            exit_code=record.exit_code,
            image=cri.ImageSpec(image=record.image_name),
            image_ref=record.image_ref,
            reason=record.reason,
            message=record.message,
            labels=dict(config.labels),
            annotations=dict(config.annotations),
            mounts=list(config.mounts),
            log_path=record.log_path,
        )

    def list(self, f: cri.ContainerFilter | None) -> list[cri.Container]:
        out = []
        for record in sorted(self.records.values(), key=lambda r: r.created_at):
            item = self.summary(record)
            if f is not None:
                if f.id and not record.id.startswith(f.id):
                    continue
                if f.pod_sandbox_id and not record.sandbox_id.startswith(f.pod_sandbox_id):
                    continue
                if f.state is not None and item.state != f.state.state:
                    continue
                if any(item.labels.get(k) != v for k, v in f.label_selector.items()):
                    continue
            out.append(item)
        return out

    # --- running things -----------------------------------------------------------

    def running(self, ref: str) -> ContainerRecord:
        record = self.get(ref)
        if self.state(record) != cri.ContainerState.CONTAINER_RUNNING:
            raise FailedPrecondition(f'container "{record.id}" is not running')
        return record

    async def update_resources(self, ref: str, res: cri.LinuxContainerResources | None) -> None:
        record = self.running(ref)
        if res is None:
            return
        await self.engine.tasks.update(NAMESPACE, record.id, spec.resources_json(res))

    def reopen_log(self, ref: str) -> None:
        record = self.running(ref)
        task = self.engine.tasks.get(NAMESPACE, record.id)
        monitor_protocol.control(task.process, "reopen-log", "reopen the log of")

    async def exec_sync(self, ref: str, cmd: list[str], timeout: int) -> cri.ExecSyncResponse:
        record = self.running(ref)
        if not cmd:
            raise InvalidArgument("exec needs a command")
        container = self.engine.metadata.containers.get(NAMESPACE, record.id)
        assert container.spec is not None
        process = json.loads(container.spec.value)["process"]
        process = dict(process, args=list(cmd), terminal=False)
        exec_id = f"exec-{secrets.token_hex(8)}"
        directory = Path(tempfile.mkdtemp(prefix="cri-exec-", dir=self.engine.state))
        out_path, err_path = directory / "stdout", directory / "stderr"
        os.mkfifo(out_path, 0o600)
        os.mkfifo(err_path, 0o600)
        # Opened read-write: a FIFO read end alone would see end-of-file before the
        # monitor opens it; the exec's output is complete once its exit is known.
        readers = [_Collector(p) for p in (out_path, err_path)]
        tasks = self.engine.tasks
        try:
            await tasks.exec(
                NAMESPACE,
                record.id,
                exec_id,
                process,
                Stdio(stdout=str(out_path), stderr=str(err_path)),
            )
            await tasks.start(NAMESPACE, record.id, exec_id)
            try:
                exit_ = await asyncio.wait_for(
                    tasks.wait(NAMESPACE, record.id, exec_id), timeout if timeout > 0 else None
                )
            except TimeoutError:
                with contextlib.suppress(NotFound):
                    await tasks.kill(NAMESPACE, record.id, signal.SIGKILL, exec_id=exec_id)
                raise DeadlineExceeded(
                    f"command {cmd!r} timed out after {timeout} seconds"
                ) from None
            out, err = (r.finish() for r in readers)
        finally:
            for r in readers:
                r.close()
            with contextlib.suppress(NotFound, FailedPrecondition):
                await tasks.wait(NAMESPACE, record.id, exec_id)
                await tasks.delete_process(NAMESPACE, record.id, exec_id)
            for p in (out_path, err_path):
                p.unlink(missing_ok=True)
            directory.rmdir()
        return cri.ExecSyncResponse(stdout=out, stderr=err, exit_code=exit_.status)


class _Collector:
    """Reads a FIFO the engine made for an exec's output as it arrives."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.chunks: list[bytes] = []
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.fd, self._read)

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            if not data:
                return
            self.chunks.append(data)

    def finish(self) -> bytes:
        self._read()
        return b"".join(self.chunks)

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
