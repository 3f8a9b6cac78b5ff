"""The recording file: a versioned header, then timestamped records, in checked frames.

A recording is a run of frames, each `MAGIC`, the payload's length and CRC-32
(big-endian), then the payload: zstd-compressed JSON lines. Frames decode on
their own, so a file can be appended to while it grows and cut off anywhere:
a reader stops at the first frame that is short or fails its CRC (a writer
killed mid-write) and keeps every record before it. The first frame is the
header, one JSON object naming the format and its `version`; a reader opens
every version up to its own and ignores record kinds and fields it does not
know, so a recording made by this version opens in the next. A file whose
header is missing, short or damaged is refused with `RecordingError`, never a
traceback. Records are `{"t": seconds since the header's start, "k": kind,
...}`; what the kinds mean is `tui.recorder`'s and `tui.player`'s business.
This module also turns the console's rows to JSON and back.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import json
import struct
import sys
import time
import zlib
from array import array
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import zstandard

from tui.state import (
    CONTAINERS,
    CONTENT,
    IMAGES,
    NAMESPACES,
    SNAPSHOTS,
    ContainerRow,
    ContentRow,
    ImageRow,
    LogLine,
    NamespaceRow,
    SnapshotRow,
)

FORMAT = "ctrdeck-recording"
VERSION = 1
MAGIC = b"CDRF"
_FRAME = struct.Struct(">4sII")
# A frame larger than this is damage, not data: the writer flushes long before.
MAX_FRAME = 64 * 1024 * 1024
# Decoded frames kept at once: playing reads one, a seek back a few before it.
CACHED_FRAMES = 8
ROW_TYPES: dict[str, type] = {
    NAMESPACES: NamespaceRow,
    IMAGES: ImageRow,
    CONTAINERS: ContainerRow,
    SNAPSHOTS: SnapshotRow,
    CONTENT: ContentRow,
}
_TIMES = {"created", "started", "time"}


class RecordingError(Exception):
    """The file is not a recording this console can open; the message says why."""


class Records(Sequence[dict[str, Any]]):
    """A recording's records, kept as their compressed frames and decoded when asked for.

    An hour of a busy node is about a million records: held as dicts it would
    take a gigabyte, held as frames it takes the file's size. Reading the file
    keeps each record's time and kind (`times`, `kinds`) for seeking; a record
    is parsed when the player reaches it, from a small cache of decoded frames.
    """

    def __init__(self) -> None:
        self.times = array("d")
        self.kinds: list[str] = []
        # Per frame: its compressed bytes, or its lines when some had to be dropped.
        self._frames: list[bytes | list[bytes]] = []
        self._starts: list[int] = []
        self._cache: dict[int, list[bytes]] = {}
        self._decompressor = zstandard.ZstdDecompressor()

    def add_frame(self, data: bytes, lines: list[bytes], whole: bool) -> None:
        self._starts.append(len(self.kinds) - len(lines))
        self._frames.append(data if whole else lines)

    def __len__(self) -> int:
        return len(self.kinds)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        if i < 0:
            i += len(self.kinds)
        if not 0 <= i < len(self.kinds):
            raise IndexError(i)
        frame = bisect.bisect_right(self._starts, i) - 1
        lines = self._cache.get(frame)
        if lines is None:
            stored = self._frames[frame]
            lines = (
                self._decompressor.decompress(stored).split(b"\n")
                if isinstance(stored, bytes)
                else stored
            )
            if len(self._cache) >= CACHED_FRAMES:
                self._cache.pop(next(iter(self._cache)))
            self._cache[frame] = lines
        record = json.loads(lines[i - self._starts[frame]])
        return record if isinstance(record, dict) else {"t": self.times[i], "k": ""}


@dataclass
class Recording:
    """What a file held: its header, its records in order, and whether it ended cleanly."""

    header: dict[str, Any]
    records: Records = field(default_factory=Records)
    # Why reading stopped before the end of the file, or "" when it did not.
    cut: str = ""

    @property
    def started(self) -> datetime:
        return datetime.fromtimestamp(float(self.header["started"]), UTC)

    @property
    def duration(self) -> float:
        return self.records.times[-1] if self.records.times else 0.0


def _scan(line: bytes) -> tuple[float, str] | None:
    """A record's time and kind; the writer's own layout is read without parsing the rest."""
    if not line.strip():
        return 0.0, ""
    if line.startswith(b'{"t":'):
        comma = line.find(b",", 5)
        if comma > 0 and line.startswith(b'"k":"', comma + 1):
            end = line.find(b'"', comma + 6)
            with contextlib.suppress(ValueError):
                return float(line[5:comma]), line[comma + 6 : end].decode()
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if isinstance(record, dict) and isinstance(record.get("t"), int | float):
        return float(record["t"]), str(record.get("k", ""))
    return 0.0, ""


def _frame(payload: bytes) -> bytes:
    data = zstandard.ZstdCompressor(level=3).compress(payload)
    return _FRAME.pack(MAGIC, len(data), zlib.crc32(data)) + data


def _frames(stream: IO[bytes]) -> Iterator[tuple[int, bytes | None, str, bytes]]:
    """(offset, payload, "", compressed) per whole frame; (offset, None, why, b"") for a bad one."""
    decompressor = zstandard.ZstdDecompressor()
    while True:
        offset = stream.tell()
        head = stream.read(_FRAME.size)
        if not head:
            return
        if len(head) < _FRAME.size:
            yield offset, None, f"a frame header cut short at byte {offset}", b""
            return
        magic, length, crc = _FRAME.unpack(head)
        if magic != MAGIC or length > MAX_FRAME:
            yield offset, None, f"no frame at byte {offset}", b""
            return
        data = stream.read(length)
        if len(data) < length:
            yield offset, None, f"a frame cut short at byte {offset}", b""
            return
        if zlib.crc32(data) != crc:
            yield offset, None, f"a damaged frame at byte {offset}", b""
            return
        try:
            payload = decompressor.decompress(data)
        except zstandard.ZstdError:
            yield offset, None, f"a frame that does not decompress at byte {offset}", b""
            return
        yield offset, payload, "", data


def _header(path: Path, frames: Iterator[tuple[int, bytes | None, str, bytes]]) -> dict[str, Any]:
    what = f"{path} is not a ctrdeck recording"
    first = next(frames, None)
    if first is None:
        raise RecordingError(f"{what}: the file is empty")
    _offset, payload, why, _data = first
    if payload is None:
        raise RecordingError(f"{what}: its header is damaged ({why})")
    try:
        header = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise RecordingError(f"{what}: its header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RecordingError(f"{what}: its header names no {FORMAT} format")
    version = header.get("version")
    if not isinstance(version, int) or version < 1:
        raise RecordingError(f"{what}: its header has no valid version")
    if version > VERSION:
        raise RecordingError(
            f"{path} is a version {version} recording, made by a newer ctrdeck; "
            f"this one reads versions up to {VERSION}"
        )
    if not isinstance(header.get("started"), int | float):
        raise RecordingError(f"{what}: its header has no start time")
    return header


def read(path: Path) -> Recording:
    """The whole recording; `RecordingError` if it cannot be opened at all."""
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise RecordingError(f"cannot open {path}: {exc.strerror or exc}") from None
    with stream:
        frames = _frames(stream)
        recording = Recording(_header(path, frames))
        records = recording.records
        for _offset, payload, why, data in frames:
            if payload is None:
                recording.cut = why
                break
            kept: list[bytes] = []
            for line in payload.split(b"\n"):
                found = _scan(line)
                if found is None:
                    recording.cut = "a record that is not JSON"
                    break
                if not found[1]:
                    continue
                records.times.append(found[0])
                records.kinds.append(sys.intern(found[1]))
                kept.append(line)
            if kept:
                whole = len(kept) == payload.count(b"\n") + 1
                records.add_frame(data, kept, whole)
            if recording.cut:
                break
    return recording


class Writer:
    """Appends records to a recording, a frame per `flush`; reopens an existing one to append."""

    def __init__(
        self, path: Path, header: dict[str, Any], clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        # Wall-clock seconds; a benchmark writes an hour of records in a few seconds with its own.
        self.clock = clock
        self._pending: list[bytes] = []
        self._stream = self._open(path, header)
        self.records = 0

    def _open(self, path: Path, header: dict[str, Any]) -> IO[bytes]:
        if path.exists() and path.stat().st_size > 0:
            # Appending: keep the old header (and its start), and drop a torn last frame.
            with path.open("rb") as existing:
                frames = _frames(existing)
                self.header = _header(path, frames)
                end = existing.tell()
                for offset, payload, _why, _data in frames:
                    end = existing.tell() if payload is not None else offset
                    if payload is None:
                        break
            stream = path.open("r+b")
            stream.truncate(end)
            stream.seek(end)
            return stream
        self.header = {"format": FORMAT, "version": VERSION, "started": self.clock(), **header}
        try:
            stream = path.open("xb")
        except FileExistsError:
            stream = path.open("r+b")
        stream.write(_frame(json.dumps(self.header).encode()))
        stream.flush()
        return stream

    @property
    def started(self) -> float:
        return float(self.header["started"])

    def elapsed(self) -> float:
        return round(self.clock() - self.started, 3)

    def add(self, kind: str, **fields: Any) -> None:
        record = {"t": self.elapsed(), "k": kind, **fields}
        self._pending.append(json.dumps(record, separators=(",", ":"), default=_json).encode())
        self.records += 1

    def flush(self) -> None:
        """Write what was added since the last flush as one frame, and push it to the file."""
        if not self._pending:
            return
        payload, self._pending = b"\n".join(self._pending), []
        self._stream.write(_frame(payload))
        self._stream.flush()

    def close(self) -> None:
        if not self._stream.closed:
            self.flush()
            self._stream.close()


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot record a {type(value).__name__}")


def encode_row(row: Any) -> dict[str, Any]:
    """The row's fields that differ from their defaults (a recording holds many rows)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(row):
        value = getattr(row, f.name)
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if value != default:
            out[f.name] = value
    return out


