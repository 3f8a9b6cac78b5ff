"""`ctrdeck engine status` and `core.status`: a live engine, a dead socket, a foreign engine."""

from __future__ import annotations

import json
import socket
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core import status
from core.api.containerd.services.introspection import v1 as introspection
from core.api.google.rpc import Status as RpcStatus
from core.client import Client
from core.services.version import VERSION
from tests.engine_proc import EngineProcess, run_cli

pytestmark = pytest.mark.integration


def test_human_status_of_a_live_engine(engine: EngineProcess) -> None:
    proc = run_cli("engine", "status", "--address", str(engine.address))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "engine answers" in out
    assert VERSION in out
    lines = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines()[1:8]}
    assert lines["socket"].strip() == str(engine.address)
    assert lines["root"].strip() == str(engine.root)
    assert lines["state"].strip() == str(engine.state)
    assert lines["uptime"].split()[0].endswith("s")
    assert "since" in lines["uptime"]
    assert "io.containerd.content.v1" in out
    assert "introspection" in out


def test_json_status_of_a_live_engine(engine: EngineProcess) -> None:
    proc = run_cli("engine", "status", "--json", "-a", str(engine.address))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["answering"] is True
    assert doc["problem"] == ""
    assert doc["address"] == str(engine.address)
    assert doc["version"] == VERSION
    assert doc["root"] == str(engine.root)
    assert doc["state"] == str(engine.state)
    assert doc["uptime_seconds"] >= 0
    started = datetime.fromisoformat(doc["started_at"].replace("Z", "+00:00"))
    checked = datetime.fromisoformat(doc["checked_at"].replace("Z", "+00:00"))
    assert started <= checked
    assert len(doc["uuid"]) == 36
    plugins = {(p["type"], p["id"]): p for p in doc["plugins"]}
    assert plugins[("io.containerd.content.v1", "content")]["status"] == "ok"
    assert plugins[("io.containerd.grpc.v1", "version")]["status"] == "ok"
    assert all(p["status"] in ("ok", "skip", "error") for p in doc["plugins"])


def test_dead_socket_exits_1_with_a_clear_message() -> None:
    base = Path(tempfile.mkdtemp(prefix="ctrdeck-dead-", dir="/tmp"))
    try:
        missing = base / "missing.sock"
        proc = run_cli("engine", "status", "-a", str(missing))
        assert proc.returncode == 1
        assert proc.stdout == ""
        assert f"no socket at {missing}" in proc.stderr

        # A socket file left behind by an engine that died: nothing accepts.
        stale = base / "stale.sock"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(stale))
        s.close()
        proc = run_cli("engine", "status", "--json", "-a", str(stale))
        assert proc.returncode == 1
        doc = json.loads(proc.stdout)
        assert doc["answering"] is False
        assert "connection refused" in doc["problem"]
        assert doc["version"] == ""
        assert doc["plugins"] == []
    finally:
        for path in base.iterdir():
            path.unlink()
        base.rmdir()


async def test_probe_and_headline_against_a_live_engine(engine: EngineProcess) -> None:
    result = await status.probe(str(engine.address))
    assert result.answering
    assert result.root == str(engine.root)
    assert result.uptime is not None
    counts = result.plugin_counts()
    assert sum(counts.values()) == len(result.plugins)
    assert counts["ok"] >= 1
    assert result.headline().startswith(f"engine {VERSION} · up ")
    assert result.headline().endswith(f"{counts['ok']}/{len(result.plugins)} plugins ok")

    c = Client(str(engine.address))
    try:
        again = await status.from_client(c)
    finally:
        c.close()
    assert again.started_at == result.started_at


def test_a_containerd_without_our_exports_has_unknown_uptime() -> None:
    root = "/var/lib/containerd"
    plugins = [
        introspection.Plugin(
            type="io.containerd.content.v1",
            id="content",
            exports={"root": f"{root}/io.containerd.content.v1.content"},
        ),
        introspection.Plugin(
            type="io.containerd.snapshotter.v1",
            id="btrfs",
            init_err=RpcStatus(code=2, message="path must be a btrfs filesystem: skip plugin"),
        ),
        introspection.Plugin(
            type="io.containerd.snapshotter.v1",
            id="zfs",
            init_err=RpcStatus(code=2, message="zfs not loaded"),
        ),
        introspection.Plugin(type="io.containerd.grpc.v1", id="introspection"),
    ]
    now = datetime(2024, 5, 1, tzinfo=UTC)
    result = status.build("/run/containerd/containerd.sock", "1.6.20~ds1", "r", "u", plugins, now)
    assert result.answering
    assert result.started_at is None
    assert result.uptime is None
    assert status.format_uptime(result.uptime) == "unknown"
    assert result.root == root
    assert result.state is None
    assert [p.status for p in result.plugins] == ["ok", "skip", "error", "ok"]
    assert result.to_json()["uptime_seconds"] is None
    assert "up unknown" in result.headline()


def test_uptime_formatting() -> None:
    assert status.format_uptime(timedelta(seconds=5)) == "5s"
    assert status.format_uptime(timedelta(minutes=4, seconds=5)) == "4m 5s"
    assert status.format_uptime(timedelta(hours=3, minutes=4, seconds=5)) == "3h 4m"
    assert status.format_uptime(timedelta(days=2, hours=3, minutes=4)) == "2d 3h"
