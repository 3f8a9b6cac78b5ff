"""The progress of moving an image: one pull or push's shared state, and its snapshots.

A `PullJob` is what every caller of one pipeline reads: the phase, each layer's
bytes and state (waiting, downloading, downloaded, unpacking, unpacked, exists,
failed; a push uses uploading and uploaded), the image once registered and the
error if it failed. Subscribers are woken on every change; an urgent one (a
state or phase) is sent at once, byte counts at most as often as the reader
asks. `Progress` is one message of the stream, in the shape `Images.Pull` and
`Images.Push` send.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field

from core.metadata.images import Image

WAITING = "waiting"
DOWNLOADING = "downloading"
DOWNLOADED = "downloaded"
UNPACKING = "unpacking"
UNPACKED = "unpacked"
EXISTS = "exists"
FAILED = "failed"


@dataclass(frozen=True)
class PullRequest:
    ref: str
    snapshotter: str = ""
    platform: str = ""
    unpack: bool = True
    labels: tuple[tuple[str, str], ...] = ()
    plain_http: bool = False
    # "name:secret" for the reference's registry, for this pull only; never printed.
    user: str = field(default="", repr=False)
    all_platforms: bool = False


@dataclass
class LayerProgress:
    digest: str
    media_type: str
    size: int
    offset: int = 0
    state: str = WAITING
    applied: int = 0


@dataclass
class Progress:
    """One message of the stream: the phase, every layer, and the image once registered."""

    phase: str
    layers: list[LayerProgress]
    image: Image | None = None
    message: str = ""


class Subscriber:
    """A caller's view of a job: `event` on every change, `hurry` on an urgent one."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.hurry = asyncio.Event()
        self.urgent = True


@dataclass
class PullJob:
    """The shared state of one pipeline, read by every caller that joined it."""

    namespace: str
    request: PullRequest
    phase: str = "resolving"
    message: str = ""
    layers: dict[str, LayerProgress] = field(default_factory=dict)
    image: Image | None = None
    error: BaseException | None = None
    done: bool = False
    task: asyncio.Task[None] | None = None
    subscribers: list[Subscriber] = field(default_factory=list)

    def changed(self, *, urgent: bool) -> None:
        for sub in self.subscribers:
            sub.urgent = sub.urgent or urgent
            sub.event.set()
            if urgent:
                sub.hurry.set()

    def set_phase(self, phase: str, message: str = "") -> None:
        self.phase, self.message = phase, message
        self.changed(urgent=True)

    def set_state(self, digest: str, state: str) -> None:
        layer = self.layers.get(digest)
        if layer is not None and layer.state != state:
            layer.state = state
            if state in (DOWNLOADED, EXISTS):
                layer.offset = layer.size
            self.changed(urgent=True)

    def set_applied(self, digest: str, applied: int) -> None:
        layer = self.layers.get(digest)
        if layer is not None and applied > layer.applied:
            layer.applied = applied
            self.changed(urgent=False)

    def set_offset(self, digest: str, offset: int) -> None:
        layer = self.layers.get(digest)
        if layer is not None:
            layer.offset = offset
            self.changed(urgent=False)

    def snapshot(self) -> Progress:
        return Progress(
            phase=self.phase,
            layers=[dataclasses.replace(layer) for layer in self.layers.values()],
            image=self.image,
            message=self.message,
        )
