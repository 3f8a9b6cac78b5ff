"""Pod sandboxes: the pause container, its network namespace, CNI and the pod's files.

RunPodSandbox builds, in order, the pod's files, its netns and CNI network
(skipped for host-network pods), the pause container's snapshot, record and
task; whatever fails undoes every step already taken, so a refused pod leaves
no netns, veth, snapshot or record behind. StopPodSandbox stops the pod's
containers and the pause task, runs CNI DEL (also after an engine restart,
from the stored attachment) and removes the netns; it and RemovePodSandbox
succeed on a pod that is already stopped or gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from core import typeurl
from core.api.runtime import v1 as cri
from core.cri import (
    ANN_CONTAINER_TYPE,
    ANN_IMAGE_NAME,
    ANN_SANDBOX_ID,
    ANN_SANDBOX_LOG_DIR,
    ANN_SANDBOX_NAME,
    ANN_SANDBOX_NAMESPACE,
    ANN_SANDBOX_UID,
    KIND_LABEL,
    NAMESPACE,
    SANDBOX_KIND,
    SANDBOX_METADATA_EXTENSION,
    SANDBOX_METADATA_URL,
    files,
    netns,
    objects,
    pod_labels,
    spec,
)
from core.cri.cni import Attachment, Cni
from core.cri.config import CriConfig, netns_dir
from core.cri.images import CriImage, CriImages
from core.cri.store import SandboxRecord, Store, encode, parsed
from core.engine import Engine
from core.errors import AlreadyExists, CtrdeckError, InvalidArgument, NotFound
from core.metadata.containers import AnyValue, Container
from core.runtime.records import Stdio

log = logging.getLogger("ctrdeck.cri")

STOP_GRACE = 2.0


def pod_config(record: SandboxRecord) -> cri.PodSandboxConfig:
    return parsed(cri.PodSandboxConfig, record.config)


def host_network(config: cri.PodSandboxConfig) -> bool:
    sc = (config.linux or cri.LinuxPodSandboxConfig()).security_context
    ns = sc.namespace_options if sc is not None else None
    return ns is not None and ns.network == cri.NamespaceMode.NODE


def cni_args(sandbox_id: str, meta: cri.PodSandboxMetadata) -> str:
    return (
        f"IgnoreUnknown=1;K8S_POD_NAMESPACE={meta.namespace};K8S_POD_NAME={meta.name};"
        f"K8S_POD_INFRA_CONTAINER_ID={sandbox_id};K8S_POD_UID={meta.uid}"
    )


def port_mappings(config: cri.PodSandboxConfig) -> dict[str, Any]:
    ports = [
        {"hostPort": p.host_port, "containerPort": p.container_port,
         "protocol": p.protocol.name.lower(), "hostIP": p.host_ip}
        for p in config.port_mappings
        if p.host_port > 0
    ]  # fmt: skip
    return {"portMappings": ports} if ports else {}


class Pods:
    def __init__(
        self, engine: Engine, cfg: CriConfig, store: Store, images: CriImages, root: Path
    ) -> None:
        self.engine = engine
        self.cfg = cfg
        self.store = store
        self.images = images
        self.cni = Cni(cfg.cni)
        self.root = root
        self.sandboxes: dict[str, SandboxRecord] = {r.id: r for r in store.sandboxes()}
        self.locks: dict[str, asyncio.Lock] = {}
        # Set by the container manager: stops and removes a pod's containers.
        self.stop_containers: Callable[[str], Awaitable[None]] | None = None
        self.remove_containers: Callable[[str], Awaitable[None]] | None = None

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        return self.locks.setdefault(sandbox_id, asyncio.Lock())

    def files_dir(self, sandbox_id: str) -> Path:
        return self.root / "sandboxes" / sandbox_id

    def get(self, ref: str) -> SandboxRecord:
        """The pod with id `ref`, or the only one whose id starts with it."""
        record = self.sandboxes.get(ref)
        if record is None and ref:
            found = [r for r in self.sandboxes.values() if r.id.startswith(ref)]
            record = found[0] if len(found) == 1 else None
        if record is None:
            raise NotFound(f'an error occurred when try to find sandbox "{ref}": not found')
        return record

    def runtime_name(self, handler: str) -> str:
        name = handler or self.cfg.default_runtime
        if name not in self.engine.config.runtimes:
            raise InvalidArgument(f'no runtime for "{handler}" is configured')
        if name not in self.engine.runtimes.available:
            raise InvalidArgument(f'runtime "{name}" is configured but its binary is not installed')
        return name

    def state(self, record: SandboxRecord) -> cri.PodSandboxState:
        if record.state != "ready":
            return cri.PodSandboxState.SANDBOX_NOTREADY
        try:
            task = self.engine.tasks.get(NAMESPACE, record.id)
        except NotFound:
            return cri.PodSandboxState.SANDBOX_NOTREADY
        if task.process.exit is not None:
            return cri.PodSandboxState.SANDBOX_NOTREADY
        return cri.PodSandboxState.SANDBOX_READY

    async def sandbox_image(self) -> CriImage:
        image = self.images.find(self.cfg.sandbox_image)
        if image is None:
            try:
                image = await self.images.pull(self.cfg.sandbox_image)
            except CtrdeckError as exc:
                raise type(exc)(
                    f'sandbox image "{self.cfg.sandbox_image}" is not available: {exc.message}'
                ) from None
        return image

    async def run(self, config: cri.PodSandboxConfig | None, handler: str) -> str:
        if config is None or config.metadata is None:
            raise InvalidArgument("sandbox config must include metadata")
        meta = config.metadata
        if not (meta.name and meta.namespace and meta.uid):
            raise InvalidArgument("sandbox metadata must have name, namespace and uid")
        runtime = self.runtime_name(handler)
        name = f"k8s_POD_{meta.name}_{meta.namespace}_{meta.uid}_{meta.attempt}"
        if any(r.name == name for r in self.sandboxes.values()):
            raise AlreadyExists(f'failed to reserve sandbox name "{name}": name is reserved')
        image = await self.sandbox_image()
        sandbox_id = secrets.token_hex(32)
        record = SandboxRecord(
            id=sandbox_id, name=name, config=encode(bytes(config)), runtime_handler=handler,
            netns="", created_at=time.time_ns(),
        )  # fmt: skip
        undo: list[Callable[[], Awaitable[None]]] = []
        try:
            await self._build(record, config, image, runtime, undo)
        except BaseException:
            for step in reversed(undo):
                try:
                    await step()
                except Exception:
                    log.exception("undoing a failed RunPodSandbox of %s", sandbox_id)
            raise
        self.sandboxes[sandbox_id] = record
        return sandbox_id

    async def _build(
        self, record: SandboxRecord, config: cri.PodSandboxConfig, image: CriImage,
        runtime: str, undo: list[Callable[[], Awaitable[None]]],
    ) -> None:  # fmt: skip
        engine, sid = self.engine, record.id
        directory = self.files_dir(sid)
        hostname = config.hostname or (config.metadata.name if config.metadata else sid[:12])
        files.write_pod_files(directory, hostname, config.dns_config)

        async def drop_files() -> None:
            shutil.rmtree(directory, ignore_errors=True)

        undo.append(drop_files)
        if not host_network(config):
            path = netns_dir(self.cfg, engine.state) / f"cni-{secrets.token_hex(16)}"
            await netns.create(path)
            record.netns = str(path)

            async def drop_netns() -> None:
                await netns.remove(path)

            undo.append(drop_netns)
            args = cni_args(sid, config.metadata or cri.PodSandboxMetadata())
            rc = port_mappings(config)
            attachment = await self.cni.add(sid, str(path), args, rc)
            record.network = {
                "network": attachment.network, "ip": attachment.ip,
                "additional_ips": attachment.additional_ips, "result": attachment.result,
            }  # fmt: skip

            async def drop_network() -> None:
                await self.cni.delete(sid, str(path), args, rc, attachment)

            undo.append(drop_network)
        snapshotter = engine.snapshotters.get(self.cfg.snapshotter)
        if snapshotter is None:
            raise InvalidArgument(f'snapshotter "{self.cfg.snapshotter}" is not loaded')
        await snapshotter.prepare(NAMESPACE, sid, image.chain_id)

        async def drop_snapshot() -> None:
            with contextlib.suppress(NotFound):
                await snapshotter.remove(NAMESPACE, sid)

        undo.append(drop_snapshot)
        meta = config.metadata or cri.PodSandboxMetadata()
        oci_spec = spec.sandbox_spec(
            sid, config, image.config, record.netns, files.mounts(directory, readonly=False),
            self.cfg.restrict_oom_score_adj, NAMESPACE,
            self.cfg.enable_unprivileged_ports, self.cfg.enable_unprivileged_icmp,
        )  # fmt: skip
        oci_spec["annotations"] = {
            ANN_CONTAINER_TYPE: SANDBOX_KIND, ANN_SANDBOX_ID: sid,
            ANN_SANDBOX_NAME: meta.name, ANN_SANDBOX_NAMESPACE: meta.namespace,
            ANN_SANDBOX_UID: meta.uid, ANN_SANDBOX_LOG_DIR: config.log_directory,
            ANN_IMAGE_NAME: self.cfg.sandbox_image,
        }  # fmt: skip
        # A console groups containers into pods from these labels alone.
        labels = pod_labels(meta.name, meta.namespace, meta.uid) | dict(config.labels)
        labels[KIND_LABEL] = SANDBOX_KIND
        metadata = {
            "Version": "v1",
            "Metadata": {
                "ID": sid, "Name": record.name, "NetNSPath": record.netns,
                "IP": record.network.get("ip", ""),
                "AdditionalIPs": record.network.get("additional_ips") or None,
                "RuntimeHandler": record.runtime_handler,
            },
        }  # fmt: skip
        container = Container(
            id=sid, runtime_name=runtime,
            spec=AnyValue(typeurl.SPEC_URL, json.dumps(oci_spec).encode()),
            image=image.repo_tags[0] if image.repo_tags else image.id, labels=labels,
            snapshotter=self.cfg.snapshotter, snapshot_key=sid,
            extensions={
                SANDBOX_METADATA_EXTENSION: AnyValue(
                    SANDBOX_METADATA_URL, json.dumps(metadata).encode()
                )
            },
        )  # fmt: skip
        objects.create(engine, container)

        async def drop_container() -> None:
            objects.delete(engine, sid)

        undo.append(drop_container)
        task = await engine.tasks.create(NAMESPACE, container, [], Stdio())

        async def drop_task() -> None:
            await self._kill_task(sid)

        undo.append(drop_task)
        await engine.tasks.start(NAMESPACE, sid)
        record.pid = task.process.pid
        self.store.save_sandbox(record)

    async def _kill_task(self, task_id: str) -> None:
        tasks = self.engine.tasks
        try:
            task = tasks.get(NAMESPACE, task_id)
        except NotFound:
            return
        if task.process.exit is None:
            with contextlib.suppress(NotFound):
                await tasks.kill(NAMESPACE, task_id, signal.SIGKILL, all=True)
            await tasks.wait(NAMESPACE, task_id)
        with contextlib.suppress(NotFound):
            await tasks.delete(NAMESPACE, task_id)

    async def stop(self, ref: str) -> None:
        try:
            record = self.get(ref)
        except NotFound:
            return
        async with self.lock(record.id):
            if self.stop_containers is not None:
                await self.stop_containers(record.id)
            await self._kill_task(record.id)
            await self._teardown_network(record)
            record.state = "notready"
            self.store.save_sandbox(record)

    async def _teardown_network(self, record: SandboxRecord) -> None:
        if not record.netns:
            return
        path = Path(record.netns)
        if record.network:
            config = pod_config(record)
            attachment = Attachment(
                network=record.network.get("network", ""),
                ip=record.network.get("ip", ""),
                result=record.network.get("result", {}),
            )
            await self.cni.delete(
                record.id, str(path) if path.exists() else "",
                cni_args(record.id, config.metadata or cri.PodSandboxMetadata()),
                port_mappings(config), attachment,
            )  # fmt: skip
            record.network = {}
            self.store.save_sandbox(record)
        await netns.remove(path)

    async def remove(self, ref: str) -> None:
        try:
            record = self.get(ref)
        except NotFound:
            return
        await self.stop(record.id)
        async with self.lock(record.id):
            if self.remove_containers is not None:
                await self.remove_containers(record.id)
            objects.delete(self.engine, record.id)
            snapshotter = self.engine.snapshotters.get(self.cfg.snapshotter)
            if snapshotter is not None:
                with contextlib.suppress(NotFound):
                    await snapshotter.remove(NAMESPACE, record.id)
            shutil.rmtree(self.files_dir(record.id), ignore_errors=True)
            self.store.delete_sandbox(record.id)
            self.sandboxes.pop(record.id, None)
            self.locks.pop(record.id, None)

    def status(self, record: SandboxRecord) -> cri.PodSandboxStatus:
        config = pod_config(record)
        sc = (config.linux or cri.LinuxPodSandboxConfig()).security_context
        ns = sc.namespace_options if sc is not None else None
        return cri.PodSandboxStatus(
            id=record.id,
            metadata=config.metadata,
            state=self.state(record),
            created_at=record.created_at,
            network=cri.PodSandboxNetworkStatus(
                ip=record.network.get("ip", ""),
                additional_ips=[
                    cri.PodIp(ip=ip) for ip in record.network.get("additional_ips", [])
                ],
            ),
            linux=cri.LinuxPodSandboxStatus(
                namespaces=cri.Namespace(options=ns or cri.NamespaceOption())
            ),
            labels=dict(config.labels),
            annotations=dict(config.annotations),
            runtime_handler=record.runtime_handler,
        )

    def summary(self, record: SandboxRecord) -> cri.PodSandbox:
        config = pod_config(record)
        return cri.PodSandbox(
            id=record.id,
            metadata=config.metadata,
            state=self.state(record),
            created_at=record.created_at,
            labels=dict(config.labels),
            annotations=dict(config.annotations),
            runtime_handler=record.runtime_handler,
        )

    def list(self, f: cri.PodSandboxFilter | None) -> list[cri.PodSandbox]:
        out = []
        for record in sorted(self.sandboxes.values(), key=lambda r: r.created_at):
            item = self.summary(record)
            if f is not None:
                if f.id and not record.id.startswith(f.id):
                    continue
                if f.state is not None and item.state != f.state.state:
                    continue
                if any(item.labels.get(k) != v for k, v in f.label_selector.items()):
                    continue
            out.append(item)
        return out
