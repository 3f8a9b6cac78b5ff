"""An ssh:// node's engine socket, forwarded to a local one by the user's OpenSSH client.

`Tunnels` keeps one master connection per destination (`ssh -M -N` on its own
`ControlPath`), and each node's `Tunnel` adds its forward to it (`ssh -O forward
-L local.sock:remote.sock HOST`), so every node on a host shares one SSH
connection and closing one node's forward leaves the others'. It is the
user's OpenSSH client, so `~/.ssh/config`, the agent, `ProxyJump` and
`known_hosts` apply as the operator set them. Host keys are checked as ssh checks them (never
turned off here); `BatchMode` keeps ssh from prompting on the console's
terminal, so a key that needs a passphrase must be in the agent. Before
forwarding, one remote command finds the socket (the URL's, or containerd's,
then ctrdeck's), which also turns ssh's failures into one line each: unknown
host, refused key, changed host key, refused connection, no socket there.
Keepalives (`ServerAliveInterval`) end a master whose link went dead; the
fleet starts it again on its next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from tui.nodes import REMOTE_DEFAULTS, NodeSpec

CONNECT_TIMEOUT = 5
ALIVE_INTERVAL = 2
ALIVE_COUNT = 2
# The remote command's exit status when no socket is at any of the paths tried.
NO_SOCKET = 3
FIND_TIMEOUT = 15.0
FORWARD_TIMEOUT = 10.0


class TunnelError(Exception):
    """Why an ssh:// node cannot be reached, in one line an operator can act on."""


def explain(stderr: str, destination: str) -> str:
    """ssh's stderr as one line that says what to do; its last line when nothing known matches."""
    text = stderr.lower()
    if "remote host identification has changed" in text:
        return (
            f"host key mismatch for {destination}: the key it offers is not the one in "
            "known_hosts (checking stays on; verify the host, then fix known_hosts)"
        )
    if "host key verification failed" in text or "no ed25519 host key is known" in text:
        return (
            f"host key of {destination} is not known or does not match "
            "(host key checking stays on; add it to known_hosts once you verified it)"
        )
    if "could not resolve hostname" in text or "name or service not known" in text:
        return f"unknown host {destination}: ssh could not resolve it"
    if "permission denied" in text:
        return (
            f"{destination} refused the key (permission denied): "
            "is it in the agent or ~/.ssh/config?"
        )
    if "connection refused" in text:
        return f"{destination} refused the connection (no sshd on that port?)"
    if "timed out" in text:
        return f"{destination} did not answer within {CONNECT_TIMEOUT}s"
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return f"ssh {destination}: {lines[-1] if lines else 'failed'}"


