"""The CRI (runtime.v1) end to end: our own client (runtime.v1 stubs) against the engine.

Pod traffic stays in a network namespace each test creates: the engine runs
under `nsenter --net=` into it, so the CNI bridge, veths and iptables rules
are made there and vanish with it. Images reach the engine by `ctr import`
(pods) or from a registry on loopback (the image service).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import secrets
import shutil
import subprocess
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from core.api.runtime import v1 as cri
from core.images import platforms
from tests.engine_proc import EngineProcess, run_cli
from tests.helpers import eventually
from tests.registry import (
    BUSYBOX_BIN,
    Built,
    build_image,
    busybox_image,
    directory,
    file,
    make_layer,
    running_registry,
    single,
    symlink,
)

APPLETS = (
    "sh", "cat", "echo", "sleep", "httpd", "wget", "id", "touch", "grep", "sysctl", "mkdir",
    "dd", "head", "hostname", "ls", "true", "stty",
)  # fmt: skip
PAUSE = "registry.test/pause:1"
APP = "registry.test/app:1"
CRI_LOG = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) (F|P) (.*)$")


def _image(cmd: tuple[str, ...], user: str = "") -> Built:
    entries = [
        directory("bin"),
        file("bin/busybox", Path(BUSYBOX_BIN).read_bytes(), 0o755),
        *(symlink(f"bin/{a}", "busybox") for a in APPLETS),
        directory("etc"),
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234::/:/bin/sh\n"),
        file("etc/group", "root:x:0:\napp:x:1234:\n"),
        directory("proc"),
        directory("sys"),
        directory("dev"),
        directory("tmp", 0o1777),
    ]
    arch = platforms.host().architecture
    return single(build_image([make_layer(entries)], architecture=arch, cmd=cmd, user=user))


def _import(engine: EngineProcess, built: Built, ref: str, tmp: Path) -> None:
    layout = built.write_layout(tmp / f"layout-{secrets.token_hex(4)}", tag=ref)
    tar = layout.with_suffix(".tar")
    with tarfile.open(tar, "w") as t:
        for p in sorted(layout.rglob("*")):
            t.add(p, arcname=str(p.relative_to(layout)), recursive=False)
    subprocess.run(
        ["ctr", "-a", str(engine.address), "-n", "k8s.io", "images", "import", str(tar)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


def _remove_namespace_cgroups() -> None:
    """The `/k8s.io` parent cgroups runc made, once nothing of the tests is left in them."""
    for controller in Path("/sys/fs/cgroup").iterdir():
        with contextlib.suppress(OSError):
            (controller / "k8s.io").rmdir()


@contextlib.contextmanager
def _test_netns() -> Iterator[str]:
    name = f"ctd-cri-{secrets.token_hex(4)}"
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        _run("ip", "netns", "delete", name, check=False)


class Node:
    """An engine in the test's network namespace with a CNI bridge config, and CRI stubs."""

    def __init__(self, tmp: Path, netns: str) -> None:
        self.tmp = tmp
        self.netns = netns
        self.subnet = f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250)}"
        self.conf_dir = tmp / "net.d"
        self.conf_dir.mkdir()
        self.ipam_dir = tmp / "ipam"
        # Debian's plugins, and room for the misbehaving ones a test adds.
        self.bin_dir = tmp / "cni-bin"
        self.bin_dir.mkdir()
        for plugin in Path("/usr/lib/cni").iterdir():
            (self.bin_dir / plugin.name).symlink_to(plugin)
        self.write_cni()
        config = f"""version = 2
[plugins."io.containerd.grpc.v1.cri"]
sandbox_image = "{PAUSE}"
restrict_oom_score_adj = true
netns_mounts_under_state_dir = true
[plugins."io.containerd.grpc.v1.cri".cni]
bin_dir = "{self.bin_dir}"
conf_dir = "{self.conf_dir}"
plugin_timeout = 5
"""
        self.engine = EngineProcess(
            config=config, log_level="info", prefix=("nsenter", f"--net=/run/netns/{netns}")
        )

    def write_cni(self, extra: tuple[dict, ...] = (), subnet: str = "") -> None:  # type: ignore[type-arg]
        conf = {
            "cniVersion": "0.4.0",
            "name": "ctrdeck-test",
            "plugins": [
                {
                    "type": "bridge", "bridge": f"cri{secrets.token_hex(3)}", "isGateway": True,
                    "ipMasq": False,
                    "ipam": {"type": "host-local", "subnet": subnet or f"{self.subnet}.0/24",
                             "dataDir": str(self.ipam_dir)},
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
                *extra,
            ],
        }  # fmt: skip
        (self.conf_dir / "10-test.conflist").write_text(json.dumps(conf))

    def leased_ips(self) -> list[str]:
        d = self.ipam_dir / "ctrdeck-test"
        return [p.name for p in d.glob(f"{self.subnet}.*")] if d.exists() else []

    def start(self) -> None:
        self.engine.start()
        self.channel = Channel(path=str(self.engine.address))
        self.runtime = cri.RuntimeServiceStub(self.channel)
        self.images = cri.ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def in_netns(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", self.netns, *argv, check=False)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    for tool in ("ctr", "nsenter", "/usr/lib/cni/bridge", "/usr/lib/cni/portmap"):
        if shutil.which(tool) is None and not Path(tool).exists():
            pytest.skip(f"{tool} is not installed")
    with _test_netns() as netns:
        n = Node(tmp_path, netns)
        n.start()
        try:
            _import(n.engine, _image(("sleep", "1000000")), PAUSE, tmp_path)
            _import(n.engine, _image(("sh",), user="app"), APP, tmp_path)
            yield n
        finally:
            n.close()
            with contextlib.suppress(Exception):
                await _remove_all(n)
            n.engine.stop(cleanup=False)
            subprocess.run(["umount", "-R", str(n.engine.base)], capture_output=True)
            shutil.rmtree(n.engine.base, ignore_errors=True)
            _remove_namespace_cgroups()


async def _remove_all(n: Node) -> None:
    channel = Channel(path=str(n.engine.address))
    try:
        stub = cri.RuntimeServiceStub(channel)
        pods = await stub.list_pod_sandbox(cri.ListPodSandboxRequest())
        for pod in pods.items:
            await stub.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    finally:
        channel.close()


def pod_config(name: str, tmp: Path, **kw) -> cri.PodSandboxConfig:  # type: ignore[no-untyped-def]
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default"),
        hostname=kw.pop("hostname", name),
        log_directory=str(tmp / "logs" / name),
        labels={"app": name},
        **kw,
    )


def container_config(name: str, *command: str, **kw) -> cri.ContainerConfig:  # type: ignore[no-untyped-def]
    return cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=name),
        image=cri.ImageSpec(image=APP),
        command=list(command),
        log_path=f"{name}.log",
        labels={"container": name},
        **kw,
    )


