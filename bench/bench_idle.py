"""The engine at rest, and the engine's cost of an idle console's resync, beside containerd.

For each engine, freshly started: its RSS after 3 s with nothing in it; then, with a
namespace seeded as `bench_console` seeds it (2,000 containers, 500 images), its RSS, and
its CPU (utime + stime from `/proc/PID/stat`) for the calls one 30-second resync of the
console makes of it (`tui/state.py`: Images.List, Containers.List, Tasks.List,
Namespaces.List, then Containers.List and Images.List again to count the namespace),
through the same Python client, averaged over `--rounds` resyncs after one warm-up.

    .venv/bin/python -m bench.bench_idle [--rounds 10] [--containers 2000] [--images 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from bench.bench_console import seed
from bench.stats import machine, table
from core.api.containerd.services.containers import v1 as containers
from core.api.containerd.services.images import v1 as images
from core.api.containerd.services.namespaces import v1 as namespaces
from core.api.containerd.services.tasks import v1 as tasks
from core.client import Client
from tests import engine_proc

TICK = os.sysconf("SC_CLK_TCK")
NAMESPACE = "bench-idle"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def resync(client: Client) -> None:
    await client.images.list(images.ListImagesRequest())
    await client.containers.list(containers.ListContainersRequest())
    await client.tasks.list(tasks.ListTasksRequest())
    await client.namespaces.list(namespaces.ListNamespacesRequest())
    await client.containers.list(containers.ListContainersRequest())
    await client.images.list(images.ListImagesRequest())


async def measure(running: engine_proc.Running, args: argparse.Namespace) -> dict[str, float]:
    pid = running.proc.pid
    time.sleep(3)
    idle = rss_mib(pid)
    async with Client(str(running.address), NAMESPACE) as client:
        await seed(client, args.containers, args.images)
        await resync(client)
        before = cpu_seconds(pid)
        for _ in range(args.rounds):
            await resync(client)
        cpu = (cpu_seconds(pid) - before) / args.rounds
    return {"idle_rss": idle, "seeded_rss": rss_mib(pid), "resync_cpu_ms": cpu * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--containers", type=int, default=2000)
    parser.add_argument("--images", type=int, default=500)
    args = parser.parse_args()
    results = {}
    for start in (engine_proc.containerd, engine_proc.ctrdeck):
        with start() as running:
            results[running.name] = asyncio.run(measure(running, args))
    cd, cx = results["containerd"], results["ctrdeck"]
    print(f"machine: {machine()}\n")
    print(
        table(
            [
                ("engine RSS, fresh and empty", cd["idle_rss"], cx["idle_rss"], "MiB"),
                (f"engine RSS, {args.containers:,} containers", cd["seeded_rss"],
                 cx["seeded_rss"], "MiB"),
                ("engine CPU per console resync", cd["resync_cpu_ms"], cx["resync_cpu_ms"], "ms"),
            ]
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
