"""The mark: what is reachable from the roots, and the sweep of the records that are not.

Roots, per namespace as in containerd: image targets, containers, anything
labelled `containerd.io/gc.root`, and everything attached to a lease that has
not expired. From a root the mark follows `containerd.io/gc.ref.content*`
labels to blobs and `containerd.io/gc.ref.snapshot.<snapshotter>` labels to
snapshots; a lease labelled `containerd.io/gc.flat` protects only what is
attached to it. `mark` only reads, so it can run on a connection of its own in
a worker thread; `sweep` removes what a mark found dead. `collect` does both in
one transaction; `GarbageCollector` (`core/gc/collector.py`) marks off the loop
and sweeps on it, in steps, only while no other write lands, then removes the
blob files nobody owns any more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from core.metadata import Metadata
from core.metadata.leases import FLAT_LABEL

ROOT_LABEL = "containerd.io/gc.root"
CONTENT_REF = "containerd.io/gc.ref.content"
SNAPSHOT_REF = "containerd.io/gc.ref.snapshot."

Node = tuple[str, str, str]  # (kind, namespace, id): kind is "content" or "snapshots/<name>"


SnapshotRow = tuple[str, str, str, str, dict[str, str]]
"""(namespace, snapshotter, key, parent key, labels) of one snapshot record."""


@dataclass
class Plan:
    """What a mark found unreachable."""

    dead_content: list[tuple[str, str]] = field(default_factory=list)
    dead_snapshots: list[Node] = field(default_factory=list)


@dataclass
class Result:
    content_removed: list[tuple[str, str]] = field(default_factory=list)
    snapshots_removed: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, other: Result) -> None:
        self.content_removed += other.content_removed
        self.snapshots_removed += other.snapshots_removed


def references(namespace: str, labels: Mapping[str, str]) -> Iterable[Node]:
    """The nodes a set of labels points at."""
    for key, value in labels.items():
        if key == CONTENT_REF or key.startswith((CONTENT_REF + ".", CONTENT_REF + "/")):
            yield ("content", namespace, value)
        elif key.startswith(SNAPSHOT_REF):
            snapshotter = key[len(SNAPSHOT_REF) :].split("/", 1)[0]
            if snapshotter:
                yield (f"snapshots/{snapshotter}", namespace, value)


class Marker:
    """Marks and sweeps the metadata; snapshot graphs come from `snapshot_graph`.

    `snapshot_graph(md)` yields a `SnapshotRow` for every snapshot record in `md`,
    and `remove_snapshots` removes the unreachable ones; both are empty until
    snapshotters exist.
    """

    def __init__(self, metadata: Metadata) -> None:
        self.metadata = metadata
        self.snapshot_graph: Callable[[Metadata], Iterator[SnapshotRow]] = lambda md: iter(())
        self.remove_snapshots: Callable[[list[Node]], None] = lambda nodes: None

    def collect(self) -> Result:
        """Mark and sweep in one transaction on the engine's own connection."""
        with self.metadata.db.tx():
            return self.sweep(self.mark(self.metadata))

    def mark(self, md: Metadata) -> Plan:
        """Read `md` (any connection to the database) and name everything unreachable."""
        content = {(ns, r.digest): r.labels for ns, r in md.content.all()}
        snapshots = {
            (f"snapshots/{sn}", ns, key): (parent, labels)
            for ns, sn, key, parent, labels in self.snapshot_graph(md)
        }
        roots: list[Node] = []
        for ns, digest in md.images.all_targets():
            roots.append(("content", ns, digest))
        for ns, labels in md.images.all_labels():
            roots.extend(references(ns, labels))
        for ns, sn, key in md.containers.all_snapshots():
            roots.append((f"snapshots/{sn}", ns, key))
        for ns, labels in md.containers.all_labels():
            roots.extend(references(ns, labels))
        for (ns, digest), labels in content.items():
            if ROOT_LABEL in labels:
                roots.append(("content", ns, digest))
        for node, (_, labels) in snapshots.items():
            if ROOT_LABEL in labels:
                roots.append(node)
        flat: list[Node] = []
        for ns, lease in md.leases.all():
            if lease.expired():
                continue
            for res in md.leases.resources_of(ns, lease.id):
                if res.type == "content" or res.type.startswith("snapshots/"):
                    node = (res.type, ns, res.id)
                    (flat if FLAT_LABEL in lease.labels else roots).append(node)

        marked: set[Node] = set(flat)
        stack = list(roots)
        while stack:
            node = stack.pop()
            if node in marked:
                continue
            marked.add(node)
            kind, ns, ident = node
            if kind == "content":
                found = content.get((ns, ident))
                if found is not None:
                    stack.extend(references(ns, found))
            elif node in snapshots:
                parent, labels = snapshots[node]
                if parent:
                    stack.append((kind, ns, parent))
                stack.extend(references(ns, labels))

        return Plan(
            dead_content=[(ns, d) for (ns, d) in content if ("content", ns, d) not in marked],
            dead_snapshots=[n for n in snapshots if n not in marked],
        )

    def sweep(self, plan: Plan) -> Result:
        """Remove what `plan` found dead, in one transaction on the engine's connection."""
        result = Result()
        with self.metadata.db.tx():
            self.metadata.content.remove_many(plan.dead_content)
            result.content_removed = list(plan.dead_content)
            if plan.dead_snapshots:
                self.remove_snapshots(plan.dead_snapshots)
                result.snapshots_removed = [
                    (ns, kind.split("/", 1)[1], key) for kind, ns, key in plan.dead_snapshots
                ]
        return result
