"""The monitor's log file: appends, rotates at its cap, keeps one old file."""

from __future__ import annotations

import os
from pathlib import Path

from core.runtime.monitor import Log, Sink


def test_log_rotates_at_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = Log(str(path), 4096)
    log.write(b"a" * 3000)
    log.write(b"b" * 2000)
    log.close()
    assert (tmp_path / "log.1").read_bytes() == b"a" * 3000
    assert path.read_bytes() == b"b" * 2000
    log = Log(str(path), 4096)
    log.write(b"c" * 10000)
    log.close()
    assert path.read_bytes() == b"c" * 4096
    assert (tmp_path / "log.1").read_bytes() == b"b" * 2000


def test_sink_buffers_when_nobody_reads(tmp_path: Path) -> None:
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    sink = Sink(str(fifo))
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        sink.write(b"x" * (1 << 17))
        assert sink.pending
        got = b""
        while len(got) < 1 << 17:
            try:
                got += os.read(reader, 1 << 16)
            except BlockingIOError:
                sink.flush()
        assert got == b"x" * (1 << 17)
    finally:
        sink.close()
        os.close(reader)
