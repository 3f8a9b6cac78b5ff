"""Pull: a dialog for the reference, snapshotter, platform and credentials, then progress.

The registry user and password go into the request for this pull only: the password field
never echoes, and `spec.pull_flags` (the teaching line) shows `--user NAME`, never the secret.

`PullJob` is the model of one pull (no widgets): it folds the engine's
`PullImageProgress` stream into per-layer bytes, state and rate. The stream runs
in an app-level worker, so hiding the dialog (esc) leaves the pull going; the
screen re-renders the job a few times a second, however fast progress arrives,
and stops once the job has finished.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from core.api.containerd.services.images import v1 as images_api
from tui.plain import plain
from tui.screens.dialogs import snapshotter_select
from tui.state import utc_now
from tui.widgets.checkbox import Tickbox
from tui.widgets.tables import short_digest, size

RENDER_INTERVAL = 0.2
BAR_WIDTH = 24
DONE_STATES = {"downloaded", "unpacked", "exists"}


@dataclass
class LayerState:
    digest: str
    media_type: str
    size: int
    offset: int = 0
    state: str = "waiting"
    applied: int = 0
    rate: float | None = None
    seen_at: datetime | None = None


@dataclass
class PullJob:
    request: images_api.PullImageRequest
    clock: Callable[[], datetime] = utc_now
    phase: str = "resolving"
    message: str = ""
    layers: dict[str, LayerState] = field(default_factory=dict)
    image: images_api.Image | None = None
    error: str = ""
    finished: bool = False
    # Whether the operator has seen the failure in the dialog (else `p` shows it first).
    error_seen: bool = False

    def apply(self, progress: images_api.PullImageProgress) -> None:
        now = self.clock()
        self.phase = progress.phase or self.phase
        if progress.message:
            self.message = progress.message
        if progress.image is not None:
            self.image = progress.image
        for lp in progress.layers:
            layer = self.layers.get(lp.digest)
            if layer is None:
                layer = self.layers[lp.digest] = LayerState(lp.digest, lp.media_type, lp.size)
            if layer.seen_at is not None and now > layer.seen_at and lp.offset > layer.offset:
                layer.rate = (lp.offset - layer.offset) / (now - layer.seen_at).total_seconds()
            layer.size = lp.size or layer.size
            layer.offset = lp.offset
            layer.state = lp.state or layer.state
            layer.applied = max(layer.applied, lp.applied)
            layer.seen_at = now
            if layer.state in DONE_STATES:
                layer.rate = None

    def fail(self, message: str) -> None:
        self.error = message
        self.finished = True

    def finish(self) -> None:
        self.phase = "done"
        self.finished = True

    @property
    def title(self) -> str:
        r = self.request
        return f"Pull {r.ref} → {r.snapshotter or 'default'}, {r.platform or 'host platform'}"


def render_job(job: PullJob) -> RenderableType:
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(no_wrap=True)
    for i, layer in enumerate(job.layers.values(), 1):
        total = max(layer.size, 1)
        done = layer.size if layer.state in DONE_STATES else min(layer.offset, total)
        state = layer.state
        if layer.state == "unpacking":
            # The bar follows the unpack now: how much of the blob has been applied.
            done = min(layer.applied, total)
            state = f"unpacking, {size(layer.applied)} applied"
        table.add_row(
            f"layer {i}",
            size(layer.size),
            ProgressBar(total=total, completed=done, width=BAR_WIDTH, animation_time=0.0),
            f"{done * 100 // total}%",
            f"{size(int(layer.rate))}/s" if layer.rate and layer.state != "unpacking" else "",
            plain(state),
        )
    if job.error:
        status = plain(f"failed: {job.error}", "bold", lines=True)
    elif job.finished:
        status = plain(f"done: {job.image.name if job.image else job.request.ref}", "bold")
    else:
        status = plain(f"{job.phase}  {job.message}".rstrip())
    count = len(job.layers)
    done_layers = sum(1 for layer in job.layers.values() if layer.state in DONE_STATES)
    target = job.image.target if job.image else None
    header = Text(f"image {short_digest(target.digest)}" if target else "")
    summary = Text(f"{done_layers}/{count} layers", style="dim") if count else Text("")
    return Group(header, table, summary, status)


def registry_host(ref: str) -> str:
    """The registry a reference names, as the engine reads it (`docker.io` when none)."""
    first, slash, _rest = ref.strip().partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return "docker.io"


def subtitle(job: PullJob) -> str:
    if job.error:
        return "failed · esc closes"
    if job.finished:
        return "done · esc closes"
    return "esc hides · the pull goes on"


class PullScreen(ModalScreen[images_api.PullImageRequest | None]):
    """The pull form; or, given a job, that job's progress.

    `plain_http` is the session's plain-HTTP choice per registry host (the app keeps
    it); the checkbox follows the registry of the reference being typed.
    """

    BINDINGS: ClassVar[list[Binding]] = [Binding("escape", "hide", "hide", id="pull.hide")]

    def __init__(
        self,
        *,
        job: PullJob | None = None,
        snapshotters: list[str] | None = None,
        snapshotter: str = "overlayfs",
        platform: str = "",
        ref: str = "",
        user: str = "",
        plain_http: dict[str, bool] | None = None,
    ) -> None:
        super().__init__()
        self.job = job
        self.plain_http = plain_http if plain_http is not None else {}
        self.snapshotters = snapshotters or [snapshotter]
        self.snapshotter = snapshotter
        self.platform = platform
        self.ref = ref
        self.user = user
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog pull") as box:
            box.border_title = plain(self.job.title) if self.job else "Pull an image"
            box.border_subtitle = subtitle(self.job) if self.job else "esc cancels"
            if self.job is None:
                yield Label("reference")
                hint = "type an image reference: [HOST/]NAME[:TAG]"
                yield Input(self.ref, placeholder=hint, id="pull-ref")
                with Horizontal(classes="pull-row"):
                    with Vertical():
                        yield Label("snapshotter")
                        yield snapshotter_select(
                            self.snapshotters, self.snapshotter, "pull-snapshotter"
                        )
                    with Vertical():
                        yield Label("platform")
                        yield Input(self.platform, id="pull-platform")
                with Horizontal(classes="pull-row"):
                    with Vertical():
                        yield Label("registry user (optional)")
                        yield Input(self.user, id="pull-user")
                    with Vertical():
                        yield Label("password")
                        yield Input(password=True, id="pull-password")
                yield Tickbox(
                    "plain HTTP (a registry without TLS; loopback falls back by itself)",
                    self.plain_http.get(registry_host(self.ref), False) if self.ref else False,
                    id="pull-plain-http",
                )
                with Horizontal(classes="dialog-buttons"):
                    yield Button("Pull", id="pull-go", variant="primary")
                    yield Button("Cancel", id="pull-cancel")
            else:
                yield Static(render_job(self.job), id="pull-progress")

    def on_mount(self) -> None:
        if self.job is None:
            # `:pull REF --user NAME` has said all but the password, which is never typed inline.
            if self.ref and self.user:
                # Nested rows are mounted after the screen: focus once they are there.
                self.call_after_refresh(lambda: self.query_one("#pull-password", Input).focus())
            else:
                self.query_one("#pull-ref", Input).focus()
            return
        # Drawn once now (a finished job is shown, and its error seen, without a timer).
        self.redraw()
        if not self.job.finished:
            self._timer = self.set_interval(RENDER_INTERVAL, self.redraw)

    def redraw(self) -> None:
        if self.job is None:
            return
        self.query_one("#pull-progress", Static).update(render_job(self.job))
        self.query_one(".pull").border_subtitle = subtitle(self.job)
        if self.job.error:
            self.job.error_seen = True
        if self.job.finished and self._timer is not None:
            # The last frame shows how it ended; a finished job never changes again.
            self._timer.stop()
            self._timer = None

    @on(Input.Changed, "#pull-ref")
    def ref_changed(self, event: Input.Changed) -> None:
        remembered = self.plain_http.get(registry_host(event.value))
        if remembered is not None:
            self.query_one("#pull-plain-http", Checkbox).value = remembered

    @on(Input.Submitted)
    @on(Button.Pressed, "#pull-go")
    def submit(self) -> None:
        if self.job is not None:
            return
        ref = self.query_one("#pull-ref", Input).value.strip()
        if not ref:
            self.notify("a pull needs an image reference", severity="warning")
            return
        plain_http = self.query_one("#pull-plain-http", Checkbox).value
        user = self.query_one("#pull-user", Input).value.strip()
        password = self.query_one("#pull-password", Input).value
        if ":" in user:
            self.notify("the registry user name cannot hold ':'", severity="warning")
            return
        if password and not user:
            self.notify("a password needs a registry user", severity="warning")
            return
        self.dismiss(
            images_api.PullImageRequest(
                ref=ref,
                snapshotter=str(self.query_one("#pull-snapshotter", Select).value),
                platform=self.query_one("#pull-platform", Input).value.strip(),
                plain_http=plain_http,
                user=f"{user}:{password}" if user else "",
            )
        )

    @on(Button.Pressed, "#pull-cancel")
    def action_hide(self) -> None:
        self.dismiss(None)
