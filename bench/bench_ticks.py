"""The idle console's own work at 10,000 containers: the metrics refresh and the age tick.

The whole console (`CtrdeckApp`, main screen, 120x40 on Textual's headless
driver, no engine) on a node of `--containers` containers, `--running` of them
with a running task. CPU of this process, from the change until the frame
after it is rendered, over `--ticks` repetitions:

- metrics refresh: every running row's CPU figure changes, as the syncer's
  2-second `Tasks.Metrics` poll changes them, and the screen repaints (also
  shown alone: the screen bringing the table up to the model, without the frame);
- age tick: the clock moves a minute and the console's 5-second age refresh runs.

    .venv/bin/python -m bench.bench_ticks [--containers 10000] [--running 50] [--ticks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.stats import pct
from tui.app import CtrdeckApp
from tui.console import Settings
from tui.state import CONTAINERS, ContainerRow, NodeState

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def node(containers: int, running: int) -> NodeState:
    state = NodeState("default", "unix:///bench.sock")
    state.connected = True
    every = max(containers // max(running, 1), 1)
    for i in range(containers):
        live = i % every == 0 and i // every < running
        state.upsert(
            CONTAINERS,
            f"c{i:05d}",
            ContainerRow(
                f"c{i:05d}",
                "docker.io/library/busybox:latest",
                "io.containerd.runc.v2",
                status="RUNNING" if live else "",
                pid=100 + i if live else 0,
                started=NOW - timedelta(minutes=3) if live else None,
                cpu=0.5 if live else None,
                memory=1 << 20 if live else None,
            ),
        )
    return state


async def measure(containers: int, running: int, ticks: int) -> dict[str, list[float]]:
    now = [NOW]
    settings = Settings(
        address="unix:///bench.sock", namespace="default", keymap_path=Path("/nonexistent")
    )
    app = CtrdeckApp(settings, state=node(containers, running), clock=lambda: now[0])
    out: dict[str, list[float]] = {
        "metrics refresh": [],
        "metrics refresh, the model to the table alone": [],
        "age tick": [],
    }
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.5)
        live = [k for k, r in app.state.containers.items() if r.status == "RUNNING"]
        for n in range(ticks):
            for j, key in enumerate(live):
                app.state.update_container(str(key), cpu=(n * 7 + j) % 50 / 10)
            t0 = time.process_time()
            app.repaint()
            t1 = time.process_time()
            await pilot.pause()
            out["metrics refresh"].append((time.process_time() - t0) * 1000)
            out["metrics refresh, the model to the table alone"].append((t1 - t0) * 1000)
            now[0] += timedelta(minutes=1)
            t0 = time.process_time()
            app.refresh_ages()
            await pilot.pause()
            out["age tick"].append((time.process_time() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=10_000)
    parser.add_argument("--running", type=int, default=50)
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args()
    out = asyncio.run(measure(args.containers, args.running, args.ticks))
    print(f"{args.containers:,} containers, {args.running} running, CPU ms per tick\n")
    print("| work | p50 | p99 | max |\n|---|---|---|---|")
    for name, samples in out.items():
        print(f"| {name} | {pct(samples, 50):.1f} | {pct(samples, 99):.1f} | {max(samples):.1f} |")


if __name__ == "__main__":
    main()
