"""Who may read a task's bundle: the modes of its directories and files.

A bundle holds what a container was given: its spec and every exec's spec
(their environments carry tokens and passwords), the monitors' configs and
the output log. No other local user may read any of it. The task root and
each namespace directory are 0711 (passable, not listable, like runc's own
state), a bundle 0700, files 0600 and output logs 0640. A bundle whose spec
maps users gets 0710 and the group of the container's root instead, so the
remapped root can still reach its rootfs (containerd does the same). At
start, `tighten` brings bundles an older engine left up to these modes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TASK_ROOT_MODE = 0o711
NAMESPACE_MODE = 0o711
BUNDLE_MODE = 0o700
REMAPPED_BUNDLE_MODE = 0o710
ROOTFS_MODE = 0o711
FILE_MODE = 0o600
LOG_MODE = 0o640
LOG_NAMES = frozenset({"log", "log.1"})


def make_dir(path: Path, mode: int) -> None:
    """`path` exists as a directory with exactly `mode` (mkdir's mode is masked by the umask)."""
    path.mkdir(mode=mode, exist_ok=True)
    os.chmod(path, mode)


def make_bundle(task_root: Path, namespace: str, container_id: str) -> Path:
    """A new bundle directory with its `rootfs` mount point; the bundle must not exist yet."""
    task_root.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    make_dir(task_root, TASK_ROOT_MODE)
    make_dir(task_root / namespace, NAMESPACE_MODE)
    bundle = task_root / namespace / container_id
    bundle.mkdir(mode=BUNDLE_MODE)
    os.chmod(bundle, BUNDLE_MODE)
    make_dir(bundle / "rootfs", ROOTFS_MODE)
    return bundle


def remapped_root_gid(spec: Mapping[str, Any]) -> int | None:
    """The host gid of the container's root group when the spec maps groups, else None."""
    linux = spec.get("linux") or {}
    for mapping in linux.get("gidMappings") or []:
        if not isinstance(mapping, dict):
            continue
        inside, host, size = (mapping.get(k) for k in ("containerID", "hostID", "size"))
        if all(isinstance(v, int) for v in (inside, host, size)) and inside <= 0 < inside + size:
            return host - inside
    return None


def share_with_remapped_root(bundle: Path, spec: Mapping[str, Any]) -> None:
    """Let a user-namespaced container's root pass through its bundle, and no one else."""
    gid = remapped_root_gid(spec)
    if gid is None:
        return
    os.chown(bundle, -1, gid)
    os.chmod(bundle, REMAPPED_BUNDLE_MODE)


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, readable by the owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    tmp.replace(path)


def tighten(task_root: Path) -> int:
    """Bring every bundle under `task_root` to the modes above; how many modes changed.

    Never descends into `rootfs`, the container's own tree.
    """
    changed = 0

    def want(path: Path, mode: int) -> None:
        nonlocal changed
        with contextlib.suppress(OSError):
            if path.lstat().st_mode & 0o7777 != mode:
                os.chmod(path, mode)
                changed += 1

    if not task_root.is_dir():
        return 0
    want(task_root, TASK_ROOT_MODE)
    for ns_dir in (p for p in task_root.iterdir() if p.is_dir() and not p.is_symlink()):
        want(ns_dir, NAMESPACE_MODE)
        for bundle in (p for p in ns_dir.iterdir() if p.is_dir() and not p.is_symlink()):
            remapped = bundle.stat().st_mode & 0o7777 == REMAPPED_BUNDLE_MODE
            want(bundle, REMAPPED_BUNDLE_MODE if remapped else BUNDLE_MODE)
            for dirpath, dirnames, filenames in os.walk(bundle):
                here = Path(dirpath)
                if here == bundle:
                    dirnames[:] = [d for d in dirnames if d != "rootfs"]
                else:
                    want(here, BUNDLE_MODE)
                for name in filenames:
                    path = here / name
                    if path.is_symlink() or not path.is_file():
                        continue
                    want(path, LOG_MODE if name in LOG_NAMES else FILE_MODE)
    return changed