def decode_row(table: str, data: dict[str, Any]) -> Any:
    """A row from its recorded fields; fields this version does not know are left out."""
    kind = ROW_TYPES[table]
    known = {f.name for f in dataclasses.fields(kind)}
    values = {k: _from_json(k, v) for k, v in data.items() if k in known}
    return kind(**values)


def decode_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _from_json(k, v) for k, v in data.items()}


def _from_json(name: str, value: Any) -> Any:
    if name in _TIMES and isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return value


def encode_key(key: Hashable) -> Any:
    return list(key) if isinstance(key, tuple) else key


def decode_key(key: Any) -> Hashable:
    return tuple(key) if isinstance(key, list) else key


def encode_line(line: LogLine) -> dict[str, Any]:
    return dataclasses.asdict(line)


def decode_line(data: dict[str, Any]) -> LogLine:
    return LogLine(
        time=_from_json("time", data.get("time", 0)),
        namespace=str(data.get("namespace", "")),
        topic=str(data.get("topic", "")),
        detail=str(data.get("detail", "")),
        kind=str(data.get("kind", "event")),
    )


_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in `90`, `90s`, `1m30s`, `2h`, `1:30` or `1:02:03`; ValueError when it is none."""
    text = text.strip().lower()
    if not text:
        raise ValueError("an empty duration")
    if ":" in text:
        parts = text.split(":")
        if len(parts) > 3 or not all(p.replace(".", "", 1).isdigit() for p in parts):
            raise ValueError(f"{text!r} is not a duration like 1:30")
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60 + float(part)
        return seconds
    seconds, number = 0.0, ""
    for char in text:
        if char.isdigit() or char == ".":
            number += char
        elif char in _UNITS and number:
            seconds += float(number) * _UNITS[char]
            number = ""
        else:
            raise ValueError(f"{text!r} is not a duration like 90s, 1m30s or 2h")
    if number:
        seconds += float(number)
    return seconds


def format_duration(seconds: float) -> str:
    """`1:02:03`, `2:05`, `0:07`: a position on a timeline."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
