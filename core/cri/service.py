"""The CRI gRPC services (runtime.v1 RuntimeService and ImageService) over `core.cri`.

Thin, like every service: each method checks its request and calls the pod,
container or image manager. Stop and Remove of what is gone succeed (CRI's
idempotence); Status reports `RuntimeReady` and, honestly, `NetworkReady`
(false with the reason when no CNI config loads or a plugin is missing).
Streaming (Exec, Attach, PortForward) answers UNIMPLEMENTED for now.
"""

from __future__ import annotations

import time

from core.api.runtime import v1 as cri
from core.cri import NAMESPACE, PLUGIN_ROOT, cni
from core.cri import config as cri_config
from core.cri.containers import Containers
from core.cri.images import CriImage, CriImages
from core.cri.pods import Pods
from core.cri.stats import container_stats
from core.cri.store import Store
from core.engine import Engine
from core.errors import InvalidArgument, NotFound, NotImplementedYet

PARTS = ("metadata", "content", "events", "gc", "snapshot_records", "snapshotters", "tasks")
"""The engine's parts the CRI uses (both services share them): the CRI plugin's `requires`."""
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
        self._restored = False

    def restore(self) -> None:
        """Watch the containers a previous run started (once the tasks are restored)."""
        if not self._restored:
            self._restored = True
            self.containers.restore()


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
        auth = message.auth
        has_credentials = auth is not None and any(
            (auth.username, auth.password, auth.auth, auth.identity_token, auth.registry_token)
        )
        image = await self.cri.images.pull(ref, has_credentials)
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
        raise NotImplementedYet("streaming exec is not implemented yet; use ExecSync")

    async def attach(self, message: cri.AttachRequest) -> cri.AttachResponse:
        raise NotImplementedYet("attach is not implemented yet")

    async def port_forward(self, message: cri.PortForwardRequest) -> cri.PortForwardResponse:
        raise NotImplementedYet("port forwarding is not implemented yet")

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
