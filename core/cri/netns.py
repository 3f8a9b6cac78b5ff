"""Pod network namespaces: created by the engine and kept alive by a bind mount.

`unshare --net=<file>` makes a new network namespace and bind-mounts it on an
empty file, so it outlives every process in it (and the engine); the pause
container and the pod's containers join it by that path, and CNI configures it
before the pause container starts. Removing it unmounts and deletes the file;
removing one that is already gone is fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from core.errors import Internal


async def _run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    return proc.returncode or 0, err.decode(errors="replace").strip()


async def create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    path.touch(mode=0o600, exist_ok=False)
    code, err = await _run("unshare", f"--net={path}", "true")
    if code != 0:
        path.unlink(missing_ok=True)
        raise Internal(f"creating network namespace {path}: {err or f'exit status {code}'}")


def _in_mountinfo(path: Path) -> bool:
    # mountinfo names the real path (/run/netns, never the /var/run symlink).
    real = os.path.join(os.path.realpath(path.parent), path.name)
    text = Path("/proc/self/mountinfo").read_text()
    return any(line.split()[4] == real for line in text.splitlines())


async def remove(path: Path) -> None:
    if not path.exists():
        return
    # A namespace mounted more than once (nothing of ours does it) is unmounted fully.
    while _in_mountinfo(path):
        code, err = await _run("umount", "--lazy", str(path))
        if code != 0:
            raise Internal(f"unmounting network namespace {path}: {err}")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
