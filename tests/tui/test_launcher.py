"""`ctrdeck` finds or starts the bundled engine; `ctrdeck engine stop` ends it.

The bundled engine's paths come from a config.toml in the (per-test) config
directory, which both the console and the engine it starts read, so the test
engine lives under /tmp and never touches the system's state.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.engine_proc import EngineProcess
from tui import launcher

ROOT = Path(__file__).resolve().parents[2]


def _stop_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "engine", "stop", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


async def test_start_the_bundled_engine_then_stop_it(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="ctrdeck-", dir="/tmp"))
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "ctrdeck" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
        f'[grpc]\naddress = "{base}/s.sock"\n'
    )
    pid = 0
    try:
        address = launcher.resolve_address(None)
        assert address == f"{base}/s.sock"
        said: list[str] = []
        started = await launcher.ensure_engine(address, announce=said.append)
        assert started.started and started.log_path == base / "state" / "ctrdeck.log"
        assert said == [
            f"nothing answers on {address}: starting the bundled engine (log: {started.log_path})"
        ]
        assert await launcher.probe(address) is not None
        # One log: the engine's stderr is its log file, and each record is in it once.
        assert sorted(p.name for p in (base / "state").glob("*.log*")) == ["ctrdeck.log"]
        serving = [line for line in started.log_path.read_text().splitlines() if "serving" in line]
        assert len(serving) == 1 and serving[0].startswith('time="')
        assert started.log_path.stat().st_mode & 0o777 == 0o640
        pid = launcher.socket_peer_pid(address)
        # Detached: its own session, so closing the console's terminal leaves it running.
        assert os.getsid(pid) == pid != os.getsid(0)
        again = await launcher.ensure_engine(address, announce=said.append)
        assert not again.started and len(said) == 1

        stopped = _stop_command()
        assert stopped.returncode == 0, stopped.stderr
        assert f"(pid {pid})" in stopped.stdout
        assert await launcher.probe(address) is None
        pid = 0
        missing = _stop_command()
        assert missing.returncode == 1
        assert "no engine answers" in missing.stderr
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def test_unix_prefix_and_explicit_addresses(engine: EngineProcess) -> None:
    assert launcher.resolve_address(f"unix://{engine.address}") == str(engine.address)
    assert launcher.socket_peer_pid(str(engine.address)) == engine.proc.pid  # type: ignore[union-attr]
