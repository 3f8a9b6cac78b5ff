"""Help for the focused pane: its keys, the keys that work everywhere, and where the keymap lives.

Everything here comes from `tui.commands` and the active keymap, so the help
shows the keys as the operator has remapped them, with the binding ids to use
in the keymap file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui import commands
from tui.plain import plain


def help_table(pane: str, keymap: Mapping[str, str], read_only: bool) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column("keys", no_wrap=True, style="bold")
    table.add_column("what")
    table.add_column("id", style="dim", no_wrap=True)
    sections = [(commands.PANE_TITLES[pane], pane)]
    if pane != commands.SCREEN:
        sections.append((commands.PANE_TITLES[commands.SCREEN], commands.SCREEN))
    for title, section in sections:
        table.add_row(Text(title, style="underline"), "", "")
        for c in commands.for_pane(section):
            if read_only and c.mutates:
                continue
            keys = " ".join(commands.display_key(k) for k in commands.keys_of(c, keymap))
            table.add_row(plain(keys), c.description, c.id)
        table.add_row("", "", "")
    table.add_row("ctrl+p", "Command palette: every action by name", "")
    table.add_row("tab 1-4", "Next pane; containers, images, snapshots, content", "")
    table.add_row("j k g G", "Down, up, top, bottom", "nav.*")
    table.add_row("esc", "Close a dialog, clear a filter, leave a zoom", "")
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("escape,question_mark,q", "close", "close", id="help.close"),
        Binding("j", "scroll('down')", show=False, id="help.down"),
        Binding("k", "scroll('up')", show=False, id="help.up"),
    ]

    def __init__(
        self, pane: str, keymap: Mapping[str, str], read_only: bool, keymap_path: Path
    ) -> None:
        super().__init__()
        self.pane = pane
        self.keymap = keymap
        self.read_only = read_only
        self.keymap_path = keymap_path

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help") as scroll:
            scroll.border_title = f"Help ▸ {commands.PANE_TITLES[self.pane]}"
            scroll.border_subtitle = "esc closes"
            yield Static(help_table(self.pane, self.keymap, self.read_only))
            note = f"Remap keys by binding id in {self.keymap_path} (a [keys] table)."
            if self.read_only:
                note += "  Read-only: actions that change the node are off."
            yield Static(plain(note), classes="help-note")

    def action_close(self) -> None:
        self.dismiss(None)

    def action_scroll(self, direction: str) -> None:
        scroll = self.query_one(VerticalScroll)
        scroll.scroll_relative(y=1 if direction == "down" else -1, animate=False)
