"""The sanitizer every untrusted string goes through (`tui.plain`), on the hostile corpus."""

from __future__ import annotations

import io
import sys
import unicodedata

import pytest
from rich.console import Console

from tests.tui.hostile import CORPUS, forbidden_in
from tui import plain


def rendered(text: object) -> str:
    """What Rich writes to a terminal for `text`, escape codes and all."""
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=True, color_system="truecolor")
    console.print(text)
    return out.getvalue()


@pytest.mark.parametrize("name", sorted(CORPUS))
@pytest.mark.parametrize("lines", [False, True])
def test_nothing_hostile_survives_clean(name: str, lines: bool) -> None:
    out = plain.clean(CORPUS[name], lines=lines)
    assert not forbidden_in(out)
    if not lines:
        assert "\n" not in out


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_plain_text_is_never_markup(name: str) -> None:
    text = plain.plain(CORPUS[name])
    # A Text is never parsed: what is shown is the cleaned string, brackets and all.
    assert text.plain == plain.clean(CORPUS[name])
    assert not text.spans
    written = rendered(text)
    # Rich's own escape codes (none for unstyled text) are all that may reach the terminal.
    assert "\x1b]" not in written and "\x07" not in written and "\x1b[2J" not in written


def test_markup_is_shown_as_typed() -> None:
    for s in ("[/x] snap", "[/]", "[error]", "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"):
        assert plain.clean(s) == s
        assert plain.plain(s).plain == s


def test_controls_become_visible_stand_ins() -> None:
    assert plain.clean("\x1b]0;pwned\x07") == "␛]0;pwned␇"
    assert plain.clean("\x1b[2J") == "␛[2J"
    assert plain.clean("a\x7fb") == "a␡b"
    assert plain.clean("\x9b2J") == "\ufffd2J"
    assert plain.clean("\x00") == "␀"


def test_invisible_characters_show() -> None:
    assert plain.clean("we\u200bb") == "we\ufffdb"
    assert plain.clean("evil\u202egnp.exe") == "evil\ufffdgnp.exe"
    assert plain.clean("a\u2028b") == "a\ufffdb"
    # Tag characters hide text from the eye; a lone surrogate cannot even be encoded.
    assert plain.clean("hi\U000e0041") == "hi\ufffd"
    assert plain.clean("x\udcff") == "x\ufffd"
    # What is merely unusual stays: a no-break space, private use, accents, CJK.
    kept = "a\u00a0b \ue000 café 東京"
    assert plain.clean(kept) == kept


def test_every_format_character_is_replaced() -> None:
    formats = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    assert formats
    assert set(plain.clean("".join(formats))) == {"\ufffd"}


def test_newlines_in_a_line_and_in_a_block() -> None:
    assert plain.clean("a\nb\r\nc") == "a␤b␍␤c"
    assert plain.clean("a\nb\r\nc", lines=True) == "a\nb\nc"
    assert plain.clean("a\tb") == "a b"
    assert plain.clean("a\tb", lines=True) == "a       b"
    # Cleaning keeps one character for one in a line, so widths computed before still hold.
    for s in CORPUS.values():
        short = s[:100]
        assert len(plain.clean(short)) == len(short)


def test_long_text_is_cut_and_says_so() -> None:
    out = plain.clean("A" * 10_000)
    assert out.startswith("A" * plain.LINE_LIMIT)
    assert out.endswith(f"… ({10_000 - plain.LINE_LIMIT} more characters)")
    assert plain.clean("A" * 10_000, lines=True) == "A" * 10_000
    assert plain.clean("abc", limit=2) == "ab… (1 more characters)"


def test_brief_for_toasts() -> None:
    assert plain.brief("short", 20) == "short"
    assert plain.brief("first\nsecond", 20) == "first…"
    assert plain.brief("first\nsecond\nthird", 20, max_lines=2) == "first\nsecond…"
    assert plain.brief("first\nsecond", 20, max_lines=2) == "first\nsecond"
    assert plain.brief("x" * 50, 20) == "x" * 19 + "…"
    assert plain.brief("[/x] \x1b[2J\x07", 20) == "[/x] ␛[2J␇"
