"""Kubernetes pods from a namespace's containers, and the pod actions the console takes.

Pods are grouped from containerd's CRI labels alone (`io.cri-containerd.kind`,
`io.kubernetes.pod.uid`, `.name`, `.namespace`, `io.kubernetes.container.name`),
which ctrdeck's engine and a real containerd both put on the containers of
`k8s.io`, so the view needs no CRI API. A pod's IP comes from the pause
container's `io.cri-containerd.sandbox.metadata` extension (containerd's own
record of the pod). The actions (stop, remove, exec) go through the CRI,
which both engines serve on their main socket; inspecting and following logs
use the containerd API like the rest of the console.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from core.api.containerd.services.containers import v1 as containers_api
from core.api.runtime import v1 as cri
from core.client import Client
from tui.operations import engine_call
from tui.state import ContainerRow

CRI_NAMESPACE = "k8s.io"
KIND = "io.cri-containerd.kind"
POD_UID = "io.kubernetes.pod.uid"
POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
CONTAINER_NAME = "io.kubernetes.container.name"
SANDBOX_METADATA = "io.cri-containerd.sandbox.metadata"


@dataclass(frozen=True)
class Pod:
    """One pod: its pause container (when it is still there) and its containers."""

    uid: str
    name: str
    namespace: str
    sandbox: ContainerRow | None
    containers: tuple[ContainerRow, ...]

    @property
    def id(self) -> str:
        return self.sandbox.id if self.sandbox is not None else ""

    @property
    def state(self) -> str:
        if self.sandbox is not None and self.sandbox.status == "RUNNING":
            return "READY"
        return "NOTREADY"


def is_cri(row: ContainerRow) -> bool:
    return row.labels.get(KIND) in ("sandbox", "container") and POD_UID in row.labels


def group(rows: Mapping[str, ContainerRow]) -> list[Pod]:
    """Every pod among `rows`, by namespace and name; a pod's containers by name."""
    by_uid: dict[str, list[ContainerRow]] = {}
    for row in rows.values():
        if is_cri(row):
            by_uid.setdefault(row.labels[POD_UID], []).append(row)
    pods = []
    for uid, members in by_uid.items():
        sandboxes = sorted(
            (r for r in members if r.labels.get(KIND) == "sandbox"),
            # The newest attempt is the pod; older ones are stopped pause containers.
            key=lambda r: r.created.timestamp() if r.created else 0,
        )
        sandbox = sandboxes[-1] if sandboxes else None
        containers = tuple(
            sorted(
                (r for r in members if r.labels.get(KIND) == "container"),
                key=lambda r: (r.labels.get(CONTAINER_NAME, ""), r.id),
            )
        )
        first = sandbox or members[0]
        pods.append(
            Pod(
                uid=uid,
                name=first.labels.get(POD_NAME, ""),
                namespace=first.labels.get(POD_NAMESPACE, ""),
                sandbox=sandbox,
                containers=containers,
            )
        )
    return sorted(pods, key=lambda p: (p.namespace, p.name, p.uid))


async def sandbox_ip(client: Client, sandbox_id: str) -> str:
    """The pod IP containerd (or ctrdeck) recorded on the pause container, or ""."""
    with engine_call("Containers", f"read pod {sandbox_id}"):
        found = await client.containers.get(containers_api.GetContainerRequest(id=sandbox_id))
    extension = (found.container.extensions if found.container else {}).get(SANDBOX_METADATA)
    if extension is None:
        return ""
    try:
        doc = json.loads(bytes(extension.value))
    except ValueError:
        return ""
    metadata = doc.get("Metadata") if isinstance(doc, dict) else None
    ip = metadata.get("IP") if isinstance(metadata, dict) else None
    return ip if isinstance(ip, str) else ""


async def stop_pod(client: Client, sandbox_id: str) -> None:
    with engine_call("CRI", f"stop pod {sandbox_id}"):
        await client.cri_runtime.stop_pod_sandbox(
            cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id)
        )


async def remove_pod(client: Client, sandbox_id: str) -> None:
    with engine_call("CRI", f"remove pod {sandbox_id}"):
        await client.cri_runtime.remove_pod_sandbox(
            cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id)
        )


async def remove_container(client: Client, container_id: str) -> None:
    with engine_call("CRI", f"remove container {container_id}"):
        await client.cri_runtime.remove_container(
            cri.RemoveContainerRequest(container_id=container_id)
        )


async def pod_status(client: Client, sandbox_id: str) -> cri.PodSandboxStatusResponse:
    with engine_call("CRI", f"read the status of pod {sandbox_id}"):
        return await client.cri_runtime.pod_sandbox_status(
            cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True)
        )


async def exec_in(
    client: Client, container_id: str, argv: list[str], timeout: int = 30
) -> cri.ExecSyncResponse:
    with engine_call("CRI", f"exec in {container_id}"):
        return await client.cri_runtime.exec_sync(
            cri.ExecSyncRequest(container_id=container_id, cmd=argv, timeout=timeout)
        )
