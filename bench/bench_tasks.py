"""Tasks benchmark: ctrdeck's engine beside Debian's containerd and runc, in one run.

Both engines get the same busybox image (`tests.registry.busybox_image()`,
brought in with `ctr images import`) and are driven the same way: Debian's
`ctr` for end-to-end figures (`run -d`, `run --rm ... true`, wall time of the
ctr process) and our Python client for per-RPC latencies on a container that
`ctr containers create` prepared (Tasks.Create + Start until Get says
RUNNING, Pause, Resume, Kill, and kill until Wait reports the exit). With ten
containers running it sums the RSS and PSS of each engine's per-container
monitors (containerd-shim-runc-v2 for containerd, core/runtime/monitor.py for
ctrdeck) and divides. A bare `runc run` on the same root filesystem is timed
as the floor. Prints a markdown table of ratios (ctrdeck / containerd; below 1
means ctrdeck is faster or smaller). Every task, container and snapshot is
removed before an engine stops.

    .venv/bin/python -m bench.bench_tasks [--reps N] [--containers N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from grpclib import GRPCError
from grpclib.exceptions import StreamTerminatedError

from bench.stats import machine, summary, table
from core.api.containerd.services.containers import v1 as containers
from core.api.containerd.services.snapshots import v1 as snapshots
from core.api.containerd.services.tasks import v1 as tasks
from core.api.containerd.types import Mount
from core.api.containerd.v1.types import Status
from core.client import Client
from tests import engine_proc
from tests.registry import busybox_image, busybox_layer

NS = "bench-tasks"
IMAGE = "docker.io/library/bench-busybox:latest"
WARMUP = 3
SETTLE = 1.0
"""Seconds to let freshly started monitors reach their steady memory before reading it."""


@dataclass
class Target:
    """One engine under test, and the FIFO directory `ctr run` uses for it."""

    running: engine_proc.Running

    @property
    def fifos(self) -> Path:
        # Inside the engine's temp dir, so the FIFO dirs `ctr run -d` leaves go with it.
        return self.running.base / "fifo"

    def argv(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.running.address), "--namespace", NS, *args]

    def run_argv(self, *args: str) -> list[str]:
        return self.argv("run", "--fifo-dir", str(self.fifos), *args)

    def ctr(self, *args: str) -> str:
        return checked(self.argv(*args))


@dataclass
class Results:
    lifecycle: dict[str, list[float]]
    run_detached: list[float]
    run_rm: list[float]
    memory: dict[str, float]
    leftovers: list[str]


def checked(argv: list[str]) -> str:
    """Run a command to completion; its stdout, or an error with its stderr."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def wall_ms(argv: list[str]) -> float:
    """Wall time of one process run to completion, which must succeed."""
    t = time.perf_counter()
    checked(argv)
    return (time.perf_counter() - t) * 1000


def image_archive(work: Path) -> Path:
    """The busybox test image as an OCI layout tar, its root tagged with IMAGE's tag."""
    layout = busybox_image().write_layout(work / "layout", IMAGE.rsplit(":", 1)[1])
    archive = work / "image.tar"
    with tarfile.open(archive, "w") as tar:
        for entry in sorted(layout.rglob("*")):
            tar.add(entry, arcname=str(entry.relative_to(layout)), recursive=False)
    return archive


def import_image(target: Target, archive: Path) -> None:
    target.ctr("images", "import", "--base-name", IMAGE.rsplit(":", 1)[0], str(archive))
    if IMAGE not in target.ctr("images", "ls", "-q").split():
        raise RuntimeError(f"ctr images import did not create {IMAGE}")


# -- cleanup ---------------------------------------------------------------------------------


async def remove_container(client: Client, cid: str) -> None:
    """Delete a container's active snapshot, then the container, as `ctr containers rm` does.

    In that order because containerd collects a snapshot no container refers to any more,
    which would race a removal made after the container's delete.
    """
    c = (await client.containers.get(containers.GetContainerRequest(id=cid))).container
    if c is not None and c.snapshot_key:
        await client.snapshots.remove(
            snapshots.RemoveSnapshotRequest(snapshotter=c.snapshotter, key=c.snapshot_key)
        )
    await client.containers.delete(containers.DeleteContainerRequest(id=cid))


async def end_task(client: Client, cid: str) -> None:
    """SIGKILL a task, wait for its exit and delete it."""
    waiter = asyncio.create_task(client.tasks.wait(tasks.WaitRequest(container_id=cid)))
    await asyncio.sleep(0.01)
    with contextlib.suppress(GRPCError):
        await client.tasks.kill(tasks.KillRequest(container_id=cid, signal=9, all=True))
    with contextlib.suppress(GRPCError):
        await asyncio.wait_for(waiter, 30)
    await client.tasks.delete(tasks.DeleteTaskRequest(container_id=cid))


