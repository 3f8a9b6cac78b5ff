"""The copy-based snapshotter (`native`): every snapshot is a full directory tree.

`snapshots/<id>` is the snapshot's tree itself. Preparing or viewing on top of
a parent copies the parent's tree with `cp -a --reflink=auto`, which keeps
ownership, modes, extended attributes, hard links within the tree, symbolic
links, device nodes and timestamps, and shares blocks where the filesystem
can. Mounts are bind mounts, read-only for views. It runs anywhere, which is
why it is the fallback when overlayfs cannot.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from core.errors import Internal
from core.metadata.snapshots import Kind, SnapshotRecord
from core.snapshots.base import Snapshotter
from core.snapshots.mount import Mount


def copy_tree(source: Path, target: Path) -> None:
    """Copy `source` to a new `target` with everything a root filesystem needs kept."""
    done = subprocess.run(
        ["cp", "-a", "--reflink=auto", "--", str(source), str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise Internal(f"copying snapshot {source} to {target} failed: {done.stderr.strip()}")


def bind_mounts(kind: Kind, path: Path) -> list[Mount]:
    return [Mount("bind", str(path), ("ro" if kind == Kind.VIEW else "rw", "rbind"))]


class NativeSnapshotter(Snapshotter):
    NAME = "native"

    def _build(self, target: Path, kind: Kind, parents: Sequence[Path]) -> None:
        if parents:
            copy_tree(parents[0], target)
        else:
            target.mkdir(mode=0o755)

    def _mounts(self, record: SnapshotRecord, path: Path, parents: Sequence[Path]) -> list[Mount]:
        return bind_mounts(record.kind, path)
