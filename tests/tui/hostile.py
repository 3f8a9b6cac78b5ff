"""A corpus of hostile strings: what a node, a registry or a container may hand the console.

Each is something Rich or Textual would parse as markup, something a terminal
would obey, something that hides from the eye, or something too big for a
line. The console tests put them into a real engine (as snapshot keys,
container ids, labels, image names, log lines) and check that the screen shows
them as text and never passes a control code on.
"""

from __future__ import annotations

MARKUP = "[/x] snap"
CLOSE_ALL = "[/]"
ERROR_TAG = "[error]"
REGEX = "must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
BOLD = "[bold red]loud[/bold red]"
LINK = "[link=file:///etc/passwd]click[/link]"
OSC_TITLE = "\x1b]0;pwned\x07"
CSI_CLEAR = "\x1b[2J\x1b[H"
CSI_COLOUR = "\x1b[31mred\x1b[0m"
C1_CSI = "\x9b2J"
BEL = "ding\x07"
ZERO_WIDTH = "we\u200bb\u200d-1\ufeff"
RTL = "evil\u202egnp.exe\u2066x\u2069"
TAG_CHARS = "hi\U000e0041\U000e0042"
NEWLINES = "first\nsecond\r\nthird"
LONG = "A" * 10_000

CORPUS: dict[str, str] = {
    "markup": MARKUP,
    "close-all": CLOSE_ALL,
    "error-tag": ERROR_TAG,
    "regex": REGEX,
    "bold": BOLD,
    "link": LINK,
    "osc-title": OSC_TITLE,
    "csi-clear": CSI_CLEAR,
    "csi-colour": CSI_COLOUR,
    "c1-csi": C1_CSI,
    "bel": BEL,
    "zero-width": ZERO_WIDTH,
    "rtl": RTL,
    "tag-chars": TAG_CHARS,
    "newlines": NEWLINES,
    "long": LONG,
}

# What must never reach the terminal from untrusted text: C0 controls but for
# the newline the screen itself draws with, DEL, C1, bidi and zero-width.
FORBIDDEN = (
    {chr(c) for c in range(0x20) if c != 0x0A}
    | {chr(0x7F)}
    | {chr(c) for c in range(0x80, 0xA0)}
    | set("\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    | {"\ufeff", "\u2028", "\u2029"}
)


def forbidden_in(text: str) -> set[str]:
    return {c for c in text if c in FORBIDDEN or 0xE0000 <= ord(c) <= 0xE007F}
