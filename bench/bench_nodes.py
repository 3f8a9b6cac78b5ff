"""Fleet benchmark: the console over 20 engines of ours x 200 containers each, on this machine.

Starts `--nodes` engines (tests/engine_proc.py), seeds each with `--containers`
container records through `core.client`, and runs the fleet console
(`tui.fleet_app.FleetApp`) in-process on Textual's headless driver (which lays
out and renders every frame as a terminal would, only nothing is written), at
160x45. It measures:

- first full frame: app start until every node is up and synced, the Nodes
  pane shows them all, and the all-nodes view (`A`) lists every container;
- `j` in the all-nodes view (4,000 rows): the time of one key press until the
  console is idle again, over `--presses` presses (median and p95);
- events kept up with: a separate process creates containers on every node
  as fast as the engines take them for `--burst` seconds; the rate it reached,
  the rate the console applied them at, and how long after the burst ended
  the console had every one (its lag);
- idle: the console's CPU time (as a share of one core) over `--idle` quiet
  seconds, and its resident memory.

    .venv/bin/python -m bench.bench_nodes [--nodes 20] [--containers 200] [--presses 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.stats import machine, pct
from core.api.containerd.services.containers import v1 as containers_api
from core.api.google.protobuf import Any as AnyMessage
from core.client import Client
from tests.engine_proc import ROOT, EngineProcess
from tui.app import Settings
from tui.fleet import UP
from tui.fleet_app import FleetApp
from tui.nodes import parse_url
from tui.nodes_cli import FleetPlan
from tui.screens.fleet import ALL
from tui.widgets.fleet_tables import AllContainersTable

SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
SPEC = json.dumps({"ociVersion": "1.0.2-dev", "process": {"args": ["/bin/true"], "cwd": "/"}})
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The load generator: one process, every node at once, creating until the deadline.
GENERATOR = """
import asyncio, json, sys, time
from tests.engine_proc import ROOT
from bench.bench_nodes import create
async def main(addresses, seconds):
    deadline = time.monotonic() + seconds
    made = 0
    async def one(address, n):
        nonlocal made
        from core.client import Client
        client = Client(address, "default")
        i = 0
        while time.monotonic() < deadline:
            await create(client, f"burst-{n}-{i}")
            i += 1
            made += 1
        client.close()
    await asyncio.gather(*(one(a, n) for n, a in enumerate(addresses)))
    print(made)
asyncio.run(main(json.loads(sys.argv[1]), float(sys.argv[2])))
"""


async def create(client: Client, cid: str) -> None:
    container = containers_api.Container(
        id=cid,
        image="registry.example.com/bench/app:v1",
        runtime=containers_api.ContainerRuntime(name="io.containerd.runc.v2"),
        spec=AnyMessage(type_url=SPEC_URL, value=SPEC.encode()),
    )
    await client.containers.create(containers_api.CreateContainerRequest(container=container))


async def seed(address: str, count: int) -> None:
    client = Client(address, "default")
    try:
        for start in range(0, count, 20):
            await asyncio.gather(
                *(create(client, f"app-{i:04d}") for i in range(start, min(count, start + 20)))
            )
    finally:
        client.close()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def measure(engines: list[EngineProcess], args: argparse.Namespace) -> dict[str, float]:
    specs = [parse_url(f"node{i:02d}", str(e.address)) for i, e in enumerate(engines)]
    app = FleetApp(Settings(address="", namespace="default"), FleetPlan(specs))
    total = len(engines) * args.containers
    out: dict[str, float] = {}
    started = time.monotonic()
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("A")
        table = app.main.query_one(f"#{ALL}", AllContainersTable)

        def full() -> bool:
            up = all(n.status.phase == UP for n in app.fleet.nodes.values())
            return up and table.row_count == total

        while not full():
            await pilot.pause(0.02)
        await pilot.pause()
        out["first full frame (s)"] = time.monotonic() - started

        samples = []
        for _ in range(args.presses):
            t0 = time.monotonic()
            await pilot.press("j")
            samples.append(time.monotonic() - t0)
        out["j in all-nodes view, median (ms)"] = pct(samples, 50) * 1000
        out["j in all-nodes view, p95 (ms)"] = pct(samples, 95) * 1000

        await pilot.pause(2)
        cpu0, t0 = cpu_seconds(), time.monotonic()
        await pilot.pause(args.idle)
        out["idle CPU (% of a core)"] = (cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
        out["idle RSS (MiB)"] = rss_mib()

        addresses = json.dumps([str(e.address) for e in engines])
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        generator = subprocess.Popen(
            [sys.executable, "-c", GENERATOR, addresses, str(args.burst)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        t0, cpu0 = time.monotonic(), cpu_seconds()
        marked: set[str] = set()
        while generator.poll() is None:
            marked |= {n.name for n in app.fleet.nodes.values() if n.status.phase != UP}
            await pilot.pause(0.05)
        ended = time.monotonic()
        made = int(generator.stdout.read().strip() or 0) if generator.stdout else 0

        def burst_rows() -> int:
            return sum(
                1
                for n in app.fleet.nodes.values()
                for c in n.state.containers
                if c.startswith("burst-")
            )

        def burst_events() -> int:
            return sum(
                1
                for line in app.main.event_log.buffer
                if line.topic == "/containers/create" and line.detail.startswith("burst-")
            )

        events_in = None
        while burst_rows() < made and time.monotonic() - ended < 60:
            if events_in is None and burst_events() >= min(made, 1500):
                events_in = time.monotonic()
            await pilot.pause(0.02)
        caught_up = time.monotonic()
        if events_in is not None:
            out["events received, lag after the burst (s)"] = max(0.0, events_in - ended)
        out["console CPU in the burst (% of a core)"] = (
            (cpu_seconds() - cpu0) / (caught_up - t0) * 100
        )
        out["nodes that missed a heartbeat in the burst"] = len(marked)
        out["events offered (/s, fleet)"] = made / (ended - t0)
        out["events applied (/s, fleet)"] = burst_rows() / (caught_up - t0)
        out["lag after the burst (s)"] = caught_up - ended
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--presses", type=int, default=40)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--burst", type=float, default=10.0)
    args = parser.parse_args()
    engines = [EngineProcess(log_level="warn") for _ in range(args.nodes)]
    try:
        for engine in engines:
            engine.start()

        async def seed_all() -> None:
            await asyncio.gather(*(seed(str(e.address), args.containers) for e in engines))

        asyncio.run(seed_all())
        figures = asyncio.run(measure(engines, args))
    finally:
        for engine in engines:
            engine.stop(cleanup=True)
    print(f"## Fleet console: {args.nodes} nodes x {args.containers} containers\n")
    print(machine())
    print("\n| measure | value |\n|---|---|")
    for what, value in figures.items():
        print(f"| {what} | {value:.2f} |")


if __name__ == "__main__":
    main()
