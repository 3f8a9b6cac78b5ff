"""Many clients: 50 connections x 1,000 mixed unary calls, beside Debian's containerd.

Each engine gets a namespace seeded with 20 images and 20 containers. Then 50 clients,
each on its own connection (`core.client`), spread over 5 worker processes (one Python
process cannot drive either engine to its limit), each make 1,000 calls cycling through
Version, Namespaces.List, Images.List, Containers.List and Content.List; 10 of them also
hold an Events.Subscribe stream open throughout. All workers connect and warm up first and
start together. Measured: throughput (calls / wall time of the busiest worker), the
latency of every call (p50, p99), and the engine process's CPU (utime + stime from
`/proc/PID/stat`) per call.

    .venv/bin/python -m bench.bench_clients [--clients 50] [--calls 1000] [--workers 5]

`--pin` puts each engine on CPU 0 (all its threads) and the workers on CPU 1, so a
profile's line shares are not skewed by the engine waiting for a core (perf-notes'
trap); `--profile DIR` records ctrdeck's engine with py-spy (raw format, one file
per round) while the clients run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.bench_console import create_container
from bench.stats import machine, pct, table
from core.api.containerd import types
from core.api.containerd.services.containers import v1 as containers
from core.api.containerd.services.content import v1 as content
from core.api.containerd.services.events import v1 as events
from core.api.containerd.services.images import v1 as images
from core.api.containerd.services.namespaces import v1 as namespaces
from core.client import Client
from tests import engine_proc

NAMESPACE = "bench-clients"
DIGEST = "sha256:" + "b" * 64
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def seed(address: str) -> None:
    async with Client(address, NAMESPACE) as client:
        for i in range(20):
            await client.images.create(
                images.CreateImageRequest(
                    image=images.Image(
                        name=f"registry.example.com/bench/app-{i:02d}:v1",
                        labels={"idx": str(i)},
                        target=types.Descriptor(
                            media_type="application/vnd.oci.image.manifest.v1+json",
                            digest=DIGEST,
                            size=1234,
                        ),
                    )
                )
            )
            await create_container(
                client, f"bench-{i:02d}", f"registry.example.com/bench/app-{i:02d}:v1"
            )


async def one_client(
    address: str, calls: int, subscribe: bool, start: asyncio.Event
) -> list[float]:
    client = Client(address, NAMESPACE)
    ops = [
        lambda: client.server_version(),
        lambda: client.namespaces.list(namespaces.ListNamespacesRequest()),
        lambda: client.images.list(images.ListImagesRequest()),
        lambda: client.containers.list(containers.ListContainersRequest()),
        lambda: collect(client.content.list(content.ListContentRequest())),
    ]
    holder = None
    try:
        if subscribe:
            holder = asyncio.create_task(drain(client.events.subscribe(events.SubscribeRequest())))
        for op in ops:
            await op()
        await start.wait()
        samples = []
        for i in range(calls):
            t = time.perf_counter()
            await ops[i % len(ops)]()
            samples.append((time.perf_counter() - t) * 1000)
        return samples
    finally:
        if holder is not None:
            holder.cancel()
            with contextlib.suppress(BaseException):
                await holder
        client.close()


async def collect(stream: object) -> None:
    async for _ in stream:  # type: ignore[attr-defined]
        pass


async def drain(stream: object) -> None:
    async for _ in stream:  # type: ignore[attr-defined]
        pass


async def worker(address: str, clients: int, calls: int, subscribers: int) -> None:
    """A worker process: connect, say ready, wait for `go` on stdin, run, print results."""
    start = asyncio.Event()
    tasks = [
        asyncio.create_task(one_client(address, calls, i < subscribers, start))
        for i in range(clients)
    ]
    await asyncio.sleep(1.0)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    t0 = time.perf_counter()
    start.set()
    results = await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    print(json.dumps({"wall": wall, "samples": [s for r in results for s in r]}), flush=True)


def measure(
    running: engine_proc.Running, args: argparse.Namespace, round_: int = 0
) -> dict[str, float]:
    address = str(running.address)
    asyncio.run(seed(address))
    pid = running.proc.pid
    pin: list[str] = []
    if args.pin:
        subprocess.run(
            ["taskset", "-a", "-p", "-c", "0", str(pid)], check=True, capture_output=True
        )
        pin = ["taskset", "-c", "1"]
    per = args.clients // args.workers
    subs_left = args.subscribers
    procs = []
    for _ in range(args.workers):
        subs = min(per, subs_left)
        subs_left -= subs
        procs.append(
            subprocess.Popen(
                [*pin, sys.executable, "-m", "bench.bench_clients", "--worker", address,
                 "--clients", str(per), "--calls", str(args.calls), "--subscribers", str(subs)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                cwd=engine_proc.ROOT, env=dict(os.environ, PYTHONPATH=str(engine_proc.ROOT)),
            )
        )  # fmt: skip
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    spy = None
    if args.profile and running.name != "containerd":
        out = Path(args.profile) / f"engine-round{round_}.txt"
        spy = subprocess.Popen(
            [args.py_spy, "record", "--pid", str(pid), "--nonblocking", "--format", "raw",
             "--rate", "250", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)
    cpu0 = cpu_seconds(running.proc.pid)
    t0 = time.perf_counter()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(running.proc.pid) - cpu0
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait()
    samples = [s for o in outs for s in o["samples"]]
    return {
        "throughput": len(samples) / wall,
        "p50": pct(samples, 50),
        "p99": pct(samples, 99),
        "cpu_us": cpu / len(samples) * 1e6,
        "cpu_share": cpu / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pin", action="store_true", help="engine on CPU 0, workers on CPU 1")
    parser.add_argument("--profile", metavar="DIR", help="py-spy raw profiles of ctrdeck's engine")
    parser.add_argument("--py-spy", default="py-spy", help="the py-spy binary")
    parser.add_argument("--worker", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args.worker, args.clients, args.calls, args.subscribers))
        return
    runs: dict[str, list[dict[str, float]]] = {"containerd": [], "ctrdeck": []}
    for round_ in range(args.rounds):
        order = ["containerd", "ctrdeck"] if round_ % 2 == 0 else ["ctrdeck", "containerd"]
        for name in order:
            start = engine_proc.containerd if name == "containerd" else engine_proc.ctrdeck
            with start() as running:
                runs[name].append(measure(running, args, round_))

    def med(name: str, key: str) -> float:
        values = sorted(r[key] for r in runs[name])
        return values[len(values) // 2]

    rows = [
        ("throughput (calls/s)", med("containerd", "throughput"), med("ctrdeck", "throughput"), ""),
        ("latency p50", med("containerd", "p50"), med("ctrdeck", "p50"), "ms"),
        ("latency p99", med("containerd", "p99"), med("ctrdeck", "p99"), "ms"),
        ("engine CPU per call", med("containerd", "cpu_us"), med("ctrdeck", "cpu_us"), "µs"),
        ("engine CPU (cores busy)", med("containerd", "cpu_share"),
         med("ctrdeck", "cpu_share"), ""),
    ]  # fmt: skip
    print(f"machine: {machine()}\n")
    print(
        f"{args.clients} clients x {args.calls} calls in {args.workers} worker processes, "
        f"{args.subscribers} holding Events.Subscribe; median of {args.rounds} rounds\n"
    )
    print(table(rows))
    print("\nall rounds:")
    for name, values in runs.items():
        for r in values:
            print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))
    # Both engines of a round ran back to back, so a round's ratio carries less
    # of the shared machine's drift than the ratio of the medians.
    print("\nratio ctrdeck / containerd per round:")
    for key in ("throughput", "p99", "cpu_us"):
        ratios = [d[key] / c[key] for c, d in zip(runs["containerd"], runs["ctrdeck"], strict=True)]
        print(f"  {key}: " + ", ".join(f"{x:.2f}x" for x in ratios))


if __name__ == "__main__":
    main()
