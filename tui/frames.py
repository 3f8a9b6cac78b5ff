"""What reaches the terminal: only the cells that changed, in glyphs it can show.

Textual repaints whole widget regions: a table whose one cell changed is sent
again line by line, an open dialog sends the screen under it again when that
changes, and a refresh that changes nothing visible is sent all the same. Over
SSH every one of those frames is bytes on the wire. `Shadow` keeps what each
terminal cell shows (its text and the SGR codes it was drawn with) and turns
each compositor update into writes for the cells that differ from it, so a
frame that changes nothing visible writes nothing at all.

It also owns the output's colours and alphabet. Under `NO_COLOR`, or on a
terminal that says it has no colours (`TERM=dumb`), `Colourless` takes every
colour out of what is drawn (Textual would send greys, or 24-bit colour), so
no colour codes go out at all; weight, slant and reverse still show state. On
a terminal whose encoding cannot carry a glyph (an ISO-8859-1 locale has no
box-drawing characters), `Alphabet` draws an ASCII one of the same width
instead of Python's `\\u256d` escape.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from functools import lru_cache

from rich.cells import cell_len
from rich.color import ColorSystem
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from textual._compositor import ChopsUpdate, CompositorUpdate, LayoutUpdate
from textual.color import Color
from textual.filter import LineFilter
from textual.strip import Strip

# One-cell ASCII stand-ins for the glyphs Textual and the console draw.
ASCII_GLYPHS = str.maketrans(
    {
        **dict.fromkeys("╭╮╰╯┌┐└┘├┤┬┴┼╔╗╚╝", "+"),
        **dict.fromkeys("─━═╌╍┄┅▁▔", "-"),
        **dict.fromkeys("│┃║╎╏┆┇▏▕▎▍▌▐▊▋▉", "|"),
        **dict.fromkeys("█▇▆▅▄▃▂▀░▒▓", "#"),
        **dict.fromkeys("▸▶►→⏵", ">"),
        **dict.fromkeys("◂◀◄←⏴", "<"),
        **dict.fromkeys("▲▴↑", "^"),
        **dict.fromkeys("▼▾↓", "v"),
        **dict.fromkeys("·•●◉∙", "*"),
        **dict.fromkeys("○◯", "o"),
        **dict.fromkeys("✓✔", "v"),
        **dict.fromkeys("✗✘✕", "x"),
        **dict.fromkeys("…", "~"),
        **dict.fromkeys("⏎↵", "J"),
        **dict.fromkeys("␣", "_"),
        **dict.fromkeys("\u00a0", " "),
    }
)


class Colourless(LineFilter):
    """Takes every colour out of the segments, keeping attributes and mouse metadata."""

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        return [
            Segment(text, None if style is None else _colourless(style), control)
            for text, style, control in segments
        ]


@lru_cache(4096)
def _colourless(style: Style) -> Style:
    if style._color is None and style._bgcolor is None:
        return style
    plain = style.without_color
    # `without_color` drops the metadata Textual routes mouse clicks with.
    return plain + Style.from_meta(style.meta) if style._meta else plain


class Alphabet:
    """Folds text into what the output encoding can carry, keeping each glyph's width."""

    def __init__(self, encoding: str | None) -> None:
        name = codecs.lookup(encoding or "utf-8").name
        self.unicode = name.startswith("utf")
        self._encoding = name
        self._cache: dict[str, str] = {}

    def fold(self, text: str) -> str:
        if self.unicode or text.isascii():
            return text
        folded = self._cache.get(text)
        if folded is None:
            folded = "".join(self._char(c) for c in text)
            if len(self._cache) < 4096:
                self._cache[text] = folded
        return folded

    def _char(self, char: str) -> str:
        if self._carries(char):
            return char
        stand_in = char.translate(ASCII_GLYPHS)
        return stand_in if stand_in != char else "?" * max(cell_len(char), 1)

    def _carries(self, char: str) -> bool:
        try:
            char.encode(self._encoding)
        except UnicodeEncodeError:
            return False
        return True


class Writes(CompositorUpdate):
    """The terminal sequences of one frame's changed cells."""

    def __init__(self, text: str) -> None:
        self.text = text

    def render_segments(self, console: Console) -> str:
        return self.text


