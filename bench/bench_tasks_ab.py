"""Task start, interleaved: containerd, and ctrdeck's engine from two trees, in one run.

`bench_tasks` runs containerd's phase before ctrdeck's, so on a shared machine the load
moves between the two. This one starts all three engines at once (containerd, and the
engine of a "before" checkout and of this tree, each with its own `tests/engine_proc.py`)
and times one round per engine in turn, rotating the order: `Tasks.Create`, `Start`,
`Pause` and `Kill` through `core.client` on a container `ctr containers create` made,
then `ctr run -d` of busybox `sleep`. It prints each engine's p50 and the median of the
per-round ratios to containerd. Every task and container is removed before the engines
stop.

    .venv/bin/python -m bench.bench_tasks_ab --before /path/to/old/checkout [--rounds 30]
"""

from __future__ import annotations

import asyncio
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

from bench import bench_tasks as bt
from core.api.containerd.services.tasks import v1 as tasks
from core.client import Client
from tests import engine_proc

MEASURES = ("create", "start", "pause", "kill", "run_d")


def engine_proc_of(tree: Path) -> ModuleType:
    """`tests/engine_proc.py` of another checkout: its engines run that checkout's code."""
    name = f"engine_proc_{abs(hash(str(tree)))}"
    spec = importlib.util.spec_from_file_location(name, tree / "tests" / "engine_proc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def one_round(client: Client, target: bt.Target, i: int) -> dict[str, float]:
    cid = f"ab-{i}"
    rootfs = await bt.created_container(client, target, cid)
    t0 = time.perf_counter()
    await client.tasks.create(tasks.CreateTaskRequest(container_id=cid, rootfs=rootfs))
    t1 = time.perf_counter()
    await client.tasks.start(tasks.StartRequest(container_id=cid))
    t2 = time.perf_counter()
    await client.tasks.pause(tasks.PauseTaskRequest(container_id=cid))
    t3 = time.perf_counter()
    await client.tasks.resume(tasks.ResumeTaskRequest(container_id=cid))
    t4 = time.perf_counter()
    await client.tasks.kill(tasks.KillRequest(container_id=cid, signal=9))
    t5 = time.perf_counter()
    await bt.end_task(client, cid)
    await bt.remove_container(client, cid)
    run_d = bt.wall_ms(target.run_argv("-d", bt.IMAGE, f"abrd-{i}", "sleep", "1000"))
    await bt.end_task(client, f"abrd-{i}")
    await bt.remove_container(client, f"abrd-{i}")
    ms = [(b - a) * 1000 for a, b in ((t0, t1), (t1, t2), (t2, t3), (t4, t5))]
    return dict(zip(MEASURES, [*ms, run_d], strict=True))


async def measure(before: Path, rounds: int) -> dict[str, dict[str, list[float]]]:
    with (
        engine_proc.containerd() as cd,
        engine_proc_of(before).ctrdeck() as old,
        engine_proc.ctrdeck() as new,
    ):
        engines = {"containerd": cd, "before": old, "after": new}
        targets = {k: bt.Target(v) for k, v in engines.items()}
        samples: dict[str, dict[str, list[float]]] = {k: {m: [] for m in MEASURES} for k in engines}
        async with bt.prepared(engines) as clients:
            order = list(engines)
            for i in range(bt.WARMUP + rounds):
                for k in order:
                    got = await one_round(clients[k], targets[k], i)
                    if i >= bt.WARMUP:
                        for m, v in got.items():
                            samples[k][m].append(v)
                order = order[1:] + order[:1]
    return samples


def main() -> None:
    args = bt.ab_arguments(rounds=30)
    samples = asyncio.run(measure(args.before, args.rounds))
    load = bt.load_average()
    print(f"{args.rounds} interleaved rounds after {bt.WARMUP} warm-up ones; load {load}\n")
    print("| measure, p50 | containerd | before | after |")
    print("|---|---|---|---|")
    for m in MEASURES:
        base = samples["containerd"][m]
        cells = [f"{statistics.median(base):.2f} ms"]
        for k in ("before", "after"):
            ratios = [a / b for a, b in zip(samples[k][m], base, strict=True)]
            cells.append(
                f"{statistics.median(samples[k][m]):.2f} ms ({statistics.median(ratios):.2f}x)"
            )
        print(f"| {m} | " + " | ".join(cells) + " |")
    # One slow run in thirty is a p99; the tail is read beside the medians.
    tails = []
    for k in ("containerd", "before", "after"):
        walls = sorted(samples[k]["run_d"])
        tails.append(f"{walls[int(len(walls) * 0.9)]:.2f} / {walls[-1]:.2f} ms")
    print("| run_d p90 / max | " + " | ".join(tails) + " |")


if __name__ == "__main__":
    main()
