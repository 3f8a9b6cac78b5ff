"""What `ctr run -d` asks of each engine, call by call, timed by the engines themselves.

`ctr run -d` makes about 35 calls (Namespaces.Get, Images.Get, ten Content.Info and
ten Content.Read, Leases, Snapshots, Containers, Tasks.Create and Start). Both
engines run at once with their Prometheus listener on: containerd's
`grpc_server_handling_seconds` (with `grpc_histogram`) and ctrdeck's
`ctrdeck_grpc_request_duration_seconds`, each the time from a request's arrival
at its handler to its reply. Scraped before and after each `ctr run -d` (one
per engine in turn), the differences give each method's count and handling time
per run; the wall time of the whole `ctr run -d` less the sum of its handlers is
what the transport, the connection and `ctr` itself took.

With `--wire`, each `ctr` talks to its engine through a recording proxy
(`bench.wire_trace`, the same hop for every engine) and the table adds, per run,
the engine's side of the wire (from a request's last frame to its reply's last
frame, all calls and the small ones: all but Tasks.Create and Start) and the
client's (from a reply's end to the next request), medians over the rounds of
each run's sums; the wall then includes the proxy's hops.

With `--before DIR`, the engine of that checkout runs too (a third column, its own
histogram), each round going through the three engines in turn: a before/after
of the handlers in one run. Each engine's own CPU per `ctr run -d` (utime+stime of
its main process, its threads included; not containerd's shims, not our monitors)
is the steadier figure on a loaded machine.

    .venv/bin/python -m bench.bench_run_calls [--rounds 20] [--before /path/to/checkout] [--wire]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import re
import socket
import statistics
import urllib.request
from collections import Counter
from pathlib import Path

from bench import bench_tasks as bt
from bench import wire_trace
from bench.bench_tasks_ab import engine_proc_of
from tests import engine_proc

WARMUP = 2
HISTOGRAMS = {
    "containerd": "grpc_server_handling_seconds",
    "ctrdeck": "ctrdeck_grpc_request_duration_seconds",
}
OURS = HISTOGRAMS["ctrdeck"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_ms(pid: int) -> float:
    """utime+stime of a process so far, threads included, in ms."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def scrape(port: int, histogram: str) -> tuple[Counter[str], Counter[str]]:
    """(seconds, calls) by method ("Service.Method") of one engine's histogram."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/metrics").read().decode()
    seconds: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    for kind, labels, value in re.findall(histogram + r"_(sum|count)\{([^}]*)\} (\S+)", text):
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if "grpc_service" in found:
            method = found["grpc_service"].rsplit(".", 1)[-1] + "." + found["grpc_method"]
        else:
            service, _, name = found.get("method", "").strip("/").rpartition("/")
            method = service.rsplit(".", 1)[-1] + "." + name
        (seconds if kind == "sum" else calls)[method] += float(value)
    return seconds, calls


Measured = dict[str, tuple[list[float], Counter[str], Counter[str]]]
"""Per engine: the wall times, and each method's handling seconds and calls over all rounds."""
Wire = dict[str, list[dict[str, float]]]
"""Per engine: each round's sums over the wire, in ms (`wire_sums`)."""
BIG = ("/containerd.services.tasks.v1.Tasks/Create", "/containerd.services.tasks.v1.Tasks/Start")


def wire_sums(conns: list[wire_trace.Connection]) -> dict[str, float]:
    """One run's engine side (all calls, and all but `BIG`) and client side, in ms."""
    sums: Counter[str] = Counter()
    for conn in conns:
        found, counts = wire_trace.calls(conn)
        previous = None
        for call in found:
            if call.reply_end and call.request_end:
                span = (call.reply_end - call.request_end) * 1000
                sums["engine side, all calls"] += span
                if call.path not in BIG:
                    sums["engine side, small calls"] += span
            if previous is not None:
                sums["client side"] += (call.headers_at - previous) * 1000
            previous = call.reply_end or previous
        sums["engine writes"] += counts["engine writes"]
        sums["client reads"] += counts["client reads"]
    return dict(sums)


