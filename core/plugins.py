"""Which parts the engine has, what each needs, and whether each came up.

Introspection reports this list the way containerd reports its plugins: a type
and an id in containerd's naming, the types it requires, the platforms it
serves, exports such as its root directory, and an init error for a part that
was skipped (a snapshotter whose filesystem is missing, a runtime whose binary
is not installed). The engine registers each part as it builds it, so the list
is always the engine's real state.
"""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass, field

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


def host_platform() -> tuple[str, str, str]:
    """The host's OCI platform (os, architecture, variant)."""
    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)
    variant = {"arm64": "v8", "arm": "v7"}.get(arch, "")
    return "linux", arch, variant


class Registry:
    def __init__(self) -> None:
        self.plugins: list[Plugin] = []

    def add(self, plugin: Plugin) -> Plugin:
        self.plugins.append(plugin)
        return plugin

    def list(self, filter_strings: list[str]) -> list[Plugin]:
        match = filters.parse_all(filter_strings)
        return [
            p
            for p in self.plugins
            if match.match(filters.field_adaptor({"type": p.type, "id": p.id}))
        ]
