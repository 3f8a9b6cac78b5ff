"""What the main screen's keys do: the `do_<command id>` handlers and the workers they start.

Each handler gets the pane the key was pressed in, asks a dialog when the
action needs one, and runs the matching `tui.operations` call in a worker;
failures become notifications carrying the engine's message, and with teaching
on the equivalent `ctr` line goes to the event log first. `Actions` is mixed
into `MainScreen`, whose lookups (`node`, `table`, `selected`, `client`,
`teach`) it uses; it owns no layout.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Awaitable, Callable
from typing import Any, cast

from textual import work
from textual.widgets import Input

from core import status as engine_status
from core.api.containerd.services.images import v1 as images_api
from core.client import Client
from tui import commands, operations
from tui import spec as specs
from tui.commands import CONTAINERS, CONTENT, IMAGES, NAMESPACES, SNAPSHOTS
from tui.console import Console
from tui.screens.dialogs import ConfirmScreen, Pick, PickScreen, RunScreen
from tui.screens.engine import EngineScreen
from tui.screens.help import HelpScreen
from tui.screens.inspect import (
    InspectScreen,
    Section,
    container_sections,
    content_sections,
    image_sections,
    snapshot_sections,
)
from tui.screens.logs import LogsScreen
from tui.screens.pull import PullScreen, registry_host
from tui.screens.triage import Triage
from tui.spec import RunOptions
from tui.widgets.tables import (
    short_digest,
)

# Deleting an image in use names this many of its containers, then counts the rest.
USERS_NAMED = 6


class Actions(Triage):
    """The handlers behind the keys; `MainScreen` supplies the lookups they use."""

    console: Console

    @work(group="actions")
    async def perform(self, what: str, action: Callable[[], Awaitable[Any]], done: str) -> None:
        try:
            await action()
        except operations.ConsoleError as exc:
            self.notify(exc.message, severity="error", title=what, timeout=8)
            return
        if done:
            self.notify(done, title=what)

    # --- everywhere -------------------------------------------------------------

    def do_app_pull(self, pane: str) -> None:
        self.open_pull()

    def open_pull(
        self, ref: str = "", *, user: str = "", snapshotter: str = "", platform: str = ""
    ) -> None:
        job = self.console.pull_job
        if job is not None and (not job.finished or (job.error and not job.error_seen)):
            self.app.push_screen(PullScreen(job=job))
            return
        node = self.node
        default = self.console.settings.snapshotter
        form = PullScreen(
            snapshotters=node.snapshotters or [default],
            snapshotter=snapshotter or default,
            platform=platform,
            ref=ref,
            user=user,
            plain_http=self.console.plain_http,
        )

        def start(request: Any) -> None:
            if request is not None:
                self.start_pull(request)

        self.app.push_screen(form, start)

    def start_pull(self, request: images_api.PullImageRequest) -> None:
        job = self.console.pull_job
        if job is not None and not job.finished:
            self.notify("a pull is already going; p shows it", severity="warning")
            return
        self.console.plain_http[registry_host(request.ref)] = request.plain_http
        self.teach("app.pull", commands.SCREEN, flags=specs.pull_flags(request), ref=request.ref)
        self.app.push_screen(PullScreen(job=self.console.start_pull(request)))

    def do_app_help(self, pane: str) -> None:
        settings = self.console.settings
        help_screen = HelpScreen(pane, settings.keymap, self.read_only, settings.keymap_path)
        self.app.push_screen(help_screen)

    def do_app_engine(self, pane: str) -> None:
        node = self.node
        known = node.engine

        async def loader() -> engine_status.EngineStatus:
            # Without a connection (fixed data) the last status the node had is all there is.
            if self.console.client is None and known is not None:
                return known
            return await engine_status.probe(node.address, tls=self.console.settings.tls)

        self.teach("app.engine", pane)
        line = commands.BY_ID["app.engine"].ctr_line(pane)
        self.app.push_screen(EngineScreen(f"Engine ▸ {node.address}", loader, line))

    def do_app_command_line(self, pane: str) -> None:
        line = self.query_one("#cmdline", Input)
        line.value = ""
        line.remove_class("hidden")
        line.focus()

    def do_app_teach(self, pane: str) -> None:
        settings = self.console.settings
        settings.teaching = not settings.teaching
        state = "on: each action writes its ctr command line here" if settings.teaching else "off"
        self.console.note(f"teaching {state}")
        self.retitle()

    def do_app_namespace(self, pane: str) -> None:
        names = sorted(str(k) for k in self.node.namespaces)
        if not names:
            self.notify("no namespaces yet", severity="warning")
            return

        def chosen(pick: Pick | None) -> None:
            if pick is not None:
                self.switch_namespace(pick.value)

        self.app.push_screen(
            PickScreen("Namespace", [(n, n) for n in names], selected=self.node.namespace), chosen
        )

    def do_app_theme(self, pane: str) -> None:
        self.console.set_theme("light" if self.app.current_theme.dark else "dark")

    # --- namespaces pane --------------------------------------------------------------

    def do_namespace_switch(self, pane: str) -> None:
        key = self.selected(NAMESPACES)
        if key is not None:
            self.switch_namespace(str(key))

    # --- events pane ----------------------------------------------------------------

    def do_events_pause(self, pane: str) -> None:
        self.event_log.set_paused(not self.event_log.paused)

    def do_events_clear(self, pane: str) -> None:
        self.event_log.clear_all()

    # --- images -----------------------------------------------------------------------

    def do_image_run(self, pane: str) -> None:
        if pane != IMAGES:
            self.notify("select an image to run (2 shows images)", severity="warning")
            return
        image = self.selected(IMAGES)
        client = self.client()
        if image is None or client is None:
            return
        self.open_run(client, str(image), self.console.hold_keys())

    def suggested_id(self, image: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.-]", "-", image.rsplit("/", 1)[-1].split("@")[0])
        suggested = base.replace(":", "-")
        n = 1
        while f"{suggested}-{n}" in self.node.containers:
            n += 1
        return f"{suggested}-{n}"

    @work(group="actions")
    async def open_run(self, client: Client, image: str, release: Callable[[], None]) -> None:
        # Keys typed meanwhile belong to the form: they are held until it is pushed.
        try:
            await self._push_run_form(client, image)
        finally:
            release()

    async def _push_run_form(self, client: Client, image: str) -> None:
        # The form shows what the image runs by default, so an empty field says something.
        try:
            config = (await operations.image_detail(client, image)).config or {}
        except operations.ConsoleError:
            config = {}
        dialog = RunScreen(
            image,
            self.suggested_id(image),
            self.node.snapshotters,
            self.console.settings.snapshotter,
            operations.DEFAULT_RUNTIME,
            default_command=shlex.join(specs.default_command(config)) if config else "",
            default_cwd=str((config.get("config") or {}).get("WorkingDir") or ""),
        )

        def go(options: RunOptions | None) -> None:
            if options is not None:
                self.run_image(client, image, options)

        self.app.push_screen(dialog, go)

    def run_image(self, client: Client, image: str, options: RunOptions) -> None:
        flags = " " + shlex.join(options.ctr_flags())
        tail = " " + shlex.join(options.args) if options.args else ""
        self.teach("image.run", IMAGES, flags=flags, tail=tail, ref=image, id=options.container_id)
        self.run_worker(self._run(client, image, options), group="actions")

    async def _run(self, client: Client, image: str, options: RunOptions) -> None:
        cid = options.container_id
        try:
            result = await operations.run(client, image, options)
        except operations.ConsoleError as exc:
            self.notify(exc.message, severity="error", title="run", timeout=8)
            return
        if result.exit_status is None:
            self.watched.add(cid)
            self.notify(f"started {cid} (pid {result.pid})", title="run")
            if options.remove:
                self.run_worker(self._remove_on_exit(client, cid), group="remove-on-exit")
            return
        gone = " and was removed" if options.remove else ""
        output = "\n".join(result.output) if result.output else "(no output)"
        self.notify(
            f"{cid} exited with code {result.exit_status}{gone}:\n{output}",
            title="run",
            severity="information" if result.exit_status == 0 else "warning",
            timeout=12,
            markup=False,
        )

    async def _remove_on_exit(self, client: Client, cid: str) -> None:
        # --rm: the console waits for the task (as `ctr run --rm` does) and removes it after.
        try:
            status = await operations.wait_exit(client, cid, None)
            await operations.delete_container(client, cid)
        except operations.ConsoleError as exc:
            self.notify(exc.message, severity="error", title=f"remove {cid}", timeout=8)
            return
        self.console.note(f"{cid} exited with code {status} and was removed")

    # --- containers -------------------------------------------------------------------

    def _container(self, pane: str) -> str | None:
        if pane != CONTAINERS:
            self.notify("this acts on a container (1 shows containers)", severity="warning")
            return None
        key = self.selected(CONTAINERS)
        return None if key is None else str(key)

    def do_container_start(self, pane: str) -> None:
        cid = self._container(pane)
        client = self.client()
        if cid is None or client is None:
            return
        steps = self.teach_steps(id=cid)
        self.watched.add(cid)
        self.perform("start", lambda: operations.start(client, cid, steps=steps), f"started {cid}")

    def do_container_pause(self, pane: str) -> None:
        cid = self._container(pane)
        client = self.client()
        if cid is None or client is None:
            return
        row = self.node.containers.get(cid)
        verb = "resume" if row is not None and row.status == "PAUSED" else "pause"
        self.teach("container.pause", CONTAINERS, id=cid, verb=verb)
        self.perform(verb, lambda: operations.pause_or_resume(client, cid), "")

    def do_container_kill(self, pane: str) -> None:
        cid = self._container(pane)
        client = self.client()
        if cid is None or client is None:
            return
        row = self.node.containers.get(cid)
        stop_signal = (row.labels if row else {}).get(operations.STOP_SIGNAL_LABEL, "SIGTERM")
        options = [(name, f"{name:<8} {number:>2}") for name, number in operations.SIGNALS]
        numbers = dict(operations.SIGNALS)

        def chosen(pick: Pick | None) -> None:
            if pick is None:
                return
            self.teach(
                "container.kill",
                CONTAINERS,
                id=cid,
                signal=pick.value,
                flags=" -a" if pick.all_processes else "",
            )
            signal = numbers[pick.value]
            self.perform(
                "kill",
                lambda: operations.kill(client, cid, signal, pick.all_processes),
                f"sent {pick.value} to {cid}",
            )

        self.app.push_screen(
            PickScreen(f"Kill {cid}: which signal?", options, selected=stop_signal, offer_all=True),
            chosen,
        )

    def do_container_logs(self, pane: str) -> None:
        cid = self._container(pane)
        client = self.client()
        if cid is None or client is None:
            return
        self.app.push_screen(
            LogsScreen(cid, lambda lines: operations.follow_log(client, cid, lines))
        )

    # --- delete and inspect -----------------------------------------------------------

    def do_table_delete(self, pane: str) -> None:
        key = self.selected(pane)
        client = self.client()
        if key is None or client is None:
            return
        if pane == CONTAINERS:
            cid = str(key)
            row = self.node.containers.get(cid)
            live = row is not None and row.status in ("RUNNING", "PAUSED", "CREATED")
            question = f"Delete container {cid}?"
            detail = "Its task is live: it gets SIGKILL first. " if live else ""
            detail += "Its snapshot goes with it."
            fields = {"id": cid}
            steps = self.teach_steps(id=cid)
            action = lambda: operations.delete_container(client, cid, steps=steps)  # noqa: E731
        elif pane == IMAGES:
            question, detail = f"Delete image {key}?", self._image_users(str(key))
            fields = {"ref": str(key)}
            action = lambda: operations.delete_image(client, str(key))  # noqa: E731
        elif pane == SNAPSHOTS:
            snapshotter, skey = cast(tuple[str, str], key)
            question, detail = f"Remove snapshot {skey} ({snapshotter})?", ""
            fields = {"snapshotter": snapshotter, "key": skey}
            action = lambda: operations.delete_snapshot(client, snapshotter, skey)  # noqa: E731
        elif pane == CONTENT:
            question, detail = f"Delete blob {short_digest(str(key))}?", ""
            fields = {"digest": str(key)}
            action = lambda: operations.delete_content(client, str(key))  # noqa: E731
        elif pane == NAMESPACES:
            question, detail = f"Delete namespace {key}?", "Only an empty namespace can go."
            fields = {"name": str(key)}
            action = lambda: operations.delete_namespace(client, str(key))  # noqa: E731
        else:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                if pane != CONTAINERS:
                    # A container's delete teaches its steps as it takes them.
                    self.teach("table.delete", pane, **fields)
                self.perform("delete", action, f"deleted {key if isinstance(key, str) else key[1]}")

        self.app.push_screen(ConfirmScreen(question, detail), answered)

    def _image_users(self, name: str) -> str:
        """What deleting image `name` means, naming the containers made from it."""
        users = sorted(str(k) for k, c in self.node.containers.items() if c.image == name)
        if not users:
            return "Its blobs and snapshots go once unused."
        shown = ", ".join(users[:USERS_NAMED])
        if len(users) > USERS_NAMED:
            shown += f" and {len(users) - USERS_NAMED} more"
        return (
            f"Still used by {len(users)} container{'s' if len(users) > 1 else ''}: {shown}. "
            "They keep their snapshots, but its blobs go: pull it again to run it again."
        )

    def do_table_inspect(self, pane: str) -> None:
        key = self.selected(pane)
        client = self.client()
        if key is None or client is None:
            return
        loader: Callable[[], Awaitable[list[Section]]]
        if pane == CONTAINERS:
            cid = str(key)
            fields = {"id": cid}

            async def loader() -> list[Section]:
                detail = await operations.container_detail(client, cid)
                return container_sections(detail, await self.why_stopped(client, cid))

            title = f"Container ▸ {cid}"
        elif pane == IMAGES:
            name = str(key)
            fields = {"ref": name}

            async def loader() -> list[Section]:
                return image_sections(name, await operations.image_detail(client, name))

            title = f"Image ▸ {name}"
        elif pane == SNAPSHOTS:
            snapshotter, skey = cast(tuple[str, str], key)
            fields = {"snapshotter": snapshotter, "key": skey}

            async def loader() -> list[Section]:
                detail = await operations.snapshot_detail(client, snapshotter, skey)
                return snapshot_sections(snapshotter, detail)

            title = f"Snapshot ▸ {skey}"
        elif pane == CONTENT:
            digest = str(key)
            fields = {"digest": digest}

            async def loader() -> list[Section]:
                return content_sections(await operations.content_detail(client, digest))

            title = f"Blob ▸ {digest}"
        else:
            return
        self.teach("table.inspect", pane, **fields)
        line = commands.BY_ID["table.inspect"].ctr_line(pane, ns=self.node.namespace, **fields)
        self.app.push_screen(InspectScreen(title, loader, line))
