"""Engine CPU under an idle console: its resync and its metrics poll, against both engines.

The console's `tui.syncer.Syncer` runs in this process against Debian's
containerd and against ctrdeck's engine, each holding `--containers` container
records (each with a spec) and `--running` real busybox tasks started with
`ctr run -d` in the same namespace. Measured per engine, in one run, as the
engine process's user+system CPU (`/proc/PID/stat`) around each piece of work:

- one full resync (what the console does every 30 s and on connect);
- one metrics poll (every 2 s while any task runs), the polls spaced past the
  second in which ctrdeck's engine shares a sample between callers, so each one
  reads; timed from the threads' `schedstat` (nanoseconds) around each poll;
- five consoles polling at once (five clients, one `Tasks.Metrics` each);
- an idle window: the syncer running as the console runs it, for `--idle` seconds;
  with `--unfocused`, a second one as when its terminal has lost focus.

Also the console side: this process's CPU per resync (nothing changed, one
container's labels changed behind its back, and the first one), and while
idle. Prints a markdown table of ratios (ctrdeck / containerd).

    .venv/bin/python -m bench.bench_resync [--containers 2000] [--running 50] [--idle 60] \
        [--unfocused]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bench_tasks
from bench.bench_console import cpu_seconds, create_container
from bench.stats import machine, pct, table
from core.api.containerd.services.containers import v1 as containers_api
from core.api.containerd.services.tasks import v1 as tasks_api
from core.api.google.protobuf import FieldMask
from core.client import Client
from tests import engine_proc
from tui.state import NodeState
from tui.syncer import Syncer

NS = bench_tasks.NS
ROUNDS = 5
POLLS = 6
# Longer than ctrdeck's sharing window (`core/runtime/sampler.py`), so every poll reads.
POLL_GAP = 1.2
CONSOLES = 5


def cpu_ns(pid: int) -> int:
    """CPU time the process's live threads have used, in nanoseconds."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


