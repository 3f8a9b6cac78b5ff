"""The real `ctrdeck` console on a pseudo-terminal, for tests that count what it writes.

`Terminal` starts a command with a pty as its controlling terminal (as sshd
does), reads everything it writes on a thread, and answers with the bytes: how
many so far, all of them, and whether the output has gone quiet. Tests assert
on bytes, never on timings; the waits here only let the console get somewhere.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


class Terminal:
    def __init__(self, argv: list[str], *, cols: int = 80, rows: int = 24, env: dict[str, str]):
        self.argv = argv
        self.cols, self.rows = cols, rows
        self.env = env
        self._out = bytearray()
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self.proc: subprocess.Popen[bytes] | None = None
        self._master = -1
        self._reader: threading.Thread | None = None

    def start(self) -> Terminal:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", self.rows, self.cols, 0, 0))
        self.proc = subprocess.Popen(
            self.argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self._master = master
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self._master], [], [], 0.2)
            if not ready:
                if self.proc is None or self.proc.poll() is not None:
                    return
                continue
            try:
                data = os.read(self._master, 1 << 16)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self._out += data
                self._last = time.monotonic()

    @property
    def written(self) -> int:
        with self._lock:
            return len(self._out)

    def output(self, since: int = 0) -> bytes:
        with self._lock:
            return bytes(self._out[since:])

    def press(self, keys: str) -> None:
        os.write(self._master, keys.encode())

    def wait_for(self, predicate: Callable[[bytes], bool], timeout: float = 30.0) -> None:
        """Until the output so far satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while not predicate(self.output()):
            if time.monotonic() > deadline:
                tail = self.output()[-2000:]
                raise AssertionError(f"the console did not get there; it wrote last: {tail!r}")
            time.sleep(0.05)

    def frame(self, keys: str, timeout: float = 10.0) -> bytes:
        """What the console writes in answer to `keys`: its first write and all that follows it."""
        before = self.written
        self.press(keys)
        deadline = time.monotonic() + timeout
        while self.written == before and time.monotonic() < deadline:
            time.sleep(0.02)
        self.settle(quiet=0.3)
        return self.output(before)

    def settle(self, quiet: float = 0.5, timeout: float = 15.0) -> None:
        """Until nothing has been written for `quiet` seconds (a key's frame is complete)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                since = time.monotonic() - self._last
            if since >= quiet:
                return
            time.sleep(0.05)

    def exit_code(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        if self._master >= 0:
            os.close(self._master)
            self._master = -1


def console_env(config_home: Path, **extra: str) -> dict[str, str]:
    """The environment of an operator's SSH session: a 24-bit colour xterm, UTF-8."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "NO_COLOR",
            "TEXTUAL_COLOR_SYSTEM",
            "LANG",
            "LC_ALL",
            "LC_CTYPE",
            "PYTHONUTF8",
            "PYTHONIOENCODING",
        )
    }
    env.update(
        TERM="xterm-256color",
        COLORTERM="truecolor",
        LANG="C.UTF-8",
        XDG_CONFIG_HOME=str(config_home),
        PYTHONPATH=str(ROOT),
        TZ="UTC",
    )
    env.update(extra)
    return env


def console_argv(address: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tui.cli", "--address", address, "--no-start", *extra]
