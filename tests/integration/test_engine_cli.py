"""`ctrdeck engine` as an operator meets it: sockets, signals, config errors."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import tomllib

from tests.engine_proc import ROOT, EngineProcess


def _ctrdeck(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def test_socket_modes(engine: EngineProcess) -> None:
    assert stat.S_IMODE(engine.address.stat().st_mode) == 0o660
    assert stat.S_IMODE(engine.address.parent.stat().st_mode) == 0o711


def test_refuses_to_start_beside_a_live_engine(engine: EngineProcess) -> None:
    second = _ctrdeck(
        "engine",
        "--root",
        str(engine.base / "r2"),
        "--state",
        str(engine.base / "s2"),
        "--address",
        str(engine.address),
    )
    assert second.returncode != 0
    assert "already serving" in second.stderr and str(engine.address) in second.stderr
    assert engine.proc is not None and engine.proc.poll() is None


def test_replaces_a_stale_socket() -> None:
    proc = EngineProcess()
    proc.base.mkdir(parents=True, exist_ok=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(proc.address))
    stale.close()
    try:
        proc.start()
        assert proc.stop() == 0
    finally:
        proc.stop(cleanup=True)


def test_sigterm_stops_cleanly() -> None:
    proc = EngineProcess().start()
    try:
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(15) == 0
        assert not proc.address.exists()
    finally:
        proc.stop(cleanup=True)


def test_invalid_config_names_the_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "config.toml"
    cfg.write_text('version = 2\n[grpc]\nuid = "root"\n')
    out = _ctrdeck("engine", "--config", str(cfg), "--address", str(tmp_path / "s.sock"))
    assert out.returncode != 0
    assert "grpc.uid" in out.stderr


def test_config_default_prints_a_loadable_config() -> None:
    out = _ctrdeck("config", "default")
    assert out.returncode == 0
    doc = tomllib.loads(out.stdout)
    assert doc["version"] == 2
    assert doc["grpc"]["address"]
    assert "io.containerd.grpc.v1.cri" in doc["plugins"]
