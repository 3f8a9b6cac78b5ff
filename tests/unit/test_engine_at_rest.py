"""An engine at rest holds only what serving the containerd API needs.

A real engine (`core.server.serve`, its own root under /tmp) is started in a
fresh interpreter and asked, once it listens, which modules it has imported:
the registry client and its HTTP stack, the differ's tar and compressors, the
CRI's generated messages and services, prometheus_client (with no metrics
address), protobuf's runtime and dateutil (the generated API's descriptor pool
and Timestamp parsing), grpclib's health and reflection services, and
importlib.metadata (core/startup.py) are not among them; and once it has built its puller, httpx's
command-line client (rich, click, pygments) is not either. They are loaded on
first use, and what stands in for them until then is checked here: the CRI's
method table is the generated one, the health and reflection stand-ins declare
grpclib's methods and health answers, server reflection still finds runtime.v1,
and the import spool path the engine looks at is the archive code's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from core import engine as engine_module
from core.api.google_proto_descriptor_pool import default_google_proto_descriptor_pool
from core.api.runtime import v1 as cri
from core.cri.plugin import METHODS, Pool
from core.images import archive
from core.services import deferred

ROOT = Path(__file__).resolve().parents[2]

NOT_AT_REST = (
    "httpx",
    "httpcore",
    "tenacity",
    "core.images.registry",
    "core.images.pull",
    "core.images.push",
    "core.images.archive",
    "core.images.unpack",
    "core.diff.differ",
    "tarfile",
    "isal",
    "zstandard",
    "core.api.runtime.v1",
    "core.cri.service",
    "prometheus_client",
    "core.metrics",
    "google.protobuf",
    "google._upb",
    "dateutil",
    "grpclib.health",
    "grpclib.reflection",
    "importlib.metadata",
    "email",
    "zipfile",
)

AT_REST = """
from core import startup

startup.import_betterproto2()  # as `ctrdeck engine` does
import asyncio, json, sys
from pathlib import Path
from core.config import Config, GrpcConfig
from core.server import EngineServer

base = Path(sys.argv[1])
config = Config(root=base / "root", state=base / "state", grpc=GrpcConfig(address=str(base / "s")))

def imported() -> list[str]:
    return sorted(name for name, module in sys.modules.items() if module is not None)

async def main() -> None:
    server = EngineServer(config)
    await server.start()
    try:
        print(json.dumps(imported()))
        server.engine.puller
        print(json.dumps(imported()))
        from grpclib.client import Channel
        from grpclib.health.v1.health_pb2 import HealthCheckRequest
        from grpclib.health.v1.health_grpc import HealthStub

        async with Channel(path=config.grpc.address) as channel:
            health = HealthStub(channel)
            checked = await health.Check(HealthCheckRequest())
            async with health.Watch.open() as watch:
                await watch.send_message(HealthCheckRequest(), end=True)
                watched = await watch.recv_message()
                await watch.cancel()
        print(json.dumps([checked.status, watched.status]))
    finally:
        await server.stop()

asyncio.run(main())
"""


def _run(script: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_serving_engine_has_not_imported_what_it_loads_on_first_use() -> None:
    base = Path(tempfile.mkdtemp(prefix="ctrdeck-rest-", dir="/tmp"))
    try:
        lines = _run(AT_REST, str(base)).splitlines()[-3:]
        at_rest, pulling = (set(json.loads(line)) for line in lines[:2])
        health = json.loads(lines[2])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert "core.server" in at_rest and "core.cri.plugin" in at_rest
    assert _among(at_rest, NOT_AT_REST) == []
    assert "httpx" in pulling and _among(pulling, ("rich", "click", "pygments")) == []
    # The health service, loaded by its first call, answers both methods: SERVING.
    assert health == [1, 1]


def _among(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(
        name for name in modules if any(name == p or name.startswith(p + ".") for p in packages)
    )


def test_the_cri_stand_ins_are_the_generated_method_table() -> None:
    for base in (cri.RuntimeServiceBase, cri.ImageServiceBase):
        paths = list(base.__mapping__(base.__new__(base)))
        service = paths[0].split("/")[1]
        assert [f"/{service}/{m}" for m in METHODS[service]] == paths
        assert all(
            h.cardinality.name == "UNARY_UNARY"
            for h in base.__mapping__(base.__new__(base)).values()
        )


def test_reflection_finds_runtime_v1_before_it_is_imported() -> None:
    script = """
import sys
from core.api.google_proto_descriptor_pool import default_google_proto_descriptor_pool
from core.cri.plugin import Pool

assert "core.api.runtime.v1" not in sys.modules
pool = Pool(default_google_proto_descriptor_pool)
print(pool.FindFileContainingSymbol("runtime.v1.RuntimeService").name)
"""
    assert _run(script).strip() == "runtime/v1/api.proto"
    pool = Pool(default_google_proto_descriptor_pool)
    with pytest.raises(KeyError):
        pool.FindFileContainingSymbol("runtime.v1.NoSuchService")


def test_the_deferred_services_declare_grpclib_s_methods() -> None:
    from grpclib.health.service import Health
    from grpclib.reflection.service import ServerReflection

    def table(services: list[Any]) -> dict[str, Any]:
        return {p: h.cardinality for s in services for p, h in s.__mapping__().items()}

    assert table([Health()]) == deferred.HEALTH_METHODS
    assert table(ServerReflection.extend([])) == deferred.REFLECTION_METHODS


def test_the_engine_looks_for_leftover_imports_where_imports_spool() -> None:
    assert engine_module.IMPORT_SPOOL == archive.IMPORT_SPOOL


def test_trimming_the_heap_leaves_the_process_working() -> None:
    assert _run("from core import memory; memory.trim(); print('ok')").strip() == "ok"


def test_the_engine_lifts_its_soft_open_files_limit() -> None:
    code = (
        "import resource\n"
        "from core.server import raise_open_files_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))\n"
        "raise_open_files_limit()\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "True"
