"""Namespaces: create, label, list and remove namespaces, with their events.

`Get` answers for any valid name, as containerd's does, because clients read a
namespace's default-runtime and default-snapshotter labels before anything has
been written in it. `List` answers from an encoded reply kept until the
metadata next changes (`replies.ReplyCache`).
"""

from __future__ import annotations

from core import filters, identifiers
from core.api.containerd import events
from core.api.containerd.services.namespaces import v1 as api
from core.api.google.protobuf import Empty
from core.engine import Engine
from core.errors import InvalidArgument
from core.services.codec import Preencoded
from core.services.replies import ReplyCache


def _validate(name: str) -> None:
    try:
        identifiers.validate(name)
    except InvalidArgument as exc:
        raise InvalidArgument(f"namespace validation: {exc.message}") from None


class NamespacesService(api.NamespacesBase):
    PARTS: tuple[str, ...] = ("metadata", "events", "snapshot_records", "tasks")
    """The engine's parts it uses: Introspection lists their types as its `requires`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.metadata.namespaces
        db = engine.metadata.db
        self.replies = ReplyCache(lambda: db.generation)

    async def get(self, message: api.GetNamespaceRequest) -> api.GetNamespaceResponse:
        _validate(message.name)
        ns = self.store.get(message.name)
        labels = ns.labels if ns else {}
        return api.GetNamespaceResponse(namespace=api.Namespace(name=message.name, labels=labels))

    async def list(self, message: api.ListNamespacesRequest) -> api.ListNamespacesResponse:
        data = self.replies.get(message.filter, lambda: self._encoded_list(message.filter))
        return Preencoded(data)  # type: ignore[return-value]

    def _encoded_list(self, filter_string: str) -> bytes:
        match = filters.parse_all([filter_string] if filter_string else [])
        reply = api.ListNamespacesResponse(
            namespaces=[
                api.Namespace(name=ns.name, labels=ns.labels)
                for ns in self.store.list()
                if match.match(filters.field_adaptor({"name": ns.name}, {"labels": ns.labels}))
            ]
        )
        return bytes(reply)

    async def create(self, message: api.CreateNamespaceRequest) -> api.CreateNamespaceResponse:
        req = message.namespace or api.Namespace()
        _validate(req.name)
        ns = self.store.create(req.name, req.labels)
        self.engine.events.publish(
            ns.name, "/namespaces/create", events.NamespaceCreate(name=ns.name, labels=ns.labels)
        )
        return api.CreateNamespaceResponse(namespace=api.Namespace(name=ns.name, labels=ns.labels))

    async def update(self, message: api.UpdateNamespaceRequest) -> api.UpdateNamespaceResponse:
        req = message.namespace or api.Namespace()
        _validate(req.name)
        paths = list(message.update_mask.paths) if message.update_mask else []
        ns = self.store.update(req.name, req.labels, paths)
        self.engine.events.publish(
            ns.name, "/namespaces/update", events.NamespaceUpdate(name=ns.name, labels=ns.labels)
        )
        return api.UpdateNamespaceResponse(namespace=api.Namespace(name=ns.name, labels=ns.labels))

    async def delete(self, message: api.DeleteNamespaceRequest) -> Empty:
        _validate(message.name)
        self.store.delete(message.name, self.engine.namespace_owners(message.name))
        self.engine.events.publish(
            message.name, "/namespaces/delete", events.NamespaceDelete(name=message.name)
        )
        return Empty()
