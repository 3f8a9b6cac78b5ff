"""Diff: apply a layer blob onto a snapshot's mounts, and make a layer from two mounts.

Both calls go to the walking differ (`core.diff.differ`): `Apply` returns the
uncompressed descriptor (its digest is the layer's diff ID, which `ctr` checks
against the image config), `Diff` returns the descriptor of the new blob, now in
the namespace's content under the call's lease.
"""

from __future__ import annotations

from core import context
from core.api.containerd import types
from core.api.containerd.services.diff import v1 as api
from core.engine import Engine
from core.errors import InvalidArgument
from core.images.mediatypes import OCI_LAYER
from core.services.convert import descriptor_in, descriptor_out
from core.snapshots.mount import Mount


def mounts_in(mounts: list[types.Mount]) -> list[Mount]:
    return [Mount(m.type, m.source, tuple(m.options), m.target) for m in mounts]


class DiffService(api.DiffBase):
    PARTS: tuple[str, ...] = ("content", "metadata", "gc", "snapshotters")
    """The engine's parts it uses (those its differ was built with): Introspection lists
    their types as its `requires`."""

    def __init__(self, engine: Engine) -> None:
        # The differ (tar, the compressors) is the engine's to build on first use.
        self.engine = engine

    async def apply(self, message: api.ApplyRequest) -> api.ApplyResponse:
        if message.diff is None:
            raise InvalidArgument("apply needs the descriptor of the layer to apply")
        applied = await self.engine.differ.apply(
            context.namespace(), descriptor_in(message.diff), mounts_in(message.mounts)
        )
        return api.ApplyResponse(
            applied=types.Descriptor(media_type=OCI_LAYER, digest=applied.digest, size=applied.size)
        )

    async def diff(self, message: api.DiffRequest) -> api.DiffResponse:
        desc = await self.engine.differ.diff(
            context.namespace(),
            context.lease(),
            mounts_in(message.left),
            mounts_in(message.right),
            message.media_type,
            message.ref,
            message.labels,
        )
        return api.DiffResponse(diff=descriptor_out(desc))