async def _start(
    node: Node, pod_id: str, pod: cri.PodSandboxConfig, config: cri.ContainerConfig
) -> str:
    created = await node.runtime.create_container(
        cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=pod)
    )
    await node.runtime.start_container(cri.StartContainerRequest(container_id=created.container_id))
    return created.container_id


async def _exec(node: Node, cid: str, *cmd: str, timeout: int = 10) -> cri.ExecSyncResponse:
    return await node.runtime.exec_sync(
        cri.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=timeout)
    )


async def test_status_reports_runtime_and_network_ready(node: Node) -> None:
    status = await node.runtime.status(cri.StatusRequest())
    conditions = {c.type: c.status for c in status.status.conditions}
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}
    version = await node.runtime.version(cri.VersionRequest())
    assert version.runtime_api_version == "v1"
    (node.conf_dir / "10-test.conflist").unlink()
    status = await node.runtime.status(cri.StatusRequest())
    network = next(c for c in status.status.conditions if c.type == "NetworkReady")
    assert not network.status and "no network config" in network.message


async def test_pod_lifecycle_with_two_containers(node: Node, tmp_path: Path) -> None:
    host_port = 20000 + secrets.randbelow(20000)
    pod = pod_config(
        "web",
        tmp_path,
        hostname="web-host",
        dns_config=cri.DnsConfig(
            servers=["10.0.0.10"], searches=["example.test"], options=["ndots:2"]
        ),
        port_mappings=[cri.PortMapping(container_port=8080, host_port=host_port)],
        linux=cri.LinuxPodSandboxConfig(sysctls={"kernel.shm_rmid_forced": "1"}),
    )
    run = await node.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod))
    pod_id = run.pod_sandbox_id
    status = (await node.runtime.pod_sandbox_status(
        cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id)
    )).status  # fmt: skip
    assert status.state == cri.PodSandboxState.SANDBOX_READY
    ip = status.network.ip
    assert ip.startswith(node.subnet + ".")
    assert status.labels == {"app": "web"}

    server = await _start(node, pod_id, pod, container_config(
        "server", "sh", "-c",
        "mkdir -p /tmp/www && echo hello-from-pod > /tmp/www/index.html && "
        "echo started; echo to-stderr >&2; exec httpd -f -p 8080 -h /tmp/www",
    ))  # fmt: skip
    client = await _start(node, pod_id, pod, container_config("client", "sleep", "100000"))

    async def served() -> bool:
        r = await _exec(node, client, "wget", "-qO-", "http://127.0.0.1:8080/")
        return r.exit_code == 0 and r.stdout == b"hello-from-pod\n"

    await eventually(served)
    # The pod IP from the test's own namespace, and the hostPort on the bridge's gateway.
    fetched = node.in_netns(BUSYBOX_BIN, "wget", "-qO-", f"http://{ip}:8080/")
    assert fetched.stdout == "hello-from-pod\n", fetched.stderr
    fetched = node.in_netns(BUSYBOX_BIN, "wget", "-qO-", f"http://{node.subnet}.1:{host_port}/")
    assert fetched.stdout == "hello-from-pod\n", fetched.stderr

    assert (await _exec(node, client, "hostname")).stdout == b"web-host\n"
    resolv = (await _exec(node, client, "cat", "/etc/resolv.conf")).stdout.decode()
    assert "nameserver 10.0.0.10" in resolv and "search example.test" in resolv
    assert "options ndots:2" in resolv
    assert (await _exec(node, client, "sysctl", "-n", "kernel.shm_rmid_forced")).stdout == b"1\n"
    # The image's USER (app) runs the process when the config names none.
    assert (await _exec(node, client, "id", "-u")).stdout == b"1234\n"

    failed = await _exec(node, client, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (failed.exit_code, failed.stdout, failed.stderr) == (3, b"out\n", b"err\n")
    with pytest.raises(GRPCError) as timed_out:
        await _exec(node, client, "sleep", "30", timeout=1)
    assert timed_out.value.status == Status.DEADLINE_EXCEEDED

    log = tmp_path / "logs" / "web" / "server.log"
    lines = [CRI_LOG.match(line) for line in log.read_text().splitlines()]
    assert all(lines), log.read_text()
    assert [(m.group(1), m.group(2), m.group(3)) for m in lines if m] == [
        ("stdout", "F", "started"),
        ("stderr", "F", "to-stderr"),
    ]

    stats = await node.runtime.container_stats(cri.ContainerStatsRequest(container_id=client))
    assert stats.stats.attributes.id == client
    assert stats.stats.memory.working_set_bytes.value > 0
    listed = await node.runtime.list_container_stats(cri.ListContainerStatsRequest())
    assert {s.attributes.id for s in listed.stats} == {server, client}
    pod_stats = (
        await node.runtime.pod_sandbox_stats(cri.PodSandboxStatsRequest(pod_sandbox_id=pod_id))
    ).stats
    assert {c.attributes.id for c in pod_stats.linux.containers} == {server, client}
    assert pod_stats.linux.memory.working_set_bytes.value > 0
    every_pod = await node.runtime.list_pod_sandbox_stats(cri.ListPodSandboxStatsRequest())
    assert [s.attributes.id for s in every_pod.stats] == [pod_id]

    containers = await node.runtime.list_containers(cri.ListContainersRequest(
        filter=cri.ContainerFilter(label_selector={"container": "server"})
    ))  # fmt: skip
    assert [c.id for c in containers.containers] == [server]
    assert containers.containers[0].state == cri.ContainerState.CONTAINER_RUNNING

    # ctr sees the CRI's objects in k8s.io, with containerd's labels.
    ctr = _run("ctr", "-a", str(node.engine.address), "-n", "k8s.io", "containers", "ls", "-q")
    assert {pod_id, server, client} <= set(ctr.stdout.split())

    await node.runtime.stop_container(cri.StopContainerRequest(container_id=server, timeout=2))
    await node.runtime.stop_container(cri.StopContainerRequest(container_id=server, timeout=2))
    done = (await node.runtime.container_status(
        cri.ContainerStatusRequest(container_id=server)
    )).status  # fmt: skip
    assert done.state == cri.ContainerState.CONTAINER_EXITED and done.finished_at > 0

    assert node.leased_ips() == [ip]
    for _ in range(2):
        await node.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    assert node.leased_ips() == []
    assert not list((node.engine.state / "netns").iterdir())
    for _ in range(2):
        await node.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert (await node.runtime.list_pod_sandbox(cri.ListPodSandboxRequest())).items == []
    assert (await node.runtime.list_containers(cri.ListContainersRequest())).containers == []
    ctr = _run("ctr", "-a", str(node.engine.address), "-n", "k8s.io", "containers", "ls", "-q")
    assert ctr.stdout.split() == []


def _status_field(text: bytes, name: str) -> str:
    for line in text.decode().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in /proc/self/status")


async def _proc_status(node: Node, cid: str) -> bytes:
    return (await _exec(node, cid, "cat", "/proc/self/status")).stdout


async def test_security_context_fields_apply_inside_the_container(
    node: Node, tmp_path: Path
) -> None:
    pod = pod_config("secure", tmp_path)
    pod_id = (
        await node.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod))
    ).pod_sandbox_id
    sc = cri.LinuxContainerSecurityContext
    restricted = await _start(node, pod_id, pod, container_config(
        "restricted", "sleep", "100000",
        linux=cri.LinuxContainerConfig(security_context=sc(
            run_as_user=cri.Int64Value(value=1234), run_as_group=cri.Int64Value(value=2345),
            supplemental_groups=[3456], readonly_rootfs=True, no_new_privs=True,
            capabilities=cri.Capability(add_capabilities=["NET_BIND_SERVICE"],
                                        drop_capabilities=["ALL"]),
            seccomp=cri.SecurityProfile(
                profile_type=cri.SecurityProfileProfileType.RuntimeDefault),
            masked_paths=["/etc/group"],
        )),
    ))  # fmt: skip
    assert (await _exec(node, restricted, "id", "-u")).stdout == b"1234\n"
    assert (await _exec(node, restricted, "id", "-g")).stdout == b"2345\n"
    assert (await _exec(node, restricted, "id", "-G")).stdout.split() == [b"2345", b"3456"]
    assert (await _exec(node, restricted, "touch", "/new")).exit_code != 0
    assert (await _exec(node, restricted, "cat", "/etc/group")).stdout == b""
    status = await _proc_status(node, restricted)
    assert _status_field(status, "NoNewPrivs") == "1"
    assert _status_field(status, "Seccomp") == "2"
    assert int(_status_field(status, "CapBnd"), 16) == 1 << 10  # CAP_NET_BIND_SERVICE

    loose = await _start(node, pod_id, pod, container_config(
        "loose", "sleep", "100000",
        linux=cri.LinuxContainerConfig(security_context=sc(
            run_as_username="app", readonly_paths=["/tmp"],
            seccomp=cri.SecurityProfile(profile_type=cri.SecurityProfileProfileType.Unconfined),
        )),
    ))  # fmt: skip
    assert (await _exec(node, loose, "id", "-u")).stdout == b"1234\n"
    assert (await _exec(node, loose, "touch", "/tmp/x")).exit_code != 0
    status = await _proc_status(node, loose)
    assert _status_field(status, "Seccomp") == "0"
    assert _status_field(status, "NoNewPrivs") == "0"

    privileged = await _start(node, pod_id, pod, container_config(
        "privileged", "sleep", "100000",
        linux=cri.LinuxContainerConfig(security_context=sc(
            privileged=True, run_as_user=cri.Int64Value(value=0))),
    ))  # fmt: skip
    status = await _proc_status(node, privileged)
    assert int(_status_field(status, "CapEff"), 16) >> 21 & 1  # CAP_SYS_ADMIN
    assert _status_field(status, "Seccomp") == "0"
    assert (await _exec(node, privileged, "touch", "/new")).exit_code == 0


