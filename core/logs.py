"""The engine's logs: one structured line per record, to stderr and a rotated file.

Lines are logfmt in containerd's (logrus's) shape, so the same tools read both:
`time="2024-05-01T12:00:00.123456Z" level=info msg="serving ..." logger=ctrdeck.server`,
then any structured fields passed as `extra={...}` (`method=... namespace=...`),
then `error=` and `stack=` for an exception, with newlines escaped so a record
is always one line. Times are UTC. `setup(level, state)` routes the root logger
to stderr and to `<state>/ctrdeck.log`, rotated at `MAX_BYTES` with `BACKUPS`
old files kept; when stderr already is that file (the console starts the
bundled engine that way) each record is written once, through the file.
Config levels map as containerd's do (trace is debug, warn is warning, fatal
and panic are critical).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

LOG_NAME = "ctrdeck.log"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3

LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}

_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)

# Handlers this module installed, so a second setup replaces rather than doubles them.
_installed: list[logging.Handler] = []


def level_number(level: str) -> int:
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}") from None


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-._/:@+,[]" for c in value):
        return value
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _field(key: str, value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return f"{key}={_quote(text)}"


class LogfmtFormatter(logging.Formatter):
    """Formats a record as one logfmt line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        level = _LEVEL_NAMES.get(record.levelno, record.levelname.lower())
        parts = [
            f'time="{stamp}"',
            f"level={level}",
            _field("msg", record.getMessage()),
            _field("logger", record.name),
        ]
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                parts.append(_field(key, value))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            parts.append(_field("error", f"{type(exc).__name__}: {exc}"))
            stack = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            parts.append(_field("stack", stack))
        elif record.stack_info:
            parts.append(_field("stack", record.stack_info))
        return " ".join(parts)


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """Logs can name every tenant's images and paths: each file is opened 0640."""

    def _open(self) -> Any:
        stream = super()._open()
        os.chmod(self.baseFilename, 0o640)
        return stream


def _is_file(stream: TextIO, path: Path) -> bool:
    """Whether `stream` writes to the file at `path` (stderr sent to the log itself)."""
    try:
        here, there = os.fstat(stream.fileno()), os.stat(path)
    except (OSError, ValueError, AttributeError):
        # No descriptor (a StringIO in tests, a closed stream): not the file.
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def setup(
    level: str,
    state: Path,
    *,
    stream: TextIO | None = None,
    max_bytes: int = MAX_BYTES,
    backups: int = BACKUPS,
) -> Path:
    """Send the engine's logs to `stream` (stderr) and `<state>/ctrdeck.log`; returns that path."""
    number = level_number(level)
    state.mkdir(parents=True, exist_ok=True, mode=0o711)
    path = state / LOG_NAME
    formatter = LogfmtFormatter()
    out = stream or sys.stderr
    to_file = _PrivateRotatingFile(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    handlers: list[logging.Handler] = [to_file]
    if not _is_file(out, path):
        handlers.insert(0, logging.StreamHandler(out))
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
        handler.close()
    _installed.clear()
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
        _installed.append(handler)
    root.setLevel(number)
    # hpack logs every header frame at debug; engine debug logs are for the engine.
    logging.getLogger("hpack").setLevel(max(number, logging.INFO))
    return path
