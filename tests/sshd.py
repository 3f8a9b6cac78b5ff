"""A throw-away OpenSSH server for tests: Debian's sshd on a high port, never a system service.

`sshd()` makes a host key and a client key in a temp directory, starts
`/usr/sbin/sshd -D` on `listen` (127.0.0.1 by default, or an address inside a
network namespace given as `netns`) that accepts only that client key for
root, and writes an ssh_config naming the server as host `HOST` with its
known_hosts, so the client under test checks the host key as usual. Nothing
on port 22, nothing left running or on disk afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclass
class SSHServer:
    host: str
    port: int
    base: Path
    ssh_config: Path
    host_key: Path
    client_key: Path
    known_hosts: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        return (self.base / "sshd.log").read_text(errors="replace")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def client_config(base: Path, alias: str, host: str, port: int, key: Path, known: Path) -> Path:
    config = base / "ssh_config"
    config.write_text(
        f"Host {alias}\n  HostName {host}\n  Port {port}\n  User root\n"
        f"  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n"
        "  StrictHostKeyChecking yes\n  GlobalKnownHostsFile /dev/null\n"
        f"Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n"
        "  StrictHostKeyChecking yes\n  GlobalKnownHostsFile /dev/null\n"
    )
    return config


@contextlib.contextmanager
def sshd(
    alias: str = "testhost", *, listen: str = "127.0.0.1", netns: str | None = None
) -> Iterator[SSHServer]:
    if shutil.which("sshd") is None and not Path(SSHD).exists():
        raise RuntimeError("Debian's openssh-server is needed (scripts/setup.sh installs it)")
    base = Path(tempfile.mkdtemp(prefix="ssh-", dir="/tmp"))
    base.chmod(0o755)
    host_key, client_key = base / "host_key", base / "client_key"
    keygen(host_key)
    keygen(client_key)
    authorized = base / "authorized_keys"
    authorized.write_text((base / "client_key.pub").read_text())
    authorized.chmod(0o600)
    port = free_port() if netns is None else 2222
    known = base / "known_hosts"
    pub = (base / "host_key.pub").read_text().split()
    entry = f"[{listen}]:{port}" if port != 22 else listen
    known.write_text(f"{entry} {pub[0]} {pub[1]}\n")
    config = client_config(base, alias, listen, port, client_key, known)
    # sshd refuses to start without its privilege-separation directory.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    cmd = [
        SSHD, "-D", "-e", "-f", "/dev/null",
        "-o", f"ListenAddress={listen}:{port}",
        "-o", f"HostKey={host_key}",
        "-o", f"AuthorizedKeysFile={authorized}",
        "-o", "PasswordAuthentication=no",
        "-o", "KbdInteractiveAuthentication=no",
        "-o", "PermitRootLogin=prohibit-password",
        "-o", "AllowStreamLocalForwarding=yes",
        "-o", "UsePAM=no",
        # The keys live under /tmp, which some sshd builds refuse to trust for root.
        "-o", "StrictModes=no",
        "-o", f"PidFile={base}/sshd.pid",
        "-o", "MaxStartups=100",
        "-o", "MaxSessions=100",
    ]  # fmt: skip
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    log = open(base / "sshd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        _wait_listening(listen, port, proc, netns)
        yield SSHServer(listen, port, base, config, host_key, client_key, known, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], netns: str | None) -> None:
    deadline = time.monotonic() + 10
    probe = ["ip", "netns", "exec", netns] if netns else []
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}")
        out = subprocess.run([*probe, "ss", "-Hltn"], capture_output=True, text=True).stdout
        if f"{host}:{port}" in out:
            return
        time.sleep(0.05)
    raise TimeoutError(f"sshd did not listen on {host}:{port}")
