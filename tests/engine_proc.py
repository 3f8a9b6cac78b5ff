"""Run the real engine as a subprocess for integration tests.

Paths are kept short (a Unix socket path must fit in 108 bytes), every engine
gets its own root, state and socket under /tmp, and `stop()` ends it with
SIGTERM (SIGKILL only if it will not go) and removes its directories.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wait_for_socket(
    path: Path, timeout: float = 20.0, proc: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"engine exited with {proc.returncode}")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            return
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    raise TimeoutError(f"engine did not listen on {path} within {timeout}s")


class EngineProcess:
    def __init__(self, base: Path | None = None, config: str | None = None) -> None:
        self.base = base or Path(tempfile.mkdtemp(prefix="ctrdeck-", dir="/tmp"))
        self.root = self.base / "root"
        self.state = self.base / "state"
        self.address = self.base / "s.sock"
        self.config = config
        self.log = self.base / "engine.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EngineProcess:
        cmd = [
            sys.executable,
            "-m",
            "tui.cli",
            "engine",
            "--root",
            str(self.root),
            "--state",
            str(self.state),
            "--address",
            str(self.address),
            "--log-level",
            "debug",
        ]
        if self.config is not None:
            cfg = self.base / "config.toml"
            cfg.write_text(self.config)
            cmd += ["--config", str(cfg)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, env=env)
        try:
            wait_for_socket(self.address, proc=self.proc)
        except Exception:
            self.stop(cleanup=False)
            raise RuntimeError(f"engine failed to start:\n{self.log.read_text()}") from None
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, cleanup: bool = False) -> int | None:
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        elif self.proc is not None:
            code = self.proc.returncode
        if cleanup:
            shutil.rmtree(self.base, ignore_errors=True)
        return code
