"""Small modal dialogs: confirm, pick one of a list, and the Run form.

Each returns its answer through `dismiss`, so the caller awaits a plain value
(`True`/`False`, the picked option, the run options, or None for cancel).
Questions, titles and options name things from the node, so they are shown
as plain text (`tui.plain`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, OptionList, Select
from textual.widgets.option_list import Option

from tui.plain import plain
from tui.spec import OptionError, RunOptions
from tui.widgets.checkbox import Tickbox


def snapshotter_select(names: list[str], current: str, widget_id: str) -> Select[str]:
    """A choice among the engine's snapshotters, on `current` when the engine has it."""
    return Select(
        [(plain(name), name) for name in names],
        value=current if current in names else Select.BLANK,
        allow_blank=False,
        id=widget_id,
    )


class ConfirmScreen(ModalScreen[bool]):
    """Ask before something destructive; `y` confirms, `n` or esc cancels."""

    BINDINGS: ClassVar[list[Binding]] = [
        Binding("y", "answer(True)", "yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "no", id="confirm.no"),
    ]

    def __init__(self, question: str, detail: str = "", yes: str = "Delete (y)") -> None:
        super().__init__()
        self.question = question
        self.detail = detail
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(plain(self.question), classes="dialog-title")
            if self.detail:
                yield Label(plain(self.detail, lines=True), classes="dialog-detail")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, id="yes", variant="error")
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


@dataclass(frozen=True)
class Pick:
    value: str
    all_processes: bool = False


class StopAtEnds(OptionList):
    """An option list whose cursor stops at the first and last option instead of wrapping.

    A list of signals must not turn "one more up from SIGTERM" into SIGCONT or SIGSTOP.
    """

    def action_cursor_up(self) -> None:
        self._step(-1)

    def action_cursor_down(self) -> None:
        self._step(1)

    def _step(self, direction: Literal[-1, 1]) -> None:
        if self.highlighted is None:
            self.highlighted = 0 if self.option_count else None
            return
        target = self.highlighted + direction
        while 0 <= target < self.option_count and self.get_option_at_index(target).disabled:
            target += direction
        if 0 <= target < self.option_count:
            self.highlighted = target


class PickScreen(ModalScreen[Pick | None]):
    """Pick one option (a signal, a namespace); `a` toggles "all processes" when offered."""

    BINDINGS: ClassVar[list[Binding]] = [
        Binding("escape", "cancel", "cancel", id="pick.cancel"),
        Binding("j", "cursor('down')", show=False, id="pick.down"),
        Binding("k", "cursor('up')", show=False, id="pick.up"),
        Binding("g", "cursor('first')", show=False, id="pick.top"),
        Binding("G", "cursor('last')", show=False, id="pick.bottom"),
    ]

    def __init__(
        self,
        title: str,
        options: list[tuple[str, str]],
        *,
        selected: str | None = None,
        offer_all: bool = False,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.options = options
        self.selected = selected
        self.offer_all = offer_all

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(plain(self.title_text), classes="dialog-title")
            yield StopAtEnds(*(Option(plain(label), id=value) for value, label in self.options))
            if self.offer_all:
                yield Tickbox("all processes in the container (a)", id="all")

    def on_mount(self) -> None:
        option_list = self.query_one(OptionList)
        option_list.focus()
        if self.selected is not None:
            for i, (value, _label) in enumerate(self.options):
                if value == self.selected:
                    option_list.highlighted = i

    def key_a(self) -> None:
        if self.offer_all:
            box = self.query_one("#all", Checkbox)
            box.value = not box.value

    def action_cursor(self, direction: str) -> None:
        option_list = self.query_one(OptionList)
        moves = {
            "down": option_list.action_cursor_down,
            "up": option_list.action_cursor_up,
            "first": option_list.action_first,
            "last": option_list.action_last,
        }
        moves[direction]()

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        all_processes = self.offer_all and self.query_one("#all", Checkbox).value
        self.dismiss(Pick(str(event.option.id), all_processes))

    def action_cancel(self) -> None:
        self.dismiss(None)


class RunScreen(ModalScreen[RunOptions | None]):
    """The Run form: what `ctr run` asks, each field defaulting to the image's choice.

    The new container's id, its command (shell words; empty runs the image's),
    environment (`NAME=VALUE` words), working directory, one bind mount
    (`SRC:DST[:ro]`), snapshotter and runtime, and whether it gets a terminal, is
    removed when it exits (`--rm`) and has a read-only root filesystem. A field that
    cannot be used says so in the form, which stays open.
    """

    BINDINGS: ClassVar[list[Binding]] = [Binding("escape", "cancel", "cancel", id="run.cancel")]

    def __init__(
        self,
        image: str,
        suggested_id: str,
        snapshotters: list[str],
        snapshotter: str,
        runtime: str,
        *,
        default_command: str = "",
        default_cwd: str = "",
    ) -> None:
        super().__init__()
        self.image = image
        self.suggested_id = suggested_id
        self.snapshotters = snapshotters or [snapshotter]
        self.snapshotter = snapshotter
        self.runtime = runtime
        self.default_command = default_command
        self.default_cwd = default_cwd

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog run") as box:
            box.border_title = plain(f"Run {self.image}")
            box.border_subtitle = "enter runs · esc cancels"
            with Grid(classes="run-grid"):
                yield Label("container id")
                yield Input(self.suggested_id, id="run-id", compact=True)
                yield Label("command")
                image_command = f"image's: {self.default_command}" if self.default_command else ""
                yield Input(
                    placeholder=image_command or "the image's command",
                    id="run-args",
                    compact=True,
                )
                yield Label("environment")
                yield Input(placeholder="NAME=VALUE ...", id="run-env", compact=True)
                yield Label("working dir")
                cwd_hint = f"image's: {self.default_cwd}" if self.default_cwd else "the image's"
                yield Input(placeholder=cwd_hint, id="run-cwd", compact=True)
                yield Label("mount")
                yield Input(placeholder="none (SRC:DST[:ro])", id="run-mount", compact=True)
                yield Label("snapshotter")
                yield snapshotter_select(self.snapshotters, self.snapshotter, "run-snapshotter")
                yield Label("runtime")
                yield Input(self.runtime, id="run-runtime", compact=True)
            with Horizontal(classes="run-flags"):
                yield Tickbox("tty", id="run-tty", compact=True)
                yield Tickbox("remove when it exits", id="run-rm", compact=True)
                yield Tickbox("read-only rootfs", id="run-read-only", compact=True)
            yield Label("", id="run-problem", classes="dialog-detail hidden")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Run", id="run", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#run-id", Input).focus()

    def options(self) -> RunOptions:
        def text(name: str) -> str:
            return self.query_one(f"#run-{name}", Input).value

        def checked(name: str) -> bool:
            return self.query_one(f"#run-{name}", Checkbox).value

        return RunOptions.parse(
            text("id"),
            str(self.query_one("#run-snapshotter", Select).value),
            runtime=text("runtime"),
            args=text("args"),
            env=text("env"),
            cwd=text("cwd"),
            tty=checked("tty"),
            remove=checked("rm"),
            read_only=checked("read-only"),
            mount=text("mount"),
        )

    @on(Input.Submitted)
    @on(Button.Pressed, "#run")
    def submit(self) -> None:
        try:
            options = self.options()
        except OptionError as exc:
            problem = self.query_one("#run-problem", Label)
            problem.update(str(exc))
            problem.remove_class("hidden")
            return
        self.dismiss(options)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
