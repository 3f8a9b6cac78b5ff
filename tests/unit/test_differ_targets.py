"""Where the walking differ applies a layer for a bind mount, learned from the snapshotters.

The differ names no snapshotter: a snapshotter whose snapshots become overlay
lower directories says so (`Snapshotter.OVERLAY_LOWERS`), and a bind mount under
its root gets overlay whiteouts wherever that root is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.diff.apply import Mode
from core.diff.differ import apply_target, overlay_roots
from core.metadata import Metadata
from core.metadata.snapshots import SnapshotStore
from core.snapshots.mount import Mount
from core.snapshots.native import NativeSnapshotter
from core.snapshots.overlay import OverlaySnapshotter


def bind(path: Path) -> list[Mount]:
    return [Mount("bind", str(path), ("rw", "rbind"))]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SnapshotStore]:
    metadata = Metadata(tmp_path / "meta" / "meta.db")
    try:
        yield SnapshotStore(metadata.db, metadata.namespaces, metadata.leases)
    finally:
        metadata.close()


def test_a_bind_mount_under_an_overlay_lowers_root_gets_overlay_whiteouts(
    tmp_path: Path, store: SnapshotStore
) -> None:
    overlay = OverlaySnapshotter(tmp_path / "anywhere" / "layers", store)
    native = NativeSnapshotter(tmp_path / "copies", store)
    under_overlay = overlay.root / "snapshots" / "1" / "fs"
    under_native = native.root / "snapshots" / "1"
    for path in (under_overlay, under_native):
        path.mkdir(parents=True)
    roots = overlay_roots([overlay, native])
    assert roots == [overlay.root]
    with apply_target(bind(under_overlay), roots) as target:
        assert (target.root, target.mode) == (under_overlay, Mode.OVERLAY)
    with apply_target(bind(under_native), roots) as target:
        assert (target.root, target.mode) == (under_native, Mode.DELETE)
    # Given no snapshotter that needs them, the same directory gets delete whiteouts.
    with apply_target(bind(under_overlay), overlay_roots([native])) as target:
        assert target.mode == Mode.DELETE
