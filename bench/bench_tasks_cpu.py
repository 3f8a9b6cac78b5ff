"""The engine's own CPU per task call: ctrdeck's engine from two trees, in one run.

Wall time of a task call on a loaded machine is mostly waiting for the runtime
and the scheduler; the CPU the engine's process spends on it (utime+stime of
`/proc/PID/stat`, its threads included and its children not: `runc` costs the
same under both trees) is what a change to the engine moves. Both engines run
at once, one round each in turn (alternating the order): a container `ctr
containers create` made, then `Tasks.Create`, `Start`, `Pause`, `Resume`,
`Kill`, `Wait` and `Delete` through `core.client`, each call's engine CPU
summed over the rounds. The kernel counts CPU in clock ticks (10 ms), so only
the mean over many rounds means anything.

    .venv/bin/python -m bench.bench_tasks_cpu --before /path/to/old/checkout [--rounds 60]
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import bench_tasks as bt
from bench.bench_tasks_ab import engine_proc_of
from core.api.containerd.services.tasks import v1 as tasks
from core.client import Client
from tests import engine_proc

MEASURES = ("create", "start", "pause", "resume", "kill", "delete")
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * TICK_MS


async def one_round(
    client: Client, target: bt.Target, pid: int, i: int, used: dict[str, float]
) -> None:
    cid = f"cpu-{i}"
    rootfs = await bt.created_container(client, target, cid)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: client.tasks.create(tasks.CreateTaskRequest(container_id=cid, rootfs=rootfs)),
        lambda: client.tasks.start(tasks.StartRequest(container_id=cid)),
        lambda: client.tasks.pause(tasks.PauseTaskRequest(container_id=cid)),
        lambda: client.tasks.resume(tasks.ResumeTaskRequest(container_id=cid)),
        lambda: client.tasks.kill(tasks.KillRequest(container_id=cid, signal=9)),
    ]
    for measure, call in zip(MEASURES, calls, strict=False):
        before = cpu_ms(pid)
        await call()
        used[measure] += cpu_ms(pid) - before
    await client.tasks.wait(tasks.WaitRequest(container_id=cid))
    before = cpu_ms(pid)
    await client.tasks.delete(tasks.DeleteTaskRequest(container_id=cid))
    used["delete"] += cpu_ms(pid) - before
    await bt.remove_container(client, cid)


async def measure(before: Path, rounds: int) -> dict[str, dict[str, float]]:
    used = {k: dict.fromkeys(MEASURES, 0.0) for k in ("before", "after")}
    with engine_proc_of(before).ctrdeck() as old, engine_proc.ctrdeck() as new:
        engines = {"before": old, "after": new}
        async with bt.prepared(engines) as clients:
            order = list(engines)
            for i in range(rounds):
                for k in order:
                    running = engines[k]
                    await one_round(clients[k], bt.Target(running), running.proc.pid, i, used[k])
                order.reverse()
    return used


def main() -> None:
    args = bt.ab_arguments(rounds=60)
    used = asyncio.run(measure(args.before, args.rounds))
    print(f"engine CPU per call, mean of {args.rounds} rounds; load {bt.load_average()}\n")
    print("| call | before | after |")
    print("|---|---|---|")
    for m in MEASURES:
        cells = [f"{used[k][m] / args.rounds:.2f} ms" for k in ("before", "after")]
        print(f"| {m} | " + " | ".join(cells) + " |")
    totals = [f"{sum(used[k].values()) / args.rounds:.2f} ms" for k in ("before", "after")]
    print("| all six | " + " | ".join(totals) + " |")


if __name__ == "__main__":
    main()
