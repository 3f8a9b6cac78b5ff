"""A container's processes, with the details the engine's host knows of each.

An engine that serves ctrdeck's `TaskDetails.Processes` answers each process's
user, command line, state, CPU time and resident memory from its own /proc,
wherever the console runs. Against one that does not (a containerd), the pids
come from Tasks.ListPids, and the details from this host's /proc (through
`core.procfs`) only when those pids are provably this host's: the task's init
pid here sits in a cgroup named for the container (a Unix socket alone does not
say so: it may be forwarded from another host). Otherwise only pids and exec ids
are shown. `Sampler` turns two samples of CPU time into a percentage, as `top`
does. Everything read is the container's data: the screen shows it through
`tui.plain`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from core import procfs, typeurl
from core.api.containerd.runc.v1 import ProcessDetails
from core.api.containerd.services.tasks import v1 as tasks_api
from core.client import Client, is_tcp
from tui.operations import ConsoleError, engine_call

PROC = procfs.PROC


@dataclass(frozen=True)
class ProcessRow:
    pid: int
    exec_id: str = ""
    user: str = "-"
    command: str = "-"
    cpu: float | None = None
    rss: int | None = None
    state: str = "-"


class Sampler:
    """What one processes view keeps between samples: each process's CPU time at the last
    sample (for CPU%), and whether the engine answers `TaskDetails.Processes` (a containerd
    does not: it is asked once, not on every refresh)."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[int, float]] = {}
        self.engine_tells = True

    def rows(self, found: list[tuple[str, procfs.ProcessFacts | None]]) -> list[ProcessRow]:
        """Rows for (exec id, facts) pairs; facts None keep only what the pid says."""
        now = time.monotonic()
        rows: list[ProcessRow] = []
        seen: dict[int, tuple[int, float]] = {}
        for exec_id, facts in found:
            if facts is None:
                continue
            cpu = None
            before = self._last.get(facts.pid)
            if before is not None and now > before[1]:
                cpu = max(0.0, (facts.cpu_ns - before[0]) / 1e9 / (now - before[1]) * 100)
            seen[facts.pid] = (facts.cpu_ns, now)
            rows.append(
                ProcessRow(
                    facts.pid,
                    exec_id,
                    user=facts.user,
                    command=facts.command,
                    cpu=cpu,
                    rss=facts.rss,
                    state=facts.state,
                )
            )
        self._last = seen
        return rows


async def processes(
    client: Client, container_id: str, init_pid: int, sampler: Sampler
) -> tuple[list[ProcessRow], bool]:
    """The task's processes, and whether they carry details (False: pids and exec ids only)."""
    if sampler.engine_tells:
        try:
            with engine_call("TaskDetails", f"list the processes of {container_id}"):
                answered = await client.task_processes(container_id)
        except ConsoleError as exc:
            if not exc.unimplemented:
                raise
            sampler.engine_tells = False
        else:
            return sampler.rows(
                [
                    (
                        p.exec_id,
                        procfs.ProcessFacts(
                            p.pid, p.user, p.command, p.state, p.cpu_ns, p.rss_bytes or None
                        ),
                    )
                    for p in answered
                ]
            ), True
    pids = await list_pids(client, container_id)
    if not is_local(client, container_id, init_pid):
        return [ProcessRow(pid, exec_id) for pid, exec_id in pids], False
    users = procfs.container_users(pids[0][0]) if pids else {}
    return sampler.rows([(e, procfs.read(pid, users)) for pid, e in pids]), True


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
