"""Inspect: one object laid out in sections (image, container, snapshot, blob).

The section builders turn what `tui.operations` fetched into Rich renderables
and are pure, so the same screen renders fixed data in snapshot tests. The
screen shows "loading" at once and fills in when its loader returns; a failure
shows the engine's message in place of the sections. Every name and value is
plain text (`tui.plain`): a value keeps its line breaks (an image's env), a
label's shows them as `␤`, so a label cannot pass for two.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from core.api.containerd.services.snapshots.v1 import Kind
from core.api.containerd.v1.types import Status
from tui.oci import ImageDetail
from tui.operations import ConsoleError, ContainerDetail, ContentDetail, SnapshotDetail
from tui.plain import plain
from tui.widgets.footer import KeyFooter
from tui.widgets.tables import short_digest, size


@dataclass(frozen=True)
class Section:
    title: str
    body: RenderableType


Loader = Callable[[], Awaitable[list[Section]]]


def fields(rows: Iterable[tuple[str, Any]], *, lines: bool = True) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in rows:
        shown = "-" if value in (None, "", [], {}) else str(value)
        table.add_row(plain(name), plain(shown, lines=lines))
    return table


def when(t: datetime | None) -> str:
    if t is None or t.year <= 1970:
        return "-"
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def labels_block(labels: Mapping[str, str]) -> RenderableType:
    if not labels:
        return Text("no labels", style="dim")
    return fields(sorted(labels.items()), lines=False)


def image_sections(name: str, detail: ImageDetail) -> list[Section]:
    target = detail.target
    out = [
        Section(
            "Image",
            fields(
                [
                    ("name", name),
                    ("digest", target.digest),
                    ("media type", target.media_type),
                    ("platforms", ", ".join(detail.platforms)),
                    ("size", size(detail.size)),
                ]
            ),
        )
    ]
    if detail.index is not None and detail.manifest_descriptor is not None:
        m = detail.manifest_descriptor
        out.append(
            Section(
                "Index",
                fields(
                    [
                        ("manifests", len(detail.index.get("manifests", []))),
                        ("chosen", m.get("digest")),
                        ("chosen size", size(int(m.get("size", 0)))),
                    ]
                ),
            )
        )
    manifest = detail.manifest or {}
    config_desc = manifest.get("config") or {}
    out.append(
        Section(
            "Manifest",
            fields(
                [
                    ("media type", manifest.get("mediaType", "")),
                    ("config", config_desc.get("digest")),
                    ("config size", size(int(config_desc.get("size", 0)))),
                ]
            ),
        )
    )
    config = detail.config or {}
    runtime = config.get("config") or {}
    out.append(
        Section(
            "Config",
            fields(
                [
                    ("created", config.get("created")),
                    ("platform", f"{config.get('os', '')}/{config.get('architecture', '')}"),
                    ("entrypoint", " ".join(runtime.get("Entrypoint") or [])),
                    ("cmd", " ".join(runtime.get("Cmd") or [])),
                    ("working dir", runtime.get("WorkingDir")),
                    ("user", runtime.get("User")),
                    ("env", "\n".join(runtime.get("Env") or [])),
                    ("stop signal", runtime.get("StopSignal")),
                ]
            ),
        )
    )
    layers = Table(box=None, padding=(0, 1), show_edge=False)
    layers.add_column("#", justify="right")
    layers.add_column("DIGEST", no_wrap=True)
    layers.add_column("SIZE", justify="right", no_wrap=True)
    layers.add_column("DIFF ID", no_wrap=True)
    for i, layer in enumerate(detail.layers, 1):
        layers.add_row(
            str(i),
            plain(short_digest(layer.digest)),
            size(layer.size),
            plain(short_digest(layer.diff_id)),
        )
    out.append(Section(f"Layers ({len(detail.layers)})", layers))
    return out


def container_sections(
    detail: ContainerDetail, why_stopped: Sequence[tuple[str, str]] = ()
) -> list[Section]:
    """The container's sections; `why_stopped` (from `tui.why`) follows its task when it stopped."""
    c = detail.container
    runtime = c.runtime.name if c.runtime else ""
    out = [
        Section(
            "Container",
            fields(
                [
                    ("id", c.id),
                    ("image", c.image),
                    ("runtime", runtime),
                    ("snapshotter", c.snapshotter),
                    ("snapshot key", c.snapshot_key),
                    ("created", when(c.created_at)),
                ]
            ),
        )
    ]
    task = detail.task
    if task is None:
        out.append(Section("Task", Text("no task", style="dim")))
    else:
        out.append(
            Section(
                "Task",
                fields(
                    [
                        ("status", Status(task.status).name),
                        ("pid", task.pid or "-"),
                        ("exit status", task.exit_status if task.status == Status.STOPPED else "-"),
                        ("stdout", task.stdout),
                    ]
                ),
            )
        )
        if why_stopped:
            out.append(Section("Why it stopped", fields(why_stopped)))
    spec = detail.spec or {}
    process = spec.get("process") or {}
    linux = spec.get("linux") or {}
    kinds = ", ".join(n.get("type", "") for n in linux.get("namespaces") or [])
    out.append(
        Section(
            "Spec",
            fields(
                [
                    ("args", " ".join(process.get("args") or [])),
                    ("cwd", process.get("cwd")),
                    ("env", "\n".join(process.get("env") or [])),
                    ("cgroups path", linux.get("cgroupsPath")),
                    ("namespaces", kinds),
                ]
            )
            if spec
            else Text("no spec stored: the engine builds it from the image config", style="dim"),
        )
    )
    mounts = Table(box=None, padding=(0, 1), show_edge=False)
    mounts.add_column("DESTINATION", no_wrap=True)
    mounts.add_column("TYPE", no_wrap=True)
    mounts.add_column("SOURCE", overflow="fold")
    for m in spec.get("mounts") or []:
        mounts.add_row(*(plain(m.get(k, "")) for k in ("destination", "type", "source")))
    out.append(Section(f"Mounts ({len(spec.get('mounts') or [])})", mounts))
    out.append(Section("Labels", labels_block(c.labels)))
    if spec:
        out.append(Section("Spec (JSON)", Text(json.dumps(spec, indent=2))))
    return out


