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

    .venv/bin/python -m bench.bench_run_calls [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import statistics
import urllib.request
from collections import Counter

from bench import bench_tasks as bt
from tests import engine_proc

WARMUP = 2
HISTOGRAMS = {
    "containerd": "grpc_server_handling_seconds",
    "ctrdeck": "ctrdeck_grpc_request_duration_seconds",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


async def measure(rounds: int) -> dict[str, tuple[list[float], Counter[str], Counter[str]]]:
    ports = {"containerd": free_port(), "ctrdeck": free_port()}
    got: dict[str, tuple[list[float], Counter[str], Counter[str]]] = {
        k: ([], Counter(), Counter()) for k in ports
    }
    with (
        engine_proc.containerd(
            f'[metrics]\naddress = "127.0.0.1:{ports["containerd"]}"\ngrpc_histogram = true\n'
        ) as cd,
        engine_proc.ctrdeck(
            f'version = 2\n[metrics]\naddress = "127.0.0.1:{ports["ctrdeck"]}"\n'
        ) as cx,
    ):
        engines = {"containerd": cd, "ctrdeck": cx}
        async with bt.prepared(engines) as clients:
            for i in range(WARMUP + rounds):
                for k, running in engines.items():
                    cid = f"calls-{i}"
                    s0, c0 = scrape(ports[k], HISTOGRAMS[k])
                    argv = bt.Target(running).run_argv("-d", bt.IMAGE, cid, "sleep", "1000")
                    wall = bt.wall_ms(argv)
                    s1, c1 = scrape(ports[k], HISTOGRAMS[k])
                    if i >= WARMUP:
                        got[k][0].append(wall)
                        got[k][1].update(s1 - s0)
                        got[k][2].update(c1 - c0)
                    await bt.end_task(clients[k], cid)
                    await bt.remove_container(clients[k], cid)
    return got


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    got = asyncio.run(measure(args.rounds))
    n = args.rounds
    load = bt.load_average()
    print(f"`ctr run -d`, {n} rounds per engine after {WARMUP}; load {load}\n")
    print("| per run | containerd | ctrdeck |")
    print("|---|---|---|")
    walls = [statistics.median(got[k][0]) for k in HISTOGRAMS]
    print(f"| wall p50 | {walls[0]:.1f} ms | {walls[1]:.1f} ms |")
    handled = [sum(got[k][1].values()) * 1000 / n for k in HISTOGRAMS]
    print(f"| in handlers, sum | {handled[0]:.1f} ms | {handled[1]:.1f} ms |")
    methods = sorted(
        set(got["containerd"][2]) | set(got["ctrdeck"][2]), key=lambda m: -got["ctrdeck"][1][m]
    )
    for m in methods:
        cells = [f"{got[k][2][m] / n:.0f} x, {got[k][1][m] * 1000 / n:.2f} ms" for k in HISTOGRAMS]
        print(f"| {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
