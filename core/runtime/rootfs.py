"""Mounting a task's root filesystem into its bundle, and taking it down again.

A task's rootfs arrives as containerd `Mount`s (type, source, options), the
same records `Snapshots.Mounts` returns: usually one overlay or one bind
mount. They are mounted in order on the bundle's `rootfs` directory with the
snapshot package's mount helpers (which read containerd's option words such
as `rbind` and `ro`), off the event loop; this module adds only what a task
needs on top: keeping the list in the task record and finding it again after
a restart.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from core.snapshots import mount as mounts
from core.snapshots.mount import Mount


def to_json(m: Mount) -> dict[str, Any]:
    return {"type": m.type, "source": m.source, "options": list(m.options)}


def from_json(data: dict[str, Any]) -> Mount:
    options = data.get("options") or []
    return Mount(
        type=str(data.get("type", "")),
        source=str(data.get("source", "")),
        options=tuple(str(o) for o in options) if isinstance(options, list) else (),
    )


async def mount_all(records: list[Mount], target: Path) -> None:
    """Mount each record on `target`; on failure nothing stays mounted."""
    await asyncio.to_thread(mounts.mount_all, records, target)


def start_mount(records: list[Mount], target: Path) -> asyncio.Future[None]:
    """`mount_all`'s work handed to a worker at once (not at the loop's next turn); its end.

    The future ends when the worker does, and nothing cancels the worker: a caller
    that awaits it through `asyncio.shield` and is cancelled can still wait for the
    mount to finish before taking it down.
    """
    return asyncio.get_running_loop().run_in_executor(None, mounts.mount_all, records, target)


async def unmount_all(target: Path) -> None:
    """Take every mount off `target`; a target that is not mounted is fine."""
    await asyncio.to_thread(mounts.unmount, target)
