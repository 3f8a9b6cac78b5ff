"""A deleted lease says whether a collection could find anything it held.

`LeaseStore.delete` answers False only when the lease held nothing, or only
snapshots that a container of its namespace holds too (`ctr run`'s lease, dropped
once its container exists); the Leases service then asks for no pass. Each case
is held to the mark itself: when the answer is False, the mark after the delete
finds nothing more dead than before it. Real SQLite metadata in a temporary
directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.api.google.protobuf import Any as AnyValue
from core.gc.mark import Marker, Plan
from core.metadata import Metadata
from core.metadata.containers import Container
from core.metadata.leases import Resource
from core.metadata.snapshots import Kind, SnapshotStore

NS = "default"
SN = "overlayfs"
BLOB = "sha256:" + "c" * 64


@pytest.fixture
def md(tmp_path: Path) -> Iterator[Metadata]:
    metadata = Metadata(tmp_path / "meta.db")
    yield metadata
    metadata.close()


def snapshot(store: SnapshotStore, key: str, ns: str = NS, lease: str | None = None) -> None:
    store.create(ns, SN, key, Kind.ACTIVE, "", None, {}, lease, lambda i: f"snapshots/{i}")


def container(md: Metadata, cid: str, key: str, ns: str = NS, snapshotter: str = SN) -> None:
    spec = AnyValue(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=b"{}")
    md.containers.create(
        ns, Container(cid, runtime_name="io.containerd.runc.v2", spec=spec,
                      snapshotter=snapshotter, snapshot_key=key),
    )  # fmt: skip


def dead(md: Metadata, store: SnapshotStore) -> set[tuple[str, ...]]:
    marker = Marker(md)
    marker.snapshot_graph = lambda m: store.graph([SN])
    plan: Plan = marker.mark(md)
    return {("content", *c) for c in plan.dead_content} | set(plan.dead_snapshots)


def held_to_the_mark(md: Metadata, store: SnapshotStore, lease: str, ns: str = NS) -> bool:
    before = dead(md, store)
    may_free = md.leases.delete(ns, lease)
    if not may_free:
        assert dead(md, store) == before
    return may_free


def test_a_lease_whose_snapshot_a_container_holds_frees_nothing(md: Metadata) -> None:
    store = SnapshotStore(md.db, md.namespaces, md.leases)
    md.leases.create(NS, "run", {})
    snapshot(store, "c1", lease="run")
    container(md, "c1", "c1")
    assert held_to_the_mark(md, store, "run") is False


def test_an_empty_lease_frees_nothing(md: Metadata) -> None:
    store = SnapshotStore(md.db, md.namespaces, md.leases)
    md.leases.create(NS, "empty", {})
    assert held_to_the_mark(md, store, "empty") is False


def test_a_snapshot_no_container_holds_may_be_freed(md: Metadata) -> None:
    store = SnapshotStore(md.db, md.namespaces, md.leases)
    md.leases.create(NS, "L", {})
    snapshot(store, "loose", lease="L")
    snapshot(store, "held")
    md.leases.add_resource(NS, "L", Resource("held", f"snapshots/{SN}"))
    container(md, "c1", "held")
    assert held_to_the_mark(md, store, "L") is True
    assert (f"snapshots/{SN}", NS, "loose") in dead(md, store)


def test_content_may_be_freed(md: Metadata) -> None:
    store = SnapshotStore(md.db, md.namespaces, md.leases)
    md.leases.create(NS, "L", {})
    md.content.add(NS, BLOB, 1, {}, None)
    md.leases.add_resource(NS, "L", Resource(BLOB, "content"))
    assert held_to_the_mark(md, store, "L") is True
    assert ("content", NS, BLOB) in dead(md, store)


@pytest.mark.parametrize("where", ["other namespace", "other snapshotter", "other key"])
def test_only_the_same_snapshot_of_the_same_namespace_counts(md: Metadata, where: str) -> None:
    store = SnapshotStore(md.db, md.namespaces, md.leases)
    md.namespaces.create("other", {})
    md.leases.create(NS, "L", {})
    snapshot(store, "k", lease="L")
    ns, snapshotter, key = NS, SN, "k"
    if where == "other namespace":
        snapshot(store, "k", ns="other")
        ns = "other"
    elif where == "other snapshotter":
        snapshotter = "native"
    else:
        snapshot(store, "k2")
        key = "k2"
    container(md, "c1", key, ns=ns, snapshotter=snapshotter)
    assert held_to_the_mark(md, store, "L") is True
    assert (f"snapshots/{SN}", NS, "k") in dead(md, store)
