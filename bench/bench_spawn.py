"""What one runtime command costs the engine's process: asyncio's subprocess or `command.run`.

Runs the same short runtime command (`runc --version` by default) through
`asyncio.create_subprocess_exec` (Python 3.11's threaded child watcher: the
engine's runtime commands before round four) and through
`core.runtime.command.run` (posix_spawn and a pidfd on the loop), in
interleaved batches, sequentially and with `--concurrency` at once. It prints
each way's CPU per command of this process alone (utime+stime of its threads;
the children's own CPU is theirs and the same both ways) and its wall p50.

    .venv/bin/python -m bench.bench_spawn [--commands 2000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from core.runtime import command

BATCHES = 10


def cpu_ms() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * 1000


async def with_asyncio(argv: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    await proc.communicate()
    assert proc.returncode == 0


async def with_command(argv: list[str]) -> None:
    done = await command.run(argv, 60)
    assert done.returncode == 0


Way = Callable[[list[str]], Awaitable[None]]


async def timed(way: Way, argv: list[str], n: int, concurrency: int) -> tuple[float, list[float]]:
    """(CPU ms of this process, wall ms of each command) for `n` commands."""
    walls: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            t = time.perf_counter()
            await way(argv)
            walls.append((time.perf_counter() - t) * 1000)

    c = cpu_ms()
    await asyncio.gather(*(one() for _ in range(n)))
    return cpu_ms() - c, walls


async def measure(argv: list[str], n: int, concurrency: int) -> dict[str, tuple[float, float]]:
    ways: dict[str, Way] = {"asyncio subprocess": with_asyncio, "command.run": with_command}
    cpu = {k: 0.0 for k in ways}
    walls: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(BATCHES):
        for name, way in ways.items():
            used, w = await timed(way, argv, n // BATCHES, concurrency)
            cpu[name] += used
            walls[name] += w
    return {k: (cpu[k] / n, statistics.median(walls[k])) for k in ways}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runtime", default="runc")
    args = parser.parse_args()
    binary = shutil.which(args.runtime)
    if binary is None:
        raise SystemExit(f"{args.runtime} is not installed")
    argv = [binary, "--version"]
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"`{args.runtime} --version`, {args.commands} commands each way; load {load}\n")
    print("| way | concurrency | CPU of this process per command | wall p50 |")
    print("|---|---|---|---|")
    for concurrency in (1, args.concurrency):
        got = asyncio.run(measure(argv, args.commands, concurrency))
        for name, (cpu, wall) in got.items():
            print(f"| {name} | {concurrency} | {cpu:.3f} ms | {wall:.2f} ms |")


if __name__ == "__main__":
    main()
