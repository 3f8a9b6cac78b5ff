"""The single-file build: `scripts/build_zipapp.py` makes `ctrdeck.pyz`, and it runs alone.

The zipapp is run by the system's `python3` in isolated mode, which has none
of ctrdeck's dependencies installed, so everything it imports comes from the
zipapp. From it: `--help`, `config default`, the engine itself, `engine status`
against that engine, and the console on a pty, quit with `q`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine_proc import wait_for_socket
from tests.tui.terminal import Terminal, console_env

ROOT = Path(__file__).resolve().parent.parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")


def system_python() -> Path:
    if not SYSTEM_PYTHON.exists() or shutil.which("shiv", path=Path(sys.executable).parent) is None:
        pytest.skip("needs the system python3 and shiv")
    version = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if version != str(sys.version_info[:2]):
        pytest.skip(f"the system python3 is {version}, the build's is {sys.version_info[:2]}")
    return SYSTEM_PYTHON


@pytest.fixture(scope="module")
def zipapp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], dict[str, str]]]:
    """The built zipapp as an argv prefix, and an environment with a shiv root of its own."""
    python = system_python()
    work = tmp_path_factory.mktemp("zipapp")
    output = work / "ctrdeck.pyz"
    subprocess.run(
        [sys.executable, "scripts/build_zipapp.py", "-o", str(output)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["SHIV_ROOT"] = str(work / "shiv")
    yield [str(python), "-I", str(output)], env
    shutil.rmtree(work, ignore_errors=True)


def run(zipapp: tuple[list[str], dict[str, str]], *args: str) -> subprocess.CompletedProcess[str]:
    argv, env = zipapp
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, env=env, cwd="/", timeout=120
    )


def test_help_and_default_config_from_the_zipapp(zipapp: tuple[list[str], dict[str, str]]) -> None:
    shown = run(zipapp, "--help")
    assert shown.returncode == 0, shown.stderr
    assert "A terminal console for containers" in shown.stdout
    config = run(zipapp, "config", "default")
    assert config.returncode == 0, config.stderr
    assert config.stdout.startswith("version = 2")


def test_engine_and_console_from_the_zipapp(
    zipapp: tuple[list[str], dict[str, str]], tmp_path: Path
) -> None:
    argv, env = zipapp
    base = tmp_path
    address = Path("/tmp") / f"ctrdeck-pyz-{os.getpid()}.sock"
    engine = subprocess.Popen(
        [*argv, "engine", "--root", str(base / "root"), "--state", str(base / "state"),
         "--address", str(address)],
        env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    term: Terminal | None = None
    try:
        wait_for_socket(address, timeout=60, proc=engine)
        status = run(zipapp, "engine", "status", "--address", str(address))
        assert status.returncode == 0, status.stderr
        assert "engine answers" in status.stdout
        console = [*argv, "--address", str(address), "--no-start"]
        # Nothing of this checkout on the path: the console imports only what the zipapp holds.
        term_env = {k: v for k, v in console_env(tmp_path).items() if k != "PYTHONPATH"}
        term = Terminal(console, env={**term_env, **env}).start()
        term.wait_for(lambda out: b"Containers" in out and b"connected" in out, timeout=60)
        term.press("q")
        assert term.exit_code() == 0
    finally:
        if term is not None:
            term.stop()
        engine.send_signal(signal.SIGTERM)
        try:
            engine.wait(20)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()
        address.unlink(missing_ok=True)
