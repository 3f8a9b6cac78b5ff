"""When a process on the engine's host started, from /proc.

The engine runs its tasks on its own host, so it can tell a client on any host
when a task started (`TaskDetails.Started`); the client never reads /proc for
the engine's pids. The start is the kernel's (clock ticks after boot), so it is
right for tasks that started before the engine or the client did.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path


def boot_time(proc: Path = Path("/proc")) -> int | None:
    """The host's boot time in seconds since the epoch; None when /proc cannot say."""
    try:
        for line in (proc / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def start_time(pid: int, boot: int, proc: Path = Path("/proc")) -> datetime | None:
    """When process `pid` started; None when it is gone or its stat cannot be read."""
    try:
        # The command name in parentheses may hold spaces and ")": split after the last one.
        fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])
    except (OSError, ValueError, IndexError):
        return None
    return datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), UTC)
