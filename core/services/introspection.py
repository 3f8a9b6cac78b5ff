"""Introspection: the engine's plugins and its persistent server UUID."""

from __future__ import annotations

from core.api.containerd import types
from core.api.containerd.services.introspection import v1 as api
from core.api.google.protobuf import Empty
from core.api.google.rpc import Status
from core.engine import Engine
from core.images import platforms


class IntrospectionService(api.IntrospectionBase):
    PARTS: tuple[str, ...] = ()
    """The engine's parts it uses: Introspection lists their types as its `requires`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def plugins(self, message: api.PluginsRequest) -> api.PluginsResponse:
        host = platforms.host()
        here = [types.Platform(os=host.os, architecture=host.architecture, variant=host.variant)]
        out = []
        for p in self.engine.plugins.list(list(message.filters)):
            out.append(
                api.Plugin(
                    type=p.type,
                    id=p.id,
                    requires=list(p.requires),
                    platforms=here if p.platforms else [],
                    exports=dict(p.exports),
                    capabilities=list(p.capabilities),
                    init_err=Status(code=2, message=p.error) if p.error else None,
                )
            )
        return api.PluginsResponse(plugins=out)

    async def server(self, message: Empty) -> api.ServerResponse:
        return api.ServerResponse(uuid=self.engine.uuid)
