"""A fleet of real engines: three test hosts in network namespaces, one reached only over SSH.

Each host is a network namespace joined by a veth pair and running its own
engine (tests/netns.py); two are reached over TCP, the third only through
Debian's sshd started inside its namespace (tests/sshd.py, a throw-away host
key and client key) and the user's ssh client. Cutting a host's veth or
SIGSTOPping its engine marks that node unreachable within 5 s while the others
keep taking changes, and restoring it reconnects by itself. A real containerd
is one node of another fleet. Bad nodes (unknown host, refused key, changed
host key, a remote path with no socket, a name used twice, a malformed URL)
each get a clear reason on their row from `ctrdeck nodes`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable

import pytest

from core.api.containerd.services.containers import v1 as containers_api
from core.api.google.protobuf import Any as AnyMessage
from core.client import Client
from tests.engine_proc import EngineProcess, containerd, run_cli
from tests.netns import netns_host
from tests.sshd import keygen, sshd
from tui import fleet
from tui.nodes import parse_url

pytestmark = pytest.mark.integration

SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
# The promise: a node that hangs or drops is marked within this long.
MARKED_WITHIN = 5.0


async def until(
    check: Callable[[], bool], timeout: float, what: str, group: fleet.Fleet | None = None
) -> float:
    """Seconds until `check()` held; fails naming `what` (and the nodes' states) after `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            states = [] if group is None else group.statuses()
            raise AssertionError(f"not within {timeout}s: {what}; {states}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def create(address: str, cid: str) -> None:
    """A container record (no task): enough for a node's model to change."""
    spec = {"ociVersion": "1.0.2-dev", "process": {"args": ["/bin/true"], "cwd": "/"}}
    container = containers_api.Container(
        id=cid,
        image="example.com/x:1",
        runtime=containers_api.ContainerRuntime(name="io.containerd.runc.v2"),
        spec=AnyMessage(type_url=SPEC_URL, value=json.dumps(spec).encode()),
    )
    client = Client(address, "default")
    try:
        await client.containers.create(containers_api.CreateContainerRequest(container=container))
    finally:
        client.close()


def phase(group: fleet.Fleet, name: str) -> str:
    return group.nodes[name].status.phase


def has(group: fleet.Fleet, name: str, cid: str) -> bool:
    return cid in group.nodes[name].state.containers


async def test_a_hung_or_cut_node_is_marked_and_the_others_keep_updating() -> None:
    with (
        netns_host(1) as h1,
        netns_host(2) as h2,
        netns_host(3, tcp=False) as h3,
        sshd("h3", listen=h3.address, netns=h3.netns) as server,
    ):
        specs = [
            parse_url("h1", h1.tcp_url),
            parse_url("h2", h2.tcp_url),
            parse_url("h3", f"ssh://h3{h3.socket}"),
        ]
        group = fleet.Fleet(specs, "default", ssh_config=server.ssh_config)
        group.start()
        try:
            for name in ("h1", "h2", "h3"):
                await until(lambda n=name: phase(group, n) == fleet.UP, 30, f"{name} up", group)
            assert group.nodes["h3"].status.engine == "ctrdeck"
            assert group.nodes["h3"].teach_prefix() == "ssh h3"

            h1.cut()
            await until(lambda: phase(group, "h1") != fleet.UP, MARKED_WITHIN, "h1 marked", group)
            # The others keep updating meanwhile, the SSH node too.
            await create(str(h2.socket), "while-h1-cut")
            await create(str(h3.socket), "while-h1-cut")
            await until(lambda: has(group, "h2", "while-h1-cut"), 10, "h2 updates", group)
            await until(lambda: has(group, "h3", "while-h1-cut"), 10, "h3 updates", group)
            h1.restore()
            await until(lambda: phase(group, "h1") == fleet.UP, 30, "h1 back", group)
            await create(str(h1.socket), "after-restore")
            await until(lambda: has(group, "h1", "after-restore"), 10, "h1 updates again", group)

            h2.stop_engine()
            await until(lambda: phase(group, "h2") != fleet.UP, MARKED_WITHIN, "h2 marked", group)
            assert "no answer" in group.nodes["h2"].status.reason
            await create(str(h1.socket), "while-h2-stopped")
            await until(lambda: has(group, "h1", "while-h2-stopped"), 10, "h1 updates", group)
            h2.continue_engine()
            await until(lambda: phase(group, "h2") == fleet.UP, 30, "h2 back", group)

            # The SSH node's link cut: its forward answers nothing, and it comes back by itself.
            h3.cut()
            await until(lambda: phase(group, "h3") != fleet.UP, MARKED_WITHIN, "h3 marked", group)
            await create(str(h1.socket), "while-h3-cut")
            await until(lambda: has(group, "h1", "while-h3-cut"), 10, "h1 updates", group)
            h3.restore()
            await until(lambda: phase(group, "h3") == fleet.UP, 45, "h3 back", group)
            await create(str(h3.socket), "after-h3")
            await until(lambda: has(group, "h3", "after-h3"), 10, "h3 updates again", group)
        finally:
            await group.close()


@pytest.mark.skipif(shutil.which("containerd") is None, reason="containerd is not installed")
async def test_a_real_containerd_is_one_node() -> None:
    engine = EngineProcess().start()
    try:
        with containerd() as real:
            group = fleet.Fleet(
                [parse_url("cd", f"unix://{real.address}"), parse_url("cx", str(engine.address))],
                "default",
            )
            group.start()
            try:
                await until(lambda: phase(group, "cd") == fleet.UP, 30, "containerd up", group)
                await until(lambda: phase(group, "cx") == fleet.UP, 30, "ctrdeck up", group)
                assert group.nodes["cd"].status.engine == "containerd"
                assert group.nodes["cx"].status.engine == "ctrdeck"
                await create(str(real.address), "on-containerd")
                await until(lambda: has(group, "cd", "on-containerd"), 10, "containerd row", group)
                assert not has(group, "cx", "on-containerd")
            finally:
                await group.close()
    finally:
        engine.stop(cleanup=True)


def test_bad_nodes_each_say_why_on_their_row() -> None:
    engine = EngineProcess().start()
    try:
        with sshd("testhost") as server:
            # A second alias whose known_hosts holds another key: the host key "changed".
            other = server.base / "other_key"
            keygen(other)
            wrong = server.base / "wrong_known_hosts"
            pub = (server.base / "other_key.pub").read_text().split()
            wrong.write_text(f"[127.0.0.1]:{server.port} {pub[0]} {pub[1]}\n")
            config = server.ssh_config.read_text()
            config = (
                f"Host changed\n  HostName 127.0.0.1\n  Port {server.port}\n  User root\n"
                f"  IdentityFile {server.client_key}\n  UserKnownHostsFile {wrong}\n"
                "  StrictHostKeyChecking yes\n" + config
            )
            server.ssh_config.write_text(config)
            nodes_toml = server.base / "nodes.toml"
            nodes_toml.write_text(
                f'ssh_config = "{server.ssh_config}"\n[nodes]\n'
                f'good = "ssh://testhost{engine.address}"\n'
                'unknown = "ssh://no-such-host.invalid"\n'
                'refused = "ssh://nobody@testhost/x.sock"\n'
                f'changed = "ssh://changed{engine.address}"\n'
                'nosocket = "ssh://testhost/run/none/here.sock"\n'
                'malformed = "tcp://only-a-host"\n'
            )
            twice = f"good={engine.address}"
            result = run_cli("nodes", "--json", "--nodes-file", str(nodes_toml), "--node", twice)
            rows = {row["name"]: row for row in json.loads(result.stdout)}
            assert result.returncode == 1, result.stderr
            assert rows["good"]["state"] == "up" and rows["good"]["engine"] == "ctrdeck"
            assert "used twice" in rows["good#2"]["reason"]
            assert "unknown host no-such-host.invalid" in rows["unknown"]["reason"]
            assert "refused the key" in rows["refused"]["reason"]
            assert "host key" in rows["changed"]["reason"]
            assert "checking stays on" in rows["changed"]["reason"]
            assert "no engine socket" in rows["nosocket"]["reason"]
            assert "/run/none/here.sock" in rows["nosocket"]["reason"]
            assert "needs a port" in rows["malformed"]["reason"]
            assert rows["malformed"]["state"] == "invalid"
            table = run_cli("nodes", "--nodes-file", str(nodes_toml))
            assert "good" in table.stdout and "unknown host" in table.stdout
    finally:
        engine.stop(cleanup=True)
