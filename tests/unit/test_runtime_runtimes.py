"""Runtime selection by name, shim type and BinaryName; host adjustments."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path

import pytest

from core.config import Config, GrpcConfig, RuntimeConfig
from core.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound
from core.runtime.runtimes import DEFAULT_TIMEOUT, Runtime, Runtimes, _error_text
from tests.helpers import eventually


def _config(tmp_path: Path, **runtimes: RuntimeConfig) -> Config:
    base = Config(root=tmp_path / "root", state=tmp_path / "state", grpc=GrpcConfig(address="s"))
    return dataclasses.replace(base, runtimes={**base.runtimes, **runtimes})


def test_missing_binary_is_named(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        kata=RuntimeConfig(name="kata", runtime_type="io.containerd.kata.v2",
                           binary_name="kata-runtime-not-here"),
    )  # fmt: skip
    runtimes = Runtimes(cfg)
    with pytest.raises(FailedPrecondition, match="kata-runtime-not-here"):
        runtimes.select("kata")
    with pytest.raises(FailedPrecondition, match="kata-runtime-not-here"):
        runtimes.select("io.containerd.kata.v2")
    with pytest.raises(NotFound, match="firecracker"):
        runtimes.select("firecracker")


@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
def test_shim_type_means_default_runtime(tmp_path: Path) -> None:
    runtimes = Runtimes(_config(tmp_path))
    rt = runtimes.select("io.containerd.runc.v2")
    assert rt.name == "runc" and rt.flavour == "runc"
    assert rt.argv("ns", "state", "c1")[:3] == [
        rt.binary,
        "--root",
        str(tmp_path / "state/runc/ns"),
    ]
    assert runtimes.select("", binary_name="runc").name == "runc"


def test_crun_is_wrapped_and_runsc_has_no_network(tmp_path: Path) -> None:
    crun = Runtime("crun", "io.containerd.runc.v2", "/usr/bin/crun", tmp_path, "crun",
                   wrap_hybrid=True)  # fmt: skip
    argv = crun.argv("ns", "pause", "c1")
    assert argv[:3] == ["unshare", "--mount", "--"]
    assert "umount /sys/fs/cgroup/unified" in argv[5]
    assert argv[-2:] == ["pause", "c1"]
    runsc = Runtime("runsc", "io.containerd.runc.v2", "/usr/bin/runsc", tmp_path, "runsc",
                    extra_flags=["--network=none"])  # fmt: skip
    assert runsc.argv("ns", "start", "c1", log=tmp_path / "l") == [
        "/usr/bin/runsc", "--root", str(tmp_path / "ns"), "--log", str(tmp_path / "l"),
        "--log-format", "json", "--network=none", "start", "c1",
    ]  # fmt: skip


def test_error_text_unwraps_json_logs() -> None:
    err = b'{"level":"error","msg":"container not running","time":"x"}\nplain words\n'
    assert _error_text(err) == "container not running; plain words"


HANGING = """#!/bin/sh
echo $$ > "$(dirname "$0")/pid"
sleep 424243 &
echo $! > "$(dirname "$0")/grandchild"
wait
"""


def _hanging_runtime(tmp_path: Path, timeout: float) -> Runtime:
    script = tmp_path / "runc-hangs"
    script.write_text(HANGING)
    script.chmod(0o755)
    return Runtime(name="hangs", runtime_type="io.containerd.runc.v2", binary=str(script),
                   state_root=tmp_path / "state", flavour="runc", timeout=timeout)  # fmt: skip


def _gone(pid_file: Path) -> bool:
    pid = int(pid_file.read_text())
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state == "Z"


async def test_a_hung_runtime_command_is_killed_at_its_timeout(tmp_path: Path) -> None:
    runtime = _hanging_runtime(tmp_path, timeout=0.5)
    with pytest.raises(DeadlineExceeded, match=r"did not finish within 0\.5 seconds"):
        await runtime.run("ns", "start", "c1")
    assert _gone(tmp_path / "pid")
    await eventually(lambda: _gone(tmp_path / "grandchild"))


async def test_a_cancelled_runtime_command_is_killed(tmp_path: Path) -> None:
    runtime = _hanging_runtime(tmp_path, timeout=60)
    call = asyncio.ensure_future(runtime.run("ns", "pause", "c1"))
    while not (tmp_path / "grandchild").exists() or not (tmp_path / "grandchild").read_text():
        await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert _gone(tmp_path / "pid")
    await eventually(lambda: _gone(tmp_path / "grandchild"))


def test_runtime_timeout_is_read_and_checked(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert Runtimes(cfg).timeout == DEFAULT_TIMEOUT
    task_plugin = {"io.containerd.runtime.v2.task": {"runtime_timeout": 5}}
    assert Runtimes(dataclasses.replace(cfg, plugins=task_plugin)).timeout == 5
    for bad in (0, -1, "5s", True, 10**9):
        plugins = {"io.containerd.runtime.v2.task": {"runtime_timeout": bad}}
        with pytest.raises(InvalidArgument, match="runtime_timeout"):
            Runtimes(dataclasses.replace(cfg, plugins=plugins))
