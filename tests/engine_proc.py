"""Run engines as subprocesses: ctrdeck's for tests and benchmarks, Debian's containerd beside it.

The one harness the integration tests, the console tests and `bench/` start
engines with. Paths are kept short (a Unix socket path must fit in 108 bytes),
every engine gets its own root, state and socket under /tmp, and it is ended
with SIGTERM (SIGKILL only if it will not go). `EngineProcess` is ctrdeck's
engine, started and stopped by hand (tests kill and restart it); `ctrdeck()`
and `containerd()` are the two engines side by side as `with` blocks that also
unmount and remove their directories.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Running:
    """An engine a `with` block started: which one, its socket, its directory, its process."""

    name: str
    address: Path
    base: Path
    proc: subprocess.Popen[bytes]


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


def terminate(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL if the process has not gone within 15 seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    return proc.returncode


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """One `ctrdeck` command as a whole process, its output captured (wide, no stdin)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
    )


class EngineProcess:
    name = "ctrdeck"

    def __init__(
        self,
        base: Path | None = None,
        config: str | None = None,
        *,
        log_level: str = "debug",
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.base = base or Path(tempfile.mkdtemp(prefix="ctrdeck-", dir="/tmp"))
        self.root = self.base / "root"
        self.state = self.base / "state"
        self.address = self.base / "s.sock"
        self.config = config
        self.log_level = log_level
        self.log = self.base / "engine.log"
        # A command the engine runs under, e.g. `nsenter --net=...` to keep pod traffic
        # in a network namespace of the test's own.
        self.prefix = prefix
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EngineProcess:
        cmd = [
            *self.prefix,
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
            self.log_level,
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
        code = None if self.proc is None else terminate(self.proc)
        if cleanup:
            shutil.rmtree(self.base, ignore_errors=True)
        return code


def _remove(base: Path) -> None:
    # A runtime may leave a rootfs mounted under a stopped engine's directories.
    subprocess.run(["umount", "-R", str(base)], capture_output=True, check=False)
    shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def ctrdeck(
    config: str = "", *, log_level: str = "warn", parent: str = "/tmp"
) -> Iterator[Running]:
    """ctrdeck's engine on a temp root under `parent`, with `config` as its config.toml if given."""
    engine = EngineProcess(
        Path(tempfile.mkdtemp(prefix="bench-cx-", dir=parent)),
        config or None,
        log_level=log_level,
    )
    try:
        engine.start()
        assert engine.proc is not None
        yield Running(engine.name, engine.address, engine.base, engine.proc)
    finally:
        engine.stop()
        _remove(engine.base)


@contextlib.contextmanager
def containerd(
    extra_config: str = "",
    *,
    cri: bool = False,
    parent: str = "/tmp",
    prefix: tuple[str, ...] = (),
) -> Iterator[Running]:
    """containerd on a temp root under `parent`, started behind `prefix` (e.g. `ip netns exec`);
    `cri` keeps the CRI plugin (its TCP listener serves only CRI)."""
    if shutil.which("containerd") is None:
        raise SystemExit("Debian's containerd package is needed for side-by-side runs")
    base = Path(tempfile.mkdtemp(prefix="bench-cd-", dir=parent))
    cfg = base / "config.toml"
    disabled = "" if cri else 'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
    cfg.write_text(
        f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n{disabled}'
        f'[grpc]\naddress = "{base}/c.sock"\n{extra_config}'
    )
    log = open(base / "log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([*prefix, "containerd", "--config", str(cfg)], stdout=log, stderr=log)
    try:
        wait_for_socket(base / "c.sock", timeout=30, proc=proc)
        yield Running("containerd", base / "c.sock", base, proc)
    finally:
        terminate(proc)
        log.close()
        _remove(base)
