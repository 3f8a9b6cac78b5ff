"""Snapshotters: the file trees of images and containers, by name.

The engine builds every snapshotter once with `load`: `btrfs`, `native` and
`overlayfs`, each rooted at `<engine root>/io.containerd.snapshotter.v1.<name>`
unless its `[plugins."io.containerd.snapshotter.v1.<name>"] root_path` says
otherwise. A snapshotter the host cannot run comes back with the reason, which
Introspection shows as the plugin's init error; the rest are ready to serve.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.config import Config
from core.errors import InvalidArgument
from core.metadata.namespaces import NamespaceStore
from core.metadata.snapshots import Kind, SnapshotRecord, SnapshotStore, Usage
from core.snapshots.base import Snapshotter
from core.snapshots.btrfs import BtrfsSnapshotter
from core.snapshots.mount import Mount, mount_all, mounted, unmount
from core.snapshots.native import NativeSnapshotter
from core.snapshots.overlay import OverlaySnapshotter

PLUGIN_TYPE = "io.containerd.snapshotter.v1"
DEFAULT_SNAPSHOTTER_LABEL = "containerd.io/defaults/snapshotter"

__all__ = [
    "DEFAULT_SNAPSHOTTER_LABEL",
    "PLUGIN_TYPE",
    "Kind",
    "Loaded",
    "Mount",
    "SnapshotRecord",
    "Snapshotter",
    "Usage",
    "load",
    "mount_all",
    "mounted",
    "select",
    "unmount",
    "unpack_target",
]


@dataclass
class Loaded:
    snapshotter: Snapshotter
    error: str

    @property
    def name(self) -> str:
        return self.snapshotter.name

    @property
    def root(self) -> Path:
        return self.snapshotter.root


def _root(config: Config, engine_root: Path, name: str) -> tuple[Path, str]:
    table = config.plugins.get(f"{PLUGIN_TYPE}.{name}", {})
    value = table.get("root_path", "")
    default = engine_root / f"{PLUGIN_TYPE}.{name}"
    if not value:
        return default, ""
    if not isinstance(value, str) or not Path(value).is_absolute():
        return default, (
            f'[plugins."{PLUGIN_TYPE}.{name}"] root_path must be an absolute path, got {value!r}'
        )
    return Path(value), ""


def load(config: Config, engine_root: Path, store: SnapshotStore) -> list[Loaded]:
    """Build and open every snapshotter, in containerd's order."""
    loaded: list[Loaded] = []
    for cls in (BtrfsSnapshotter, NativeSnapshotter, OverlaySnapshotter):
        root, error = _root(config, engine_root, cls.NAME)
        snapshotter = cls(root, store)
        if not error:
            try:
                error = snapshotter.open()
            except OSError as exc:
                error = f"cannot open {cls.NAME} snapshotter at {root}: {exc}"
        loaded.append(Loaded(snapshotter, error))
    return loaded


def select(snapshotters: Mapping[str, Snapshotter], name: str) -> Snapshotter:
    """The loaded snapshotter a request names, refused as containerd refuses it."""
    if not name:
        raise InvalidArgument("snapshotter argument missing")
    snapshotter = snapshotters.get(name)
    if snapshotter is None:
        raise InvalidArgument(f"snapshotter not loaded: {name}")
    return snapshotter


def unpack_target(
    snapshotters: Mapping[str, Snapshotter],
    namespaces: NamespaceStore,
    default: str,
    namespace: str,
    name: str,
) -> tuple[str, Snapshotter]:
    """The snapshotter an image unpacks into: `name`, else the namespace's default label,
    else the engine's `default`; one that is not loaded is refused as containerd refuses it."""
    if not name:
        ns = namespaces.get(namespace)
        name = (ns.labels.get(DEFAULT_SNAPSHOTTER_LABEL, "") if ns else "") or default
    snapshotter = snapshotters.get(name)
    if snapshotter is None:
        raise InvalidArgument(f"snapshotter not loaded: {name}")
    return name, snapshotter