class Shadow:
    """The terminal's cells as last written; turns compositor updates into minimal writes."""

    def __init__(self, alphabet: Alphabet) -> None:
        self.alphabet = alphabet
        self._chars: list[list[str | None]] = []
        self._codes: list[list[str | None]] = []

    def reset(self) -> None:
        """Forget what the terminal shows (after a resize, or anything else that redrew it)."""
        self._chars.clear()
        self._codes.clear()

    def update(
        self, update: CompositorUpdate, color_system: ColorSystem | None
    ) -> CompositorUpdate | None:
        """The writes that make the terminal show `update`; None when it already does."""
        if isinstance(update, LayoutUpdate):
            pieces = self._layout_pieces(update)
        elif isinstance(update, ChopsUpdate):
            pieces = self._chops_pieces(update)
        else:
            # Not a kind this console draws (inline mode): written as it is, shadow unknown.
            self.reset()
            return update
        system = color_system or ColorSystem.TRUECOLOR
        out = _Output()
        # A run of changed cells that share their codes is drawn as one piece of text.
        run: list[str] = []
        run_style: Style | None = None
        run_code = ""
        cursor = (-1, -1)
        for y, x, strip in pieces:
            chars, codes = self._row(y, x + strip.cell_length)
            for text, style, control in strip:
                if control or not text:
                    continue
                width = cell_len(text)
                cells: list[str | None] = (
                    list(text) if len(text) == width else [text] + [""] * (width - 1)
                )
                code = _code(style, system)
                end = x + width
                if chars[x:end] != cells or codes[x:end] != [code] * width:
                    chars[x:end] = cells
                    codes[x:end] = [code] * width
                    if cursor != (x, y) or code != run_code:
                        if run:
                            out.draw(run_style, run_code, "".join(run))
                            run.clear()
                        if cursor != (x, y):
                            out.move(x, y)
                        run_style, run_code = style, code
                    run.append(self.alphabet.fold(text))
                    cursor = (end, y)
                x = end
        if run:
            out.draw(run_style, run_code, "".join(run))
        text = out.finish()
        return Writes(text) if text else None

    def _row(self, y: int, width: int) -> tuple[list[str | None], list[str | None]]:
        while len(self._chars) <= y:
            self._chars.append([])
            self._codes.append([])
        chars, codes = self._chars[y], self._codes[y]
        if len(chars) < width:
            chars.extend([None] * (width - len(chars)))
            codes.extend([None] * (width - len(codes)))
        return chars, codes

    @staticmethod
    def _layout_pieces(update: LayoutUpdate) -> Iterator[tuple[int, int, Strip]]:
        for y, line in enumerate(update.strips, update.region.y):
            x = update.region.x
            for strip in line:
                yield y, x, strip
                x += strip.cell_length

    @staticmethod
    def _chops_pieces(update: ChopsUpdate) -> Iterator[tuple[int, int, Strip]]:
        # The same cuts and crops as `ChopsUpdate.render_segments`.
        for y, x1, x2 in update.spans:
            line = update.chops[y]
            for end, (x, strip) in zip(update.chop_ends[y], line.items(), strict=False):
                if strip is None or x > x2 or end <= x1:
                    continue
                if not (x2 > x >= x1 and end <= x2):
                    strip = strip.crop(0, min(end, x2) - x)
                yield y, x, strip


def _code(style: Style | None, system: ColorSystem) -> str:
    if style is None:
        return ""
    code = Strip.render_ansi(style, system) if style._ansi is None else style._ansi
    return f"{code}\x00{style._link}" if style._link else code


class _Output:
    """Terminal sequences that keep the SGR state between pieces.

    Moving the cursor leaves colours and attributes as they are, so rows that
    share a style (most of a table) send their codes once, not once a piece.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._codes = ""

    def move(self, x: int, y: int) -> None:
        self._parts.append(f"\x1b[{y + 1};{x + 1}H")

    def draw(self, style: Style | None, code: str, text: str) -> None:
        ansi, _, link = code.partition("\x00")
        if link and style is not None:
            # A hyperlink is drawn whole, and leaves the state reset.
            self._set("")
            self._parts.append(
                f"\x1b]8;id={style._link_id};{style._link}\x1b\\"
                f"\x1b[{ansi}m{text}\x1b[0m\x1b]8;;\x1b\\"
            )
            return
        self._set(ansi)
        self._parts.append(text)

    def _set(self, ansi: str) -> None:
        if ansi != self._codes:
            self._parts.append(f"\x1b[0;{ansi}m" if ansi else "\x1b[0m")
            self._codes = ansi

    def finish(self) -> str:
        # Whatever is written after a frame (Textual's cursor move) starts from no style.
        self._set("")
        return "".join(self._parts)
