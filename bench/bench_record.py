"""Record, replay, serve: what they cost.

- Recording overhead: ctrdeck's engine under a steady 100 events/s (containers
  created and deleted through `core.client`, 50 of each a second), its CPU
  over a window without and then with `ctrdeck record` following it, and the
  recorder's own CPU, as shares of one core; the file's growth in that window,
  as bytes per hour of such a busy node.
- Replay start: a one-hour recording at 100 events/s (written through the
  recorder with a fast clock, so it holds what a real one would: keyframes,
  rows, log lines, metrics for 20 running containers), then the time to read
  it, to build the player and show its first position, and to seek to its
  end; and `ctrdeck replay FILE` in a pseudo-terminal until the first frame
  with its timeline is on the screen.
- Serve: `ctrdeck serve --replay FILE` with N websocket sessions open (what a
  browser tab opens), the proportional set size (PSS) of each session's
  console process and the server's growth per session.

    .venv/bin/python -m bench.bench_record [--window 20] [--sessions 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pyte

from bench.stats import machine
from core.api.containerd.services.containers import v1 as containers_api
from core.client import Client
from tests import engine_proc
from tests.tui.support import seed_container, seed_image
from tests.tui.terminal import Terminal, console_env
from tui import recording
from tui.player import Player
from tui.recorder import Recorder
from tui.state import CONTAINERS, ContainerRow, LogLine, NodeState

ROOT = Path(__file__).resolve().parent.parent
RATE = 100
RECORD = (sys.executable, "-m", "tui.cli", "record")
SERVE = (sys.executable, "-m", "tui.cli", "serve")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


async def churn(client: Client, seconds: float) -> int:
    """Create and delete containers at `RATE` events a second for `seconds`; the events made."""
    made, start, i = 0, time.monotonic(), 0

    async def pair(cid: str) -> None:
        await seed_container(client, cid, "bench/churn:1")
        await client.containers.delete(containers_api.DeleteContainerRequest(id=cid))

    while (elapsed := time.monotonic() - start) < seconds:
        # Side by side, as many as it takes to catch up: each write waits on the disk.
        behind = min(max(1, int((RATE * (elapsed + 0.1) - made) / 2)), 25)
        await asyncio.gather(*(pair(f"churn-{i + k}") for k in range(behind)))
        i += behind
        made += 2 * behind
        await asyncio.sleep(max(0.0, start + (made / RATE) - time.monotonic()))
    return made


async def overhead(window: float) -> dict[str, float]:
    with engine_proc.ctrdeck() as engine:
        client = Client(str(engine.address), "default")
        await seed_image(client, "bench/churn:1")
        before = cpu_seconds(engine.proc.pid)
        made = await churn(client, window)
        plain = (cpu_seconds(engine.proc.pid) - before) / window
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "busy.rec"
            rec = subprocess.Popen(
                [*RECORD, "-a", str(engine.address), "-o", str(path)],
                cwd=ROOT,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
                stdout=subprocess.DEVNULL,
            )
            try:
                while not path.exists() or not recording.read(path).records:
                    await asyncio.sleep(0.1)
                size0 = path.stat().st_size
                before, rec_before = cpu_seconds(engine.proc.pid), cpu_seconds(rec.pid)
                made_rec = await churn(client, window)
                recorded = (cpu_seconds(engine.proc.pid) - before) / window
                recorder = (cpu_seconds(rec.pid) - rec_before) / window
                await asyncio.sleep(1)
                grown = path.stat().st_size - size0
            finally:
                engine_proc.terminate(rec)
        client.close()
    return {
        "events/s without": made / window,
        "events/s with": made_rec / window,
        "engine CPU without (% core)": plain * 100,
        "engine CPU while recorded (% core)": recorded * 100,
        "recorder CPU (% core)": recorder * 100,
        "file MiB per hour": grown / window * 3600 / 2**20,
    }


def synthesize_hour(path: Path, running: int = 20) -> int:
    """An hour at `RATE` events/s, written through the recorder with a clock that runs fast."""
    now = [datetime(2026, 1, 1, tzinfo=UTC).timestamp()]
    writer = recording.Writer(
        path, {"address": "/run/x.sock", "namespace": "default"}, lambda: now[0]
    )
    recorder = Recorder(writer)
    state = NodeState("default", "/run/x.sock")
    for n in range(running):
        state.upsert(
            CONTAINERS,
            f"web-{n}",
            ContainerRow(
                f"web-{n}",
                "docker.io/library/web:1",
                "io.containerd.runc.v2",
                status="RUNNING",
                pid=1000 + n,
            ),
        )
    recorder.watch(state)
    step = 1.0 / RATE
    i = 0
    for second in range(3600):
        for _ in range(RATE // 2):
            now[0] += step
            cid = f"churn-{i}"
            i += 1
            when = datetime.fromtimestamp(now[0], UTC)
            state.upsert(
                CONTAINERS, cid, ContainerRow(cid, "bench/churn:1", "io.containerd.runc.v2")
            )
            recorder.log(LogLine(when, "default", "/containers/create", f"{cid}  bench/churn:1"))
            now[0] += step
            state.remove(CONTAINERS, cid)
            recorder.log(
                LogLine(when + timedelta(seconds=step), "default", "/containers/delete", cid)
            )
        if second % 2 == 0:
            for n in range(running):
                state.update_container(
                    f"web-{n}", cpu=(second + n) % 97 / 3, memory=(1 << 20) * (n + second % 13)
                )
        if second % 60 == 59:
            recorder.snapshot(state)
        writer.flush()
    recorder.close()
    return writer.records


def replay_start(path: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    rec = recording.read(path)
    t1 = time.perf_counter()
    player = Player(
        rec, NodeState("default"), on_log=lambda line: None, on_reset_log=lambda lines: None
    )
    player.seek(0)
    t2 = time.perf_counter()
    player.seek(rec.duration)
    t3 = time.perf_counter()
    player.seek(rec.duration / 2)
    t4 = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    terminal = Terminal(
        [sys.executable, "-m", "tui.cli", "replay", str(path), "--paused"],
        cols=120,
        rows=40,
        env=console_env(home / "config"),
    )
    t5 = time.perf_counter()
    terminal.start()
    try:
        length = recording.format_duration(rec.duration)

        def timeline_drawn(out: bytes) -> bool:
            # The console writes only the cells that change: read the screen, not the bytes.
            screen = pyte.Screen(120, 40)
            pyte.ByteStream(screen).feed(out)
            return any(length in row and "paused" in row for row in screen.display)

        terminal.wait_for(timeline_drawn, timeout=120)
        t6 = time.perf_counter()
    finally:
        terminal.stop()
    return {
        "records": len(rec.records),
        "file MiB": path.stat().st_size / 2**20,
        "read (s)": t1 - t0,
        "player at start (s)": t2 - t1,
        "seek to the end (s)": t3 - t2,
        "seek back to the middle (s)": t4 - t3,
        "`ctrdeck replay` to first frame (s)": t6 - t5,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [*SERVE, "--address", f"127.0.0.1:{port}", "--replay", str(path), "--max-sessions", "50"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        engine_proc.terminate(proc)


async def sessions(path: Path, count: int) -> dict[str, float]:
    with served(path) as (url, proc):
        await asyncio.sleep(1)
        server_before = pss_kib(proc.pid)
        async with aiohttp.ClientSession() as http:
            sockets = []
            for _ in range(count):
                ws = await http.ws_connect(f"{url}/ws?width=120&height=40")
                sockets.append(ws)
            # Let every console read the recording and draw its first frame.
            deadline = time.monotonic() + 120
            while len(children(proc.pid)) < count and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(8)
            consoles = [pss_kib(pid) for pid in children(proc.pid)]
            server_after = pss_kib(proc.pid)
            for ws in sockets:
                await ws.close()
    return {
        "sessions": float(len(consoles)),
        "console PSS per session (MiB)": sum(consoles) / max(len(consoles), 1) / 1024,
        "server growth per session (MiB)": (server_after - server_before) / count / 1024,
    }


def show(title: str, figures: dict[str, float]) -> None:
    print(f"\n### {title}\n\n| measure | value |\n|---|---|")
    for name, value in figures.items():
        print(f"| {name} | {value:,.3f} |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=20.0, help="seconds of churn per run")
    parser.add_argument("--sessions", type=int, default=5, help="served sessions to open")
    args = parser.parse_args()
    print(machine())
    show(f"recording a node at {RATE} events/s", await overhead(args.window))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hour.rec"
        t0 = time.perf_counter()
        synthesize_hour(path)
        print(f"\n(an hour's recording synthesized in {time.perf_counter() - t0:.1f} s)")
        show("replaying a one-hour recording", replay_start(path))
        show(f"serving it to {args.sessions} sessions", await sessions(path, args.sessions))


if __name__ == "__main__":
    asyncio.run(main())
