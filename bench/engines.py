"""Start Debian's containerd and ctrdeck's engine side by side for benchmarks.

Each gets its own temp root, state and socket, so a benchmark never touches a
node's real engines; both are stopped and their directories removed on exit.
"""

from __future__ import annotations

import contextlib
import os
import platform
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
    name: str
    address: Path
    base: Path
    proc: subprocess.Popen[bytes]


def _wait(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"engine exited with {proc.returncode}")
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(path))
                return
            except OSError:
                time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {path}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def containerd(extra_config: str = "", *, cri: bool = False) -> Iterator[Running]:
    """containerd on a temp root; `cri` keeps the CRI plugin (its TCP listener serves only CRI)."""
    if shutil.which("containerd") is None:
        raise SystemExit("Debian's containerd package is needed for side-by-side benchmarks")
    base = Path(tempfile.mkdtemp(prefix="bench-cd-", dir="/tmp"))
    cfg = base / "config.toml"
    disabled = "" if cri else 'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
    cfg.write_text(
        f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n{disabled}'
        f'[grpc]\naddress = "{base}/c.sock"\n{extra_config}'
    )
    log = open(base / "log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(["containerd", "--config", str(cfg)], stdout=log, stderr=log)
    try:
        _wait(base / "c.sock", proc)
        yield Running("containerd", base / "c.sock", base, proc)
    finally:
        _stop(proc)
        log.close()
        subprocess.run(["umount", "-R", str(base)], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def ctrdeck(config: str = "") -> Iterator[Running]:
    base = Path(tempfile.mkdtemp(prefix="bench-cx-", dir="/tmp"))
    cmd = [
        sys.executable,
        "-m",
        "tui.cli",
        "engine",
        "--root",
        f"{base}/root",
        "--state",
        f"{base}/state",
        "--address",
        f"{base}/s.sock",
        "--log-level",
        "warn",
    ]
    if config:
        (base / "config.toml").write_text(config)
        cmd += ["--config", str(base / "config.toml")]
    log = open(base / "log", "wb")  # noqa: SIM115
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, env=env)
    try:
        _wait(base / "s.sock", proc)
        yield Running("ctrdeck", base / "s.sock", base, proc)
    finally:
        _stop(proc)
        log.close()
        subprocess.run(["umount", "-R", str(base)], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def machine() -> str:
    cd = subprocess.run(["containerd", "--version"], capture_output=True, text=True).stdout.strip()
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.node()} · {os.cpu_count()} cores · {cpu} · Linux {platform.release()} · "
        f"Python {platform.python_version()} · {cd}"
    )
