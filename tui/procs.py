"""A container's processes: the pids from Tasks.ListPids, the details from this host's /proc.

The engine answers which pids are in the task (and which exec each belongs
to); when the engine is on this host (a Unix socket, and the task's init pid
here sits in a cgroup named for the container) those are this host's pids, and
/proc gives each one's command line, user (its uid looked up in the container's
own /etc/passwd, through /proc/PID/root), resident memory and CPU time.
`Sampler` turns two samples of CPU time into a percentage, as `top` does. For
an engine elsewhere (tcp://, or a socket forwarded from another host) only the
pids and exec ids are known, and the details show as `-`. Everything read here
is the container's data: the screen shows it through `tui.plain`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from core import typeurl
from core.api.containerd.runc.v1 import ProcessDetails
from core.api.containerd.services.tasks import v1 as tasks_api
from core.client import Client, is_tcp
from tui.operations import ConsoleError, engine_call

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessRow:
    pid: int
    exec_id: str = ""
    user: str = "-"
    command: str = "-"
    cpu: float | None = None
    rss: int | None = None
    state: str = "-"


def _users(pid: int) -> dict[int, str]:
    """uid -> name from the container's /etc/passwd, seen through the process's root."""
    try:
        text = (PROC / str(pid) / "root/etc/passwd").read_text(errors="replace")
    except OSError:
        return {}
    out: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) > 2 and parts[2].isdigit():
            out.setdefault(int(parts[2]), parts[0])
    return out


def _cpu_ticks(pid: int) -> tuple[int, str] | None:
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command: state is field 3, utime and stime fields 14 and 15 (1-based).
    return int(fields[11]) + int(fields[12]), fields[0]


class Sampler:
    """Reads /proc for the pids the engine lists; CPU% from the ticks since the last sample."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[int, float]] = {}
        self._tick = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGE_SIZE")

    def sample(self, pids: list[tuple[int, str]], local: bool) -> list[ProcessRow]:
        if not local:
            return [ProcessRow(pid, exec_id) for pid, exec_id in pids]
        now = time.monotonic()
        users = _users(pids[0][0]) if pids else {}
        rows: list[ProcessRow] = []
        seen: dict[int, tuple[int, float]] = {}
        for pid, exec_id in pids:
            ticks = _cpu_ticks(pid)
            if ticks is None:
                # Gone between the listing and now.
                continue
            used, state = ticks
            cpu = None
            before = self._last.get(pid)
            if before is not None and now > before[1]:
                cpu = max(0.0, (used - before[0]) / self._tick / (now - before[1]) * 100)
            seen[pid] = (used, now)
            rows.append(
                ProcessRow(
                    pid,
                    exec_id,
                    user=self._user(pid, users),
                    command=self._command(pid),
                    cpu=cpu,
                    rss=self._rss(pid),
                    state=state,
                )
            )
        self._last = seen
        return rows

    @staticmethod
    def _command(pid: int) -> str:
        try:
            raw = (PROC / str(pid) / "cmdline").read_bytes()
        except OSError:
            return "-"
        if not raw:
            try:
                return f"[{(PROC / str(pid) / 'comm').read_text().strip()}]"
            except OSError:
                return "-"
        return " ".join(p.decode("utf-8", "replace") for p in raw.rstrip(b"\0").split(b"\0"))

    @staticmethod
    def _user(pid: int, users: dict[int, str]) -> str:
        try:
            status = (PROC / str(pid) / "status").read_text()
        except OSError:
            return "-"
        for line in status.splitlines():
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
                return users.get(uid, str(uid))
        return "-"

    def _rss(self, pid: int) -> int | None:
        try:
            return int((PROC / str(pid) / "statm").read_text().split()[1]) * self._page
        except (OSError, IndexError, ValueError):
            return None


def is_local(client: Client, container_id: str, init_pid: int) -> bool:
    """Whether the engine's pids are this host's: the task's init pid here is in a cgroup
    that names the container.

    A Unix socket alone does not say so: it may be a remote engine's, forwarded over SSH,
    and then a pid here is some other process of this host.
    """
    if is_tcp(client.address) or not init_pid or not container_id:
        return False
    try:
        cgroups = (PROC / str(init_pid) / "cgroup").read_text()
    except OSError:
        return False
    return any(
        container_id in line.split(":", 2)[-1].replace(".scope", "").split("/")[-1]
        for line in cgroups.splitlines()
    )


async def list_pids(client: Client, container_id: str) -> list[tuple[int, str]]:
    """(pid, exec id) of the task's processes, the init process first."""
    with engine_call("Tasks", f"list the processes of {container_id}"):
        resp = await client.tasks.list_pids(tasks_api.ListPidsRequest(container_id=container_id))
    out: list[tuple[int, str]] = []
    for info in resp.processes:
        exec_id = ""
        if info.info is not None:
            try:
                details = typeurl.unpack(info.info)
            except Exception:
                details = None
            if isinstance(details, ProcessDetails):
                exec_id = details.exec_id
        out.append((info.pid, exec_id))
    return sorted(out)


async def signal_process(
    client: Client, container_id: str, init_pid: int, row: ProcessRow, signal: int
) -> str:
    """Send `signal` to one process: through the engine for the init process or an exec's,
    else (another process of the task, on this host) directly. Returns how it was sent."""
    with engine_call("Tasks", f"signal pid {row.pid} of {container_id}"):
        if row.pid == init_pid or row.exec_id:
            await client.tasks.kill(
                tasks_api.KillRequest(container_id=container_id, exec_id=row.exec_id, signal=signal)
            )
            return "engine"
    if not is_local(client, container_id, init_pid):
        raise ConsoleError(
            f"pid {row.pid} is neither the task's nor an exec's: only a console on the "
            "engine's host can signal it"
        )
    try:
        os.kill(row.pid, signal)
    except OSError as exc:
        raise ConsoleError(f"signal pid {row.pid}: {exc.strerror}") from None
    return "host"
