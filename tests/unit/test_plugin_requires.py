"""Introspection's `requires` lists come from what the engine actually wired.

Each plugin requires the types of the parts it was built with (`Registry.requires`),
so a plugin built without snapshotters does not claim them, and a part nobody
registered is a wiring mistake. A gRPC service names the engine parts it uses in
`PARTS`; the last test reads the service's module, and the concept modules it
imports, and checks that `PARTS` names exactly the parts they reach, counting
for a concept object the engine built (the differ, the puller) the parts
`engine.py` wired into it, whether at construction or on first use.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import engine as engine_module
from core.config import Config, GrpcConfig
from core.cri.service import ImageService, RuntimeService
from core.engine import Engine
from core.plugins import Plugin, Registry
from core.server import GRPC_PLUGIN, build_services

CORE = Path(__file__).resolve().parents[2] / "core"
METADATA = "io.containerd.metadata.v1"
CONTENT = "io.containerd.content.v1"
EVENTS = "io.containerd.event.v1"
SNAPSHOTTER = "io.containerd.snapshotter.v1"
GC = "io.containerd.gc.v1"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    config = Config(
        root=tmp_path / "root",
        state=tmp_path / "state",
        grpc=GrpcConfig(address=str(tmp_path / "sock")),
    )
    built = Engine(config)
    try:
        yield built
    finally:
        built.close()


def requires_of(engine: Engine, type_: str, id_: str) -> list[str]:
    return next(p for p in engine.plugins.plugins if (p.type, p.id) == (type_, id_)).requires


def test_a_plugin_requires_the_types_of_the_parts_it_was_given() -> None:
    registry = Registry()
    store, exchange = object(), object()
    registry.add(Plugin(CONTENT, "content"), store)
    registry.add(Plugin(EVENTS, "exchange"), exchange)
    assert registry.requires(exchange, store, exchange) == [EVENTS, CONTENT]
    # A mapping of parts (the snapshotters) stands for its values: none, none required.
    assert registry.requires({}) == []
    assert registry.requires({"a": store}) == [CONTENT]
    with pytest.raises(LookupError):
        registry.requires(object())


def test_the_engines_plugins_require_what_they_are_built_with(engine: Engine) -> None:
    build_services(engine)
    assert requires_of(engine, METADATA, "sqlite") == []
    assert requires_of(engine, SNAPSHOTTER, "native") == [METADATA]
    assert requires_of(engine, GC, "scheduler") == [METADATA, CONTENT, SNAPSHOTTER]
    assert requires_of(engine, GRPC_PLUGIN, "events") == [EVENTS]
    assert requires_of(engine, GRPC_PLUGIN, "leases") == [METADATA, GC]
    assert requires_of(engine, GRPC_PLUGIN, "healthcheck") == []
    assert sorted(p.id for p in engine.plugins.plugins if p.type == GRPC_PLUGIN) == [
        "containers", "content", "cri", "diff", "events", "healthcheck", "images",
        "introspection", "leases", "namespaces", "snapshots", "task-details", "tasks",
        "version",
    ]  # fmt: skip


def test_requires_follow_the_wiring_when_a_part_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Config(
        root=tmp_path / "root",
        state=tmp_path / "state",
        grpc=GrpcConfig(address=str(tmp_path / "sock")),
    )
    # No runtime configured and no snapshotter built: nothing of theirs is wired.
    monkeypatch.setattr(engine_module, "load_snapshotters", lambda *args: [])
    engine = Engine(dataclasses.replace(config, runtimes={}))
    try:
        assert engine.snapshotters == {}
        assert requires_of(engine, "io.containerd.runtime.v2", "task") == [
            EVENTS,
            "io.containerd.monitor.v1",
        ]
        assert requires_of(engine, GC, "scheduler") == [METADATA, CONTENT]
    finally:
        engine.close()


def _module_file(name: str) -> Path | None:
    path = CORE.parent / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _reached(source: Path, seen: set[Path]) -> set[str]:
    """Attributes read off an engine (`engine.x`, `self.engine.x`) in `source` and the core
    modules it imports, except the engine's and the server's own."""
    if source in seen:
        return set()
    seen.add(source)
    tree = ast.parse(source.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            value = node.value
            if (isinstance(value, ast.Name) and value.id == "engine") or (
                isinstance(value, ast.Attribute) and value.attr == "engine"
            ):
                names.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("core"):
            module = node.module or ""
            for target in [module] + [f"{module}.{a.name}" for a in node.names]:
                if target.startswith(("core.engine", "core.server", "core.api")):
                    continue
                found = _module_file(target)
                if found is not None:
                    names |= _reached(found, seen)
    return names


def _wiring() -> dict[str, set[str]]:
    """For each name `engine.py` assigns (`self.x = ...` or a local), the engine
    attributes and locals its value is built from."""
    tree = ast.parse(Path(inspect.getfile(engine_module)).read_text())
    built: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
            continue
        used: set[str] = set()
        for n in ast.walk(node.value):
            if (
                isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Name)
                and n.value.id == "self"
            ):
                used.add(n.attr)
            elif isinstance(n, ast.Name) and n.id != "self":
                used.add(n.id)
        for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                built.setdefault(target.attr, set()).update(used)
            elif isinstance(target, ast.Name):
                built.setdefault(target.id, set()).update(used)
    return built


def _parts_reached(engine: Engine, names: set[str], seen: set[str] | None = None) -> set[str]:
    """The registered parts among `names`, counting those an engine method reaches and
    those an object the engine built was wired with."""
    seen = set() if seen is None else seen
    names = names - seen
    seen |= names
    parts = set()
    for name in names:
        member = getattr(Engine, name, None)
        if isinstance(member, functools.cached_property):
            # A part built on first use: what its builder reads off the engine.
            member = member.func
        if inspect.isfunction(member):
            body = ast.parse(inspect.getsource(member).strip().replace("\n    ", "\n"))
            inner = {
                n.attr
                for n in ast.walk(body)
                if isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Name)
                and n.value.id == "self"
            }
            parts |= _parts_reached(engine, inner, seen)
            continue
        try:
            if engine.plugins.requires(getattr(engine, name)):
                parts.add(name)
        except (AttributeError, LookupError):
            # Not a part itself (the config, the root, a local of engine.py, an object
            # built from parts): what engine.py built it from, if anything.
            parts |= _parts_reached(engine, _wiring().get(name, set()), seen)
    return parts


def test_each_service_names_the_parts_its_code_reaches(engine: Engine) -> None:
    services, _ = build_services(engine)
    checked = []
    # The CRI's services are built on their first call; their classes name their parts.
    for cls in [type(service) for service in services] + [RuntimeService, ImageService]:
        if hasattr(cls, "PARTS"):
            checked.append((cls, Path(inspect.getfile(cls))))
    # Every service of containerd's, ctrdeck's TaskDetails, and the CRI's two services.
    assert len(checked) == 14
    for cls, source in checked:
        reached = _parts_reached(engine, _reached(source, set()))
        assert set(cls.PARTS) == reached, cls.__name__