async def test_volumes_resources_oom_and_log_reopen(node: Node, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    volume.chmod(0o777)  # the image's USER (uid 1234) writes into it
    (volume / "data").write_text("from the host\n")
    (tmp_path / "volume-link").symlink_to(volume)
    pod = pod_config("work", tmp_path)
    pod_id = (
        await node.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod))
    ).pod_sandbox_id
    mounts = [
        cri.Mount(container_path="/ro", host_path=str(tmp_path / "volume-link"), readonly=True),
        cri.Mount(container_path="/rw", host_path=str(volume),
                  propagation=cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER),
    ]  # fmt: skip
    ticker = await _start(node, pod_id, pod, container_config(
        "ticker", "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
        mounts=mounts,
        linux=cri.LinuxContainerConfig(resources=cri.LinuxContainerResources(
            memory_limit_in_bytes=64 << 20, cpu_shares=512)),
    ))  # fmt: skip
    assert (await _exec(node, ticker, "cat", "/ro/data")).stdout == b"from the host\n"
    assert (await _exec(node, ticker, "touch", "/ro/x")).exit_code != 0
    assert (await _exec(node, ticker, "touch", "/rw/x")).exit_code == 0
    assert (volume / "x").exists()

    memory = Path(f"/sys/fs/cgroup/memory/k8s.io/{ticker}/memory.limit_in_bytes")
    assert memory.read_text().strip() == str(64 << 20)
    await node.runtime.update_container_resources(cri.UpdateContainerResourcesRequest(
        container_id=ticker,
        linux=cri.LinuxContainerResources(memory_limit_in_bytes=96 << 20),
    ))  # fmt: skip
    assert memory.read_text().strip() == str(96 << 20)

    log = tmp_path / "logs" / "work" / "ticker.log"
    await eventually(lambda: log.exists() and log.read_text().count("\n") >= 2)
    log.rename(log.with_suffix(".log.1"))
    await node.runtime.reopen_container_log(cri.ReopenContainerLogRequest(container_id=ticker))
    await eventually(lambda: log.exists() and log.read_text().count("\n") >= 2)
    assert all(CRI_LOG.match(line) for line in log.read_text().splitlines())

    hog = await _start(node, pod_id, pod, container_config(
        "hog", "dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1",
        linux=cri.LinuxContainerConfig(resources=cri.LinuxContainerResources(
            memory_limit_in_bytes=32 << 20, memory_swap_limit_in_bytes=32 << 20)),
    ))  # fmt: skip

    async def exited() -> cri.ContainerStatus | None:
        s = (await node.runtime.container_status(
            cri.ContainerStatusRequest(container_id=hog))).status  # fmt: skip
        return s if s.state == cri.ContainerState.CONTAINER_EXITED else None

    done = await eventually(exited)
    assert (done.exit_code, done.reason) == (137, "OOMKilled")

    await node.runtime.stop_container(cri.StopContainerRequest(container_id=ticker, timeout=0))
    killed = (
        await node.runtime.container_status(cri.ContainerStatusRequest(container_id=ticker))
    ).status
    assert (killed.exit_code, killed.reason) == (137, "Error")
    with pytest.raises(GRPCError) as stopped:
        await node.runtime.reopen_container_log(cri.ReopenContainerLogRequest(container_id=ticker))
    assert stopped.value.status == Status.FAILED_PRECONDITION
    for _ in range(2):
        await node.runtime.remove_container(cri.RemoveContainerRequest(container_id=ticker))


