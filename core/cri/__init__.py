"""The Kubernetes CRI (runtime.v1): pods and their containers on the engine's own parts.

CRI objects are ordinary engine objects in the `k8s.io` namespace: a pod
sandbox is a pause container and its task, a CRI container is a container
record, a snapshot and a task, and CRI images are image records, so
`ctr -n k8s.io` sees them all. They carry containerd's `io.kubernetes.cri.*`
annotations and `io.cri-containerd.kind` label, which is how a console groups
them into pods without the CRI API. What the containerd API has no room for
(pod config, network result, log path) is kept as JSON records under the
engine's root (`store.py`), so a restarted engine finds every pod again.
"""

NAMESPACE = "k8s.io"
"""The containerd namespace CRI objects live in, as in containerd."""

PLUGIN_ROOT = "io.containerd.grpc.v1.cri"
"""The directory under the engine's root and state that the CRI keeps its files in."""

PARTS = ("metadata", "content", "events", "gc", "snapshot_records", "snapshotters", "tasks")
"""The engine's parts the CRI uses (both services share them): the CRI plugin's `requires`."""

KIND_LABEL = "io.cri-containerd.kind"
SANDBOX_KIND = "sandbox"
CONTAINER_KIND = "container"

ANN_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
ANN_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
ANN_SANDBOX_NAME = "io.kubernetes.cri.sandbox-name"
ANN_SANDBOX_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
ANN_SANDBOX_UID = "io.kubernetes.cri.sandbox-uid"
ANN_SANDBOX_LOG_DIR = "io.kubernetes.cri.sandbox-log-directory"
ANN_CONTAINER_NAME = "io.kubernetes.cri.container-name"
ANN_IMAGE_NAME = "io.kubernetes.cri.image-name"

LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"

SANDBOX_METADATA_EXTENSION = "io.cri-containerd.sandbox.metadata"
SANDBOX_METADATA_URL = "github.com/containerd/cri/pkg/store/sandbox/Metadata"
"""containerd keeps a pod's metadata (name, netns, IP) as this extension of the pause container."""


def pod_labels(name: str, namespace: str, uid: str) -> dict[str, str]:
    """The `io.kubernetes.pod.*` labels kubelet sends, for a client that sent none."""
    return {LABEL_POD_NAME: name, LABEL_POD_NAMESPACE: namespace, LABEL_POD_UID: uid}
