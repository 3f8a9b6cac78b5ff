"""A checkbox whose state reads in text, not in colour alone.

Textual's `Checkbox` draws `▐X▌` both ways and tells on from off by colour
only, which is lost under NO_COLOR, on a monochrome terminal and to a
colour-blind operator. `Tickbox` draws `[x]` when on and `[ ]` when off;
every checkbox in the console is one.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Checkbox


class Tickbox(Checkbox):
    """A `Checkbox` that shows its state as `[x]` or `[ ]`."""

    @property
    def _button(self) -> Content:
        mark = "x" if self.value else " "
        return Content.assemble("[", (mark, self.get_visual_style("toggle--button")), "]")