async def test_a_running_pod_survives_an_engine_sigkill(node: Node, tmp_path: Path) -> None:
    pod = pod_config("durable", tmp_path)
    pod_id = (
        await node.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod))
    ).pod_sandbox_id
    ip = (await node.runtime.pod_sandbox_status(
        cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id))).status.network.ip  # fmt: skip
    worker = await _start(node, pod_id, pod, container_config(
        "worker", "sh", "-c", "echo before; sleep 100000",
    ))  # fmt: skip
    node.close()
    node.engine.kill()
    node.start()

    status = (await node.runtime.pod_sandbox_status(
        cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id))).status  # fmt: skip
    assert status.state == cri.PodSandboxState.SANDBOX_READY and status.network.ip == ip
    container = (await node.runtime.container_status(
        cri.ContainerStatusRequest(container_id=worker))).status  # fmt: skip
    assert container.state == cri.ContainerState.CONTAINER_RUNNING
    assert (await _exec(node, worker, "echo", "still")).stdout == b"still\n"
    await node.runtime.reopen_container_log(cri.ReopenContainerLogRequest(container_id=worker))

    assert node.leased_ips() == [ip]
    await node.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    container = (await node.runtime.container_status(
        cri.ContainerStatusRequest(container_id=worker))).status  # fmt: skip
    assert container.state == cri.ContainerState.CONTAINER_EXITED
    assert node.leased_ips() == []
    assert not list((node.engine.state / "netns").iterdir())