async def measure(running: engine_proc.Running, args: argparse.Namespace) -> dict[str, Any]:
    target = bench_tasks.Target(running)
    client = Client(str(running.address), NS)
    work = Path(tempfile.mkdtemp(prefix="bench-resync-"))
    pid = running.proc.pid
    out: dict[str, Any] = {"resync": [], "console": [], "metrics": [], "burst": []}
    try:
        bench_tasks.import_image(target, bench_tasks.image_archive(work))
        for i in range(args.running):
            bench_tasks.checked(
                target.run_argv("-d", bench_tasks.IMAGE, f"run-{i:02d}", "sleep", "86400")
            )
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                await create_container(client, f"bench-{i:05d}", bench_tasks.IMAGE)

        await asyncio.gather(*(one(i) for i in range(args.containers)))
        state = NodeState(NS, str(running.address))
        syncer = Syncer(
            Client(str(running.address), NS),
            state,
            on_log=lambda _: None,
            on_connection=lambda *_: None,
        )
        c0 = time.process_time()
        await syncer.resync()
        out["first"] = (time.process_time() - c0) * 1000
        consoles = [Client(str(running.address), NS) for _ in range(CONSOLES)]
        for _ in range(ROUNDS):
            e0, c0 = cpu_seconds(pid), time.process_time()
            await syncer.resync()
            out["resync"].append((cpu_seconds(pid) - e0) * 1000)
            out["console"].append((time.process_time() - c0) * 1000)
            for _ in range(POLLS):
                await asyncio.sleep(POLL_GAP)
                e0 = cpu_ns(pid)
                await syncer._metrics()
                out["metrics"].append((cpu_ns(pid) - e0) / 1e6)
            await asyncio.sleep(POLL_GAP)
            e0 = cpu_ns(pid)
            request = tasks_api.MetricsRequest(filters=[f"namespace=={NS}"])
            answers = await asyncio.gather(*(c.tasks.metrics(request) for c in consoles))
            out["burst"].append((cpu_ns(pid) - e0) / 1e6)
            assert all(len(a.metrics) == args.running for a in answers)
        assert sum(1 for c in state.containers.values() if c.status == "RUNNING") == args.running
        out["changed"], out["console changed"] = [], []
        for r in range(ROUNDS):
            # A label changed behind the console's back (no events followed here).
            cid = f"bench-{r:05d}"
            await client.containers.update(
                containers_api.UpdateContainerRequest(
                    container=containers_api.Container(id=cid, labels={"round": str(r)}),
                    update_mask=FieldMask(paths=["labels"]),
                )
            )
            e0, c0 = cpu_seconds(pid), time.process_time()
            await syncer.resync()
            out["changed"].append((cpu_seconds(pid) - e0) * 1000)
            out["console changed"].append((time.process_time() - c0) * 1000)
            assert state.containers[cid].labels == {"round": str(r)}
        task = asyncio.ensure_future(syncer.run())
        await asyncio.sleep(3.0)
        e0, c0, t0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
        await asyncio.sleep(args.idle)
        elapsed = time.perf_counter() - t0
        out["idle"] = (cpu_seconds(pid) - e0) / elapsed * 100
        out["console idle"] = (time.process_time() - c0) / elapsed * 100
        if args.unfocused:
            # As when the console's terminal reports it lost focus (`App.app_focus`).
            syncer.watched = lambda: False
            e0, t0 = cpu_seconds(pid), time.perf_counter()
            await asyncio.sleep(args.idle)
            out["unfocused"] = (cpu_seconds(pid) - e0) / (time.perf_counter() - t0) * 100
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        syncer.base.close()
        for console in consoles:
            console.close()
    finally:
        await bench_tasks.sweep(client)
        client.close()
        bench_tasks.remove_namespace_cgroups(NS)
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=2000)
    parser.add_argument("--running", type=int, default=50)
    parser.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    parser.add_argument(
        "--unfocused", action="store_true", help="a second idle window, the terminal unfocused"
    )
    args = parser.parse_args()
    results = {}
    for start in (engine_proc.containerd, engine_proc.ctrdeck):
        with start() as running:
            results[running.name] = asyncio.run(measure(running, args))
    cd, cx = results["containerd"], results["ctrdeck"]
    print(f"machine: {machine()}\n")
    print(
        f"{args.containers:,} containers + {args.running} running tasks, medians of {ROUNDS}"
        f" resyncs, {ROUNDS * POLLS} polls, {ROUNDS} bursts\n"
    )
    print(
        table(
            [
                ("engine CPU per resync", pct(cd["resync"], 50), pct(cx["resync"], 50), "ms"),
                ("console CPU per resync", pct(cd["console"], 50), pct(cx["console"], 50), "ms"),
                (
                    "engine CPU per resync, one record changed",
                    pct(cd["changed"], 50),
                    pct(cx["changed"], 50),
                    "ms",
                ),
                (
                    "console CPU per resync, one record changed",
                    pct(cd["console changed"], 50),
                    pct(cx["console changed"], 50),
                    "ms",
                ),
                ("console CPU, first resync (connect)", cd["first"], cx["first"], "ms"),
                (
                    "engine CPU per metrics poll",
                    pct(cd["metrics"], 50),
                    pct(cx["metrics"], 50),
                    "ms",
                ),
                (
                    f"engine CPU, {CONSOLES} consoles polling at once",
                    pct(cd["burst"], 50),
                    pct(cx["burst"], 50),
                    "ms",
                ),
                (f"engine CPU, idle console, {args.idle:g} s", cd["idle"], cx["idle"], "% core"),
                (
                    f"console CPU, idle, {args.idle:g} s",
                    cd["console idle"],
                    cx["console idle"],
                    "% core",
                ),
            ]
            + (
                [
                    (
                        f"engine CPU, idle console, terminal unfocused, {args.idle:g} s",
                        cd["unfocused"],
                        cx["unfocused"],
                        "% core",
                    )
                ]
                if args.unfocused
                else []
            )
        )
    )


if __name__ == "__main__":
    main()
