"""What /proc says of a process: its user, command line, state, CPU time and resident memory.

A pure reader with no engine state. The engine answers `TaskDetails.Processes`
with it for its own tasks (it runs on their host), and a console falls back to it
only when the pids are provably its own host's (a containerd on the same machine,
which has no such call). The user is the uid looked up in the container's own
`/etc/passwd`, seen through the first process's root, since the host's names
mean nothing inside a container.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcessFacts:
    pid: int
    user: str
    command: str
    state: str
    cpu_ns: int
    rss: int | None


def container_users(pid: int, proc: Path = PROC) -> dict[int, str]:
    """uid -> name from the container's /etc/passwd, seen through process `pid`'s root."""
    try:
        text = (proc / str(pid) / "root/etc/passwd").read_text(errors="replace")
    except OSError:
        return {}
    out: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) > 2 and parts[2].isdigit():
            out.setdefault(int(parts[2]), parts[0])
    return out


def read(pid: int, users: dict[int, str], proc: Path = PROC) -> ProcessFacts | None:
    """The facts of process `pid`; None when it is gone (it may end between a listing and now)."""
    base = proc / str(pid)
    try:
        # The command name in parentheses may hold spaces and ")": split after the last one.
        fields = (base / "stat").read_text().rsplit(")", 1)[1].split()
        # After the command: state is field 3, utime and stime fields 14 and 15 (1-based).
        state, ticks = fields[0], int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None
    return ProcessFacts(
        pid=pid,
        user=_user(base, users),
        command=_command(base),
        state=state,
        cpu_ns=ticks * _TICK_NS,
        rss=_rss(base),
    )


def _command(base: Path) -> str:
    try:
        raw = (base / "cmdline").read_bytes()
    except OSError:
        return "-"
    if not raw:
        try:
            return f"[{(base / 'comm').read_text().strip()}]"
        except OSError:
            return "-"
    return " ".join(p.decode("utf-8", "replace") for p in raw.rstrip(b"\0").split(b"\0"))


def _user(base: Path, users: dict[int, str]) -> str:
    try:
        status = (base / "status").read_text()
    except OSError:
        return "-"
    for line in status.splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[1])
            return users.get(uid, str(uid))
    return "-"


def _rss(base: Path) -> int | None:
    try:
        return int((base / "statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None