async def test_stop_after_a_restart_of_an_engine_killed_mid_life(
    node: Node, tmp_path: Path
) -> None:
    """The pod is stopped while the engine is down; a restarted engine still tears it down."""
    pod = pod_config("orphan", tmp_path)
    pod_id = (
        await node.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod))
    ).pod_sandbox_id
    node.close()
    node.engine.kill()
    sandbox_pid = json.loads(
        (
            node.engine.root / "io.containerd.grpc.v1.cri" / "sandboxes" / f"{pod_id}.json"
        ).read_text()
    )["pid"]
    subprocess.run(["kill", "-9", str(sandbox_pid)], check=True)
    node.start()
    status = (await node.runtime.pod_sandbox_status(
        cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id))).status  # fmt: skip
    assert status.state == cri.PodSandboxState.SANDBOX_NOTREADY
    await node.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    assert node.leased_ips() == []
    await node.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


@pytest.fixture
async def images(engine: EngineProcess) -> AsyncIterator[cri.ImageServiceStub]:
    channel = Channel(path=str(engine.address))
    try:
        yield cri.ImageServiceStub(channel)
    finally:
        channel.close()


async def test_image_pull_list_status_remove(images: cri.ImageServiceStub, registry) -> None:  # type: ignore[no-untyped-def]
    by_uid = _image(("sh",), user="1234:1234")
    by_name = _image(("sh",), user="app")
    uid_ref = registry.push(by_uid, "test/by-uid", "v1")
    name_ref = registry.push(by_name, "test/by-name", "v2")
    config_id = by_uid.images[0].config_descriptor.digest
    manifest = by_uid.descriptor.digest

    pulled = await images.pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=uid_ref)))
    assert pulled.image_ref == config_id
    await images.pull_image(cri.PullImageRequest(
        image=cri.ImageSpec(image=name_ref),
        auth=cri.AuthConfig(username="nobody", password="unused"),
    ))  # fmt: skip

    listed = {i.id: i for i in (await images.list_images(cri.ListImagesRequest())).images}
    image = listed[config_id]
    repo = uid_ref.rsplit(":", 1)[0]
    assert image.repo_tags == [uid_ref]
    assert image.repo_digests == [f"{repo}@{manifest}"]
    assert image.uid is not None and image.uid.value == 1234 and image.username == ""
    assert image.size > 0
    named = listed[by_name.images[0].config_descriptor.digest]
    assert named.uid is None and named.username == "app"

    for ref in (uid_ref, config_id, config_id.removeprefix("sha256:"), f"{repo}@{manifest}"):
        status = await images.image_status(cri.ImageStatusRequest(image=cri.ImageSpec(image=ref)))
        assert status.image is not None and status.image.id == config_id, ref
    missing = await images.image_status(
        cri.ImageStatusRequest(image=cri.ImageSpec(image="registry.test/none:1"))
    )
    assert missing.image is None

    fs = await images.image_fs_info(cri.ImageFsInfoRequest())
    assert fs.image_filesystems[0].used_bytes.value > 0

    for _ in range(2):
        await images.remove_image(cri.RemoveImageRequest(image=cri.ImageSpec(image=config_id)))
    status = await images.image_status(cri.ImageStatusRequest(image=cri.ImageSpec(image=uid_ref)))
    assert status.image is None
    remaining = (await images.list_images(cri.ListImagesRequest())).images
    assert [i.id for i in remaining] == [named.id]

    with pytest.raises(GRPCError) as absent:
        await images.pull_image(
            cri.PullImageRequest(image=cri.ImageSpec(image=f"{registry.host}/test/absent:1"))
        )
    assert absent.value.status == Status.NOT_FOUND


