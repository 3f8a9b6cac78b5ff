"""Bundle modes: made private, and an older engine's loose bundles tightened."""

from __future__ import annotations

import os
from pathlib import Path

from core.runtime import bundle


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_a_new_bundle_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        made = bundle.make_bundle(tmp_path / "tasks", "ns", "c1")
        bundle.write_private(made / "config.json", b"{}")
    finally:
        os.umask(old)
    assert (mode(tmp_path / "tasks"), mode(tmp_path / "tasks" / "ns")) == (0o711, 0o711)
    assert (mode(made), mode(made / "rootfs"), mode(made / "config.json")) == (0o700, 0o711, 0o600)


def test_tighten_leaves_the_rootfs_alone(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    made = bundle.make_bundle(root, "ns", "c1")
    (made / "init").mkdir()
    (made / "rootfs" / "etc").mkdir()
    files = [made / "config.json", made / "init" / "process.json", made / "log"]
    for f in [*files, made / "rootfs" / "etc" / "passwd"]:
        f.write_text("x")
        f.chmod(0o644)
    for d in (root, root / "ns", made, made / "init"):
        d.chmod(0o755)
    assert bundle.tighten(root) == 7
    assert [mode(f) for f in files] == [0o600, 0o600, 0o640]
    assert [mode(d) for d in (root, root / "ns", made, made / "init")] == [
        0o711,
        0o711,
        0o700,
        0o700,
    ]
    assert mode(made / "rootfs" / "etc" / "passwd") == 0o644
    assert bundle.tighten(root) == 0


def test_remapped_root_group() -> None:
    spec = {"linux": {"gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}}
    assert bundle.remapped_root_gid(spec) == 100000
    assert bundle.remapped_root_gid({"linux": {}}) is None
    shifted = {"linux": {"gidMappings": [{"containerID": 1, "hostID": 5000, "size": 10}]}}
    assert bundle.remapped_root_gid(shifted) is None
