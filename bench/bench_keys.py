"""Typed-ahead keys benchmark: what delivering keys one at a time costs a burst.

The console holds terminal keys and hands each over once the previous one has
settled (`tui/typeahead.py`). On the fixed node of the snapshot tests (no
engine: what is measured is the console), bursts of 40 keys are posted at once,
as one terminal read delivers them, and timed until all have settled:

- typing into the filter box (printable keys to an input, which follow at once);
- `j`/`k` in the containers table (each key waits for its rounds);

and typing with Textual's own delivery for comparison (fast, and wrong: it
sends keys to whatever had focus when they arrived). Moves have no end state
to wait for without the queue, so they are timed with it only.

    .venv/bin/python -m bench.bench_keys [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

from textual import events
from textual.app import App

from tests.tui.fixed import fixed_app
from tui.app import CtrdeckApp
from tui.typeahead import TypeAheadApp

BURST = 40
TYPED = "abcdefghijklmnopqrstuvwxyz0123456789ABCD"


async def burst_ms(
    app: CtrdeckApp, keys: list[str], done: Callable[[], bool], gated: bool
) -> float:
    """Milliseconds per key from posting `keys` at once until they settled (or `done`)."""
    target = app.keys_settled + len(keys)
    start = time.monotonic()
    for key in keys:
        app.post_message(events.Key(key, key if len(key) == 1 else None))
    while not done() or (gated and (app.keys_settled < target or app.keys_held)):
        await asyncio.sleep(0.0005)
    return (time.monotonic() - start) * 1000 / len(keys)


async def measure(runs: int, gated: bool) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"type into the filter": []}
    app = fixed_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        table = app.main.table("containers")
        for _ in range(runs if gated else 0):
            moves = ["j", "k"] * (BURST // 2)
            out.setdefault("j/k in the table", []).append(
                await burst_ms(app, moves, lambda: table.cursor_row == 0, gated)
            )
            await pilot.pause()
        await pilot.press("slash")
        box = app.main.query_one("#filter")
        for _ in range(runs):
            out["type into the filter"].append(
                await burst_ms(app, list(TYPED), lambda: table.filter_text == TYPED, gated)
            )
            await pilot.press("ctrl+u")
            await pilot.pause()
        assert box.has_focus
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    gated = asyncio.run(measure(args.runs, gated=True))
    # Textual's own delivery, for comparison: the queue stepped around.
    original = TypeAheadApp.on_event

    async def ungated(self: TypeAheadApp[int], event: events.Event) -> None:
        await App.on_event(self, event)

    TypeAheadApp.on_event = ungated  # type: ignore[method-assign]
    try:
        plain = asyncio.run(measure(args.runs, gated=False))
    finally:
        TypeAheadApp.on_event = original  # type: ignore[method-assign]
    print(f"| {BURST}-key burst, ms per key (median of {args.runs}) | queued | Textual's own |")
    print("|---|---|---|")
    for name, figures in gated.items():
        other = f"{statistics.median(plain[name]):.2f}" if name in plain else "-"
        print(f"| {name} | {statistics.median(figures):.2f} | {other} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
