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

With `--before DIR`, the engine of that checkout runs too (a third column, its own
histogram), each round going through the three engines in turn: a before/after
of the handlers in one run. Each engine's own CPU per `ctr run -d` (utime+stime of
its main process, its threads included; not containerd's shims, not our monitors)
is the steadier figure on a loaded machine.

    .venv/bin/python -m bench.bench_run_calls [--rounds 20] [--before /path/to/checkout]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import socket
import statistics
import urllib.request
from collections import Counter
from pathlib import Path

from bench import bench_tasks as bt
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


async def measure(rounds: int, before: Path | None) -> tuple[Measured, dict[str, float]]:
    """What each engine's histogram said, and each engine's CPU over all rounds in ms."""
    names = ["containerd", *(["before"] if before else []), "ctrdeck"]
    ports = {k: free_port() for k in names}
    histograms = {k: HISTOGRAMS.get(k, OURS) for k in names}
    got: Measured = {k: ([], Counter(), Counter()) for k in ports}
    cpus = dict.fromkeys(names, 0.0)

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
        async with bt.prepared(engines) as clients:
            for i in range(WARMUP + rounds):
                for k, running in engines.items():
                    cid = f"calls-{i}"
                    s0, c0 = scrape(ports[k], histograms[k])
                    argv = bt.Target(running).run_argv("-d", bt.IMAGE, cid, "sleep", "1000")
                    cpu = cpu_ms(running.proc.pid)
                    wall = bt.wall_ms(argv)
                    cpu = cpu_ms(running.proc.pid) - cpu
                    s1, c1 = scrape(ports[k], histograms[k])
                    if i >= WARMUP:
                        got[k][0].append(wall)
                        cpus[k] += cpu
                        got[k][1].update(s1 - s0)
                        got[k][2].update(c1 - c0)
                    await bt.end_task(clients[k], cid)
                    await bt.remove_container(clients[k], cid)
    return got, cpus


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--before", type=Path, help="a checkout whose engine runs alongside")
    args = parser.parse_args()
    before = args.before.resolve() if args.before else None
    got, cpus = asyncio.run(measure(args.rounds, before))
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
    methods = sorted(set().union(*(got[k][2] for k in got)), key=lambda m: -got["ctrdeck"][1][m])
    for m in methods:
        cells = [f"{got[k][2][m] / n:.0f} x, {got[k][1][m] * 1000 / n:.2f} ms" for k in got]
        print(f"| {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
