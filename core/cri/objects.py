"""Container records the CRI makes and removes, with the events containerd publishes for them.

The CRI works on the engine's parts directly, not through its gRPC services,
so it publishes `/containers/create` and `/containers/delete` itself: a
console following events sees pods come and go as they happen.
"""

from __future__ import annotations

import contextlib

from core.api.containerd import events
from core.cri import NAMESPACE
from core.engine import Engine
from core.errors import NotFound
from core.metadata.containers import Container


def create(engine: Engine, container: Container) -> Container:
    created = engine.metadata.containers.create(NAMESPACE, container)
    engine.events.publish(
        NAMESPACE,
        "/containers/create",
        events.ContainerCreate(
            id=created.id,
            image=created.image,
            runtime=events.ContainerCreateRuntime(name=created.runtime_name),
        ),
    )
    return created


def delete(engine: Engine, container_id: str) -> None:
    """Remove the record; one that is already gone is fine."""
    with contextlib.suppress(NotFound):
        engine.metadata.containers.delete(NAMESPACE, container_id)
        engine.events.publish(
            NAMESPACE, "/containers/delete", events.ContainerDelete(id=container_id)
        )