async def measure(
    rounds: int, before: Path | None, wire: bool = False
) -> tuple[Measured, dict[str, float], Wire]:
    """What each engine's histogram said, each engine's CPU over all rounds in ms, and
    with `wire` each round's sums over the wire."""
    names = ["containerd", *(["before"] if before else []), "ctrdeck"]
    ports = {k: free_port() for k in names}
    histograms = {k: HISTOGRAMS.get(k, OURS) for k in names}
    got: Measured = {k: ([], Counter(), Counter()) for k in ports}
    cpus = dict.fromkeys(names, 0.0)
    wired: Wire = {k: [] for k in names}

    def ours(port: int) -> str:
        return f'version = 2\n[metrics]\naddress = "127.0.0.1:{port}"\n'

    with contextlib.ExitStack() as stack:
        engines = {
            "containerd": stack.enter_context(
                engine_proc.containerd(
                    f'[metrics]\naddress = "127.0.0.1:{ports["containerd"]}"\n'
                    "grpc_histogram = true\n"
                )
            )
        }
        if before:
            engines["before"] = stack.enter_context(
                engine_proc_of(before).ctrdeck(ours(ports["before"]))
            )
        engines["ctrdeck"] = stack.enter_context(engine_proc.ctrdeck(ours(ports["ctrdeck"])))
        proxies = {}
        if wire:
            for k, running in engines.items():
                listen = Path(f"/tmp/wire-{os.getpid()}-{k}.sock")
                proxies[k] = stack.enter_context(wire_trace.Proxy(listen, running.address))
        async with bt.prepared(engines) as clients:
            for i in range(WARMUP + rounds):
                for k, running in engines.items():
                    cid = f"calls-{i}"
                    s0, c0 = scrape(ports[k], histograms[k])
                    via = running
                    if wire:
                        via = dataclasses.replace(running, address=proxies[k].listen)
                    argv = bt.Target(via).run_argv("-d", bt.IMAGE, cid, "sleep", "1000")
                    cpu = cpu_ms(running.proc.pid)
                    wall = bt.wall_ms(argv)
                    cpu = cpu_ms(running.proc.pid) - cpu
                    s1, c1 = scrape(ports[k], histograms[k])
                    if wire:
                        conns = proxies[k].take()
                        if i >= WARMUP:
                            wired[k].append(wire_sums(conns))
                    if i >= WARMUP:
                        got[k][0].append(wall)
                        cpus[k] += cpu
                        got[k][1].update(s1 - s0)
                        got[k][2].update(c1 - c0)
                    await bt.end_task(clients[k], cid)
                    await bt.remove_container(clients[k], cid)
    return got, cpus, wired


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--before", type=Path, help="a checkout whose engine runs alongside")
    parser.add_argument("--wire", action="store_true", help="through a recording proxy")
    args = parser.parse_args()
    before = args.before.resolve() if args.before else None
    got, cpus, wired = asyncio.run(measure(args.rounds, before, args.wire))
    n = args.rounds
    load = bt.load_average()
    print(f"`ctr run -d`, {n} rounds per engine after {WARMUP}; load {load}\n")
    print("| per run | " + " | ".join(got) + " |")
    print("|---" * (len(got) + 1) + "|")
    walls = [f"{statistics.median(got[k][0]):.1f} ms" for k in got]
    print("| wall p50 | " + " | ".join(walls) + " |")
    handled = [f"{sum(got[k][1].values()) * 1000 / n:.1f} ms" for k in got]
    print("| in handlers, sum | " + " | ".join(handled) + " |")
    print("| engine process CPU | " + " | ".join(f"{cpus[k] / n:.1f} ms" for k in got) + " |")
    if args.wire:
        for row in ("engine side, all calls", "engine side, small calls", "client side"):
            cells = [f"{statistics.median(r.get(row, 0) for r in wired[k]):.1f} ms" for k in got]
            print(f"| {row} (wire) | " + " | ".join(cells) + " |")
        for row in ("client reads", "engine writes"):
            cells = [f"{statistics.median(r.get(row, 0) for r in wired[k]):.0f}" for k in got]
            print(f"| {row} (wire) | " + " | ".join(cells) + " |")
    methods = sorted(set().union(*(got[k][2] for k in got)), key=lambda m: -got["ctrdeck"][1][m])
    for m in methods:
        cells = [f"{got[k][2][m] / n:.0f} x, {got[k][1][m] * 1000 / n:.2f} ms" for k in got]
        print(f"| {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
