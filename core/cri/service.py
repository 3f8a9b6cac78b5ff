"""The CRI gRPC services (runtime.v1 RuntimeService and ImageService) over `core.cri`.

Thin, like every service: each method checks its request and calls the pod,
container or image manager. Stop and Remove of what is gone succeed (CRI's
idempotence); Status reports `RuntimeReady` and, honestly, `NetworkReady`
(false with the reason when no CNI config loads or a plugin is missing).
Exec, Attach and PortForward answer a URL on the streaming server
(`streaming.py`, WebSocket or SPDY/3.1).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time

from core.api.runtime import v1 as cri
from core.cri import NAMESPACE, PARTS, PLUGIN_ROOT, cni
from core.cri import config as cri_config
from core.cri.attach import Target
from core.cri.containers import Containers, container_config
from core.cri.images import CriImage, CriImages
from core.cri.pods import Pods
from core.cri.stats import container_stats
from core.cri.store import Store
from core.cri.streaming import TOKEN_TTL, ExecCall, StreamServer
from core.engine import Engine
from core.errors import FailedPrecondition, InvalidArgument, NotFound
from core.images.credentials import IDENTITY_TOKEN_USER

RUNTIME_NAME = "ctrdeck"
CRI_VERSION = "v1"
VERSION = "0.1.0"


class Cri:
    """The CRI's parts, built once from the engine and shared by both services."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = cri_config.from_config(engine.config)
        self.root = engine.root / PLUGIN_ROOT
        self.store = Store(self.root)
        self.images = CriImages(engine)
        self.pods = Pods(engine, self.config, self.store, self.images, self.root)
        self.containers = Containers(engine, self.config, self.store, self.images, self.pods)
        self.streams = StreamServer(
            engine, self.config.stream_server_address, int(self.config.stream_server_port)
        )
        self._started = False

    async def start(self) -> None:
        """Watch the containers a previous run started (once the tasks are restored)."""
        if not self._started:
            self._started = True
            self.containers.restore()

    async def close(self) -> None:
        await self.streams.close()


def image_out(image: CriImage) -> cri.Image:
    uid, username = image.uid_and_name()
    return cri.Image(
        id=image.id,
        repo_tags=list(image.repo_tags),
        repo_digests=list(image.repo_digests),
        size=image.size,
        uid=cri.Int64Value(value=uid) if uid is not None else None,
        username=username,
        spec=cri.ImageSpec(image=image.id),
    )


class ImageService(cri.ImageServiceBase):
    PARTS: tuple[str, ...] = PARTS

    def __init__(self, parts: Cri) -> None:
        self.cri = parts

    async def list_images(self, message: cri.ListImagesRequest) -> cri.ListImagesResponse:
        images = self.cri.images.all()
        wanted = message.filter.image.image if message.filter and message.filter.image else ""
        if wanted:
            found = self.cri.images.find(wanted)
            images = [found] if found is not None else []
        return cri.ListImagesResponse(images=[image_out(i) for i in images])

    async def image_status(self, message: cri.ImageStatusRequest) -> cri.ImageStatusResponse:
        ref = message.image.image if message.image else ""
        if not ref:
            raise InvalidArgument("image status needs an image reference")
        image = self.cri.images.find(ref)
        return cri.ImageStatusResponse(image=image_out(image) if image is not None else None)

    async def pull_image(self, message: cri.PullImageRequest) -> cri.PullImageResponse:
        ref = message.image.image if message.image else ""
        if not ref:
            raise InvalidArgument("pull needs an image reference")
        image = await self.cri.images.pull(ref, wire_user(message.auth))
        return cri.PullImageResponse(image_ref=image.id)

    async def remove_image(self, message: cri.RemoveImageRequest) -> cri.RemoveImageResponse:
        ref = message.image.image if message.image else ""
        if not ref:
            raise InvalidArgument("remove needs an image reference")
        await self.cri.images.remove(ref)
        return cri.RemoveImageResponse()

    async def image_fs_info(self, message: cri.ImageFsInfoRequest) -> cri.ImageFsInfoResponse:
        snapshotter = self.cri.config.snapshotter
        root = self.cri.engine.root / f"io.containerd.snapshotter.v1.{snapshotter}"
        used = inodes = 0
        for record in await _snapshot_usage(self.cri.engine, snapshotter):
            used += record[0]
            inodes += record[1]
        return cri.ImageFsInfoResponse(
            image_filesystems=[
                cri.FilesystemUsage(
                    timestamp=time.time_ns(),
                    fs_id=cri.FilesystemIdentifier(mountpoint=str(root)),
                    used_bytes=cri.UInt64Value(value=used),
                    inodes_used=cri.UInt64Value(value=inodes),
                )
            ]
        )


