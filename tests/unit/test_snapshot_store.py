"""Unit tests of snapshot records (core/metadata/snapshots.py) on a scratch database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from core.metadata import Metadata
from core.metadata.leases import Resource
from core.metadata.snapshots import Kind, SnapshotStore, Usage

SN = "overlayfs"


@pytest.fixture
def md(tmp_path: Path) -> Iterator[Metadata]:
    metadata = Metadata(tmp_path / "meta.db")
    try:
        yield metadata
    finally:
        metadata.close()


@pytest.fixture
def store(md: Metadata) -> SnapshotStore:
    return SnapshotStore(md.db, md.namespaces, md.leases)


def new(
    store: SnapshotStore,
    key: str,
    parent: str = "",
    ns: str = "default",
    kind: Kind = Kind.ACTIVE,
    labels: dict[str, str] | None = None,
    lease: str | None = None,
) -> int:
    found = store.check_new(ns, SN, key, parent)
    record = store.create(
        ns,
        SN,
        key,
        kind,
        parent,
        found.id if found else None,
        labels or {},
        lease,
        lambda i: f"snapshots/{i}",
    )
    return record.id


def commit(store: SnapshotStore, name: str, key: str, ns: str = "default", **kw: object) -> None:
    record = store.get(ns, SN, key)
    store.commit(
        ns,
        SN,
        name,
        key,
        kw.get("labels", {}),  # type: ignore[arg-type]
        kw.get("lease"),  # type: ignore[arg-type]
        Usage(10, 2),
        expected_id=record.id,
        directory=record.directory,
    )


def chain(store: SnapshotStore, *names: str, ns: str = "default") -> None:
    parent = ""
    for name in names:
        new(store, f"extract {name}", parent, ns)
        commit(store, name, f"extract {name}", ns)
        parent = name


def test_create_records_kind_parent_labels_and_directory(store: SnapshotStore) -> None:
    chain(store, "base")
    sid = new(store, "work key", "base", labels={"a": "b"})
    record = store.get("default", SN, "work key")
    assert record.id == sid
    assert (record.kind, record.parent, record.labels) == (Kind.ACTIVE, "base", {"a": "b"})
    assert record.directory == f"snapshots/{sid}"
    assert record.created_at == record.updated_at > 0


def test_existing_key_missing_parent_and_uncommitted_parent_are_refused(
    store: SnapshotStore,
) -> None:
    new(store, "a")
    with pytest.raises(AlreadyExists, match='snapshot "a"'):
        new(store, "a")
    with pytest.raises(NotFound, match="parent snapshot nope does not exist"):
        new(store, "b", "nope")
    with pytest.raises(InvalidArgument, match='parent "a" is not committed'):
        new(store, "b", "a")
    with pytest.raises(InvalidArgument, match="empty"):
        new(store, "")


def test_a_parent_replaced_meanwhile_is_refused(store: SnapshotStore) -> None:
    chain(store, "base")
    stale = store.get("default", SN, "base").id
    store.remove("default", SN, "base", None)
    chain(store, "base")
    with pytest.raises(NotFound, match="removed while"):
        store.create("default", SN, "c", Kind.ACTIVE, "base", stale, {}, None, str)


def test_commit_renames_the_key_keeps_the_id_and_replaces_labels(store: SnapshotStore) -> None:
    sid = new(store, "k", labels={"old": "1"})
    commit(store, "name", "k", labels={"new": "2"})
    assert store.find("default", SN, "k") is None
    record = store.get("default", SN, "name")
    assert (record.id, record.kind, record.labels) == (sid, Kind.COMMITTED, {"new": "2"})
    assert record.usage == Usage(10, 2)


def test_commit_rules(store: SnapshotStore) -> None:
    with pytest.raises(NotFound, match="snapshot missing does not exist"):
        store.check_commit("default", SN, "n", "missing")
    chain(store, "base")
    new(store, "v", "base", kind=Kind.VIEW)
    with pytest.raises(FailedPrecondition, match="not active"):
        store.check_commit("default", SN, "n", "v")
    new(store, "k")
    with pytest.raises(AlreadyExists, match='snapshot "base"'):
        store.check_commit("default", SN, "base", "k")
    stale = store.get("default", SN, "k").id
    store.remove("default", SN, "k", None)
    new(store, "k")
    with pytest.raises(FailedPrecondition, match="replaced"):
        store.commit("default", SN, "n", "k", {}, None, Usage(), expected_id=stale, directory="")


def test_remove_refuses_a_parent_and_works_leaf_first(store: SnapshotStore) -> None:
    chain(store, "l1", "l2")
    with pytest.raises(FailedPrecondition, match="with child"):
        store.remove("default", SN, "l1", None)
    store.remove("default", SN, "l2", None)
    store.remove("default", SN, "l1", None)
    with pytest.raises(NotFound, match="snapshot l1 does not exist: not found"):
        store.remove("default", SN, "l1", None)


def test_namespaces_are_isolated(store: SnapshotStore) -> None:
    chain(store, "base", ns="a")
    chain(store, "base", ns="b")
    assert store.get("a", SN, "base").id != store.get("b", SN, "base").id
    with pytest.raises(NotFound):
        new(store, "child", "base", ns="c")
    assert store.snapshotters_in("a") == [SN]
    assert store.snapshotters_in("c") == []
    assert [r.key for r in store.list("a", SN)] == ["base"]
    assert store.list("a", "native") == []


def test_list_filters(store: SnapshotStore) -> None:
    chain(store, "l1", "l2")
    new(store, "active", "l2", labels={"role": "work"})
    new(store, "view", "l1", kind=Kind.VIEW)

    def keys(*filters: str) -> list[str]:
        return [r.key for r in store.list("default", SN, filters)]

    assert keys() == ["active", "l1", "l2", "view"]
    assert keys("kind==committed") == ["l1", "l2"]
    assert keys("kind==view") == ["view"]
    assert keys("parent==l1") == ["l2", "view"]
    assert keys("name==l2") == ["l2"]
    assert keys("labels.role==work") == ["active"]
    assert keys("kind==active", "name==l1") == ["active", "l1"]


def test_update_by_mask_and_whole(store: SnapshotStore) -> None:
    new(store, "k", labels={"a": "1", "b": "2"})
    record = store.update("default", SN, "k", {"a": "x", "c": "3"}, ["labels.a", "labels.b"])
    assert record.labels == {"a": "x"}
    assert store.get("default", SN, "k").labels == {"a": "x"}
    record = store.update("default", SN, "k", {"z": "9"}, [])
    assert record.labels == {"z": "9"}
    with pytest.raises(InvalidArgument, match="cannot update 'kind' field on snapshot"):
        store.update("default", SN, "k", {}, ["kind"])
    with pytest.raises(InvalidArgument, match="greater than maximum size"):
        store.update("default", SN, "k", {"big": "x" * 5000}, [])
    with pytest.raises(NotFound):
        store.update("default", SN, "missing", {}, [])


def test_lease_attach_follows_commit_and_remove(md: Metadata, store: SnapshotStore) -> None:
    md.leases.create("default", "L", {})
    new(store, "k", lease="L")
    assert md.leases.list_resources("default", "L") == [Resource("k", "snapshots/overlayfs")]
    commit(store, "name", "k", lease="L")
    assert md.leases.list_resources("default", "L") == [Resource("name", "snapshots/overlayfs")]
    store.remove("default", SN, "name", "L")
    assert md.leases.list_resources("default", "L") == []
    with pytest.raises(NotFound, match="lease"):
        new(store, "x", lease="missing")
    assert store.find("default", SN, "x") is None


def test_gc_graph_and_children_first_removal(store: SnapshotStore) -> None:
    chain(store, "l1", "l2", "l3")
    new(store, "keep", labels={"containerd.io/gc.root": "now"})
    graph = sorted(store.graph([SN]))
    assert [(g[2], g[3]) for g in graph] == [("keep", ""), ("l1", ""), ("l2", "l1"), ("l3", "l2")]
    assert list(store.graph(["native"])) == []
    kind = f"snapshots/{SN}"
    store.remove_many([(kind, "default", "l1"), (kind, "default", "l2"), (kind, "default", "l3")])
    assert [r.key for r in store.list("default", SN)] == ["keep"]
    assert store.directories(SN) == {store.get("default", SN, "keep").directory}
