"""API benchmark: ctrdeck's engine beside Debian's containerd, in one run.

Measures, with the same Python client against both sockets: unary Version and
Namespaces.List latency (p50/p99), Images.List with 1,000 images, and the
latency from Events.Publish to receipt with 50 subscribers. Prints a markdown
table of ratios (ctrdeck / containerd; below 1 means ctrdeck is faster).

    .venv/bin/python -m bench.bench_api [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.stats import machine, summary, table
from core.api.containerd import events, types
from core.api.containerd.services.events import v1 as ev
from core.api.containerd.services.images import v1 as images
from core.api.containerd.services.namespaces import v1 as namespaces
from core.client import Client
from core.typeurl import pack
from tests import engine_proc

DIGEST = "sha256:" + "a" * 64


async def unary(client: Client, calls: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, call in [
        ("Version", lambda: client.server_version()),
        ("Namespaces.List", lambda: client.namespaces.list(namespaces.ListNamespacesRequest())),
    ]:
        for _ in range(50):
            await call()
        samples = []
        for _ in range(calls):
            t = time.perf_counter()
            await call()
            samples.append((time.perf_counter() - t) * 1000)
        out[name] = summary(samples)
    return out


async def image_list(client: Client, count: int = 1000, repeats: int = 20) -> dict[str, float]:
    ns = client.with_namespace("bench-images")
    for i in range(count):
        await ns.images.create(
            images.CreateImageRequest(
                image=images.Image(
                    name=f"registry.example.com/team/app-{i:04d}:v1",
                    labels={"team": "bench", "idx": str(i)},
                    target=types.Descriptor(
                        media_type="application/vnd.oci.image.index.v1+json",
                        digest=DIGEST,
                        size=1234,
                    ),
                )
            )
        )
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        resp = await ns.images.list(images.ListImagesRequest())
        samples.append((time.perf_counter() - t) * 1000)
        assert len(resp.images) == count
    return summary(samples)


async def event_latency(
    client: Client, subscribers: int = 50, events_n: int = 100
) -> dict[str, float]:
    received: list[float] = []
    sent: dict[str, float] = {}
    ready = 0

    async def sub() -> None:
        nonlocal ready
        ready += 1
        async for env in client.events.subscribe(
            ev.SubscribeRequest(filters=['topic=="/bench/ping"'])
        ):
            payload = events.ContentDelete.parse(env.event.value)
            received.append((time.perf_counter() - sent[payload.digest]) * 1000)

    tasks = [asyncio.create_task(sub()) for _ in range(subscribers)]
    await asyncio.sleep(1.0)
    for i in range(events_n):
        key = f"e{i}"
        sent[key] = time.perf_counter()
        await client.events.publish(
            ev.PublishRequest(topic="/bench/ping", event=pack(events.ContentDelete(digest=key)))
        )
        await asyncio.sleep(0.01)
    deadline = time.monotonic() + 30
    while len(received) < subscribers * events_n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    result = summary(received)
    result["delivered"] = len(received) / (subscribers * events_n)
    return result


async def measure(address: str, calls: int) -> dict[str, object]:
    client = Client(address, "default")
    try:
        return {
            "unary": await unary(client, calls),
            "images": await image_list(client),
            "events": await event_latency(client),
        }
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    results = {}
    for start in (engine_proc.containerd, engine_proc.ctrdeck):
        with start() as running:
            results[running.name] = asyncio.run(measure(str(running.address), args.calls))
    cd, cx = results["containerd"], results["ctrdeck"]
    rows = []
    for name in ("Version", "Namespaces.List"):
        for p in ("p50", "p99"):
            rows.append((f"{name} {p}", cd["unary"][name][p], cx["unary"][name][p], "ms"))
    for p in ("p50", "p99"):
        rows.append((f"Images.List, 1,000 images, {p}", cd["images"][p], cx["images"][p], "ms"))
    for p in ("p50", "p99"):
        rows.append(
            (f"event publish→receive, 50 subscribers, {p}", cd["events"][p], cx["events"][p], "ms")
        )
    print(f"machine: {machine()}\n")
    print(table(rows))
    print(
        f"\nevents delivered: containerd {cd['events']['delivered']:.0%}, "
        f"ctrdeck {cx['events']['delivered']:.0%}"
    )


if __name__ == "__main__":
    main()
