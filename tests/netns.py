"""Test hosts: a network namespace each, joined to this one by a veth pair, running its own engine.

`netns_host(index)` creates namespace `ctdN-<pid>` with `10.X.N.2/24` inside
and `10.X.N.1/24` on the host end (`vhN-<pid>`; X from the pid), and starts ctrdeck's engine
in it (`ip netns exec`, so the engine's pid is the one a test SIGSTOPs), with a
plaintext TCP listener on the namespace's address (`tcp_insecure`: it is not
loopback) and its Unix socket under a temp dir. `cut()` and `restore()` take
the host end of the veth down and up, as pulling a cable would. Deleting the
namespace removes the pair.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.engine_proc import ROOT, terminate, wait_for_socket

ENGINE_PORT = 10000


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class TestHost:
    netns: str
    veth: str
    address: str
    socket: Path
    base: Path
    proc: subprocess.Popen[bytes]

    @property
    def tcp_url(self) -> str:
        return f"tcp://{self.address}:{ENGINE_PORT}"

    def cut(self) -> None:
        ip("link", "set", self.veth, "down")

    def restore(self) -> None:
        ip("link", "set", self.veth, "up")

    def stop_engine(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def continue_engine(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


@contextlib.contextmanager
def netns_host(index: int, *, tcp: bool = True) -> Iterator[TestHost]:
    tag = os.getpid() % 100000
    netns, veth, peer = f"ctd{index}-{tag}", f"vh{index}-{tag}", f"vn{index}-{tag}"
    # A subnet of this run's own: a host left over by a crashed run must not take its routes.
    subnet = f"10.{100 + tag % 100}.{index}"
    inside, outside = f"{subnet}.2", f"{subnet}.1"
    base = Path(tempfile.mkdtemp(prefix="nshost-", dir="/tmp"))
    ip("netns", "add", netns)
    proc: subprocess.Popen[bytes] | None = None
    try:
        ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", netns)
        ip("addr", "add", f"{outside}/24", "dev", veth)
        ip("link", "set", veth, "up")
        ip("-n", netns, "addr", "add", f"{inside}/24", "dev", peer)
        ip("-n", netns, "link", "set", peer, "up")
        ip("-n", netns, "link", "set", "lo", "up")
        config = base / "config.toml"
        listener = f'tcp_address = "{inside}:{ENGINE_PORT}"\ntcp_insecure = true\n' if tcp else ""
        config.write_text(f"version = 2\n[grpc]\n{listener}")
        socket = base / "s.sock"
        cmd = [
            "ip", "netns", "exec", netns, sys.executable, "-m", "tui.cli", "engine",
            "--config", str(config), "--root", str(base / "root"), "--state", str(base / "state"),
            "--address", str(socket), "--log-level", "warn",
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(base / "engine.log", "ab") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, env=env)
        wait_for_socket(socket, proc=proc)
        yield TestHost(netns, veth, inside, socket, base, proc)
    finally:
        if proc is not None:
            # A stopped engine would never see the SIGTERM.
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            terminate(proc)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        subprocess.run(["umount", "-R", str(base)], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)
