"""What the engine acknowledged survives restarts and crashes."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

from core.api.containerd import types
from core.api.containerd.services.containers import v1 as containers
from core.api.containerd.services.content import v1 as content
from core.api.containerd.services.images import v1 as images
from core.api.containerd.services.namespaces import v1 as namespaces
from core.api.google.protobuf import Any
from core.client import Client
from tests.engine_proc import EngineProcess
from tests.helpers import sha

SPEC = Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=b"{}")


def _container(cid: str) -> containers.CreateContainerRequest:
    return containers.CreateContainerRequest(
        container=containers.Container(
            id=cid,
            runtime=containers.ContainerRuntime(
                name="io.containerd.runc.v2",
                options=Any(type_url="containerd.runc.v1.Options", value=b""),
            ),
            spec=SPEC,
            labels={"n": cid},
            extensions={"ext": Any(type_url="x.y.Z", value=b"\x01\x02")},
        )
    )


async def test_restart_keeps_everything() -> None:
    engine = EngineProcess().start()
    try:
        c = Client(str(engine.address))
        await c.namespaces.create(
            namespaces.CreateNamespaceRequest(
                namespace=namespaces.Namespace(name="keep", labels={"a": "b"})
            )
        )
        data = b'{"schemaVersion":2}'
        await c.write_content("m", data, sha(data), labels={"l": "v"})
        await c.images.create(
            images.CreateImageRequest(
                image=images.Image(
                    name="reg/app:1",
                    target=types.Descriptor(
                        media_type="application/vnd.oci.image.manifest.v1+json",
                        digest=sha(data),
                        size=len(data),
                        annotations={"x": "y"},
                    ),
                )
            )
        )
        await c.containers.create(_container("c1"))
        before = (await c.containers.get(containers.GetContainerRequest(id="c1"))).container
        c.close()
        assert engine.stop() == 0

        engine.start()
        c = Client(str(engine.address))
        ns = await c.namespaces.list(namespaces.ListNamespacesRequest())
        assert {n.name: n.labels for n in ns.namespaces}["keep"] == {"a": "b"}
        img = (await c.images.get(images.GetImageRequest(name="reg/app:1"))).image
        assert img.target.digest == sha(data) and img.target.annotations == {"x": "y"}
        after = (await c.containers.get(containers.GetContainerRequest(id="c1"))).container
        assert after == before
        got = b"".join(
            [r.data async for r in c.content.read(content.ReadContentRequest(digest=sha(data)))]
        )
        assert got == data
        c.close()
    finally:
        engine.stop(cleanup=True)


async def test_sigkill_during_burst_keeps_acknowledged_creates() -> None:
    engine = EngineProcess().start()
    acknowledged: list[str] = []
    try:
        c = Client(str(engine.address))

        async def creator(worker: int) -> None:
            for i in range(10_000):
                cid = f"w{worker}-{i}"
                try:
                    await c.containers.create(_container(cid))
                except Exception:
                    # The engine died under us: this create was never acknowledged.
                    return
                acknowledged.append(cid)

        workers = [asyncio.create_task(creator(w)) for w in range(4)]
        while len(acknowledged) < 200:
            await asyncio.sleep(0.01)
        engine.kill()
        for w in workers:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(w, 10)
        c.close()

        db = engine.root / "io.containerd.metadata.v1.sqlite" / "meta.db"
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()

        engine.start()
        c = Client(str(engine.address))
        stored = {
            x.id for x in (await c.containers.list(containers.ListContainersRequest())).containers
        }
        assert set(acknowledged) <= stored
        c.close()
    finally:
        engine.stop(cleanup=True)