class Master:
    """The one SSH connection to a destination (`ssh -M -N`); every forward to it rides on it."""

    def __init__(self, base: list[str], control_path: Path, spec: NodeSpec) -> None:
        self.base = base
        self.control_path = control_path
        self.spec = spec
        # Started without an await, so a cancelled caller can never lose track of it.
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = asyncio.Lock()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def ensure(self) -> None:
        """Connected, or `TunnelError` with ssh's reason; a dead master is started again."""
        async with self._lock:
            if self.alive and await self._check():
                return
            await self.close()
            with contextlib.suppress(FileNotFoundError):
                self.control_path.unlink()
            self.proc = subprocess.Popen(
                [*self.base, "-M", "-N", "-o", "ControlMaster=yes", "--", self.spec.host],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + FORWARD_TIMEOUT
            while not self.control_path.exists():
                exited = self.proc.poll() is not None
                if exited or loop.time() > deadline:
                    # Its stderr is closed once it exited: the read cannot block.
                    err = self.proc.stderr.read() if exited and self.proc.stderr else b""
                    await self.close()
                    raise TunnelError(
                        explain(err.decode(errors="replace"), self.spec.ssh_destination())
                    )
                await asyncio.sleep(0.05)

    async def _check(self) -> bool:
        code, _out, _err = await self.control("check")
        return code == 0

    async def control(self, command: str, *extra: str) -> tuple[int, str, str]:
        """`ssh -O command` against this master."""
        return await run(
            [*self.base, "-o", "ControlMaster=no", "-O", command, *extra, "--", self.spec.host],
            FIND_TIMEOUT,
        )

    async def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            for _ in range(100):
                if proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


async def run(args: list[str], timeout: float) -> tuple[int, str, str]:
    """A short ssh command: exit status, stdout and stderr; 255 with a reason on a timeout."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.CancelledError:
        # A remote command over a dead link would otherwise linger until ssh gives up.
        proc.kill()
        raise
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 255, "", f"timed out after {timeout:.0f}s"
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


class Tunnels:
    """Every ssh:// node's forward, and one master per destination, in one private directory."""

    def __init__(self, runtime_dir: Path, ssh_config: Path | None = None) -> None:
        self.dir = runtime_dir
        self.ssh_config = ssh_config
        self.masters: dict[Path, Master] = {}

    def tunnel(self, spec: NodeSpec) -> Tunnel:
        return Tunnel(spec, self)

    def base_args(self, spec: NodeSpec) -> list[str]:
        args = [
            shutil.which("ssh") or "ssh",
            "-o", f"ControlPath={self.control_path(spec)}",
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
            "-o", f"ServerAliveInterval={ALIVE_INTERVAL}",
            "-o", f"ServerAliveCountMax={ALIVE_COUNT}",
        ]  # fmt: skip
        if self.ssh_config is not None:
            args += ["-F", str(self.ssh_config)]
        if spec.port is not None:
            args += ["-p", str(spec.port)]
        if spec.user:
            args += ["-l", spec.user]
        return args

    def control_path(self, spec: NodeSpec) -> Path:
        # One master per destination; hashed, since a socket path must fit in 108 bytes.
        who = f"{spec.user}@{spec.host}:{spec.port or ''}"
        return self.dir / f"cm-{hashlib.sha256(who.encode()).hexdigest()[:16]}"

    def master(self, spec: NodeSpec) -> Master:
        path = self.control_path(spec)
        if path not in self.masters:
            self.masters[path] = Master(self.base_args(spec), path, spec)
        return self.masters[path]

    async def close(self) -> None:
        for master in self.masters.values():
            await master.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Tunnel:
    """One node's forward: a local socket in the private directory, on its host's master."""

    def __init__(self, spec: NodeSpec, tunnels: Tunnels) -> None:
        self.spec = spec
        self.tunnels = tunnels
        self.local = tunnels.dir / f"{spec.name}.sock"
        self.remote = spec.remote_path

    def teach_prefix(self) -> str:
        """How an operator reaches this node's shell: `ssh [-p N] [user@]host`."""
        port = f" -p {self.spec.port}" if self.spec.port else ""
        return f"ssh{port} {shlex.quote(self.spec.ssh_destination())}"

    async def open(self) -> str:
        """Forward (again); the local socket's path, or `TunnelError` saying why not."""
        master = self.tunnels.master(self.spec)
        await master.ensure()
        self.remote = await self._find_socket(master)
        await self.close()
        with contextlib.suppress(FileNotFoundError):
            self.local.unlink()
        code, _out, err = await master.control("forward", "-L", f"{self.local}:{self.remote}")
        if code != 0:
            raise TunnelError(explain(err, self.spec.ssh_destination()))
        return str(self.local)

    async def _find_socket(self, master: Master) -> str:
        paths = [self.spec.remote_path] if self.spec.remote_path else list(REMOTE_DEFAULTS)
        script = (
            "for p in " + " ".join(shlex.quote(p) for p in paths) + "; do "
            'if [ -S "$p" ]; then echo "$p"; exit 0; fi; done; '
            f"exit {NO_SOCKET}"
        )
        code, out, err = await run([*master.base, "-T", "--", self.spec.host, script], FIND_TIMEOUT)
        if code == NO_SOCKET:
            raise TunnelError(
                f"no engine socket on {self.spec.host} at {' or '.join(paths)}"
                + ("" if self.spec.remote_path else " (name one: ssh://host/path/to.sock)")
            )
        if code != 0 or not out.strip():
            raise TunnelError(explain(err, self.spec.ssh_destination()))
        return out.strip().splitlines()[-1]

    async def close(self) -> None:
        """Stop this node's forward; the master stays for the host's other nodes."""
        master = self.tunnels.masters.get(self.tunnels.control_path(self.spec))
        if master is not None and master.alive and self.local.exists():
            await master.control("cancel", "-L", f"{self.local}:{self.remote}")
        with contextlib.suppress(FileNotFoundError):
            self.local.unlink()


def runtime_dir() -> Path:
    """A private directory (0700) for the local ends and the control sockets."""
    base = os.environ.get("XDG_RUNTIME_DIR") or None
    return Path(tempfile.mkdtemp(prefix="ctrdeck-ssh-", dir=base))
