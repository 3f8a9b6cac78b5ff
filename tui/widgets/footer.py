"""The footer: the focused pane's keys, as many as the width holds, the most useful first.

Textual's footer lays every key out in a row and lets the last ones collide
with the palette key at 80 columns. This one keeps Textual's key widgets (so a
click still presses the key) but chooses which to show: keys are ranked (help,
the command line and quit first, since they lead to everything else, then the
pane's own actions, then the screen-wide ones), the best-ranked that fit are
kept, and they are shown in the order the screen declares them. Actions that do
not apply to the selected row are not offered at all (see `MainScreen.applies`).
The palette key shows only when every other key did and there is room left
(`ctrl+p` works anyway).
"""

from __future__ import annotations

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Footer

from tui import commands

# Lower ranks win the room. Commands not named here come after these, in order.
RANKED = (
    # Help, the command line and quit lead the way to everything else: they always stay.
    "app.help",
    "app.command_line",
    "app.quit",
    "table.inspect",
    "container.start",
    "container.pause",
    "container.kill",
    "container.logs",
    "image.run",
    "namespace.switch",
    "events.pause",
    "app.pull",
    "table.filter",
    "table.delete",
    "events.clear",
)
RANK = {commands.BY_ID[cid].binding().action: rank for rank, cid in enumerate(RANKED)}
PALETTE_CLASS = "-command-palette"


def key_width(key_display: str, description: str, *, palette: bool = False) -> int:
    """The cells one footer key takes, as Textual's footer styles it: ` k desc `."""
    cells = cell_len(key_display) + cell_len(description) + 3
    # The palette key is docked right, behind a one-cell rule and with a cell of padding.
    return cells + 2 if palette else cells


class KeyFooter(Footer):
    def __init__(self) -> None:
        super().__init__()
        self._laid_out_for = -1

    def compose(self) -> ComposeResult:
        width = self.app.size.width
        keys: list[Widget] = []
        palette: Widget | None = None
        for widget in super().compose():
            if widget.has_class(PALETTE_CLASS):
                palette = widget
            else:
                keys.append(widget)

        def cells(widget: Widget, *, is_palette: bool = False) -> int:
            return key_width(
                getattr(widget, "key_display", ""),
                getattr(widget, "description", ""),
                palette=is_palette,
            )

        ranked = sorted(
            range(len(keys)), key=lambda i: (RANK.get(getattr(keys[i], "action", ""), 99), i)
        )
        room = width
        chosen: set[int] = set()
        for i in ranked:
            need = cells(keys[i])
            if need <= room:
                chosen.add(i)
                room -= need
        self._laid_out_for = width
        yield from (key for i, key in enumerate(keys) if i in chosen)
        if (
            palette is not None
            and len(chosen) == len(keys)
            and cells(palette, is_palette=True) <= room
        ):
            yield palette

    def on_resize(self, event: events.Resize) -> None:
        if self._bindings_ready and event.size.width != self._laid_out_for:
            self.call_after_refresh(self.recompose)
