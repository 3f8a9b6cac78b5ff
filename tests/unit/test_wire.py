"""Strict wire checks accept everything the generated encoders write, and name
the field of anything malformed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.api.containerd import types
from core.api.containerd.services.containers import v1 as containers
from core.api.containerd.services.content import v1 as content
from core.api.containerd.services.tasks import v1 as tasks
from core.api.google.protobuf import Any, FieldMask
from core.api.io.containerd.cgroups import v1 as cgroups
from core.errors import InvalidArgument
from core.services import wire
from core.services.codec import unmarshal

WELL_FORMED = [
    containers.CreateContainerRequest(
        container=containers.Container(
            id="c1",
            labels={"a": "b", "ü": "ß"},
            runtime=containers.ContainerRuntime(name="io.containerd.runc.v2"),
            spec=Any(type_url="t", value=b"\xff\x00{}"),
            extensions={"x": Any(type_url="u", value=b"\x01")},
            created_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        )
    ),
    containers.UpdateContainerRequest(
        container=containers.Container(id="c1"), update_mask=FieldMask(paths=["labels.a"])
    ),
    containers.ListContainersRequest(filters=["id==a", "labels.x"]),
    content.WriteContentRequest(
        action=content.WriteAction.COMMIT, ref="r", total=-1, offset=2**62, data=b"\x80" * 100
    ),
    tasks.CreateTaskRequest(
        container_id="c",
        rootfs=[types.Mount(type="overlay", source="o", options=["a", "b"])],
        terminal=True,
    ),
    cgroups.Metrics(cpu=cgroups.CpuStat(usage=cgroups.CpuUsage(per_cpu=[1, 2**64 - 1, 0]))),
]


@pytest.mark.parametrize("message", WELL_FORMED, ids=lambda m: type(m).__name__)
def test_what_the_encoders_write_is_accepted(message) -> None:  # type: ignore[no-untyped-def]
    data = bytes(message)
    wire.check(data, type(message))
    assert unmarshal(data, type(message)) == message


def test_unknown_fields_are_skipped_when_well_formed() -> None:
    data = bytes(containers.GetContainerRequest(id="x")) + b"\xf8\x01\x05" + b"\x82\x01\x01z"
    assert unmarshal(data, containers.GetContainerRequest).id == "x"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"\x00", "field number 0"),
        (b"\x08", "truncated varint"),
        (b"\x09\x00", "truncated"),
        (b"\x0d\x00\x00\x00\x00", "wire type fixed32, want bytes"),
        (b"\x0e", "wire type invalid (6)"),
    ],
)
def test_malformed_is_named(data: bytes, says: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        unmarshal(data, containers.GetContainerRequest)
    assert says in str(err.value)


def test_a_timestamp_no_datetime_holds_is_out_of_range() -> None:
    created = b"\x08" + b"\xff" * 9 + b"\x00"  # seconds = 2**63 - 1
    container = b"\x0a\x01c" + b"\x42" + bytes([len(created)]) + created
    data = b"\x0a" + bytes([len(container)]) + container
    with pytest.raises(InvalidArgument) as err:
        unmarshal(data, containers.CreateContainerRequest)
    assert "out of range" in str(err.value)


@pytest.mark.parametrize(
    "message_type",
    [
        containers.ListContainersRequest,
        content.ListContentRequest,
        tasks.CreateTaskRequest,
        cgroups.Metrics,
        containers.UpdateContainerRequest,
    ],
    ids=lambda t: t.__name__,
)
def test_an_empty_request_is_what_parsing_nothing_gives(message_type) -> None:  # type: ignore[no-untyped-def]
    message = unmarshal(b"", message_type)
    assert type(message) is message_type
    assert message == message_type.FromString(b"")
    assert bytes(message) == b""
    # Each call its own message: a handler may fill it in.
    assert unmarshal(b"", message_type) is not message
