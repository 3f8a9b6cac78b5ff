"""Which parts the engine has, what each needs, and whether each came up.

Introspection reports this list the way containerd reports its plugins: a type
and an id in containerd's naming, the types it requires, the platforms it
serves, exports such as its root directory, and an init error for a part that
was skipped (a snapshotter whose filesystem is missing, a runtime whose binary
is not installed). The engine registers each part as it builds it, with the
objects the plugin stands for, and a plugin's `requires` are the types of the
parts it was actually given (`Registry.requires`), so the list is always the
engine's real state and wiring. Snapshotters containerd has and ctrdeck does
not (devmapper, zfs) are listed skipped with the reason, as `ctr plugins ls -d`
shows containerd's unusable ones, so asking for them explains itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import filters


@dataclass
class Plugin:
    type: str
    id: str
    requires: list[str] = field(default_factory=list)
    exports: dict[str, str] = field(default_factory=dict)
    capabilities: list[str] = field(default_factory=list)
    platforms: bool = False
    error: str = ""

    @property
    def status(self) -> str:
        if not self.error:
            return "ok"
        return "skip" if "skip plugin" in self.error else "error"


SNAPSHOTTER = "io.containerd.snapshotter.v1"
_INSTEAD = "use overlayfs (the default), native or btrfs"


def absent_snapshotters(plugins: Mapping[str, Any], engine_root: Path) -> list[Plugin]:
    """containerd's devmapper and zfs snapshotters, which this engine does not have.

    `plugins` is the config's plugin tables: a devmapper pool configured for
    containerd is named in the reason, so an operator moving a config over sees
    why it has no effect.
    """
    devmapper = plugins.get(f"{SNAPSHOTTER}.devmapper", {})
    pool = devmapper.get("pool_name", "") if isinstance(devmapper, Mapping) else ""
    configured = f'its pool "{pool}" is configured, but ' if pool else "devmapper not configured: "
    zfs_root = engine_root / f"{SNAPSHOTTER}.zfs"
    return [
        Plugin(
            SNAPSHOTTER,
            "devmapper",
            platforms=True,
            error=f"{configured}ctrdeck has no devmapper snapshotter; {_INSTEAD}: skip plugin",
        ),
        Plugin(
            SNAPSHOTTER,
            "zfs",
            exports={"root": str(zfs_root)},
            platforms=True,
            error=(
                "ctrdeck has no zfs snapshotter (containerd's needs its root on a zfs "
                f"dataset); {_INSTEAD}: skip plugin"
            ),
        ),
    ]


class Registry:
    def __init__(self) -> None:
        self.plugins: list[Plugin] = []
        self._parts: list[tuple[object, str]] = []

    def add(self, plugin: Plugin, *parts: object) -> Plugin:
        """Record `plugin`; `parts` are the objects it stands for, as `requires` finds them."""
        self.plugins.append(plugin)
        self._parts.extend((part, plugin.type) for part in parts)
        return plugin

    def requires(self, *parts: object) -> list[str]:
        """The plugin types of `parts` (a mapping stands for its values), each once, in order.

        What a plugin requires is the types of the parts it is built with; a
        part nobody registered is a wiring mistake, and raises `LookupError`.
        """
        types: list[str] = []
        for part in parts:
            for one in part.values() if isinstance(part, Mapping) else [part]:
                found = next((t for p, t in self._parts if p is one), None)
                if found is None:
                    raise LookupError(f"{one!r} is not a registered part")
                if found not in types:
                    types.append(found)
        return types

    def list(self, filter_strings: list[str]) -> list[Plugin]:
        match = filters.parse_all(filter_strings)
        return [
            p
            for p in self.plugins
            if match.match(filters.field_adaptor({"type": p.type, "id": p.id}))
        ]
