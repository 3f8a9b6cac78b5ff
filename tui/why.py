"""Why a task stopped, in words: its exit status with the signal's name, OOM, when, how long it ran.

A process killed by signal N exits with status 128+N as containerd reports it
(`137` is SIGKILL); an OOM kill is known from the engine's `/tasks/oom` event or
from the cgroup's OOM-kill counter the task metrics carry. These helpers turn
a `ContainerRow` into the short label of the status column, the lines of
inspect, and the toast shown when a watched task exits. Pure functions: the
row holds all they need, and the log lines are handed in.
"""

from __future__ import annotations

import signal as signals
from collections.abc import Sequence
from datetime import datetime, timedelta

from tui.state import ContainerRow

# The status column is this wide: a label never gets cut.
LABEL_WIDTH = 12


def signal_name(status: int) -> str:
    """`SIGKILL` for exit status 137 (128 + 9); "" when the status is no signal's."""
    if not 128 < status < 128 + 65:
        return ""
    try:
        return signals.Signals(status - 128).name
    except ValueError:
        return ""


def exit_text(status: int) -> str:
    """`137 (SIGKILL)`, or just `1`."""
    name = signal_name(status)
    return f"{status} ({name})" if name else str(status)


def duration(span: timedelta) -> str:
    """`3h02m`, `4m10s`, `12s`, `2d03h`."""
    seconds = max(int(span.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def oom_killed(row: ContainerRow) -> bool:
    """Whether the OOM killer ended the task: a kill was seen and it died of SIGKILL."""
    return row.oom and row.exit_status == 137


def status_label(row: ContainerRow) -> str:
    """What the status column says: `RUNNING`, `OOMKILLED`, `SIGKILL(137)`, `STOPPED(1)`."""
    if row.status != "STOPPED" or row.exit_status is None:
        return row.status
    if oom_killed(row):
        return "OOMKILLED"
    name = signal_name(row.exit_status)
    label = f"{name}({row.exit_status})"
    if name and len(label) <= LABEL_WIDTH:
        return label
    return f"STOPPED({row.exit_status})"


def reasons(row: ContainerRow, now: datetime) -> list[tuple[str, str]]:
    """(label, value) lines on how the task ended, for inspect; empty while it runs."""
    if row.status != "STOPPED" or row.exit_status is None:
        return []
    out = [("exit status", exit_text(row.exit_status))]
    if oom_killed(row):
        out.append(("reason", "OOM-killed: the kernel killed it for exceeding its memory limit"))
    elif signal_name(row.exit_status):
        out.append(("reason", f"killed by {signal_name(row.exit_status)}"))
    if row.oom and not oom_killed(row):
        out.append(("oom", "the OOM killer ended a process in it before it stopped"))
    if row.exited_at is not None and row.exited_at.year > 1970:
        ago = duration(now - row.exited_at)
        out.append(("exited at", f"{row.exited_at:%Y-%m-%d %H:%M:%S} UTC ({ago} ago)"))
    if row.ran_for is not None:
        out.append(("ran for", duration(timedelta(seconds=row.ran_for))))
    return out


def exit_toast(row: ContainerRow, last_lines: Sequence[str]) -> str:
    """The toast for a watched task that exited: how, after how long, and its last output."""
    how = "was OOM-killed" if oom_killed(row) else f"exited {exit_text(row.exit_status or 0)}"
    text = f"{row.id} {how}"
    if row.ran_for is not None:
        text += f" after {duration(timedelta(seconds=row.ran_for))}"
    if last_lines:
        text += "\n" + "\n".join(last_lines)
    return text
