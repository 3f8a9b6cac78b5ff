"""The containers table at 10,000 rows: CPU per key, on Textual's headless driver.

A `ContainersTable` alone in an app at 120x40 (`App.run_test`, every frame
laid out and rendered, nothing written to a terminal), given `--rows` rows
(one in five RUNNING). For each action, the CPU time of this process from the
action until the frame after it is rendered (Pilot's pause), over `--presses`
repetitions; CPU rather than wall time, so a loaded machine moves it less:

- `j`: cursor down one row;
- `G` / `g`: to the last row and back to the first;
- filter: a filter that keeps a tenth of the rows, then clearing it (both timed);
- resync: the same rows given again (what every refresh does).

    .venv/bin/python -m bench.bench_table [--rows 10000] [--presses 20]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from textual.app import App, ComposeResult

from bench.stats import pct
from tui.state import ContainerRow
from tui.widgets.tables import ContainersTable


def rows(n: int) -> dict[str, dict]:
    now = datetime.now(UTC)
    out = {}
    for i in range(n):
        cid = f"c{i:05d}"
        row = ContainerRow(
            cid,
            "docker.io/library/busybox:latest",
            "io.containerd.runc.v2",
            status="RUNNING" if i % 5 == 0 else "",
            pid=100 + i,
            started=now,
        )
        out[cid] = ContainersTable.cells(row, now, {})
    return out


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield ContainersTable(id="containers")


async def measure(n: int, presses: int) -> dict[str, list[float]]:
    app = TableApp()
    given = rows(n)
    out: dict[str, list[float]] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(ContainersTable)
        t0 = time.process_time()
        table.sync(given)
        await pilot.pause()
        out["first sync"] = [(time.process_time() - t0) * 1000]
        table.focus()
        await pilot.pause()

        async def timed(name: str, action: Callable[[], Awaitable[None]]) -> None:
            t0 = time.process_time()
            await action()
            await pilot.pause()
            out.setdefault(name, []).append((time.process_time() - t0) * 1000)

        async def set_filter(text: str) -> None:
            table.set_filter(text)

        async def resync() -> None:
            table.sync(dict(given))

        for i in range(presses):
            await timed("j", lambda: pilot.press("j"))
            await timed("G", lambda: pilot.press("G"))
            await timed("g", lambda: pilot.press("g"))
            await timed("filter (keeps a tenth)", lambda i=i: set_filter(f"c0{i % 10}"))
            await timed("filter cleared", lambda: set_filter(""))
            await timed("resync, nothing changed", resync)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--presses", type=int, default=20)
    args = parser.parse_args()
    out = asyncio.run(measure(args.rows, args.presses))
    print(f"{args.rows:,} rows, {args.presses} of each, CPU ms per action\n")
    print("| action | p50 | p99 | max |\n|---|---|---|---|")
    for name, samples in out.items():
        print(f"| {name} | {pct(samples, 50):.1f} | {pct(samples, 99):.1f} | {max(samples):.1f} |")


if __name__ == "__main__":
    main()