def snapshot_sections(snapshotter: str, detail: SnapshotDetail) -> list[Section]:
    info = detail.info
    rows: list[tuple[str, Any]] = [
        ("name", info.name),
        ("snapshotter", snapshotter),
        ("kind", Kind(info.kind).name.capitalize()),
        ("parent", info.parent),
        ("created", when(info.created_at)),
        ("updated", when(info.updated_at)),
    ]
    if detail.usage is not None:
        rows += [("disk usage", size(detail.usage.size)), ("inodes", detail.usage.inodes)]
    return [Section("Snapshot", fields(rows)), Section("Labels", labels_block(info.labels))]


def content_sections(detail: ContentDetail) -> list[Section]:
    info = detail.info
    out = [
        Section(
            "Blob",
            fields(
                [
                    ("digest", info.digest),
                    ("size", f"{size(info.size)} ({info.size} bytes)"),
                    ("created", when(info.created_at)),
                ]
            ),
        ),
        Section("Labels", labels_block(info.labels)),
    ]
    if detail.preview:
        out.append(Section("Content", plain(detail.preview, lines=True)))
    return out


class InspectScreen(Screen[None]):
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("escape,q", "close", "back", id="inspect.close"),
        Binding("j", "scroll(1)", show=False, id="inspect.down"),
        Binding("k", "scroll(-1)", show=False, id="inspect.up"),
        Binding("g", "top", show=False, id="inspect.top"),
        Binding("G", "bottom", show=False, id="inspect.bottom"),
    ]

    def __init__(self, title: str, loader: Loader, ctr_line: str | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.loader = loader
        self.ctr_line = ctr_line

    def compose(self) -> ComposeResult:
        yield Static(plain(f" {self.title_text}"), id="inspect-title", classes="topbar")
        yield VerticalScroll(Static("loading…", classes="dim"), id="inspect-body")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#inspect-body").focus()
        self.load()

    @work(exclusive=True, group="inspect")
    async def load(self) -> None:
        body = self.query_one("#inspect-body", VerticalScroll)
        try:
            sections = await self.loader()
        except ConsoleError as exc:
            await body.remove_children()
            await body.mount(Static(plain(exc.message, lines=True), classes="error"))
            self.notify(exc.message, severity="error", title="inspect")
            return
        widgets = []
        for section in sections:
            widget = Static(section.body, classes="section")
            widget.border_title = plain(section.title)
            widgets.append(widget)
        if self.ctr_line:
            widgets.append(Static(plain(f"$ {self.ctr_line}"), classes="teach"))
        await body.remove_children()
        await body.mount_all(widgets)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_scroll(self, lines: int) -> None:
        self.query_one("#inspect-body", VerticalScroll).scroll_relative(y=lines, animate=False)

    def action_top(self) -> None:
        self.query_one("#inspect-body", VerticalScroll).scroll_home(animate=False)

    def action_bottom(self) -> None:
        self.query_one("#inspect-body", VerticalScroll).scroll_end(animate=False)
