"""The metrics endpoint: promtool accepts it, Prometheus scrapes it, it listens only when asked.

Every test runs the real engine subprocess; the Prometheus tests run Debian's
`prometheus` on 127.0.0.1 with a throwaway data directory and a one-second
scrape interval, and poll its query API with a bounded loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from grpclib import GRPCError
from prometheus_client.parser import text_string_to_metric_families

from core import metrics
from core.api.containerd.services.containers import v1 as containers
from core.api.containerd.services.images import v1 as images
from core.api.containerd.services.namespaces import v1 as namespaces
from core.api.containerd.services.snapshots import v1 as snapshots
from core.api.containerd.services.tasks import v1 as tasks
from core.api.containerd.types import Mount
from core.api.google.protobuf import Any as AnyMessage
from core.client import Client
from core.errors import InvalidArgument
from tests.engine_proc import EngineProcess
from tests.integration.test_pull import pull
from tests.registry import Registry, layered_image

pytestmark = pytest.mark.integration

NAMED_METRICS = [
    "container_runtime_operations_total",
    "container_runtime_operations_errors_total",
    "container_image_pull_duration_seconds",
    "container_memory_usage_bytes",
    "container_cpu_usage_seconds_total",
    "ctrdeck_grpc_requests_total",
    "ctrdeck_grpc_request_duration_seconds",
    "ctrdeck_events_published_total",
    "ctrdeck_event_subscribers",
    "ctrdeck_gc_runs_total",
    "ctrdeck_gc_removed_total",
    "ctrdeck_content_store_bytes",
    "ctrdeck_snapshots",
]
SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_ports(pid: int) -> set[int]:
    """TCP ports the process `pid` listens on, as `ss` sees them."""
    out = subprocess.run(
        ["ss", "-Hltnp"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    ports = set()
    for line in out.splitlines():
        if f"pid={pid}," in line:
            local = line.split()[3]
            ports.add(int(local.rpartition(":")[2]))
    return ports


@pytest.fixture
def metrics_engine() -> Iterator[tuple[EngineProcess, int]]:
    port = free_port()
    proc = EngineProcess(config=f'[metrics]\naddress = "127.0.0.1:{port}"\n').start()
    try:
        yield proc, port
    finally:
        proc.stop(cleanup=True)


@pytest.fixture
async def metrics_client(
    metrics_engine: tuple[EngineProcess, int],
) -> AsyncIterator[Client]:
    c = Client(str(metrics_engine[0].address), "default")
    try:
        yield c
    finally:
        c.close()


async def scrape(port: int, path: str = "/metrics") -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(f"http://127.0.0.1:{port}{path}", timeout=10)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def some_operations(client: Client) -> None:
    await client.namespaces.list(namespaces.ListNamespacesRequest())
    await client.images.list(images.ListImagesRequest())
    with pytest.raises(GRPCError):
        await client.images.get(images.GetImageRequest(name="missing:latest"))


async def test_promtool_accepts_the_endpoint_and_every_metric_is_there(
    metrics_engine: tuple[EngineProcess, int], metrics_client: Client
) -> None:
    _, port = metrics_engine
    await some_operations(metrics_client)
    for path in ("/metrics", "/v1/metrics"):
        resp = await scrape(port, path)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        check = subprocess.run(
            ["promtool", "check", "metrics"],
            input=resp.text,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        for name in NAMED_METRICS:
            assert f"# HELP {name} " in resp.text, name
            assert f"# TYPE {name} " in resp.text, name

    got = samples(resp.text)
    ops = "container_runtime_operations_total"
    errs = "container_runtime_operations_errors_total"
    assert got[(ops, (("namespace", "default"), ("operation", "namespaces.List")))] >= 1
    assert got[(ops, (("namespace", "default"), ("operation", "images.Get")))] == 1
    assert got[(errs, (("namespace", "default"), ("operation", "images.Get")))] == 1
    assert (errs, (("namespace", "default"), ("operation", "images.List"))) not in got
    method = "/containerd.services.images.v1.Images/Get"
    key = ("ctrdeck_grpc_requests_total", (("code", "NOT_FOUND"), ("method", method)))
    assert got[key] == 1
    count = ("ctrdeck_grpc_request_duration_seconds_count", (("method", method),))
    assert got[count] == 1
    assert got[("ctrdeck_event_subscribers", ())] == 0
    assert got[("ctrdeck_gc_removed_total", (("kind", "content"),))] == 0


async def test_a_pull_is_observed_by_the_duration_histogram(
    metrics_engine: tuple[EngineProcess, int], metrics_client: Client, registry: Registry
) -> None:
    # The pipeline reports to the observers the engine wired, not to a global.
    _, port = metrics_engine
    count = ("container_image_pull_duration_seconds_count", (("namespace", "default"),))
    assert count not in samples((await scrape(port)).text)
    await pull(metrics_client, registry.push(layered_image(), "test/observed"))
    assert samples((await scrape(port)).text)[count] == 1


async def test_engine_health_figures_follow_the_engine(
    metrics_engine: tuple[EngineProcess, int], metrics_client: Client
) -> None:
    _, port = metrics_engine
    before = samples((await scrape(port)).text)
    await metrics_client.namespaces.create(
        namespaces.CreateNamespaceRequest(namespace=namespaces.Namespace(name="metrics-a"))
    )
    await metrics_client.namespaces.delete(namespaces.DeleteNamespaceRequest(name="metrics-a"))
    await metrics_client.snapshots.prepare(
        snapshots.PrepareSnapshotRequest(snapshotter="native", key="metrics-snap")
    )
    after = samples((await scrape(port)).text)
    published = ("ctrdeck_events_published_total", ())
    # Namespace create and delete, and the snapshot's prepare.
    assert after[published] == before[published] + 3
    native = ("ctrdeck_snapshots", (("snapshotter", "native"),))
    assert before[native] == 0
    assert after[native] == 1


async def test_other_paths_and_verbs_are_refused(metrics_engine: tuple[EngineProcess, int]) -> None:
    _, port = metrics_engine
    assert (await scrape(port, "/")).status_code == 404
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert resp.status_code == 405
        head = await http.head(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert head.status_code == 200


@contextlib.asynccontextmanager
async def prometheus(target_port: int) -> AsyncIterator[str]:
    """A real Prometheus scraping 127.0.0.1:`target_port` every second; yields its API URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus (Debian's prometheus package) is not installed")
    base = Path(tempfile.mkdtemp(prefix="ctrdeck-prom-", dir="/tmp"))
    port = free_port()
    (base / "prometheus.yml").write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: ctrdeck\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    with open(base / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={base / 'prometheus.yml'}",
                f"--storage.tsdb.path={base / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=log,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


async def query_until(api: str, promql: str, attempts: int = 120) -> list[dict[str, Any]]:
    """Poll Prometheus' instant query API until `promql` has a result (bounded)."""
    async with httpx.AsyncClient() as http:
        for _ in range(attempts):
            with contextlib.suppress(httpx.TransportError):
                resp = await http.get(f"{api}/api/v1/query", params={"query": promql}, timeout=5)
                if resp.status_code == 200:
                    result = resp.json()["data"]["result"]
                    if result:
                        return result
            await asyncio.sleep(0.5)
    raise AssertionError(f"Prometheus never returned a result for {promql}")


async def test_prometheus_scrapes_operations(
    metrics_engine: tuple[EngineProcess, int], metrics_client: Client
) -> None:
    _, port = metrics_engine
    await some_operations(metrics_client)
    async with prometheus(port) as api:
        result = await query_until(
            api, 'container_runtime_operations_total{operation="images.Get"}'
        )
        assert result[0]["metric"]["namespace"] == "default"
        assert float(result[0]["value"][1]) >= 1
        up = await query_until(api, 'up{job="ctrdeck"} == 1')
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{port}"


def _busybox_rootfs(base: Path) -> Path:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox (Debian's busybox-static) is not installed")
    rootfs = base / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    for d in ("proc", "dev", "sys", "tmp"):
        (rootfs / d).mkdir()
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    (rootfs / "bin" / "sleep").symlink_to("busybox")
    return rootfs


def _spec(container_id: str) -> bytes:
    caps = ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"]
    spec = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sleep", "300"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "mounts": [
            {
                "destination": "/proc",
                "type": "proc",
                "source": "proc",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
        ],
        "linux": {
            "cgroupsPath": f"/default/{container_id}",
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "maskedPaths": ["/proc/kcore", "/proc/keys"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        },
    }
    return json.dumps(spec).encode()


async def test_prometheus_sees_memory_of_a_running_container(
    metrics_engine: tuple[EngineProcess, int], metrics_client: Client
) -> None:
    _, port = metrics_engine
    container_id = "metrics-mem"
    base = Path(tempfile.mkdtemp(prefix="ctrdeck-rootfs-", dir="/tmp"))
    created = started = False
    try:
        rootfs = _busybox_rootfs(base)
        await metrics_client.containers.create(
            containers.CreateContainerRequest(
                container=containers.Container(
                    id=container_id,
                    runtime=containers.ContainerRuntime(name="io.containerd.runc.v2"),
                    spec=AnyMessage(type_url=SPEC_URL, value=_spec(container_id)),
                )
            )
        )
        created = True
        await metrics_client.tasks.create(
            tasks.CreateTaskRequest(
                container_id=container_id,
                rootfs=[Mount(type="bind", source=str(rootfs), options=["rbind", "ro"])],
            )
        )
        started = True
        await metrics_client.tasks.start(tasks.StartRequest(container_id=container_id))
        async with prometheus(port) as api:
            result = await query_until(
                api, f'container_memory_usage_bytes{{container="{container_id}"}} > 0'
            )
            assert result[0]["metric"]["namespace"] == "default"
            cpu = await query_until(
                api, f'container_cpu_usage_seconds_total{{container="{container_id}"}}'
            )
            assert float(cpu[0]["value"][1]) >= 0
    finally:
        if started:
            with contextlib.suppress(GRPCError):
                await metrics_client.tasks.kill(
                    tasks.KillRequest(container_id=container_id, signal=9, all=True)
                )
                await metrics_client.tasks.wait(tasks.WaitRequest(container_id=container_id))
            with contextlib.suppress(GRPCError):
                await metrics_client.tasks.delete(
                    tasks.DeleteTaskRequest(container_id=container_id)
                )
        if created:
            with contextlib.suppress(GRPCError):
                await metrics_client.containers.delete(
                    containers.DeleteContainerRequest(id=container_id)
                )
        shutil.rmtree(base, ignore_errors=True)


def test_address_in_use_refuses_to_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = EngineProcess(config=f'[metrics]\naddress = "{address}"\n')
        try:
            with pytest.raises(RuntimeError) as failed:
                proc.start()
            assert proc.proc is not None
            assert proc.proc.returncode not in (0, None)
            message = str(failed.value)
            assert f"metrics address {address} is already in use" in message
            assert not proc.address.exists()
        finally:
            proc.stop(cleanup=True)


def test_no_listener_unless_configured(
    engine: EngineProcess, metrics_engine: tuple[EngineProcess, int]
) -> None:
    assert engine.proc is not None
    assert listening_ports(engine.proc.pid) == set()
    # The same probe sees the listener when the config asks for one, so the
    # empty set above is a real absence.
    with_metrics, port = metrics_engine
    assert with_metrics.proc is not None
    assert listening_ports(with_metrics.proc.pid) == {port}


def test_operation_names_and_addresses() -> None:
    assert metrics.operation_name("/containerd.services.images.v1.Images/Create") == (
        "images.Create"
    )
    assert metrics.operation_name("/grpc.health.v1.Health/Check") == "health.Check"
    assert metrics.parse_address("127.0.0.1:1338") == ("127.0.0.1", 1338)
    assert metrics.parse_address("[::1]:1338") == ("::1", 1338)
    assert metrics.parse_address(":1338") == (None, 1338)
    for bad in ("localhost", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:99999", "h:x"):
        with pytest.raises(InvalidArgument, match="must be host:port"):
            metrics.parse_address(bad)