async def test_private_image_with_auth_config(images: cri.ImageServiceStub) -> None:
    """kubelet's AuthConfig reaches the registry (Basic), in each of its forms; a wrong one is
    UNAUTHENTICATED and registers nothing."""
    with running_registry(users={"alice": "s3cret"}) as reg:
        ref = reg.push(busybox_image(), "test/private", "v1")
        spec = cri.ImageSpec(image=ref)
        with pytest.raises(GRPCError) as wrong:
            await images.pull_image(cri.PullImageRequest(
                image=spec, auth=cri.AuthConfig(username="alice", password="nope"),
            ))  # fmt: skip
        assert wrong.value.status == Status.UNAUTHENTICATED
        assert (await images.list_images(cri.ListImagesRequest())).images == []
        with pytest.raises(GRPCError) as bad:
            await images.pull_image(
                cri.PullImageRequest(image=spec, auth=cri.AuthConfig(auth="not base64!"))
            )
        assert bad.value.status == Status.INVALID_ARGUMENT and "auth" in (bad.value.message or "")

        encoded = base64.b64encode(b"alice:s3cret").decode()
        for auth in (
            cri.AuthConfig(username="alice", password="s3cret"),
            cri.AuthConfig(auth=encoded),
        ):
            pulled = await images.pull_image(cri.PullImageRequest(image=spec, auth=auth))
            assert pulled.image_ref.startswith("sha256:")
            await images.remove_image(cri.RemoveImageRequest(image=spec))


def _leftovers(node: Node) -> dict[str, object]:
    """What a refused call could have left: netns files, veths, IPs, snapshots, records."""
    ctr = ["ctr", "-a", str(node.engine.address), "-n", "k8s.io"]
    links = node.in_netns("ip", "-o", "link", "show", "type", "veth").stdout
    netns_dir = node.engine.state / "netns"
    return {
        "netns": sorted(p.name for p in netns_dir.iterdir()) if netns_dir.exists() else [],
        "veths": links.strip(),
        "ips": node.leased_ips(),
        "snapshots": _run(*ctr, "snapshots", "ls").stdout.count("Active"),
        "containers": _run(*ctr, "containers", "ls", "-q").stdout.split(),
        "records": sorted(
            p.name for p in (node.engine.root / "io.containerd.grpc.v1.cri").rglob("*.json")
        ),
    }


async def _refused(call, status: Status) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(GRPCError) as err:
        await call
    assert err.value.status == status, err.value.message
    return err.value.message or ""


async def test_bad_input_is_refused_and_leaves_nothing_behind(node: Node, tmp_path: Path) -> None:
    clean = _leftovers(node)
    run = node.runtime.run_pod_sandbox

    message = await _refused(
        run(cri.RunPodSandboxRequest(config=pod_config("a", tmp_path), runtime_handler="kata")),
        Status.INVALID_ARGUMENT,
    )
    assert "kata" in message
    await _refused(run(cri.RunPodSandboxRequest(config=cri.PodSandboxConfig())),
                   Status.INVALID_ARGUMENT)  # fmt: skip

    # A plugin that fails (an unusable subnet), then one that hangs past the timeout.
    node.write_cni(subnet="not-a-subnet")
    await _refused(run(cri.RunPodSandboxRequest(config=pod_config("b", tmp_path))),
                   Status.INTERNAL)  # fmt: skip
    assert _leftovers(node) == clean
    hang = node.bin_dir / "hang"
    hang.write_text("#!/bin/sh\nexec sleep 60\n")
    hang.chmod(0o755)
    node.write_cni(extra=({"type": "hang"},))
    message = await _refused(run(cri.RunPodSandboxRequest(config=pod_config("c", tmp_path))),
                             Status.DEADLINE_EXCEEDED)  # fmt: skip
    assert "hang" in message
    assert _leftovers(node) == clean
    (node.conf_dir / "10-test.conflist").unlink()
    message = await _refused(run(cri.RunPodSandboxRequest(config=pod_config("d", tmp_path))),
                             Status.FAILED_PRECONDITION)  # fmt: skip
    assert "no network config" in message
    assert _leftovers(node) == clean
    node.write_cni()

    pod = pod_config("good", tmp_path)
    pod_id = (await run(cri.RunPodSandboxRequest(config=pod))).pod_sandbox_id
    await _refused(run(cri.RunPodSandboxRequest(config=pod)), Status.ALREADY_EXISTS)
    create = node.runtime.create_container
    ok = container_config("one", "sleep", "100")
    await create(cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=ok, sandbox_config=pod))
    await _refused(
        create(cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=ok, sandbox_config=pod)),
        Status.ALREADY_EXISTS,
    )
    missing_image = container_config("two", "true")
    missing_image.image = cri.ImageSpec(image="registry.test/none:1")
    await _refused(
        create(cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=missing_image)),
        Status.NOT_FOUND,
    )
    await node.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    await _refused(
        create(cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=ok, sandbox_config=pod)),
        Status.NOT_FOUND,
    )
    assert _leftovers(node) == clean

    # The sandbox image gone (and no registry reachable from the pod's network).
    await node.images.remove_image(cri.RemoveImageRequest(image=cri.ImageSpec(image=PAUSE)))
    message = await _refused(run(cri.RunPodSandboxRequest(config=pod_config("e", tmp_path))),
                             Status.UNAVAILABLE)  # fmt: skip
    assert PAUSE in message
    assert _leftovers(node) == clean


