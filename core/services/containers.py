"""Containers: container records and their events.

Anys (spec, runtime options, extensions) go back to clients byte for byte as
they came in; `ctr` decodes the spec again when it starts a task. Every reply
carrying a container is made from its cached encoding (keyed by its update
time): a list, so a console's periodic resync does not encode every spec again
(and the whole encoded list is kept until the metadata next changes,
`replies.ReplyCache`), and Create, Update and Get, so `ctr run`'s create, its size
check and its two Gets encode the spec once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from core import context
from core.api.containerd import events
from core.api.containerd.services.containers import v1 as api
from core.api.google.protobuf import Empty
from core.engine import Engine
from core.metadata.containers import Container
from core.services.codec import EncodingCache, Preencoded, check_sendable, repeated
from core.services.convert import any_in, any_out, ts
from core.services.replies import ReplyCache


def container_out(c: Container) -> api.Container:
    return api.Container(
        id=c.id,
        labels=c.labels,
        image=c.image,
        runtime=api.ContainerRuntime(name=c.runtime_name, options=any_out(c.runtime_options)),
        spec=any_out(c.spec),
        snapshotter=c.snapshotter,
        snapshot_key=c.snapshot_key,
        created_at=ts(c.created_at),
        updated_at=ts(c.updated_at),
        extensions={k: any_out(v) for k, v in c.extensions.items()},
    )


def container_in(message: api.Container | None) -> Container:
    m = message or api.Container()
    runtime = m.runtime or api.ContainerRuntime()
    return Container(
        id=m.id,
        runtime_name=runtime.name,
        runtime_options=any_in(runtime.options),
        spec=any_in(m.spec),
        image=m.image,
        labels=dict(m.labels),
        snapshotter=m.snapshotter,
        snapshot_key=m.snapshot_key,
        extensions={k: v for k, v in ((k, any_in(a)) for k, a in m.extensions.items()) if v},
    )


class ContainersService(api.ContainersBase):
    PARTS: tuple[str, ...] = ("metadata", "events", "gc", "tasks")
    """The engine's parts it uses: Introspection lists their types as its `requires`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.metadata.containers
        self.encoded = EncodingCache()
        db = engine.metadata.db
        self.replies = ReplyCache(lambda: db.generation)

    def _encoded(self, ns: str, c: Container) -> bytes:
        return self.encoded.get((ns, c.id, c.created_at, c.updated_at), lambda: container_out(c))

    def _sendable(self, ns: str, c: Container) -> None:
        # A ListContainerMessage: the container as field 1, as in Get's and Create's replies.
        check_sendable(
            repeated(1, [self._encoded(ns, c)]),
            self.engine.config.grpc.max_send_message_size,
            f'container "{c.id}"',
        )

    async def get(self, message: api.GetContainerRequest) -> api.GetContainerResponse:
        ns = context.namespace()
        c = self.store.get(ns, message.id)
        return Preencoded(repeated(1, [self._encoded(ns, c)]))  # type: ignore[return-value]

    async def list(self, message: api.ListContainersRequest) -> api.ListContainersResponse:
        ns = context.namespace()
        filters = tuple(message.filters)
        data = self.replies.get((ns, filters), lambda: self._encoded_list(ns, filters))
        return Preencoded(data)  # type: ignore[return-value]

    def _encoded_list(self, ns: str, filters: tuple[str, ...]) -> bytes:
        found = self.store.list(ns, list(filters))
        return repeated(1, (self._encoded(ns, c) for c in found))

    async def list_stream(
        self, message: api.ListContainersRequest
    ) -> AsyncIterator[api.ListContainerMessage]:
        for c in self.store.list(context.namespace(), list(message.filters)):
            yield api.ListContainerMessage(container=container_out(c))

    async def create(self, message: api.CreateContainerRequest) -> api.CreateContainerResponse:
        ns = context.namespace()
        c = self.store.create(ns, container_in(message.container), lambda c: self._sendable(ns, c))
        self.engine.events.publish(
            ns,
            "/containers/create",
            events.ContainerCreate(
                id=c.id,
                image=c.image,
                runtime=events.ContainerCreateRuntime(
                    name=c.runtime_name, options=any_out(c.runtime_options)
                ),
            ),
        )
        return Preencoded(repeated(1, [self._encoded(ns, c)]))  # type: ignore[return-value]

    async def update(self, message: api.UpdateContainerRequest) -> api.UpdateContainerResponse:
        ns = context.namespace()
        paths = list(message.update_mask.paths) if message.update_mask else []
        c = self.store.update(
            ns, container_in(message.container), paths, lambda c: self._sendable(ns, c)
        )
        self.engine.events.publish(
            ns,
            "/containers/update",
            events.ContainerUpdate(
                id=c.id, image=c.image, labels=c.labels, snapshot_key=c.snapshot_key
            ),
        )
        return Preencoded(repeated(1, [self._encoded(ns, c)]))  # type: ignore[return-value]

    async def delete(self, message: api.DeleteContainerRequest) -> Empty:
        ns = context.namespace()
        self.engine.check_container_deletable(ns, message.id)
        self.store.delete(ns, message.id)
        self.engine.events.publish(ns, "/containers/delete", events.ContainerDelete(id=message.id))
        await self.engine.gc.collect(wait=False)
        return Empty()
