"""The filter language of containerd's API.

This module owns the expressions that every ``filters``/``filter`` request field
carries (containerd's ``filters`` package): it parses a filter string once into
a compiled matcher, and matches that matcher against any object through an
:data:`Adaptor`, a function that resolves a field path to ``(value, present)``.
A string is a comma-separated AND of selectors; a list of strings is an OR.
:func:`field_adaptor` builds the adaptor shape shared by all object kinds (plain
fields plus label-like maps). Syntax errors raise
:class:`~core.errors.InvalidArgument` shaped like containerd's
(``filters: parse error: [<input>]: <reason>``).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.errors import InvalidArgument

Adaptor = Callable[[Sequence[str]], tuple[str, bool]]
"""Resolves a field path such as ``["labels", "foo"]`` to ``(value, present)``."""


class Filter(Protocol):
    def match(self, adaptor: Adaptor) -> bool: ...


class MatchAll:
    """Matches every object: what an empty filter (or filter list) means."""

    def match(self, adaptor: Adaptor) -> bool:
        return True

    def __repr__(self) -> str:
        return "ALWAYS"


ALWAYS = MatchAll()


@dataclass(frozen=True)
class Present:
    """Bare ``field``: the adaptor reports the field as present."""

    fieldpath: tuple[str, ...]

    def match(self, adaptor: Adaptor) -> bool:
        return adaptor(list(self.fieldpath))[1]


@dataclass(frozen=True)
class Equal:
    """``field==value``: present and equal."""

    fieldpath: tuple[str, ...]
    value: str

    def match(self, adaptor: Adaptor) -> bool:
        value, present = adaptor(list(self.fieldpath))
        return present and value == self.value


@dataclass(frozen=True)
class NotEqual:
    """``field!=value``: an absent field counts as ``""``."""

    fieldpath: tuple[str, ...]
    value: str

    def match(self, adaptor: Adaptor) -> bool:
        value, present = adaptor(list(self.fieldpath))
        return (value if present else "") != self.value


@dataclass(frozen=True)
class Matches:
    """``field~=regex``: unanchored search; an absent field counts as ``""``."""

    fieldpath: tuple[str, ...]
    pattern: re.Pattern[str]

    def match(self, adaptor: Adaptor) -> bool:
        value, present = adaptor(list(self.fieldpath))
        return self.pattern.search(value if present else "") is not None


@dataclass(frozen=True)
class AllOf:
    """The selectors of one filter string, joined by commas."""

    filters: tuple[Filter, ...]

    def match(self, adaptor: Adaptor) -> bool:
        return all(f.match(adaptor) for f in self.filters)


@dataclass(frozen=True)
class AnyOf:
    """The filter strings of a repeated ``filters`` field."""

    filters: tuple[Filter, ...]

    def match(self, adaptor: Adaptor) -> bool:
        return any(f.match(adaptor) for f in self.filters)


def parse(filter_str: str) -> Filter:
    """Compile one filter string; blank means "match everything"."""
    if not filter_str.strip():
        return ALWAYS
    return _Parser(filter_str).parse()


def parse_all(filters: Sequence[str]) -> Filter:
    """Compile a list of filter strings into their OR; an empty list matches everything."""
    if isinstance(filters, str):
        # A bare string is a Sequence[str] too; iterating it would OR its characters.
        raise TypeError("parse_all takes a list of filter strings, not a string")
    compiled = [parse(f) for f in filters]
    if not compiled or any(f is ALWAYS for f in compiled):
        return ALWAYS
    return AnyOf(tuple(compiled))


def field_adaptor(
    fields: Mapping[str, str], maps: Mapping[str, Mapping[str, str]] | None = None
) -> Adaptor:
    """Build an adaptor over plain fields (dotted paths) and label-like maps.

    ``fields`` maps dotted paths (``"target.digest"``) to values; ``maps`` maps a
    first path component (``"labels"``, ``"annotations"``) to a dict whose key is
    the rest of the path joined with dots, so ``labels.a.b`` addresses key ``a.b``.
    """
    map_fields: Mapping[str, Mapping[str, str]] = maps or {}

    def adapt(fieldpath: Sequence[str]) -> tuple[str, bool]:
        if not fieldpath:
            return "", False
        entries = map_fields.get(fieldpath[0])
        if entries is not None:
            key = ".".join(fieldpath[1:])
            # As containerd's map lookup: a key set to "" still counts as present.
            if key in entries:
                return entries[key], True
            return "", False
        value = fields.get(".".join(fieldpath), "")
        # As containerd's object adaptors: a plain field is present only when non-empty.
        return value, value != ""

    return adapt


_FIELD_CHARS = frozenset(string.ascii_letters + string.digits + "_")
_OPERATOR_CHARS = frozenset("=!~")
_ALT_QUOTES = ("/", "|")
_SIMPLE_ESCAPES = {
    "a": b"\a",
    "b": b"\b",
    "f": b"\f",
    "n": b"\n",
    "r": b"\r",
    "t": b"\t",
    "v": b"\v",
    "\\": b"\\",
}
# escape letter -> number of hex digits that follow it
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
_OCTAL_DIGITS = frozenset("01234567")
_HEX_DIGITS = frozenset(string.hexdigits)


def _is_value_char(ch: str) -> bool:
    return ch != "," and not ch.isspace() and ch.isprintable()


class _Parser:
    """Recursive-descent parser over one filter string.

    Unlike containerd, whitespace is skipped before every token (containerd
    rejects e.g. a space before a comma), a leading ``/`` or ``|`` in an
    ``==``/``!=`` value is plain text (containerd rejects it as a quote), and a
    ``~=`` pattern is compiled here with Python's ``re`` so a bad one is a parse
    error (containerd 1.6 compiles RE2 lazily and a bad pattern matches nothing).
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0

    def parse(self) -> AllOf:
        selectors = [self._selector()]
        while True:
            ch = self._peek()
            if ch == "":
                return AllOf(tuple(selectors))
            if ch != ",":
                raise self._error(self._pos, f"unexpected input: {ch}")
            self._pos += 1
            selectors.append(self._selector())

    def _selector(self) -> Filter:
        fieldpath = self._fieldpath()
        if self._peek() in ("", ","):
            return Present(fieldpath)
        operator = self._operator()
        value_pos = self._skip_space()
        value = self._value(alt_quotes=operator == "~=")
        if operator == "==":
            return Equal(fieldpath, value)
        if operator == "!=":
            return NotEqual(fieldpath, value)
        return Matches(fieldpath, self._compile(value_pos, value))

    def _fieldpath(self) -> tuple[str, ...]:
        path = [self._field()]
        while self._peek() == ".":
            self._pos += 1
            path.append(self._field())
        return tuple(path)

    def _field(self) -> str:
        start = self._skip_space()
        ch = self._peek()
        if ch == '"':
            return self._quoted()
        if ch in _ALT_QUOTES:
            raise self._error(start, "invalid quote encountered")
        end = start
        while end < len(self._text) and self._text[end] in _FIELD_CHARS:
            end += 1
        if end == start:
            raise self._error(start, "expected field or quoted")
        self._pos = end
        return self._text[start:end]

    def _operator(self) -> str:
        start = self._skip_space()
        end = start
        while end < len(self._text) and self._text[end] in _OPERATOR_CHARS:
            end += 1
        operator = self._text[start:end]
        if not operator:
            raise self._error(start, 'expected an operator ("=="|"!="|"~=")')
        if operator not in ("==", "!=", "~="):
            raise self._error(start, f'unsupported operator "{operator}"')
        self._pos = end
        return operator

    def _value(self, *, alt_quotes: bool) -> str:
        start = self._skip_space()
        ch = self._peek()
        if ch == '"' or (alt_quotes and ch in _ALT_QUOTES):
            return self._quoted()
        end = start
        while end < len(self._text) and _is_value_char(self._text[end]):
            end += 1
        if end == start:
            raise self._error(start, "expected value or quoted")
        self._pos = end
        return self._text[start:end]

    def _quoted(self) -> str:
        """Decode a Go-style quoted string whose delimiter is at the cursor."""
        text = self._text
        start = self._pos
        delimiter = text[start]
        # Bytes, because \xhh and \ooo denote single bytes, as in Go.
        out = bytearray()
        i = start + 1
        while True:
            if i >= len(text) or text[i] == "\n":
                raise self._error(start, "quoted literal not terminated")
            ch = text[i]
            if ch == delimiter:
                self._pos = i + 1
                return out.decode("utf-8", "surrogateescape")
            if ch != "\\":
                out += ch.encode("utf-8", "surrogatepass")
                i += 1
                continue
            if i + 1 >= len(text):
                raise self._error(start, "quoted literal not terminated")
            kind = text[i + 1]
            if kind in _SIMPLE_ESCAPES:
                out += _SIMPLE_ESCAPES[kind]
                i += 2
            elif kind == delimiter:
                out += delimiter.encode()
                i += 2
            elif kind in _OCTAL_DIGITS:
                digits = text[i + 1 : i + 4]
                if len(digits) < 3 or not _OCTAL_DIGITS.issuperset(digits):
                    raise self._error(start, f'illegal numeric escape sequence "\\{digits}"')
                code = int(digits, 8)
                if code > 0xFF:
                    raise self._error(start, f'octal escape "\\{digits}" is greater than 255')
                out.append(code)
                i += 4
            elif kind in _HEX_ESCAPES:
                width = _HEX_ESCAPES[kind]
                digits = text[i + 2 : i + 2 + width]
                if len(digits) < width or not _HEX_DIGITS.issuperset(digits):
                    raise self._error(start, f'illegal numeric escape sequence "\\{kind}{digits}"')
                code = int(digits, 16)
                if kind == "x":
                    out.append(code)
                elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                    raise self._error(
                        start, f'escape "\\{kind}{digits}" is not a valid Unicode code point'
                    )
                else:
                    out += chr(code).encode()
                i += 2 + width
            else:
                raise self._error(start, f'illegal escape sequence "\\{kind}"')

    def _compile(self, pos: int, pattern: str) -> re.Pattern[str]:
        try:
            return re.compile(pattern)
        except re.error as exc:
            raise self._error(pos, f'invalid regular expression "{pattern}": {exc}') from None

    def _skip_space(self) -> int:
        while self._pos < len(self._text) and self._text[self._pos].isspace():
            self._pos += 1
        return self._pos

    def _peek(self) -> str:
        """The next non-space character, or "" at the end of the input."""
        pos = self._skip_space()
        return self._text[pos] if pos < len(self._text) else ""

    def _error(self, pos: int, reason: str) -> InvalidArgument:
        # containerd brackets the offending character as `>|c|<`, or shows the
        # bare input when the problem is at its end.
        text = self._text
        shown = f"{text[:pos]} >|{text[pos]}|< {text[pos + 1 :]}" if pos < len(text) else text
        return InvalidArgument(f"filters: parse error: [{shown}]: {reason}")
