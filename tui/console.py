"""What a screen may ask of the console: its settings, the node and a few actions.

Screens take a `Console` when they are built instead of reaching into the
concrete app, so they never import `tui.app` and can be driven by anything that
keeps these promises. `CtrdeckApp` is the one that does. `Settings` lives here
too, since both sides read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from core.api.containerd.services.images import v1 as images_api
from core.client import Client, ClientTLS
from tui import keymap as keymaps
from tui.state import NodeState
from tui.syncer import Syncer

if TYPE_CHECKING:
    from tui.screens.pull import PullJob


@dataclass
class Settings:
    address: str
    namespace: str
    read_only: bool = False
    teaching: bool = False
    theme: str = "dark"
    snapshotter: str = "overlayfs"
    keymap: dict[str, str] = field(default_factory=dict)
    keymap_path: Path = field(default_factory=keymaps.default_path)
    # How to reach a tcp:// engine; None for a local socket or --plaintext.
    tls: ClientTLS | None = None


class Console(Protocol):
    """The console's state and actions as the screens see them."""

    settings: Settings
    state: NodeState
    clock: Callable[[], datetime]
    # None until connected (and always on fixed data).
    client: Client | None
    syncer: Syncer | None
    pull_job: PullJob | None
    # The plain-HTTP choice per registry host, remembered for the session.
    plain_http: dict[str, bool]

    def note(self, text: str) -> None:
        """Put a line of the console's own in the event log."""

    def teach(self, line: str) -> None:
        """Put the equivalent `ctr` line in the event log when teaching is on."""

    def record(self, args: list[str]) -> None:
        """`:record [FILE]` / `:record stop`: record what the console sees (`tui.recorder`)."""

    def set_theme(self, name: str) -> None:
        """Switch to a theme by its short name (`dark`, `light`) or Textual's."""

    def start_pull(self, request: images_api.PullImageRequest) -> PullJob:
        """Start a pull that outlives its dialog; the job reports its progress."""

    def hold_keys(self) -> Callable[[], None]:
        """Hold typed-ahead keys until the returned release is called."""
