"""The Pods view's actions: stop or remove a pod, a container's log, inspect, exec.

`PodsActions` is mixed into `MainScreen` beside `Actions`; each `do_pod_*`
handler reads the Pods table's selection (a pod row, or a container row under
it). Stop and remove ask first and go through the CRI (`tui.pods`); logs and
inspect use the containerd API like the Containers view, so they work on a
real containerd's `k8s.io` too; exec asks for a command line, runs it with
ExecSync and shows its output and exit code.
"""

from __future__ import annotations

import shlex
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from tui import operations, pods
from tui.commands import PODS
from tui.plain import plain
from tui.screens.actions import Actions
from tui.screens.dialogs import ConfirmScreen
from tui.screens.inspect import InspectScreen, Section, container_sections, fields
from tui.screens.logs import LogsScreen
from tui.state import ContainerRow
from tui.widgets.pods_table import PodsTable


class ExecScreen(ModalScreen[list[str] | None]):
    """Ask for the command line to run in a container (split like a shell would)."""

    BINDINGS: ClassVar[list[Binding]] = [Binding("escape", "cancel", "cancel", id="exec.cancel")]

    def __init__(self, container: str) -> None:
        super().__init__()
        self.container = container

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(plain(f"Run in {self.container}:"), classes="dialog-title")
            yield Input(placeholder="command and arguments, e.g. cat /etc/resolv.conf", id="argv")

    def on_mount(self) -> None:
        self.query_one("#argv", Input).focus()

    @on(Input.Submitted, "#argv")
    def submitted(self, event: Input.Submitted) -> None:
        try:
            argv = shlex.split(event.value)
        except ValueError as exc:
            self.notify(f"exec: {exc}", severity="error", markup=False)
            return
        self.dismiss(argv or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PodsActions(Actions):
    """The Pods pane's handlers; `MainScreen` supplies the lookups they use."""

    def pods_table(self) -> PodsTable:
        return self.query_one(f"#{PODS}", PodsTable)

    def do_view_pods(self, pane: str) -> None:
        """Show the Pods view, in `k8s.io` when the current namespace holds no pods."""
        node = self.node  # type: ignore[attr-defined]
        here = any(pods.is_cri(row) for row in node.containers.values())
        if (
            not here
            and node.namespace != pods.CRI_NAMESPACE
            and pods.CRI_NAMESPACE in node.namespaces
        ):
            self.switch_namespace(pods.CRI_NAMESPACE)  # type: ignore[attr-defined]
        self.show_pane(PODS)  # type: ignore[attr-defined]

    def _selection(self) -> tuple[pods.Pod, ContainerRow | None] | None:
        chosen = self.pods_table().selection()
        if chosen is None:
            self.notify("no pod selected", severity="warning")
        return chosen

    def do_pod_stop(self, pane: str) -> None:
        chosen, client = self._selection(), self.client()  # type: ignore[attr-defined]
        if chosen is None or client is None:
            return
        pod = chosen[0]
        if not pod.id:
            self.notify(f"pod {pod.name} has no pause container left", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.teach("pod.stop", PODS, id=pod.id)  # type: ignore[attr-defined]
                self.perform("stop pod", lambda: pods.stop_pod(client, pod.id),
                             f"stopped pod {pod.name}")  # fmt: skip

        detail = f"Its {len(pod.containers)} container(s) stop and its network is torn down."
        self.app.push_screen(ConfirmScreen(f"Stop pod {pod.namespace}/{pod.name}?", detail,
                                           yes="Stop (y)"), answered)  # fmt: skip

    def do_pod_remove(self, pane: str) -> None:
        chosen, client = self._selection(), self.client()  # type: ignore[attr-defined]
        if chosen is None or client is None:
            return
        pod, container = chosen
        if container is not None:
            name = container.labels.get(pods.CONTAINER_NAME, container.id)
            question = f"Remove container {name} of pod {pod.name}?"
            action = lambda: pods.remove_container(client, container.id)  # noqa: E731
            done = f"removed container {name}"
        else:
            question = f"Remove pod {pod.namespace}/{pod.name}?"
            action = lambda: pods.remove_pod(client, pod.id)  # noqa: E731
            done = f"removed pod {pod.name}"

        target = container.id if container is not None else pod.id

        def answered(yes: bool | None) -> None:
            if yes:
                self.teach("pod.remove", PODS, id=target)  # type: ignore[attr-defined]
                self.perform("remove", action, done)

        detail = "A running pod is stopped first; its containers go with it."
        self.app.push_screen(ConfirmScreen(question, detail if container is None else ""), answered)

    def _container_or_warn(self) -> ContainerRow | None:
        chosen = self._selection()
        if chosen is None:
            return None
        if chosen[1] is None:
            self.notify("select a container of the pod (j/k)", severity="warning")
            return None
        return chosen[1]

    def do_pod_logs(self, pane: str) -> None:
        container, client = self._container_or_warn(), self.client()  # type: ignore[attr-defined]
        if container is None or client is None:
            return
        cid = container.id
        self.app.push_screen(
            LogsScreen(cid, lambda lines: operations.follow_log(client, cid, lines))
        )

    def do_pod_inspect(self, pane: str) -> None:
        chosen, client = self._selection(), self.client()  # type: ignore[attr-defined]
        if chosen is None or client is None:
            return
        pod, container = chosen
        cid = container.id if container is not None else pod.id
        if not cid:
            return
        table = self.pods_table()

        async def loader() -> list[Section]:
            sections = container_sections(await operations.container_detail(client, cid))
            if container is None:
                members = ", ".join(c.id[:13] for c in pod.containers) or "-"
                rows = [
                    ("name", pod.name), ("namespace", pod.namespace), ("uid", pod.uid),
                    ("state", pod.state), ("ip", table.ips.get(pod.id, "") or "-"),
                    ("containers", members),
                ]  # fmt: skip
                sections.insert(0, Section("Pod", fields(rows)))
            return sections

        title = f"Pod ▸ {pod.name}" if container is None else f"Container ▸ {cid}"
        self.app.push_screen(InspectScreen(title, loader))

    def do_pod_exec(self, pane: str) -> None:
        container, client = self._container_or_warn(), self.client()  # type: ignore[attr-defined]
        if container is None or client is None:
            return
        cid = container.id

        def chosen(argv: list[str] | None) -> None:
            if not argv:
                return
            tail = " " + shlex.join(argv)
            self.teach("pod.exec", PODS, tail=tail, id=cid)  # type: ignore[attr-defined]

            async def loader() -> list[Section]:
                result = await pods.exec_in(client, cid, argv)
                out = result.stdout.decode(errors="replace")
                err = result.stderr.decode(errors="replace")
                return [
                    Section("Exit code", Text(str(result.exit_code))),
                    Section("stdout", plain(out or "(none)", lines=True)),
                    Section("stderr", plain(err or "(none)", lines=True)),
                ]

            self.app.push_screen(InspectScreen(f"Exec ▸ {shlex.join(argv)}", loader))

        self.app.push_screen(ExecScreen(container.labels.get(pods.CONTAINER_NAME, cid)), chosen)
