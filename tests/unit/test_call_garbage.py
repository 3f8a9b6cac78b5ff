"""A finished call leaves nothing for the cyclic garbage collector.

Under many clients, every object of a call that sits in a reference cycle waits
for the cyclic GC, whose passes then cost engine CPU per call. The server as
the engine builds it (`HardenedServer`, `status.install`, `messages.install`)
serves calls; afterwards no grpclib stream of those calls is cyclic garbage.
"""

from __future__ import annotations

import gc
from pathlib import Path

from grpclib import protocol as gproto
from grpclib import server as gserver
from grpclib.client import Channel

from core.api.containerd.services.version import v1 as version
from core.api.google.protobuf import Empty
from core.connection import HardenedServer, Limits
from core.services import messages, status
from core.services.codec import Codec
from core.services.version import VersionService


async def test_calls_leave_no_cyclic_garbage(tmp_path: Path) -> None:
    server = HardenedServer([VersionService()], codec=Codec(), limits=Limits())
    status.install(server, [])
    messages.install(server, 1 << 20)
    path = str(tmp_path / "s.sock")
    await server.start(path=path)
    channel = Channel(path=path)
    stub = version.VersionStub(channel)
    try:
        await stub.version(Empty())
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(20):
                await stub.version(Empty())
            gc.collect()
            streams = [o for o in gc.garbage if isinstance(o, gserver.Stream | gproto.Stream)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert streams == []
    finally:
        channel.close()
        server.close()
        await server.wait_closed()