async def sweep(client: Client) -> list[str]:
    """Remove whatever is left in the namespace; return what had to be removed."""
    left = []
    for t in (await client.tasks.list(tasks.ListTasksRequest())).tasks:
        left.append(f"task {t.id}")
        with contextlib.suppress(GRPCError):
            await end_task(client, t.id)
    for c in (await client.containers.list(containers.ListContainersRequest())).containers:
        left.append(f"container {c.id}")
        with contextlib.suppress(GRPCError):
            await remove_container(client, c.id)
    return left


async def active_snapshots(client: Client) -> list[str]:
    found = []
    async for resp in client.snapshots.list(
        snapshots.ListSnapshotsRequest(snapshotter="overlayfs")
    ):
        found += [i.name for i in resp.info if i.kind != snapshots.Kind.COMMITTED]
    return found


def remove_namespace_cgroups(namespace: str | None = None) -> None:
    """containerd leaves the namespace's parent cgroups behind; so may the runc floor.

    `NS` by default as it is at the call, not at import: a bench that gives its run a
    namespace of its own must not remove another run's cgroups.
    """
    for controller in Path("/sys/fs/cgroup").iterdir():
        top = controller / (namespace or NS)
        if not top.is_dir():
            continue
        # os.walk, not rglob: another run's engine may remove a cgroup while this walks.
        for parent, dirs, _ in os.walk(top, topdown=False):
            for name in dirs:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(parent, name))
        with contextlib.suppress(OSError):
            top.rmdir()


# -- measurements ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def prepared(engines: Mapping[str, engine_proc.Running]) -> AsyncIterator[dict[str, Client]]:
    """A client in `NS` per engine, each engine with the image imported; all removed after."""
    work = Path(tempfile.mkdtemp(prefix="bench-tasks-", dir="/tmp"))
    clients = {k: Client(str(v.address), NS) for k, v in engines.items()}
    try:
        archive = image_archive(work)
        for running in engines.values():
            import_image(Target(running), archive)
        yield clients
    finally:
        for client in clients.values():
            await sweep(client)
            client.close()
        shutil.rmtree(work, ignore_errors=True)
        remove_namespace_cgroups()


def ab_arguments(rounds: int) -> argparse.Namespace:
    """`--before DIR` (a checkout to compare with) and `--rounds`, for a root-only A/B bench."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, required=True, help="a checkout to compare with")
    parser.add_argument("--rounds", type=int, default=rounds)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("running containers needs root")
    args.before = args.before.resolve()
    return args


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def created_container(client: Client, target: Target, cid: str) -> list[Mount]:
    """`ctr containers create` a busybox container; its rootfs mounts, for Tasks.Create."""
    target.ctr("containers", "create", IMAGE, cid, "sleep", "1000")
    c = (await client.containers.get(containers.GetContainerRequest(id=cid))).container
    assert c is not None
    got = await client.snapshots.mounts(
        snapshots.MountsRequest(snapshotter=c.snapshotter, key=c.snapshot_key)
    )
    return got.mounts


async def lifecycle(client: Client, target: Target, reps: int) -> dict[str, list[float]]:
    """Per-RPC latencies over one task's life, on containers `ctr containers create` made."""
    samples: dict[str, list[float]] = {
        k: [] for k in ("create", "start", "running", "pause", "resume", "kill", "exit")
    }
    for i in range(WARMUP + reps):
        cid = f"lc-{i}"
        rootfs = await created_container(client, target, cid)
        t0 = time.perf_counter()
        await client.tasks.create(tasks.CreateTaskRequest(container_id=cid, rootfs=rootfs))
        t1 = time.perf_counter()
        await client.tasks.start(tasks.StartRequest(container_id=cid))
        t2 = time.perf_counter()
        while True:
            got = await client.tasks.get(tasks.GetRequest(container_id=cid))
            if got.process is not None and got.process.status == Status.RUNNING:
                break
        t3 = time.perf_counter()
        await client.tasks.pause(tasks.PauseTaskRequest(container_id=cid))
        t4 = time.perf_counter()
        await client.tasks.resume(tasks.ResumeTaskRequest(container_id=cid))
        t5 = time.perf_counter()
        waiter = asyncio.create_task(client.tasks.wait(tasks.WaitRequest(container_id=cid)))
        # Wait must be registered with the engine before the kill, as ctr arranges it.
        await asyncio.sleep(0.02)
        t6 = time.perf_counter()
        await client.tasks.kill(tasks.KillRequest(container_id=cid, signal=signal.SIGKILL))
        t7 = time.perf_counter()
        await waiter
        t8 = time.perf_counter()
        await client.tasks.delete(tasks.DeleteTaskRequest(container_id=cid))
        await remove_container(client, cid)
        if i < WARMUP:
            continue
        for key, start, end in [
            ("create", t0, t1),
            ("start", t1, t2),
            ("running", t0, t3),
            ("pause", t3, t4),
            ("resume", t4, t5),
            ("kill", t6, t7),
            ("exit", t6, t8),
        ]:
            samples[key].append((end - start) * 1000)
    return samples