async def test_the_cri_command_triages_pods_and_containers(node: Node, tmp_path: Path) -> None:
    pod = pod_config("triage", tmp_path)
    pod_id = (
        await node.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod))
    ).pod_sandbox_id
    cid = await _start(node, pod_id, pod, container_config(
        "talker", "sh", "-c", "echo one; printf 'two\\033[31m'; echo; sleep 100000",
    ))  # fmt: skip

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("cri", "-a", str(node.engine.address), *args)

    pods = cli("pods")
    assert pods.returncode == 0 and pod_id[:13] in pods.stdout and "triage" in pods.stdout
    assert "READY" in pods.stdout
    ps = cli("ps")
    assert cid[:13] in ps.stdout and "talker" in ps.stdout and "RUNNING" in ps.stdout
    assert "registry.test/app" in cli("images").stdout
    await eventually(lambda: "two" in cli("logs", cid[:8]).stdout)
    logs = cli("logs", cid[:8]).stdout
    assert logs.splitlines()[0] == "one" and "\x1b" not in logs and "␛" in logs
    ran = cli("exec", cid[:8], "sh", "-c", "echo hi; exit 4")
    assert (ran.returncode, ran.stdout) == (4, "hi\n")
    inspected = json.loads(cli("inspect", cid[:8]).stdout)
    assert inspected["status"]["metadata"]["name"] == "talker"
    assert json.loads(cli("inspect", pod_id[:8]).stdout)["status"]["state"] == "SANDBOX_READY"
    assert cli("stop", cid[:8], "--timeout", "1").returncode == 0
    assert cli("rm", pod_id[:8]).returncode == 0
    assert cli("ps", "--all").stdout.strip().count("\n") == 0
    missing = cli("rm", "ffffffff")
    assert missing.returncode == 1 and "no container or pod" in missing.stderr


HOST_NETWORK = cri.LinuxPodSandboxConfig(
    security_context=cri.LinuxSandboxSecurityContext(
        namespace_options=cri.NamespaceOption(network=cri.NamespaceMode.NODE)
    )
)


@pytest.fixture
async def host_node(tmp_path: Path) -> AsyncIterator[cri.RuntimeServiceStub]:
    """An engine in the host's network (streaming listens on its loopback), pods without CNI."""
    config = f'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\nsandbox_image = "{PAUSE}"\n'
    config += "restrict_oom_score_adj = true\n"
    engine = EngineProcess(config=config, log_level="info").start()
    channel = Channel(path=str(engine.address))
    try:
        _import(engine, _image(("sleep", "1000000")), PAUSE, tmp_path)
        _import(engine, _image(("sh",)), APP, tmp_path)
        rt = cri.RuntimeServiceStub(channel)
        yield rt
        for pod in (await rt.list_pod_sandbox(cri.ListPodSandboxRequest())).items:
            await rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    finally:
        channel.close()
        engine.stop(cleanup=True)
        _remove_namespace_cgroups()


async def _ws_exec(url: str, stdin: bytes = b"") -> tuple[bytes, bytes, dict]:  # type: ignore[type-arg]
    out, err, status = b"", b"", {}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, protocols=("v4.channel.k8s.io",)) as ws,
    ):
        assert ws.protocol == "v4.channel.k8s.io"
        if stdin:
            await ws.send_bytes(b"\x00" + stdin)
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel == 1:
                out += data
            elif channel == 2:
                err += data
            elif channel == 3:
                status = json.loads(data)
    return out, err, status


async def test_exec_streams_over_websocket(
    host_node: cri.RuntimeServiceStub, tmp_path: Path
) -> None:
    rt = host_node
    pod = pod_config("stream", tmp_path, linux=HOST_NETWORK)
    pod_id = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod))).pod_sandbox_id
    created = await rt.create_container(cri.CreateContainerRequest(
        pod_sandbox_id=pod_id, sandbox_config=pod,
        config=container_config("shell", "sleep", "100000"),
    ))  # fmt: skip
    cid = created.container_id
    await rt.start_container(cri.StartContainerRequest(container_id=cid))

    url = (await rt.exec(cri.ExecRequest(
        container_id=cid, cmd=["sh", "-c", "echo out; echo err >&2; exit 3"],
        stdout=True, stderr=True,
    ))).url  # fmt: skip
    assert url.startswith("http://127.0.0.1:")
    out, err, status = await _ws_exec(url)
    assert (out, err) == (b"out\n", b"err\n")
    assert status["status"] == "Failure" and status["details"]["causes"][0]["message"] == "3"

    url = (await rt.exec(cri.ExecRequest(
        container_id=cid, cmd=["head", "-n", "1"], stdin=True, stdout=True,
    ))).url  # fmt: skip
    out, _, status = await _ws_exec(url, stdin=b"typed line\n")
    assert out == b"typed line\n" and status["status"] == "Success"

    # A URL is good for one session only.
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(url, protocols=("v4.channel.k8s.io",))
    with pytest.raises(GRPCError) as bad:
        await rt.exec(cri.ExecRequest(container_id=cid, cmd=["true"]))
    assert bad.value.status == Status.INVALID_ARGUMENT


