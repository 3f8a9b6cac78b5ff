"""A fixed node for snapshot tests: rows, log lines and a clock that never move.

The SVG snapshots must not change from run to run, so the app runs on this
state with no engine connection and a frozen clock (ages and uptimes come
out the same every time).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.api.containerd.services.images import v1 as images_api
from core.api.containerd.types import Descriptor
from tui.app import CtrdeckApp, Settings
from tui.oci import ImageDetail, Layer
from tui.screens.pull import PullJob
from tui.state import (
    CONTAINERS,
    CONTENT,
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
)

NOW = datetime(2025, 5, 14, 14, 2, 12, tzinfo=UTC)
ADDRESS = "/run/ctrdeck/ctrdeck.sock"
NGINX = "127.0.0.1:5000/library/nginx:1.27"
BUSYBOX = "127.0.0.1:5000/library/busybox:1.36"
DEBIAN = "127.0.0.1:5000/library/debian:bookworm"


def digest(n: int) -> str:
    return "sha256:" + f"{n:02x}" * 32


def clock() -> datetime:
    return NOW


def fixed_state() -> NodeState:
    state = NodeState("default", ADDRESS)
    state.version = "1.6.20+ctrdeck.0.1.0"
    state.connected = True
    state.snapshotters = ["native", "overlayfs"]
    for name, containers, images in (("default", 3, 3), ("k8s.io", 42, 17), ("training", 0, 2)):
        state.upsert(NAMESPACES, name, NamespaceRow(name, {}, containers, images))
    for i, (name, size, platforms) in enumerate(
        (
            (NGINX, 72_401_337, "linux/amd64,linux/arm64"),
            (BUSYBOX, 2_163_940, "linux/amd64"),
            (DEBIAN, 49_557_601, "linux/amd64"),
        ),
        1,
    ):
        state.upsert(
            IMAGES,
            name,
            ImageRow(
                name,
                digest(i),
                "application/vnd.oci.image.index.v1+json",
                size,
                platforms,
                NOW - timedelta(days=i),
            ),
        )
    runc = "io.containerd.runc.v2"
    rows = (
        ContainerRow("web-1", NGINX, runc, "overlayfs", "web-1", status="RUNNING", pid=4121,
                     started=NOW - timedelta(hours=3, minutes=2), cpu=1.2, memory=14_889_779),
        ContainerRow("web-2", NGINX, runc, "overlayfs", "web-2", status="PAUSED", pid=4188,
                     started=NOW - timedelta(hours=3, minutes=1), cpu=0.0, memory=14_575_206),
        ContainerRow("batch-7", BUSYBOX, runc, "overlayfs", "batch-7", status="STOPPED",
                     exit_status=0),
        ContainerRow("scratch", DEBIAN, runc, "native", "scratch"),
    )  # fmt: skip
    for row in rows:
        state.upsert(CONTAINERS, row.id, row)
    for i, (key, parent, kind) in enumerate(
        (
            (digest(20), "", "Committed"),
            (digest(21), digest(20), "Committed"),
            ("web-1", digest(21), "Active"),
            ("web-2", digest(21), "Active"),
        )
    ):
        state.upsert(
            SNAPSHOTS,
            ("overlayfs", key),
            SnapshotRow("overlayfs", key, parent, kind, NOW - timedelta(hours=4 - i)),
        )
    for i, size in enumerate((1_609, 7_023, 29_124_573, 2_163_940), 30):
        state.upsert(
            CONTENT,
            digest(i),
            ContentRow(
                digest(i), size, NOW - timedelta(days=1), {"containerd.io/uncompressed": "…"}
            ),
        )
    return state


def fixed_log() -> list[LogLine]:
    t = NOW - timedelta(seconds=14)
    return [
        LogLine(t, "default", "/images/create", NGINX),
        LogLine(t + timedelta(seconds=1), "default", "/snapshot/commit", f"{digest(21)[:19]}…"),
        LogLine(t + timedelta(seconds=3), "default", "/tasks/start", "web-1 pid 4121"),
        LogLine(t + timedelta(seconds=9), "default", "/tasks/exit", "batch-7 exit 0"),
        LogLine(t + timedelta(seconds=12), "default", "/tasks/paused", "web-2"),
        LogLine(t + timedelta(seconds=12), "default", "", "ctr -n default task pause web-2", "ctr"),
    ]


def fixed_app(*, read_only: bool = False) -> CtrdeckApp:
    settings = Settings(
        address=ADDRESS,
        namespace="default",
        read_only=read_only,
        teaching=True,
        keymap_path=Path("~/.config/ctrdeck/keymap.toml"),
    )
    return CtrdeckApp(settings, state=fixed_state(), clock=clock, log_lines=fixed_log())


def fixed_image_detail() -> ImageDetail:
    layers = [
        Layer(digest(40), "application/vnd.oci.image.layer.v1.tar+gzip", 29_124_573, digest(50)),
        Layer(digest(41), "application/vnd.oci.image.layer.v1.tar+gzip", 41_872_950, digest(51)),
        Layer(digest(42), "application/vnd.oci.image.layer.v1.tar+gzip", 628, digest(52)),
    ]
    return ImageDetail(
        target=Descriptor(
            media_type="application/vnd.oci.image.index.v1+json", digest=digest(1), size=1_609
        ),
        index={"manifests": [{}, {}]},
        manifest_descriptor={"digest": digest(2), "size": 1_234},
        manifest={
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": digest(3), "size": 7_023},
        },
        config={
            "created": "2025-05-01T00:00:00Z",
            "os": "linux",
            "architecture": "amd64",
            "config": {
                "Entrypoint": ["/docker-entrypoint.sh"],
                "Cmd": ["nginx", "-g", "daemon off;"],
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "StopSignal": "SIGQUIT",
            },
        },
        layers=layers,
        platforms=["linux/amd64", "linux/arm64"],
    )


def fixed_pull_job() -> PullJob:
    ticks = iter([NOW, NOW + timedelta(seconds=1)])
    job = PullJob(
        images_api.PullImageRequest(ref=DEBIAN, snapshotter="overlayfs", platform="linux/amd64"),
        clock=lambda: next(ticks, NOW + timedelta(seconds=1)),
    )
    sizes = (63_651_223, 17_196_032, 8_192, 17_408)

    def layers(offsets: tuple[int, ...], states: tuple[str, ...]) -> list[images_api.LayerProgress]:
        return [
            images_api.LayerProgress(
                digest=digest(60 + i),
                media_type="application/vnd.oci.image.layer.v1.tar+gzip",
                size=size,
                offset=offset,
                state=state,
            )
            for i, (size, offset, state) in enumerate(zip(sizes, offsets, states, strict=True))
        ]

    job.apply(
        images_api.PullImageProgress(
            phase="fetching",
            layers=layers(
                (6_000_000, 17_196_032, 8_192, 0),
                ("downloading",) + ("downloaded",) * 2 + ("waiting",),
            ),
        )
    )
    job.apply(
        images_api.PullImageProgress(
            phase="unpacking",
            message="layer 1 of 4",
            layers=layers(
                (49_000_000, 17_196_032, 8_192, 17_408),
                ("downloading", "unpacked", "unpacked", "downloaded"),
            ),
        )
    )
    return job
