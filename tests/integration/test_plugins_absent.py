"""Snapshotters containerd has and this engine does not are listed, with why.

Debian's `ctr plugins ls` against the real engine shows devmapper and zfs as
skipped, and `ctr plugins ls -d` gives the reason, as containerd does for its
unusable snapshotters; a devmapper pool carried over from a containerd config
is named in it. Asking to use one is refused in containerd's words.
"""

from __future__ import annotations

import pytest

from tests.engine_proc import EngineProcess
from tests.helpers import ctr

pytestmark = pytest.mark.integration

SNAPSHOTTER = "io.containerd.snapshotter.v1"


def rows(out: str) -> dict[str, list[str]]:
    return {
        cells[1]: cells
        for line in out.splitlines()[1:]
        if (cells := line.split()) and cells[0] == SNAPSHOTTER
    }


def test_devmapper_and_zfs_are_listed_as_skipped(engine: EngineProcess, ctr_bin: str) -> None:
    listed = rows(ctr(engine.address, "plugins", "ls").stdout)
    assert listed["devmapper"][-1] == "skip"
    assert listed["zfs"][-1] == "skip"
    assert listed["overlayfs"][-1] == "ok"

    detail = ctr(engine.address, "plugins", "ls", "-d", "id==zfs").stdout
    assert "ID:            zfs" in detail
    assert "ctrdeck has no zfs snapshotter" in detail and "skip plugin" in detail
    assert f"{SNAPSHOTTER}.zfs" in detail  # its root, as containerd exports it
    detail = ctr(engine.address, "plugins", "ls", "-d", "id==devmapper").stdout
    assert "devmapper not configured" in detail and "ctrdeck has no devmapper" in detail

    refused = ctr(engine.address, "snapshots", "--snapshotter", "zfs", "ls", check=False)
    assert refused.returncode != 0 and "snapshotter not loaded: zfs" in refused.stderr


def test_a_configured_devmapper_pool_is_named(ctr_bin: str) -> None:
    engine = EngineProcess(
        config=f'version = 2\n[plugins."{SNAPSHOTTER}.devmapper"]\npool_name = "containerd-pool"\n'
    ).start()
    try:
        detail = ctr(engine.address, "plugins", "ls", "-d", "id==devmapper").stdout
        assert 'pool "containerd-pool" is configured' in detail
        assert "skip plugin" in detail
    finally:
        engine.stop(cleanup=True)
