"""Failures reach clients with the status code that names them.

A real grpclib server with `status.install` on a Unix socket, and a service whose
handler fails in a chosen way: a refused connection is UNAVAILABLE, a timeout is
DEADLINE_EXCEEDED, and a registry's 401/403 (as the registry client raises them)
is UNAUTHENTICATED/PERMISSION_DENIED with the registry's message, never UNKNOWN.
The Tasks service answers a process without an exit status with a typed error,
not an assertion, and the registry client types 401 and 403 answers.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.server import Server

from core import context, errors
from core.api.containerd.services.tasks import v1 as tasks_api
from core.api.containerd.services.version import v1 as version
from core.api.google.protobuf import Empty
from core.images.hosts import Hosts
from core.images.reference import parse
from core.images.registry import RegistryClient
from core.runtime.tasks import Process, Stdio
from core.services import status
from core.services.codec import Codec
from core.services.tasks import TasksService


class Failing(version.VersionBase):
    def __init__(self) -> None:
        self.error: BaseException = RuntimeError("unset")

    async def version(self, message: Empty) -> version.VersionResponse:
        raise self.error


@pytest.fixture
async def served() -> AsyncIterator[tuple[Failing, version.VersionStub]]:
    service = Failing()
    server = Server([service], codec=Codec())
    status.install(server, [])
    with tempfile.TemporaryDirectory(prefix="ctrdeck-status-") as tmp:
        path = str(Path(tmp) / "grpc.sock")
        await server.start(path=path)
        channel = Channel(path=path)
        try:
            yield service, version.VersionStub(channel)
        finally:
            channel.close()
            server.close()
            await server.wait_closed()


@pytest.mark.parametrize(
    ("error", "code", "words"),
    [
        (ConnectionRefusedError(111, "Connection refused"), Status.UNAVAILABLE, "refused"),
        (ConnectionResetError(104, "Connection reset by peer"), Status.UNAVAILABLE, "reset"),
        (TimeoutError(), Status.DEADLINE_EXCEEDED, "deadline exceeded"),
        (
            errors.Unauthenticated("unauthorized: registry r.test (authentication required)"),
            Status.UNAUTHENTICATED,
            "authentication required",
        ),
        (
            errors.PermissionDenied("denied: registry r.test (requested access is denied)"),
            Status.PERMISSION_DENIED,
            "requested access is denied",
        ),
    ],
)
async def test_failures_map_to_their_codes(
    served: tuple[Failing, version.VersionStub],
    error: BaseException,
    code: Status,
    words: str,
) -> None:
    service, stub = served
    service.error = error
    with pytest.raises(GRPCError) as raised:
        await stub.version(Empty())
    assert raised.value.status == code
    assert words in (raised.value.message or "")
    assert "Error" not in (raised.value.message or ""), "no Python exception names"


async def test_deleted_process_without_exit_is_a_typed_error() -> None:
    task = SimpleNamespace(id="c1", bundle=Path("/nonexistent"))
    proc = Process(task, "", Path("/nonexistent"), Stdio("", "", "", False))  # type: ignore[arg-type]

    async def delete(namespace: str, container_id: str) -> Process:
        return proc

    async def delete_process(namespace: str, container_id: str, exec_id: str) -> Process:
        return proc

    manager = SimpleNamespace(delete=delete, delete_process=delete_process)
    service = TasksService(SimpleNamespace(tasks=manager))  # type: ignore[arg-type]
    context.set_from_headers("default", None)
    with pytest.raises(errors.Internal, match=r"task c1 .*exit status"):
        await service.delete(tasks_api.DeleteTaskRequest(container_id="c1"))
    with pytest.raises(errors.Internal, match=r"exec e1 of task c1 .*exit status"):
        await service.delete_process(
            tasks_api.DeleteProcessRequest(container_id="c1", exec_id="e1")
        )


@pytest.mark.parametrize(
    ("code", "kind"), [(401, errors.Unauthenticated), (403, errors.PermissionDenied)]
)
def test_registry_refusals_are_typed_with_the_registry_message(
    code: int, kind: type[errors.CtrdeckError]
) -> None:
    message = "requested access to the resource is denied"
    body = json.dumps({"errors": [{"code": "DENIED", "message": message}]}).encode()
    request = httpx.Request("GET", "http://r.test/v2/app/manifests/v1")
    response = httpx.Response(code, content=body, request=request)
    client = RegistryClient(Hosts(plain_http=True))
    ref = parse("r.test/app:v1")
    endpoint = client.hosts.endpoints(ref.domain)[0]
    error = client.status_error(endpoint, ref, response, body, "manifest v1")
    assert type(error) is kind
    assert message in str(error)
    assert "r.test" in str(error)
