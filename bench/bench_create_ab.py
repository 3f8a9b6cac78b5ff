"""Tasks.Create alone, ctrdeck's engine from two trees, interleaved in one run.

For a change to the Create path (the monitor, the bundle) whose effect is smaller
than the noise `bench_tasks_ab`'s five measures and containerd add on a shared
machine: both engines run at once, one round each in turn (alternating the
order), each round `ctr containers create` of busybox, `Tasks.Create` timed by
`core.client`, then kill, wait and delete. Prints each tree's p50 and the median
of the per-round ratios.

    .venv/bin/python -m bench.bench_create_ab --before /path/to/old/checkout [--rounds 40]
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

from bench import bench_tasks as bt
from bench.bench_tasks_ab import engine_proc_of
from core.api.containerd.services.tasks import v1 as tasks
from tests import engine_proc


async def measure(before: Path, rounds: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"before": [], "after": []}
    with engine_proc_of(before).ctrdeck() as old, engine_proc.ctrdeck() as new:
        engines = {"before": old, "after": new}
        async with bt.prepared(engines) as clients:
            order = list(engines)
            for i in range(bt.WARMUP + rounds):
                for k in order:
                    cid = f"create-{i}"
                    client = clients[k]
                    rootfs = await bt.created_container(client, bt.Target(engines[k]), cid)
                    t = time.perf_counter()
                    await client.tasks.create(
                        tasks.CreateTaskRequest(container_id=cid, rootfs=rootfs)
                    )
                    if i >= bt.WARMUP:
                        samples[k].append((time.perf_counter() - t) * 1000)
                    await bt.end_task(client, cid)
                    await bt.remove_container(client, cid)
                order.reverse()
    return samples


def main() -> None:
    args = bt.ab_arguments(rounds=40)
    got = asyncio.run(measure(args.before, args.rounds))
    ratios = [a / b for a, b in zip(got["after"], got["before"], strict=True)]
    print(f"Tasks.Create, {args.rounds} interleaved rounds; load {bt.load_average()}\n")
    print("| before p50 | after p50 | median per-round ratio |")
    print("|---|---|---|")
    print(
        f"| {statistics.median(got['before']):.1f} ms | {statistics.median(got['after']):.1f} ms "
        f"| {statistics.median(ratios):.2f}x |"
    )


if __name__ == "__main__":
    main()
