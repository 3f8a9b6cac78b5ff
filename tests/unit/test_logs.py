"""The engine's log lines: logfmt shape, levels, fields, exceptions, the rotated file."""

from __future__ import annotations

import io
import logging
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import logs

LINE = re.compile(r'^time="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z" level=(\w+) msg=')


def _record(level: int, msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("ctrdeck.test", level, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def _format(record: logging.LogRecord) -> str:
    return logs.LogfmtFormatter().format(record)


def test_line_shape_and_level_names() -> None:
    for level, name in [
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.WARNING, "warning"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "fatal"),
    ]:
        line = _format(_record(level, "hello"))
        match = LINE.match(line)
        assert match is not None, line
        assert match.group(1) == name
        assert line.endswith("msg=hello logger=ctrdeck.test")


def test_values_are_quoted_and_escaped_onto_one_line() -> None:
    line = _format(_record(logging.INFO, 'pulled "%s"\nnext\tline\\', "busybox"))
    assert 'msg="pulled \\"busybox\\"\\nnext\\tline\\\\"' in line
    assert "\n" not in line
    assert 'msg=""' in _format(_record(logging.INFO, ""))


def test_extra_fields_follow_the_message() -> None:
    line = _format(
        _record(logging.INFO, "call failed", method="/x.v1.Images/Get", namespace="de fault")
    )
    assert line.endswith(
        'msg="call failed" logger=ctrdeck.test method=/x.v1.Images/Get namespace="de fault"'
    )


def test_exception_becomes_error_and_one_line_stack() -> None:
    try:
        raise KeyError("missing")
    except KeyError:
        record = logging.LogRecord(
            "ctrdeck.test", logging.ERROR, __file__, 1, "boom", None, sys.exc_info()
        )
    line = _format(record)
    assert "error=\"KeyError: 'missing'\"" in line
    assert 'stack="Traceback (most recent call last):\\n' in line
    assert "\n" not in line


def test_levels_map_like_containerd() -> None:
    assert logs.level_number("trace") == logging.DEBUG
    assert logs.level_number("warn") == logging.WARNING
    assert logs.level_number("PANIC") == logging.CRITICAL
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        logs.level_number("loud")


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        for handler in list(logs._installed):
            root.removeHandler(handler)
            handler.close()
        logs._installed.clear()
        root.setLevel(level)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)


@pytest.mark.usefixtures("restore_root")
def test_setup_writes_stream_and_private_file(tmp_path: Path) -> None:
    stream = io.StringIO()
    state = tmp_path / "state"
    path = logs.setup("info", state, stream=stream)
    assert path == state / "ctrdeck.log"
    log = logging.getLogger("ctrdeck.test")
    log.debug("hidden")
    log.info("shown %d", 1, extra={"namespace": "default"})
    for handler in logs._installed:
        handler.flush()
    for text in (stream.getvalue(), path.read_text()):
        assert "hidden" not in text
        assert 'msg="shown 1" logger=ctrdeck.test namespace=default' in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.usefixtures("restore_root")
def test_stderr_that_is_the_log_file_gets_each_record_once(tmp_path: Path) -> None:
    # How the console starts the bundled engine: stdout and stderr opened on the log file.
    (tmp_path / "ctrdeck.log").touch()
    with open(tmp_path / "ctrdeck.log", "a", encoding="utf-8") as stderr:
        path = logs.setup("info", tmp_path, stream=stderr)
        assert len(logs._installed) == 1
        logging.getLogger("ctrdeck.test").info("only once")
        for handler in logs._installed:
            handler.flush()
        stderr.flush()
    assert path.read_text().count("only once") == 1


@pytest.mark.usefixtures("restore_root")
def test_second_setup_replaces_handlers(tmp_path: Path) -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.setup("info", tmp_path, stream=first)
    logs.setup("debug", tmp_path, stream=second)
    logging.getLogger("ctrdeck.test").debug("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1


@pytest.mark.usefixtures("restore_root")
def test_file_rotates_at_the_size_cap(tmp_path: Path) -> None:
    path = logs.setup("info", tmp_path, stream=io.StringIO(), max_bytes=2000, backups=2)
    log = logging.getLogger("ctrdeck.test")
    for i in range(100):
        log.info("line %03d %s", i, "x" * 40)
    rotated = sorted(p.name for p in tmp_path.iterdir())
    assert rotated == ["ctrdeck.log", "ctrdeck.log.1", "ctrdeck.log.2"]
    assert path.stat().st_size <= 2000
    assert "line 099" in path.read_text()
    assert stat.S_IMODE((tmp_path / "ctrdeck.log.1").stat().st_mode) == 0o640
