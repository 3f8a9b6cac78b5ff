"""Pull benchmark: a cold pull and unpack beside Debian's containerd, and beside the floor.

Builds a multi-layer image of tens of MB (files of seeded random bytes, so gzip gains
nothing, in several layers) with the test image builders, pushes it to a docker-registry on
127.0.0.1, and then, in each round and in alternating order, times:

* ctrdeck: `Images.Pull` (server side, unpack into overlayfs) into a freshly started engine;
* containerd: `ctr image pull --plain-http` into a freshly started Debian containerd;
* the floor: `curl` of every blob (concurrently), then `tar -xzf` of each layer.

Prints a markdown table of medians with the ctrdeck / containerd ratio (below 1 means ctrdeck
is faster), as `bench_api` does. The disk is shared, so each round runs all three back to back.

    .venv/bin/python -m bench.bench_pull [--layers 4] [--mb-per-layer 12] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.stats import machine, table
from core.api.containerd.services.images import v1 as images
from core.client import Client
from tests import engine_proc
from tests.registry import Built, build_image, file, make_layer, running_registry, single

FILE_SIZE = 1 << 20


def build(layers: int, mb_per_layer: int) -> Built:
    rng = random.Random(20240601)
    built = []
    for i in range(layers):
        files = [
            file(f"layer{i}/data{j:03d}.bin", rng.randbytes(FILE_SIZE)) for j in range(mb_per_layer)
        ]
        built.append(make_layer(files))
    return single(build_image(built))


async def ctrdeck_pull(address: str, ref: str) -> float:
    async with Client(address, "default") as client:
        start = time.perf_counter()
        async for progress in client.images.pull(images.PullImageRequest(ref=ref, plain_http=True)):
            last = progress
        elapsed = time.perf_counter() - start
    assert last.phase == "done", last
    return elapsed


def containerd_pull(address: str, ref: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["ctr", "-a", address, "image", "pull", "--plain-http", ref],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def floor(registry_url: str, repo: str, built: Built) -> float:
    """curl every blob concurrently, then gunzip and untar each layer in order."""
    image = built.images[0]
    work = Path(tempfile.mkdtemp(prefix="bench-floor-", dir="/tmp"))
    try:
        start = time.perf_counter()
        digests = [built.descriptor.digest, image.config_descriptor.digest] + [
            layer.descriptor.digest for layer in image.layers
        ]
        kinds = ["manifests"] + ["blobs"] * (len(digests) - 1)
        procs = [
            subprocess.Popen(
                ["curl", "-sf", "-H", f"Accept: {built.descriptor.media_type}",
                 "-o", str(work / d.removeprefix("sha256:")),
                 f"{registry_url}/v2/{repo}/{kind}/{d}"]
            )
            for d, kind in zip(digests, kinds, strict=True)
        ]  # fmt: skip
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError("curl failed")
        root = work / "rootfs"
        root.mkdir()
        for layer in image.layers:
            blob = work / layer.descriptor.digest.removeprefix("sha256:")
            subprocess.run(["tar", "-xzf", str(blob), "-C", str(root)], check=True)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--mb-per-layer", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    built = build(args.layers, args.mb_per_layer)
    size = sum(layer.descriptor.size for layer in built.images[0].layers)
    times: dict[str, list[float]] = {"containerd": [], "ctrdeck": [], "floor": []}
    with running_registry() as registry:
        ref = registry.push(built, "bench/pull")
        for round_ in range(args.rounds):
            order = ["containerd", "ctrdeck"] if round_ % 2 == 0 else ["ctrdeck", "containerd"]
            for name in order:
                if name == "containerd":
                    with engine_proc.containerd() as running:
                        times[name].append(containerd_pull(str(running.address), ref))
                else:
                    with engine_proc.ctrdeck() as running:
                        times[name].append(asyncio.run(ctrdeck_pull(str(running.address), ref)))
            times["floor"].append(floor(registry.url, "bench/pull", built))
    cd, cx, fl = (statistics.median(times[k]) for k in ("containerd", "ctrdeck", "floor"))
    print(f"machine: {machine()}\n")
    print(
        f"image: {args.layers} gzip layers, {size / (1 << 20):.1f} MiB compressed, "
        f"{args.rounds} rounds, medians\n"
    )
    print(
        table(
            [
                ("cold pull + unpack (overlayfs)", cd, cx, "s"),
                ("floor: curl + gunzip/untar", fl, fl, "s"),
            ]
        )
    )
    print(f"\nctrdeck / floor: {cx / fl:.2f}x, containerd / floor: {cd / fl:.2f}x")
    print(
        "all samples (s): " + ", ".join(f"{k} {[round(t, 3) for t in v]}" for k, v in times.items())
    )


if __name__ == "__main__":
    main()