async def ctr_run_detached(client: Client, target: Target, reps: int) -> list[float]:
    """`ctr run -d IMG id sleep 1000`: ctr returns once the task has started."""
    out = []
    for i in range(WARMUP + reps):
        cid = f"rd-{i}"
        ms = wall_ms(target.run_argv("-d", IMAGE, cid, "sleep", "1000"))
        if i >= WARMUP:
            out.append(ms)
        await end_task(client, cid)
        await remove_container(client, cid)
    return out


def ctr_run_rm(target: Target, reps: int) -> list[float]:
    """`ctr run --rm IMG id true`: create, start, wait, delete task and container."""
    out = []
    for i in range(WARMUP + reps):
        ms = wall_ms(target.run_argv("--rm", IMAGE, f"rm-{i}", "true"))
        if i >= WARMUP:
            out.append(ms)
    return out


def smaps_rollup(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "Rss":
            rss = int(value.split()[0])
        elif key == "Pss":
            pss = int(value.split()[0])
    return rss, pss


def processes(match: Callable[[list[str]], bool]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if match(argv):
                found.append(int(entry.name))
    return found


def monitor_matcher(running: engine_proc.Running) -> Callable[[list[str]], bool]:
    """Which processes are this engine's per-container monitors."""
    if running.name == "containerd":
        address = str(running.address)
        return lambda argv: (
            os.path.basename(argv[0]) == "containerd-shim-runc-v2" and address in argv
        )
    base = str(running.base)
    return lambda argv: (
        any(a.endswith("core/runtime/monitor.py") for a in argv)
        and any(a.startswith(base) for a in argv)
    )


async def monitor_memory(client: Client, target: Target, count: int) -> dict[str, float]:
    """RSS and PSS (MiB) of the monitors per running container, with `count` running."""
    ids = [f"mem-{i}" for i in range(count)]
    for cid in ids:
        checked(target.run_argv("-d", IMAGE, cid, "sleep", "1000"))
    try:
        await asyncio.sleep(SETTLE)
        pids = processes(monitor_matcher(target.running))
        rss = pss = 0
        for pid in pids:
            r, p = smaps_rollup(pid)
            rss, pss = rss + r, pss + p
        return {"rss": rss / 1024 / count, "pss": pss / 1024 / count, "processes": len(pids)}
    finally:
        for cid in ids:
            with contextlib.suppress(GRPCError):
                await end_task(client, cid)
            with contextlib.suppress(GRPCError):
                await remove_container(client, cid)


async def measure(target: Target, reps: int, count: int) -> Results:
    client = Client(str(target.running.address), NS)
    leftovers = ["the final sweep failed"]
    try:
        lifecycle_ms = await lifecycle(client, target, reps)
        run_detached = await ctr_run_detached(client, target, reps)
        run_rm = ctr_run_rm(target, reps)
        memory = await monitor_memory(client, target, count)
    finally:
        # Also after a failure: shims and monitors outlive their engine, so they must go now.
        with contextlib.suppress(GRPCError, StreamTerminatedError, OSError):
            leftovers = await sweep(client)
            leftovers += [f"snapshot {s}" for s in await active_snapshots(client)]
        client.close()
    return Results(lifecycle_ms, run_detached, run_rm, memory, leftovers)


def runc_floor(reps: int) -> dict[str, list[float]]:
    """Bare runc on the busybox root: `run --detach` of sleep, and a foreground `run` of true."""
    work = Path(tempfile.mkdtemp(prefix="bench-runc-", dir="/tmp"))
    state = work / "state"
    rootfs = work / "rootfs"
    try:
        rootfs.mkdir()
        with tarfile.open(fileobj=io.BytesIO(busybox_layer().tar)) as tar:
            tar.extractall(rootfs)
        bundles = {}
        for name, args in (("detached", ["sleep", "1000"]), ("true", ["true"])):
            bundle = work / name
            bundle.mkdir()
            subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
            spec = json.loads((bundle / "config.json").read_text())
            spec["process"]["terminal"] = False
            spec["process"]["args"] = args
            spec["root"]["path"] = str(rootfs)
            # Per process: two runs on one host would otherwise share (and tear down) one cgroup.
            spec["linux"]["cgroupsPath"] = f"/{NS}/runc-{name}-{os.getpid()}"
            (bundle / "config.json").write_text(json.dumps(spec))
            bundles[name] = bundle
        runc = ["runc", "--root", str(state)]
        out: dict[str, list[float]] = {"detached": [], "true": [], "create": []}
        quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL,
                 "stderr": subprocess.DEVNULL}  # fmt: skip
        for i in range(WARMUP + reps):
            cid = f"floor-{i}"
            argv = [*runc, "run", "--detach", "--bundle", str(bundles["detached"]), cid]
            t = time.perf_counter()
            subprocess.run(argv, check=True, **quiet)
            ms = (time.perf_counter() - t) * 1000
            subprocess.run([*runc, "delete", "--force", cid], check=True)
            # What Tasks.Create waits for on both engines: `runc create` alone.
            argv = [*runc, "create", "--bundle", str(bundles["detached"]), cid]
            t = time.perf_counter()
            subprocess.run(argv, check=True, **quiet)
            create_ms = (time.perf_counter() - t) * 1000
            subprocess.run([*runc, "delete", "--force", cid], check=True)
            t = time.perf_counter()
            subprocess.run([*runc, "run", "--bundle", str(bundles["true"]), cid], check=True,
                           stdin=subprocess.DEVNULL)  # fmt: skip
            if i >= WARMUP:
                out["detached"].append(ms)
                out["create"].append(create_ms)
                out["true"].append((time.perf_counter() - t) * 1000)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ratio_rows(cd: Results, cx: Results) -> list[tuple[str, float, float, str]]:
    rows = []
    for key, what in [
        ("running", "Tasks.Create + Start until Get says RUNNING"),
        ("create", "Tasks.Create"),
        ("start", "Tasks.Start"),
        ("pause", "Tasks.Pause"),
        ("resume", "Tasks.Resume"),
        ("kill", "Tasks.Kill (SIGKILL)"),
        ("exit", "Kill until Wait reports the exit"),
    ]:
        a, b = summary(cd.lifecycle[key]), summary(cx.lifecycle[key])
        rows += [(f"{what}, {p}", a[p], b[p], "ms") for p in ("p50", "p99")]
    for what, a, b in [
        ("`ctr run -d IMG id sleep 1000`", summary(cd.run_detached), summary(cx.run_detached)),
        ("`ctr run --rm IMG id true`", summary(cd.run_rm), summary(cx.run_rm)),
    ]:
        rows += [(f"{what}, {p}", a[p], b[p], "ms") for p in ("p50", "p99")]
    for key, what in [("rss", "RSS"), ("pss", "PSS")]:
        rows.append(
            (f"monitor {what} per running container", cd.memory[key], cx.memory[key], "MiB")
        )
    return rows


def runc_version() -> str:
    out = subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "runc (version unknown)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=100, help="timed repetitions per measure")
    parser.add_argument("--containers", type=int, default=10, help="running for the memory figure")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("running containers needs root")
    work = Path(tempfile.mkdtemp(prefix="bench-tasks-", dir="/tmp"))
    results: dict[str, Results] = {}
    try:
        archive = image_archive(work)
        floor = runc_floor(args.reps)
        for start in (engine_proc.containerd, engine_proc.ctrdeck):
            with start() as running:
                target = Target(running)
                import_image(target, archive)
                results[running.name] = asyncio.run(measure(target, args.reps, args.containers))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        remove_namespace_cgroups()
    cd, cx = results["containerd"], results["ctrdeck"]
    print(f"machine: {machine()} · {runc_version()}\n")
    print(table(ratio_rows(cd, cx)))
    detached, true = summary(floor["detached"]), summary(floor["true"])
    create = summary(floor["create"])
    print(
        f"\nfloor, bare runc on the same root: `runc run --detach` of sleep p50 "
        f"{detached['p50']:.1f} ms, p99 {detached['p99']:.1f} ms; `runc create` p50 "
        f"{create['p50']:.1f} ms, p99 {create['p99']:.1f} ms; `runc run` of true (foreground, "
        f"then deleted) p50 {true['p50']:.1f} ms, p99 {true['p99']:.1f} ms"
    )
    print(
        f"{args.reps} timed repetitions after {WARMUP} warm-up ones; memory with "
        f"{args.containers} containers running: {cd.memory['processes']:.0f} shims, "
        f"{cx.memory['processes']:.0f} monitors"
    )
    for name, res in results.items():
        if res.leftovers:
            print(f"warning: {name} had leftovers, swept at the end: {res.leftovers}")


if __name__ == "__main__":
    main()
