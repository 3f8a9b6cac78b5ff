"""The server layer bounds what one client can cost: stream-reset floods,
oversized messages, malformed requests and half-open connections (issue 10,
items 1 to 4). The misbehaving clients are in `tests/h2attack.py`."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from grpclib import GRPCError
from grpclib.const import Status

from core.api.containerd import types
from core.api.containerd.services.containers import v1 as containers
from core.api.containerd.services.images import v1 as images
from core.api.google.protobuf import Any, FieldMask
from core.client import Client
from tests import h2attack
from tests.engine_proc import EngineProcess
from tests.helpers import ctr, sha


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_stream_reset_flood_does_not_grow_memory(engine: EngineProcess, ctr_bin: str) -> None:
    assert engine.proc is not None
    loop = asyncio.get_running_loop()
    # One round to warm up what any first calls allocate (imports, caches).
    await loop.run_in_executor(None, h2attack.reset_flood, engine.address, 10_000)
    ctr(engine.address, "version")
    start = rss_mib(engine.proc.pid)
    for _ in range(10):
        result = await loop.run_in_executor(None, h2attack.reset_flood, engine.address, 10_000)
        assert result["goaway"], "an abusive connection must be closed"
        assert "ctrdeck" in ctr(engine.address, "version").stdout
    assert rss_mib(engine.proc.pid) - start < 10
    log = engine.log.read_text()
    assert "too many stream resets" in log and "Traceback" not in log


SHORT_TIMEOUTS = """
version = 2
[grpc]
connection_timeout = 1
idle_timeout = 2
max_concurrent_streams = 8
"""


@pytest.fixture
def short_timeouts() -> Iterator[EngineProcess]:
    proc = EngineProcess(config=SHORT_TIMEOUTS).start()
    try:
        yield proc
    finally:
        proc.stop(cleanup=True)


def test_the_stream_cap_is_advertised(engine: EngineProcess, short_timeouts: EngineProcess) -> None:
    assert h2attack.max_concurrent_streams(engine.address) == 100
    assert h2attack.max_concurrent_streams(short_timeouts.address) == 8


@pytest.mark.parametrize(
    ("payload", "within"),
    [
        (h2attack.PREFACE[:10], 1),  # a truncated preface: the handshake timeout
        (h2attack.PREFACE, 1),  # a preface without SETTINGS: the handshake timeout
        (h2attack.promised_frame(16_000), 1),  # a frame begun, never finished
        (h2attack.promised_frame((1 << 24) - 1), 0),  # over the frame size: at once
        (h2attack.handshake(), 2),  # nothing asked: the idle timeout
    ],
    ids=["preface", "no-settings", "stalled-frame", "16MiB-frame", "idle"],
)
def test_half_open_connections_are_closed(
    short_timeouts: EngineProcess, payload: bytes, within: float
) -> None:
    took = h2attack.held_open(short_timeouts.address, payload, limit=within + 5)
    assert took is not None, "the engine kept the connection open"
    assert "ctrdeck" in ctr(short_timeouts.address, "version").stdout


def test_a_connection_with_a_stream_in_flight_is_not_idle(
    short_timeouts: EngineProcess, ctr_bin: str
) -> None:
    events = subprocess.Popen(
        [ctr_bin, "--address", str(short_timeouts.address), "events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(4)
        assert events.poll() is None, "an events subscription was cut as idle"
        ctr(short_timeouts.address, "namespaces", "create", "seen")
        assert events.stdout is not None
        assert b"/namespaces/create" in events.stdout.readline()
    finally:
        events.terminate()
        events.wait(timeout=10)


CREATE = "/containerd.services.containers.v1.Containers/Create"
LIST = "/containerd.services.containers.v1.Containers/List"
RESOURCE_EXHAUSTED = 8
INVALID_ARGUMENT = 3


def create_request(cid: str, spec_size: int = 2, labels: dict[str, str] | None = None) -> bytes:
    spec = b'"' + b"x" * (spec_size - 2) + b'"'
    message = containers.CreateContainerRequest(
        container=containers.Container(
            id=cid,
            runtime=containers.ContainerRuntime(name="io.containerd.runc.v2"),
            spec=Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=spec),
            labels=labels or {},
        )
    )
    return h2attack.grpc_frame(bytes(message))


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(lambda: create_request("big-spec", spec_size=20 << 20), id="20MiB-spec"),
        pytest.param(
            lambda: create_request("big-label", labels={"l": "x" * (64 << 20)}), id="64MiB-label"
        ),
    ],
)
def test_a_message_over_max_recv_is_refused_before_its_body_is_read(
    engine: EngineProcess, ctr_bin: str, request_bytes: Callable[[], bytes]
) -> None:
    body = request_bytes()
    status, message, sent = h2attack.unary(engine.address, CREATE, body)
    assert status == RESOURCE_EXHAUSTED
    assert f"received message larger than max ({len(body) - 5} vs. {16 << 20})" in message
    # Flow control lets the client run ahead by the windows (4 MiB), no more.
    assert sent < 9 << 20
    listed = ctr(engine.address, "containers", "ls")
    assert "big-" not in listed.stdout
    assert "ctrdeck" in ctr(engine.address, "version").stdout


SMALL_SEND = """
version = 2
[grpc]
max_recv_message_size = 4194304
max_send_message_size = 1048576
"""


@pytest.fixture
def small_send() -> Iterator[EngineProcess]:
    proc = EngineProcess(config=SMALL_SEND).start()
    try:
        yield proc
    finally:
        proc.stop(cleanup=True)


def test_no_record_is_stored_that_could_not_be_sent_back(
    small_send: EngineProcess, ctr_bin: str
) -> None:
    # Within max_recv, but its record would not fit max_send.
    status, message, _ = h2attack.unary(
        small_send.address, CREATE, create_request("too-big", spec_size=2 << 20)
    )
    assert status == RESOURCE_EXHAUSTED and "max_send_message_size" in message
    for i in range(3):
        status, _, _ = h2attack.unary(
            small_send.address, CREATE, create_request(f"c{i}", spec_size=400 << 10)
        )
        assert status == 0
    # One list message of all three is over max_send; ctr's ListStream sends each alone.
    status, message, _ = h2attack.unary(small_send.address, LIST, h2attack.grpc_frame(b""))
    assert status == RESOURCE_EXHAUSTED and "trying to send message larger than max" in message
    listed = ctr(small_send.address, "containers", "ls", "-q").stdout.split()
    assert listed == ["c0", "c1", "c2"]


GET = "/containerd.services.containers.v1.Containers/Get"
READ = "/containerd.services.content.v1.Content/Read"


@pytest.mark.parametrize(
    ("path", "payload", "says"),
    [
        (GET, b"\x08\x05", "GetContainerRequest.id: wire type varint, want bytes"),
        (CREATE, b"\x08\x05", "CreateContainerRequest.container: wire type varint"),
        (GET, b"\x0a\x02\xff\xfe", "GetContainerRequest.id: string is not valid UTF-8"),
        (GET, b"\x0f", "field 1 has wire type invalid (7)"),
        (GET, b"\x0b\x0c", "field 1 has wire type group"),
        (GET, b"\x0a\x10abc", "field 1 is truncated"),
        (READ, b"\x10" + b"\xff" * 10 + b"\x01", "varint overflows 64 bits"),
        (
            CREATE,
            bytes(
                containers.CreateContainerRequest(
                    container=containers.Container(id="c", labels={"k": "v"})
                )
            ).replace(b"\x01k", b"\x01\xff"),
            "CreateContainerRequest.container.labels.key: string is not valid UTF-8",
        ),
    ],
    ids=[
        "wrong-type",
        "int-for-message",
        "bad-utf8",
        "wire-7",
        "group",
        "truncated",
        "overflow",
        "map-key",
    ],
)
def test_malformed_requests_are_invalid_argument_before_any_handler(
    engine: EngineProcess, path: str, payload: bytes, says: str
) -> None:
    status, message, _ = h2attack.unary(engine.address, path, h2attack.grpc_frame(payload))
    assert status == INVALID_ARGUMENT, message
    assert message.startswith("error unmarshalling request: ") and says in message
    log = engine.log.read_text()
    assert "Traceback" not in log
    assert 'container "None"' not in log
    assert sum("error unmarshalling request" in line for line in log.splitlines()) == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "the request message is missing"),
        (h2attack.grpc_frame(b"\x0a\x01c")[:6], "the message is truncated"),
        (b"\x01" + h2attack.grpc_frame(b"")[1:], "compressed flag set"),
    ],
    ids=["no-message", "short-body", "compressed"],
)
def test_broken_grpc_framing_is_invalid_argument(
    engine: EngineProcess, body: bytes, says: str
) -> None:
    status, message, _ = h2attack.unary(engine.address, GET, body)
    assert status == INVALID_ARGUMENT and says in message
    assert "Traceback" not in engine.log.read_text()


async def test_a_client_reconnects_after_its_idle_connection_was_closed(
    short_timeouts: EngineProcess,
) -> None:
    client = Client(str(short_timeouts.address), "default")
    try:
        assert "ctrdeck" in (await client.server_version()).version
        await asyncio.sleep(3.5)
        assert "ctrdeck" in (await client.server_version()).version
    finally:
        client.close()
    assert "idle connection" in short_timeouts.log.read_text()


async def test_no_image_is_stored_that_could_not_be_sent_back(small_send: EngineProcess) -> None:
    client = Client(str(small_send.address), "default")
    target = types.Descriptor(
        media_type="application/vnd.oci.image.index.v1+json", digest=sha(b"x"), size=1
    )
    many = {f"label-{i}": "v" * 4000 for i in range(300)}  # 1.2 MB, each label legal
    try:
        with pytest.raises(GRPCError) as err:
            await client.images.create(
                images.CreateImageRequest(
                    image=images.Image(name="big", target=target, labels=many)
                )
            )
        assert err.value.status == Status.RESOURCE_EXHAUSTED
        await client.images.create(
            images.CreateImageRequest(image=images.Image(name="grows", target=target))
        )

        def update(labels: dict[str, str]) -> images.UpdateImageRequest:
            return images.UpdateImageRequest(
                image=images.Image(name="grows", target=target, labels=labels),
                update_mask=FieldMask(paths=[f"labels.{k}" for k in labels]),
            )

        items = list(many.items())
        await client.images.update(update(dict(items[:150])))
        # Each update is small; the record they would make is not.
        with pytest.raises(GRPCError) as err:
            await client.images.update(update(dict(items[150:])))
        assert err.value.status == Status.RESOURCE_EXHAUSTED
        got = await client.images.get(images.GetImageRequest(name="grows"))
        assert len(got.image.labels) == 150
        assert [i.name for i in (await client.images.list(images.ListImagesRequest())).images] == [
            "grows"
        ]
    finally:
        client.close()