async def test_mount_propagation_from_the_host(node: Node, tmp_path: Path) -> None:
    """rslave and rshared volumes see a mount the host makes after the container started;
    a private one does not."""
    shared = tmp_path / "shared"
    shared.mkdir()
    subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
    try:
        subprocess.run(["mount", "--make-rshared", str(shared)], check=True)
        pod = pod_config("prop", tmp_path)
        pod_id = (
            await node.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod))
        ).pod_sandbox_id
        prop = cri.MountPropagation
        ids = {}
        for name, mode in (("private", prop.PROPAGATION_PRIVATE),
                           ("rslave", prop.PROPAGATION_HOST_TO_CONTAINER),
                           ("rshared", prop.PROPAGATION_BIDIRECTIONAL)):  # fmt: skip
            ids[name] = await _start(node, pod_id, pod, container_config(
                name, "sleep", "100000",
                mounts=[cri.Mount(container_path="/vol", host_path=str(shared), propagation=mode)],
                linux=cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(
                    run_as_user=cri.Int64Value(value=0),
                    privileged=mode == prop.PROPAGATION_BIDIRECTIONAL)),
            ))  # fmt: skip
        (shared / "later").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(shared / "later")], check=True)
        (shared / "later" / "seen").write_text("x")
        for name, expected in (("private", 1), ("rslave", 0), ("rshared", 0)):
            found = await _exec(node, ids[name], "cat", "/vol/later/seen")
            assert found.exit_code == expected, (name, found.stderr)
        await node.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    finally:
        subprocess.run(["umount", "-R", "--lazy", str(shared)], check=False)


async def test_port_forward_over_websocket(
    host_node: cri.RuntimeServiceStub, tmp_path: Path
) -> None:
    rt = host_node
    port = 20000 + secrets.randbelow(20000)
    pod = pod_config("forward", tmp_path, linux=HOST_NETWORK)
    pod_id = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod))).pod_sandbox_id
    created = await rt.create_container(cri.CreateContainerRequest(
        pod_sandbox_id=pod_id, sandbox_config=pod, config=container_config(
        "web", "sh", "-c",
        f"mkdir -p /tmp/w && echo forwarded > /tmp/w/index.html && "
        f"exec httpd -f -p 127.0.0.1:{port} -h /tmp/w",
    )))  # fmt: skip
    await rt.start_container(cri.StartContainerRequest(container_id=created.container_id))
    url = ""

    async def fetch() -> bytes:
        got: list[bytes] = []
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url + f"?port={port}", protocols=("v4.channel.k8s.io",)) as ws,
        ):
            headers = 0
            async for msg in ws:
                channel, data = msg.data[0], msg.data[1:]
                if headers < 2:
                    assert data == port.to_bytes(2, "little")
                    headers += 1
                    if headers == 2:
                        await ws.send_bytes(b"\x00GET / HTTP/1.0\r\n\r\n")
                    continue
                assert channel == 0, data
                got.append(data)
                if b"forwarded" in b"".join(got):
                    break
        return b"".join(got)

    answer = b""
    for _ in range(50):  # httpd may still be starting
        url = (
            await rt.port_forward(cri.PortForwardRequest(pod_sandbox_id=pod_id, port=[port]))
        ).url
        with contextlib.suppress(AssertionError, TimeoutError):
            answer = await asyncio.wait_for(fetch(), 10)
            if b"forwarded" in answer:
                break
        await asyncio.sleep(0.1)
    assert b"200 OK" in answer and b"forwarded" in answer


def test_port_forward_connects_inside_the_pods_network_namespace(tmp_path: Path) -> None:
    from core.cri.portforward import _connect_in

    with _test_netns() as netns:
        (tmp_path / "index.html").write_text("inside\n")
        port = 20000 + secrets.randbelow(20000)
        server = subprocess.Popen(["ip", "netns", "exec", netns, BUSYBOX_BIN, "httpd", "-f",
                                   "-p", f"127.0.0.1:{port}", "-h", str(tmp_path)])  # fmt: skip
        try:
            for _ in range(50):
                try:
                    sock = _connect_in(f"/run/netns/{netns}", port)
                    break
                except Exception:
                    time.sleep(0.1)
            sock.setblocking(True)
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            sock.close()
            assert b"inside" in answer
        finally:
            server.kill()
            server.wait()
