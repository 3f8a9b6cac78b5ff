"""Leases: create and drop the leases clients hold while they build graphs."""

from __future__ import annotations

from core import context
from core.api.containerd.services.leases import v1 as api
from core.api.google.protobuf import Empty
from core.engine import Engine
from core.metadata.leases import Lease, Resource
from core.services.convert import ts


def lease_out(lease: Lease) -> api.Lease:
    return api.Lease(id=lease.id, created_at=ts(lease.created_at), labels=lease.labels)


def resource_in(r: api.Resource | None) -> Resource:
    r = r or api.Resource()
    return Resource(r.id, r.type)


class LeasesService(api.LeasesBase):
    PARTS: tuple[str, ...] = ("metadata", "gc")
    """The engine's parts it uses: Introspection lists their types as its `requires`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.metadata.leases

    async def create(self, message: api.CreateRequest) -> api.CreateResponse:
        lease = self.store.create(context.namespace(), message.id, message.labels)
        return api.CreateResponse(lease=lease_out(lease))

    async def delete(self, message: api.DeleteRequest) -> Empty:
        may_free = self.store.delete(context.namespace(), message.id)
        if may_free or message.sync:
            # Asked to wait, the client waits for a pass whatever the lease held.
            await self.engine.gc.collect(wait=message.sync)
        return Empty()

    async def list(self, message: api.ListRequest) -> api.ListResponse:
        leases = self.store.list(context.namespace(), list(message.filters))
        return api.ListResponse(leases=[lease_out(lease) for lease in leases])

    async def add_resource(self, message: api.AddResourceRequest) -> Empty:
        self.store.add_resource(context.namespace(), message.id, resource_in(message.resource))
        return Empty()

    async def delete_resource(self, message: api.DeleteResourceRequest) -> Empty:
        self.store.delete_resource(context.namespace(), message.id, resource_in(message.resource))
        await self.engine.gc.collect(wait=False)
        return Empty()

    async def list_resources(self, message: api.ListResourcesRequest) -> api.ListResourcesResponse:
        resources = self.store.list_resources(context.namespace(), message.id)
        return api.ListResourcesResponse(
            resources=[api.Resource(id=r.id, type=r.type) for r in resources]
        )
