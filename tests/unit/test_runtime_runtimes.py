"""Runtime selection by name, shim type and BinaryName; host adjustments."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from core.config import Config, GrpcConfig, RuntimeConfig
from core.errors import FailedPrecondition, NotFound
from core.runtime.runtimes import Runtime, Runtimes, _error_text


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
