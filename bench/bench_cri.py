"""CRI benchmark: ctrdeck's engine beside Debian's containerd 1.6 CRI, the same client on both.

Each engine runs under `nsenter --net=` in a network namespace of its own
with a CNI bridge conf list (bridge, host-local, portmap from Debian's
containernetworking-plugins), gets the same busybox-based pause and app
images by `ctr import`, and is driven through our runtime.v1 stubs:
RunPodSandbox; CreateContainer + StartContainer; StopPodSandbox +
RemovePodSandbox; ListContainers with `--pods` pods (one container each)
running. Memory per running pod is the summed RSS and PSS of the engine's
per-process helpers (containerd-shim-runc-v2, or ctrdeck's monitors) plus the
engine's own RSS growth, divided by the pod count. Prints a markdown table of
ratios (ctrdeck / containerd; below 1 means ctrdeck is faster or smaller).

    .venv/bin/python -m bench.bench_cri [--reps N] [--pods N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from grpclib.client import Channel

from bench.bench_tasks import monitor_matcher, processes, smaps_rollup
from bench.stats import machine, summary, table
from core.api.runtime import v1 as cri
from core.images import platforms
from tests import engine_proc
from tests.registry import (
    BUSYBOX_BIN,
    Built,
    build_image,
    directory,
    file,
    make_layer,
    single,
    symlink,
)

PAUSE = "registry.test/bench-pause:1"
APP = "registry.test/bench-app:1"
APPLETS = ("sh", "sleep", "true")


def image(cmd: tuple[str, ...]) -> Built:
    entries = [
        directory("bin"),
        file("bin/busybox", Path(BUSYBOX_BIN).read_bytes(), 0o755),
        *(symlink(f"bin/{a}", "busybox") for a in APPLETS),
        directory("etc"),
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        directory("proc"),
        directory("sys"),
        directory("dev"),
        directory("tmp", 0o1777),
    ]
    arch = platforms.host().architecture
    return single(build_image([make_layer(entries)], architecture=arch, cmd=cmd))


def import_image(address: Path, built: Built, ref: str, work: Path) -> None:
    layout = built.write_layout(work / f"layout-{secrets.token_hex(4)}", tag=ref)
    tar = layout.with_suffix(".tar")
    with tarfile.open(tar, "w") as t:
        for p in sorted(layout.rglob("*")):
            t.add(p, arcname=str(p.relative_to(layout)), recursive=False)
    subprocess.run(
        ["ctr", "-a", str(address), "-n", "k8s.io", "images", "import", str(tar)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


@contextlib.contextmanager
def netns() -> Iterator[str]:
    name = f"bench-cri-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def cni_dir(work: Path, subnet: str) -> Path:
    conf = work / "net.d"
    conf.mkdir()
    (conf / "10-bench.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "bench",
        "plugins": [
            {"type": "bridge", "bridge": f"b{secrets.token_hex(4)}", "isGateway": True,
             "ipam": {"type": "host-local", "subnet": f"{subnet}/16",
                      "dataDir": str(work / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }))  # fmt: skip
    return conf


def cri_config(conf: Path) -> str:
    return f"""
