"""Small modal dialogs: confirm, pick one of a list, and the run form.

Each returns its answer through `dismiss`, so the caller awaits a plain value
(`True`/`False`, the picked option, the form's fields, or None for cancel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, OptionList, Select
from textual.widgets.option_list import Option

from tui.widgets.checkbox import Tickbox


class ConfirmScreen(ModalScreen[bool]):
    """Ask before something destructive; `y` confirms, `n` or esc cancels."""

    BINDINGS: ClassVar[list[Binding]] = [
        Binding("y", "answer(True)", "yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "no", id="confirm.no"),
    ]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-title")
            if self.detail:
                yield Label(self.detail, classes="dialog-detail")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Delete (y)", id="yes", variant="error")
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


class PickScreen(ModalScreen[Pick | None]):
    """Pick one option (a signal, a namespace); `a` toggles "all processes" when offered."""

    BINDINGS: ClassVar[list[Binding]] = [
        Binding("escape", "cancel", "cancel", id="pick.cancel"),
        Binding("j", "cursor('down')", show=False, id="pick.down"),
        Binding("k", "cursor('up')", show=False, id="pick.up"),
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
            yield Label(self.title_text, classes="dialog-title")
            yield OptionList(*(Option(label, id=value) for value, label in self.options))
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
        if direction == "down":
            option_list.action_cursor_down()
        else:
            option_list.action_cursor_up()

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        all_processes = self.offer_all and self.query_one("#all", Checkbox).value
        self.dismiss(Pick(str(event.option.id), all_processes))

    def action_cancel(self) -> None:
        self.dismiss(None)


@dataclass(frozen=True)
class RunForm:
    container_id: str
    snapshotter: str
    runtime: str


class RunScreen(ModalScreen[RunForm | None]):
    """The few choices of `run`: the new container's id, its snapshotter and runtime."""

    BINDINGS: ClassVar[list[Binding]] = [Binding("escape", "cancel", "cancel", id="run.cancel")]

    def __init__(
        self, image: str, suggested_id: str, snapshotters: list[str], snapshotter: str, runtime: str
    ) -> None:
        super().__init__()
        self.image = image
        self.suggested_id = suggested_id
        self.snapshotters = snapshotters or [snapshotter]
        self.snapshotter = snapshotter
        self.runtime = runtime

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Run {self.image}", classes="dialog-title")
            yield Label("container id")
            yield Input(self.suggested_id, id="run-id")
            yield Label("snapshotter")
            yield Select(
                [(s, s) for s in self.snapshotters],
                value=self.snapshotter if self.snapshotter in self.snapshotters else Select.BLANK,
                allow_blank=False,
                id="run-snapshotter",
            )
            yield Label("runtime")
            yield Input(self.runtime, id="run-runtime")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Run", id="run", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#run-id", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#run")
    def submit(self) -> None:
        container_id = self.query_one("#run-id", Input).value.strip()
        if not container_id:
            self.notify("a container needs an id", severity="warning")
            return
        self.dismiss(
            RunForm(
                container_id=container_id,
                snapshotter=str(self.query_one("#run-snapshotter", Select).value),
                runtime=self.query_one("#run-runtime", Input).value.strip(),
            )
        )

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
