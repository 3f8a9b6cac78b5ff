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

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench import bench_tasks as bt
from bench.bench_tasks_ab import engine_proc_of
from core.api.containerd.services.tasks import v1 as tasks
from core.client import Client
from tests import engine_proc


async def measure(before: Path, rounds: int) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix="bench-create-", dir="/tmp"))
    samples: dict[str, list[float]] = {"before": [], "after": []}
    try:
        archive = bt.image_archive(work)
        with engine_proc_of(before).ctrdeck() as old, engine_proc.ctrdeck() as new:
            engines = {"before": old, "after": new}
            clients = {k: Client(str(v.address), bt.NS) for k, v in engines.items()}
            try:
                for running in engines.values():
                    bt.import_image(bt.Target(running), archive)
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
            finally:
                for client in clients.values():
                    await bt.sweep(client)
                    client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        bt.remove_namespace_cgroups()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, required=True, help="a checkout to compare with")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("running containers needs root")
    got = asyncio.run(measure(args.before.resolve(), args.rounds))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    ratios = [a / b for a, b in zip(got["after"], got["before"], strict=True)]
    print(f"Tasks.Create, {args.rounds} interleaved rounds; load {load}\n")
    print("| before p50 | after p50 | median per-round ratio |")
    print("|---|---|---|")
    print(
        f"| {statistics.median(got['before']):.1f} ms | {statistics.median(got['after']):.1f} ms "
        f"| {statistics.median(ratios):.2f}x |"
    )


if __name__ == "__main__":
    main()
