"""Strict checking of protobuf wire data against a generated message class.

betterproto2 0.10 parses leniently: a truncated field is cut short without a
word, a field of the wrong wire type is stored as whatever came (an int where
a message belongs, `None` for wire types 3, 4, 6 and 7), and invalid UTF-8 in
a string escapes as a `UnicodeDecodeError`. `check` walks the bytes once,
using the schema the generated classes carry, and raises `WireError` naming
the field for any of those, for a varint longer than 64 bits, and for nesting
deeper than `MAX_DEPTH`. Unknown fields are skipped when well-formed, as
protobuf does. Only what `check` accepts is handed to betterproto2.
"""

from __future__ import annotations

from typing import Any

import betterproto2 as bp

MAX_DEPTH = 64

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_WIRE_NAMES = {0: "varint", 1: "fixed64", 2: "bytes", 3: "group", 4: "group", 5: "fixed32"}

_EXPECTED: dict[str, int] = {
    **dict.fromkeys(bp.WIRE_VARINT_TYPES, _VARINT),
    **dict.fromkeys(bp.WIRE_FIXED_32_TYPES, _I32),
    **dict.fromkeys(bp.WIRE_FIXED_64_TYPES, _I64),
    **dict.fromkeys(bp.WIRE_LEN_DELIM_TYPES, _LEN),
}


class WireError(ValueError):
    pass


def _wire_name(wire_type: int) -> str:
    return _WIRE_NAMES.get(wire_type, f"invalid ({wire_type})")


def _varint(buf: memoryview, i: int, where: str) -> tuple[int, int]:
    value = shift = 0
    n = len(buf)
    while True:
        if i >= n:
            raise WireError(f"{where}: truncated varint")
        byte = buf[i]
        i += 1
        if shift == 63 and byte > 1:
            raise WireError(f"{where}: varint overflows 64 bits")
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise WireError(f"{where}: varint overflows 64 bits")


def _packed(buf: memoryview, expected: int, where: str) -> None:
    if expected == _VARINT:
        i = 0
        while i < len(buf):
            _, i = _varint(buf, i, where)
    elif len(buf) % (4 if expected == _I32 else 8):
        raise WireError(f"{where}: packed fixed-size values of a wrong length")


def check(data: bytes, cls: Any) -> None:
    """Raise `WireError` unless `data` is a well-formed encoding of `cls`."""
    _check(memoryview(data), cls, cls.__name__, 0)


def _check(buf: memoryview, cls: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise WireError(f"{where}: nested deeper than {MAX_DEPTH}")
    meta = cls._betterproto
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i, where)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError(f"{where}: field number 0")
        start = i
        if wire_type == _VARINT:
            _, i = _varint(buf, i, where)
        elif wire_type == _I64:
            i += 8
        elif wire_type == _I32:
            i += 4
        elif wire_type == _LEN:
            length, start = _varint(buf, i, where)
            i = start + length
        else:
            raise WireError(f"{where}: field {number} has wire type {_wire_name(wire_type)}")
        if i > n:
            raise WireError(f"{where}: field {number} is truncated")
        name = meta.field_name_by_number.get(number)
        if name is None:
            continue
        field = meta.meta_by_field_name[name]
        expected = _EXPECTED[field.proto_type]
        here = f"{where}.{name}"
        if wire_type != expected:
            if wire_type == _LEN and field.repeated and expected != _LEN:
                _packed(buf[start:i], expected, here)
                continue
            raise WireError(
                f"{here}: wire type {_wire_name(wire_type)}, want {_wire_name(expected)}"
            )
        if field.proto_type == bp.TYPE_STRING:
            try:
                str(buf[start:i], "utf-8")
            except UnicodeDecodeError:
                raise WireError(f"{here}: string is not valid UTF-8") from None
        elif field.proto_type == bp.TYPE_MESSAGE:
            sub = field.unwrap() if field.unwrap else meta.cls_by_field[name]
            _check(buf[start:i], sub, here, depth + 1)
        elif field.proto_type == bp.TYPE_MAP:
            _check(buf[start:i], meta.cls_by_field[name], here, depth + 1)
