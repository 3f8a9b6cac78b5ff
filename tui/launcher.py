"""Finding the engine, starting the bundled one in the background, and stopping it.

The console connects to `--address`, `$CONTAINERD_ADDRESS`, or the bundled
engine's socket from its config; `target` adds the TLS options a `tcp://`
address takes. A `tcp://` engine is never started, only probed, so a TLS
problem is reported before the console opens. When nothing answers on a local
socket it starts the bundled engine as a detached process (`python -m tui.cli
engine`, in its own session so it outlives the console) and waits until the
socket answers `Version`. The engine keeps one log, `<state>/ctrdeck.log`: its
stdout and stderr are opened on that same file (so even a failure before its
logging is set up lands there), and an engine whose stderr is its log file
writes each record once (`core.logs`). `stop_engine` finds the process behind a
socket from the socket's peer credentials, so it works for an engine started by
anyone, and refuses to stop anything that is not ctrdeck's.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import CtrdeckError

if TYPE_CHECKING:
    from core import config as engine_config
    from core.client import ClientTLS

# asyncio and the gRPC client (`core.client`) are imported where they are used: a command
# that only resolves its address here (`ctrdeck pull` on a socket) starts without them.

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
PROBE_TIMEOUT = 3.0


class LaunchError(Exception):
    """The engine could not be reached, started or stopped; the message says why."""


@dataclass(frozen=True)
class Target:
    """Where an engine is and how to reach it: `tls` is None for a socket or `--plaintext`."""

    address: str
    tls: ClientTLS | None = None


@dataclass(frozen=True)
class EngineLaunch:
    address: str
    started: bool
    log_path: Path | None = None


def _bundled_config() -> engine_config.Config:
    # The engine's config is read only when no address is given: a command with `-a` (a
    # script's `ctrdeck -a SOCK pull`) starts without loading it.
    from core import config as engine_config

    try:
        return engine_config.load(None)
    except CtrdeckError:
        # A broken config file is the engine's to report when it starts; the
        # console still needs to know where the default socket is.
        return engine_config.default_config()


def resolve_address(address: str | None) -> str:
    """The socket path to use: the given one (a `unix://` prefix is accepted) or the bundled one."""
    if address:
        return address.removeprefix("unix://")
    return _bundled_config().grpc.address


def target(args: argparse.Namespace) -> Target:
    """The engine the global options name, with TLS for `tcp://` unless `--plaintext`."""
    from core.client import ClientTLS, is_tcp

    address = resolve_address(args.address)
    ca = getattr(args, "tls_ca", None) or ""
    cert = getattr(args, "tls_cert", None) or ""
    key = getattr(args, "tls_key", None) or ""
    plaintext = getattr(args, "plaintext", False)
    given = [f for f, v in (("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)) if v]
    if not is_tcp(address):
        if given or plaintext:
            flags = ", ".join([*given, *(["--plaintext"] if plaintext else [])])
            raise LaunchError(f"{flags}: only for a tcp://host:port address, not {address}")
        return Target(address)
    if plaintext:
        if given:
            raise LaunchError(f"--plaintext contradicts {', '.join(given)}")
        return Target(address)
    if key and not cert:
        raise LaunchError("--tls-key needs --tls-cert, the certificate it belongs to")
    tls = ClientTLS(ca=ca, cert=cert, key=key)
    try:
        # Unreadable files are reported now, not at the first call.
        tls.context()
    except CtrdeckError as exc:
        raise LaunchError(exc.message) from None
    return Target(address, tls)


async def probe(address: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """The engine's version string when something answers Version on `address`, else None."""
    from core.client import Client

    if not Path(address).exists():
        return None
    client = Client(address, timeout=timeout)
    try:
        resp = await client.server_version()
    except Exception:
        # Any failure (refused, reset, a peer that is not gRPC) means the same
        # thing here: no engine we can use answers on this socket.
        return None
    finally:
        client.close()
    return resp.version


def engine_command(address: str) -> list[str]:
    return [sys.executable, "-m", "tui.cli", "engine", "--address", address]


def _log_path(config: engine_config.Config) -> Path:
    from core import logs as engine_logs

    return config.state / engine_logs.LOG_NAME


async def reach_remote(where: Target) -> EngineLaunch:
    """A `tcp://` engine answers, or a `LaunchError` says why (never starts anything)."""
    # Imported here: the status probe's stubs are no part of what a command like `pull` needs.
    from core import status

    try:
        found = await status.probe(where.address, tls=where.tls, timeout=PROBE_TIMEOUT)
    except CtrdeckError as exc:
        raise LaunchError(str(exc)) from None
    if not found.answering:
        raise LaunchError(found.problem)
    return EngineLaunch(address=where.address, started=False)


async def ensure_engine(
    address: str,
    timeout: float = START_TIMEOUT,
    *,
    tls: ClientTLS | None = None,
    announce: Callable[[str], None] | None = None,
) -> EngineLaunch:
    """Make sure an engine answers on `address`, starting the bundled one if nothing does.

    `announce` hears, before the wait, that the bundled engine is starting and where.
    """
    import asyncio

    from core.client import is_tcp

    if is_tcp(address):
        return await reach_remote(Target(address, tls))
    if await probe(address) is not None:
        return EngineLaunch(address=address, started=False)
    config = _bundled_config()
    log_path = _log_path(config)
    if announce is not None:
        announce(f"nothing answers on {address}: starting the bundled engine (log: {log_path})")
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    # 0640, as the engine's own handler keeps it: logs name every tenant's images.
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    with open(fd, "ab") as log:
        proc = subprocess.Popen(
            engine_command(address),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LaunchError(
                f"the bundled engine exited with status {proc.returncode} before it answered "
                f"on {address}; see {log_path}:\n{_tail(log_path)}"
            )
        if await probe(address, timeout=1.0) is not None:
            return EngineLaunch(address=address, started=True, log_path=log_path)
        await asyncio.sleep(0.1)
    raise LaunchError(
        f"the bundled engine (pid {proc.pid}) did not answer on {address} within "
        f"{timeout:.0f}s; see {log_path}"
    )


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def socket_peer_pid(address: str) -> int:
    """The pid of the process listening on the Unix socket `address`."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(PROBE_TIMEOUT)
    try:
        s.connect(address)
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError as exc:
        raise LaunchError(f"no engine listens on {address}: {exc.strerror or exc}") from None
    finally:
        s.close()
    pid, _uid, _gid = struct.unpack("3i", creds)
    return pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited; only its parent's wait is missing.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def stop(address: str, timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM the ctrdeck engine on `address` and wait for it to end; returns its pid."""
    import asyncio

    from core.client import is_tcp

    if is_tcp(address):
        raise LaunchError(
            f"{address} is a TCP address; `engine stop` signals the engine through its "
            "local socket, so run it on the engine's host"
        )
    version = asyncio.run(probe(address))
    if version is None:
        raise LaunchError(f"no engine answers on {address}")
    if "ctrdeck" not in version:
        raise LaunchError(
            f"the engine on {address} is not ctrdeck's (it reports version {version}); "
            "stop it with its own service manager"
        )
    pid = socket_peer_pid(address)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return pid
        time.sleep(0.05)
    raise LaunchError(f"the engine (pid {pid}) on {address} did not stop within {timeout:.0f}s")


def stop_engine(address: str) -> int:
    """`ctrdeck engine stop`: an exit status, with a line on stdout or stderr."""
    try:
        pid = stop(address)
    except LaunchError as exc:
        print(f"ctrdeck engine stop: {exc}", file=sys.stderr)
        return 1
    print(f"stopped the engine on {address} (pid {pid})")
    return 0