[plugins."io.containerd.grpc.v1.cri"]
sandbox_image = "{PAUSE}"
restrict_oom_score_adj = true
[plugins."io.containerd.grpc.v1.cri".cni]
bin_dir = "/usr/lib/cni"
conf_dir = "{conf}"
"""


def pod(i: int, run: str) -> cri.PodSandboxConfig:
    name = f"p{i}-{run}"
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="bench"),
        hostname=name,
    )


def container(i: int) -> cri.ContainerConfig:
    return cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=f"c{i}"),
        image=cri.ImageSpec(image=APP),
        command=["sleep", "1000000"],
    )


async def start_one(
    rt: cri.RuntimeServiceStub, sid: str, config: cri.PodSandboxConfig, i: int
) -> None:
    request = cri.CreateContainerRequest(
        pod_sandbox_id=sid, config=container(i), sandbox_config=config
    )
    cid = (await rt.create_container(request)).container_id
    await rt.start_container(cri.StartContainerRequest(container_id=cid))


async def timed(coro) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    await coro
    return (time.perf_counter() - start) * 1000


async def lifecycle(rt: cri.RuntimeServiceStub, reps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"run": [], "create+start": [], "stop+remove": []}
    for i in range(reps):
        config = pod(i, "life")
        t0 = time.perf_counter()
        sid = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id
        t1 = time.perf_counter()
        await start_one(rt, sid, config, i)
        t2 = time.perf_counter()
        await rt.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sid))
        await rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sid))
        t3 = time.perf_counter()
        out["run"].append((t1 - t0) * 1000)
        out["create+start"].append((t2 - t1) * 1000)
        out["stop+remove"].append((t3 - t2) * 1000)
    return out


def helper_memory(running: engine_proc.Running) -> tuple[int, int]:
    pids = processes(monitor_matcher(running))
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            r, p = smaps_rollup(pid)
            rss, pss = rss + r, pss + p
    return rss, pss


async def many(
    rt: cri.RuntimeServiceStub, count: int, running: engine_proc.Running
) -> dict[str, object]:
    engine_before = smaps_rollup(running.proc.pid)[0]
    helpers_before = helper_memory(running)
    sids = []
    for i in range(count):
        config = pod(i, "many")
        sid = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id
        await start_one(rt, sid, config, i)
        sids.append(sid)
    await asyncio.sleep(1.0)
    lists = []
    for _ in range(30):
        lists.append(await timed(rt.list_containers(cri.ListContainersRequest())))
    helpers = helper_memory(running)
    engine_after = smaps_rollup(running.proc.pid)[0]
    for sid in sids:
        await rt.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sid))
        await rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sid))
    return {
        "list": lists,
        "rss": (helpers[0] - helpers_before[0] + engine_after - engine_before) / 1024 / count,
        "pss": (helpers[1] - helpers_before[1]) / 1024 / count,
    }


async def measure(running: engine_proc.Running, reps: int, pods: int) -> dict:  # type: ignore[type-arg]
    channel = Channel(path=str(running.address))
    try:
        rt = cri.RuntimeServiceStub(channel)
        for _ in range(20):
            status = await rt.status(cri.StatusRequest())
            if all(c.status for c in status.status.conditions):
                break
            await asyncio.sleep(0.5)
        await lifecycle(rt, 2)
        results = await lifecycle(rt, reps)
        results.update(await many(rt, pods, running))
        return results
    finally:
        channel.close()


def run_engine(kind: str, reps: int, pods: int, subnet: str) -> dict:  # type: ignore[type-arg]
    work = Path(tempfile.mkdtemp(prefix=f"bench-cri-{kind}-", dir="/tmp"))
    try:
        return _run_in(work, kind, reps, pods, subnet)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_in(work: Path, kind: str, reps: int, pods: int, subnet: str) -> dict:  # type: ignore[type-arg]
    with netns() as ns:
        prefix = ("nsenter", f"--net=/run/netns/{ns}")
        conf = cri_config(cni_dir(work, subnet))
        if kind == "containerd":
            manager = engine_proc.containerd(conf, cri=True, prefix=prefix)
            with manager as running:
                for built, ref in ((image(("sleep", "1000000")), PAUSE), (image(("sh",)), APP)):
                    import_image(running.address, built, ref, work)
                return asyncio.run(measure(running, reps, pods))
        engine = engine_proc.EngineProcess(
            config="version = 2\n" + conf, log_level="warn", prefix=prefix
        ).start()
        try:
            for built, ref in ((image(("sleep", "1000000")), PAUSE), (image(("sh",)), APP)):
                import_image(engine.address, built, ref, work)
            assert engine.proc is not None
            # nsenter execs the engine: its pid is the engine's own.
            running = engine_proc.Running(engine.name, engine.address, engine.base, engine.proc)
            return asyncio.run(measure(running, reps, pods))
        finally:
            engine.stop()
            subprocess.run(["umount", "-R", str(engine.base)], capture_output=True)
            shutil.rmtree(engine.base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--pods", type=int, default=100)
    args = parser.parse_args()
    cd = run_engine("containerd", args.reps, args.pods, "10.201.0.0")
    cx = run_engine("ctrdeck", args.reps, args.pods, "10.202.0.0")
    rows = []
    for key in ("run", "create+start", "stop+remove", "list"):
        a, b = summary(cd[key]), summary(cx[key])  # type: ignore[arg-type]
        label = f"ListContainers, {args.pods} pods" if key == "list" else {
            "run": "RunPodSandbox", "create+start": "CreateContainer+StartContainer",
            "stop+remove": "StopPodSandbox+RemovePodSandbox"}[key]  # fmt: skip
        rows.append((f"{label} p50", a["p50"], b["p50"], "ms"))
        rows.append((f"{label} p99", a["p99"], b["p99"], "ms"))
    rows.append(("memory per running pod, RSS", cd["rss"], cx["rss"], "MiB"))
    rows.append(("memory per running pod, PSS of helpers", cd["pss"], cx["pss"], "MiB"))
    print(machine())
    print(f"reps {args.reps}, pods {args.pods}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
