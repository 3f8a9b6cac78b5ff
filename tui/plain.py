"""Untrusted text made safe to show: never markup, never a terminal control code.

Everything the console shows that came from the engine, a registry, a
container or the operator (ids, references, labels, log lines, error
messages, search terms) goes through here. `plain()` returns a
`rich.text.Text`, which Rich and Textual never parse as markup, so a `[/x]` or
`[error]` is shown as typed. `clean()` replaces what a terminal would act on
or what would hide from the eye with a visible stand-in, character for
character: C0 controls become their Control Pictures (ESC shows as `␛`, BEL as
`␇`, so an OSC title-set or a CSI clear is printed, not obeyed), DEL `␡`, and
C1 controls, Unicode format characters (zero-width spaces and joiners, bidi
embeddings, overrides and isolates, invisible tag characters), lone
surrogates and line or paragraph separators `�`. In one-line text (cells,
titles, labels, toasts) a newline shows as `␤` and a tab as a space, so a
label cannot fake a second row; in a block (inspect values, log lines) line
breaks stay and tabs expand. Very long text is cut, saying how much was left
out, so one 10 MB log line or label cannot stall a repaint.
"""

from __future__ import annotations

import unicodedata

from rich.text import Text

LINE_LIMIT = 2000
BLOCK_LIMIT = 64 * 1024
TAB_SIZE = 8
NEWLINE_PICTURE = "\u2424"
REPLACEMENT = "\ufffd"
# Harmless to a terminal and not invisible: kept. Other separators (a
# no-break space) are too; Python calls them non-printable only by category.
_KEPT_CATEGORIES = frozenset({"Zs", "Co", "Cn"})


def _stand_in(ch: str, lines: bool) -> str:
    code = ord(ch)
    if ch == "\t":
        return ch if lines else " "
    if ch == "\n":
        return ch if lines else NEWLINE_PICTURE
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "\u2421"
    if unicodedata.category(ch) in _KEPT_CATEGORIES:
        return ch
    return REPLACEMENT


def _cut(text: str, limit: int) -> tuple[str, int]:
    if len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit


def clean(text: str, *, lines: bool = False, limit: int | None = None) -> str:
    """`text` with every control and invisible character replaced (see the module docstring)."""
    if limit is None:
        limit = BLOCK_LIMIT if lines else LINE_LIMIT
    head, left_out = _cut(text, limit)
    if not head.isprintable():
        if lines:
            head = head.replace("\r\n", "\n")
        head = "".join(c if c.isprintable() else _stand_in(c, lines) for c in head)
        if lines and "\t" in head:
            head = "\n".join(line.expandtabs(TAB_SIZE) for line in head.split("\n"))
    if left_out:
        head += f"… ({left_out} more characters)"
    return head


def plain(text: object, style: str = "", *, lines: bool = False, limit: int | None = None) -> Text:
    """`text` as a Rich `Text` that shows exactly what it says, cleaned; `style` applies to all."""
    return Text(clean(str(text), lines=lines, limit=limit), style=style)


def brief(text: str, limit: int, max_lines: int = 1) -> str:
    """`text` cleaned, in at most `max_lines` lines and `limit` characters; an ellipsis if cut."""
    lines = [line.rstrip() for line in clean(text.strip(), lines=True, limit=len(text)).split("\n")]
    kept = "\n".join(lines[:max_lines])
    if len(kept) > limit:
        return kept[: max(limit - 1, 0)].rstrip() + "…"
    if len(lines) > max_lines:
        return kept + "…"
    return kept