async def _snapshot_usage(engine: Engine, snapshotter: str) -> list[tuple[int, int]]:
    store = engine.snapshotters.get(snapshotter)
    if store is None:
        return []
    out = []
    for record in await store.list(NAMESPACE):
        try:
            usage = await store.usage(NAMESPACE, record.key)
        except NotFound:
            continue
        out.append((usage.size, usage.inodes))
    return out


class RuntimeService(cri.RuntimeServiceBase):
    PARTS: tuple[str, ...] = PARTS

    def __init__(self, parts: Cri) -> None:
        self.cri = parts

    async def version(self, message: cri.VersionRequest) -> cri.VersionResponse:
        return cri.VersionResponse(
            version="0.1.0",
            runtime_name=RUNTIME_NAME,
            runtime_version=VERSION,
            runtime_api_version=CRI_VERSION,
        )

    async def status(self, message: cri.StatusRequest) -> cri.StatusResponse:
        reason = cni.not_ready_reason(self.cri.config.cni)
        conditions = [
            cri.RuntimeCondition(type="RuntimeReady", status=True),
            cri.RuntimeCondition(
                type="NetworkReady",
                status=not reason,
                reason="NetworkPluginNotReady" if reason else "",
                message=f"Network plugin returns error: {reason}" if reason else "",
            ),
        ]
        return cri.StatusResponse(status=cri.RuntimeStatus(conditions=conditions))

    async def update_runtime_config(
        self, message: cri.UpdateRuntimeConfigRequest
    ) -> cri.UpdateRuntimeConfigResponse:
        return cri.UpdateRuntimeConfigResponse()

    # --- pods ---------------------------------------------------------------------

    async def run_pod_sandbox(self, message: cri.RunPodSandboxRequest) -> cri.RunPodSandboxResponse:
        sandbox_id = await self.cri.pods.run(message.config, message.runtime_handler)
        return cri.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    async def stop_pod_sandbox(
        self, message: cri.StopPodSandboxRequest
    ) -> cri.StopPodSandboxResponse:
        await self.cri.pods.stop(message.pod_sandbox_id)
        return cri.StopPodSandboxResponse()

    async def remove_pod_sandbox(
        self, message: cri.RemovePodSandboxRequest
    ) -> cri.RemovePodSandboxResponse:
        await self.cri.pods.remove(message.pod_sandbox_id)
        return cri.RemovePodSandboxResponse()

    async def pod_sandbox_status(
        self, message: cri.PodSandboxStatusRequest
    ) -> cri.PodSandboxStatusResponse:
        record = self.cri.pods.get(message.pod_sandbox_id)
        info = {}
        if message.verbose:
            info["info"] = f'{{"pid": {record.pid}, "netns": "{record.netns}"}}'
        return cri.PodSandboxStatusResponse(status=self.cri.pods.status(record), info=info)

    async def list_pod_sandbox(
        self, message: cri.ListPodSandboxRequest
    ) -> cri.ListPodSandboxResponse:
        return cri.ListPodSandboxResponse(items=self.cri.pods.list(message.filter))

    # --- containers ---------------------------------------------------------------

    async def create_container(
        self, message: cri.CreateContainerRequest
    ) -> cri.CreateContainerResponse:
        cid = await self.cri.containers.create(
            message.pod_sandbox_id, message.config, message.sandbox_config
        )
        return cri.CreateContainerResponse(container_id=cid)

    async def start_container(
        self, message: cri.StartContainerRequest
    ) -> cri.StartContainerResponse:
        await self.cri.containers.start(message.container_id)
        return cri.StartContainerResponse()

    async def stop_container(self, message: cri.StopContainerRequest) -> cri.StopContainerResponse:
        await self.cri.containers.stop(message.container_id, message.timeout)
        return cri.StopContainerResponse()

    async def remove_container(
        self, message: cri.RemoveContainerRequest
    ) -> cri.RemoveContainerResponse:
        await self.cri.containers.remove(message.container_id)
        return cri.RemoveContainerResponse()

    async def list_containers(
        self, message: cri.ListContainersRequest
    ) -> cri.ListContainersResponse:
        return cri.ListContainersResponse(containers=self.cri.containers.list(message.filter))

    async def container_status(
        self, message: cri.ContainerStatusRequest
    ) -> cri.ContainerStatusResponse:
        record = self.cri.containers.get(message.container_id)
        return cri.ContainerStatusResponse(status=self.cri.containers.status(record))

    async def update_container_resources(
        self, message: cri.UpdateContainerResourcesRequest
    ) -> cri.UpdateContainerResourcesResponse:
        await self.cri.containers.update_resources(message.container_id, message.linux)
        return cri.UpdateContainerResourcesResponse()

    async def reopen_container_log(
        self, message: cri.ReopenContainerLogRequest
    ) -> cri.ReopenContainerLogResponse:
        self.cri.containers.reopen_log(message.container_id)
        return cri.ReopenContainerLogResponse()

    async def exec_sync(self, message: cri.ExecSyncRequest) -> cri.ExecSyncResponse:
        return await self.cri.containers.exec_sync(
            message.container_id, list(message.cmd), message.timeout
        )

    async def exec(self, message: cri.ExecRequest) -> cri.ExecResponse:
        if not message.cmd:
            raise InvalidArgument("exec needs a command")
        record = self.cri.containers.running(message.container_id)
        container = self.cri.engine.metadata.containers.get(NAMESPACE, record.id)
        process = json.loads(container.spec.value)["process"] if container.spec else {}
        call = ExecCall(
            container_id=record.id, cmd=list(message.cmd), tty=message.tty,
            stdin=message.stdin, stdout=message.stdout, stderr=message.stderr,
            process=process, expires=time.monotonic() + TOKEN_TTL,
        )  # fmt: skip
        await self.cri.streams.start()
        return cri.ExecResponse(url=self.cri.streams.exec_url(call))

    async def attach(self, message: cri.AttachRequest) -> cri.AttachResponse:
        record = self.cri.containers.running(message.container_id)
        if not record.log_path:
            raise FailedPrecondition(
                f'container "{record.id}" has no log_path to follow its output from'
            )
        config = container_config(record)
        stdin = self.cri.containers.stdin_path(record.id) if config.stdin else ""
        call = ExecCall(
            container_id=record.id, cmd=[], tty=message.tty, stdin=message.stdin,
            stdout=message.stdout, stderr=message.stderr, process={},
            expires=time.monotonic() + TOKEN_TTL,
            attach_to=Target(record.log_path, stdin, config.stdin_once),
        )  # fmt: skip
        await self.cri.streams.start()
        return cri.AttachResponse(url=self.cri.streams.exec_url(call))

    async def port_forward(self, message: cri.PortForwardRequest) -> cri.PortForwardResponse:
        record = self.cri.pods.get(message.pod_sandbox_id)
        if self.cri.pods.state(record) != cri.PodSandboxState.SANDBOX_READY:
            raise FailedPrecondition(f'sandbox "{record.id}" is not ready')
        await self.cri.streams.start()
        url = self.cri.streams.portforward_url(record.netns, list(message.port))
        return cri.PortForwardResponse(url=url)

    # --- stats --------------------------------------------------------------------

    def _stats(self, container_id: str) -> cri.ContainerStats:
        containers = self.cri.containers
        record = containers.get(container_id)
        config = containers.summary(record)
        attributes = cri.ContainerAttributes(
            id=record.id, metadata=config.metadata, labels=config.labels,
            annotations=config.annotations,
        )  # fmt: skip
        task = self.cri.engine.tasks.get(NAMESPACE, record.id)
        return container_stats(task, attributes)

    def _pod_stats(self, sandbox_id: str) -> cri.PodSandboxStats:
        """A pod's figures: its containers' (and its pause container's) summed, and each's."""
        record = self.cri.pods.get(sandbox_id)
        summary = self.cri.pods.summary(record)
        running = cri.ContainerFilter(
            pod_sandbox_id=record.id,
            state=cri.ContainerStateValue(state=cri.ContainerState.CONTAINER_RUNNING),
        )
        containers = []
        for item in self.cri.containers.list(running):
            with contextlib.suppress(NotFound):
                containers.append(self._stats(item.id))
        parts = list(containers)
        with contextlib.suppress(NotFound):
            task = self.cri.engine.tasks.get(NAMESPACE, record.id)
            parts.append(container_stats(task, cri.ContainerAttributes(id=record.id)))
        now = time.time_ns()
        cpu = sum(
            p.cpu.usage_core_nano_seconds.value
            for p in parts
            if p.cpu and p.cpu.usage_core_nano_seconds
        )
        working = sum(
            p.memory.working_set_bytes.value
            for p in parts
            if p.memory and p.memory.working_set_bytes
        )
        usage = sum(p.memory.usage_bytes.value for p in parts if p.memory and p.memory.usage_bytes)
        return cri.PodSandboxStats(
            attributes=cri.PodSandboxAttributes(
                id=record.id, metadata=summary.metadata, labels=summary.labels,
                annotations=summary.annotations,
            ),
            linux=cri.LinuxPodSandboxStats(
                cpu=cri.CpuUsage(timestamp=now, usage_core_nano_seconds=cri.UInt64Value(value=cpu)),
                memory=cri.MemoryUsage(
                    timestamp=now, working_set_bytes=cri.UInt64Value(value=working),
                    usage_bytes=cri.UInt64Value(value=usage),
                ),
                containers=containers,
            ),
        )  # fmt: skip

    async def pod_sandbox_stats(
        self, message: cri.PodSandboxStatsRequest
    ) -> cri.PodSandboxStatsResponse:
        return cri.PodSandboxStatsResponse(stats=self._pod_stats(message.pod_sandbox_id))

    async def list_pod_sandbox_stats(
        self, message: cri.ListPodSandboxStatsRequest
    ) -> cri.ListPodSandboxStatsResponse:
        f = message.filter
        wanted = cri.PodSandboxFilter(
            id=f.id if f else "",
            state=cri.PodSandboxStateValue(state=cri.PodSandboxState.SANDBOX_READY),
            label_selector=dict(f.label_selector) if f else {},
        )
        out = []
        for pod in self.cri.pods.list(wanted):
            with contextlib.suppress(NotFound):
                out.append(self._pod_stats(pod.id))
        return cri.ListPodSandboxStatsResponse(stats=out)

    async def container_stats(
        self, message: cri.ContainerStatsRequest
    ) -> cri.ContainerStatsResponse:
        return cri.ContainerStatsResponse(stats=self._stats(message.container_id))

    async def list_container_stats(
        self, message: cri.ListContainerStatsRequest
    ) -> cri.ListContainerStatsResponse:
        f = message.filter
        wanted = cri.ContainerFilter(
            id=f.id if f else "", pod_sandbox_id=f.pod_sandbox_id if f else "",
            state=cri.ContainerStateValue(state=cri.ContainerState.CONTAINER_RUNNING),
            label_selector=dict(f.label_selector) if f else {},
        )  # fmt: skip
        out = []
        for item in self.cri.containers.list(wanted):
            try:
                out.append(self._stats(item.id))
            except NotFound:
                continue
        return cri.ListContainerStatsResponse(stats=out)


def wire_user(auth: cri.AuthConfig | None) -> str:
    """A CRI AuthConfig as the pull request's `user` (`NAME:SECRET`); empty for anonymous."""
    if auth is None:
        return ""
    if auth.registry_token:
        raise InvalidArgument(
            "AuthConfig.registry_token is not supported: give username and password, auth "
            "or identity_token"
        )
    if auth.identity_token:
        return f"{IDENTITY_TOKEN_USER}:{auth.identity_token}"
    if auth.auth:
        try:
            pair = base64.b64decode(auth.auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidArgument("AuthConfig.auth is not base64 of NAME:PASSWORD") from None
        if ":" not in pair:
            raise InvalidArgument("AuthConfig.auth is not base64 of NAME:PASSWORD")
        return pair
    if auth.username:
        return f"{auth.username}:{auth.password}"
    if auth.password:
        raise InvalidArgument("AuthConfig has a password but no username")
    return ""
