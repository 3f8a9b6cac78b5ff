"""`tui.pull_wire`'s hand-coded Images.Pull messages agree with the generated ones.

The request it writes is byte for byte what the generated `PullImageRequest` writes; the
progress it reads back from the generated `PullImageProgress` has every field the shell
shows, skips the fields it does not read, and a field added to the protocol fails here
until the hand-coded messages know it. The gRPC framing and status trailers too.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from core.api.containerd.services.images import v1 as api
from core.api.containerd.types import Descriptor
from tui import pull_wire


def names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_every_field_of_the_pull_messages_is_known() -> None:
    # `labels` is the API's, for other clients: `ctrdeck pull` has no option for it.
    assert names(api.PullImageRequest) == {
        "ref", "snapshotter", "platform", "skip_unpack", "labels", "plain_http", "user",
        "all_platforms",
    }  # fmt: skip
    assert names(api.PullImageProgress) == set(pull_wire.PullImageProgress.__slots__)
    assert names(api.LayerProgress) == set(pull_wire.LayerProgress.__slots__)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"snapshotter": "native", "platform": "linux/arm64", "skip_unpack": True},
        {"plain_http": True, "user": "ünïcode:sécret " * 40, "all_platforms": True},
    ],
)
def test_request_is_the_generated_one(options: dict[str, object]) -> None:
    ref = "registry.example:5000/team/app@sha256:" + "a" * 64
    wire = pull_wire.encode_request(ref, **options)  # type: ignore[arg-type]
    assert wire == bytes(api.PullImageRequest(ref=ref, **options))  # type: ignore[arg-type]
    assert api.PullImageRequest.parse(wire) == api.PullImageRequest(ref=ref, **options)  # type: ignore[arg-type]


def progress_message() -> api.PullImageProgress:
    target = Descriptor(
        media_type="application/vnd.oci.image.index.v1+json",
        digest="sha256:" + "b" * 64,
        size=1 << 40,
        annotations={"org.opencontainers.image.ref.name": "1.0"},
    )
    image = api.Image(
        name="registry.example/app:1.0",
        labels={"a": "b"},
        target=target,
        created_at=datetime(2026, 12, 2, tzinfo=UTC),
        updated_at=datetime(2026, 12, 2, 1, tzinfo=UTC),
    )
    layers = [
        api.LayerProgress(
            digest=f"sha256:{i}" + "c" * 63,
            media_type="application/vnd.oci.image.layer.v1.tar+gzip",
            size=12 << 20,
            offset=i << 20,
            state=state,
            applied=i << 19,
        )
        for i, state in enumerate(("waiting", "downloading", "unpacking", "unpacked"))
    ]
    layers.append(api.LayerProgress(digest="sha256:" + "d" * 64))
    return api.PullImageProgress(phase="done", layers=layers, image=image, message="pulled ✓")


def test_progress_reads_what_the_generated_one_wrote() -> None:
    sent = progress_message()
    got = pull_wire.PullImageProgress(bytes(sent))
    assert (got.phase, got.message) == (sent.phase, sent.message)
    assert [
        [getattr(layer, n) for n in sorted(names(api.LayerProgress))] for layer in got.layers
    ] == [[getattr(layer, n) for n in sorted(names(api.LayerProgress))] for layer in sent.layers]
    assert sent.image is not None and sent.image.target is not None
    assert got.image is not None and got.image.target is not None
    assert got.image.name == sent.image.name
    assert (got.image.target.media_type, got.image.target.digest, got.image.target.size) == (
        sent.image.target.media_type,
        sent.image.target.digest,
        sent.image.target.size,
    )
    empty = pull_wire.PullImageProgress(bytes(api.PullImageProgress()))
    assert (empty.phase, empty.message, empty.layers, empty.image) == ("", "", [], None)


def test_messages_come_whole_however_the_bytes_are_cut() -> None:
    bodies = [bytes(progress_message()), bytes(api.PullImageProgress(phase="fetching")), b""]
    framed = b"".join(b"\0" + len(b).to_bytes(4, "big") + b for b in bodies)
    for step in (1, 3, 7, 64, len(framed)):
        pending = bytearray()
        phases = []
        for start in range(0, len(framed), step):
            pending += framed[start : start + step]
            phases += [m.phase for m in pull_wire._messages(pending)]
        assert phases == ["done", "fetching", ""]
        assert not pending


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05abc",  # a string longer than the message
        b"\x0a",  # a key with no value
        b"\x0b",  # wire type 3 (groups)
        b"\x08" + b"\xff" * 11,  # a varint too long
        b"\x08\x01",  # the phase as a number
        b"\x12\x03\x1a\x01x",  # a layer's size as bytes
    ],
)
def test_a_malformed_message_is_an_error(data: bytes) -> None:
    with pytest.raises(pull_wire.PullError):
        pull_wire.PullImageProgress(data)


def test_status_from_trailers() -> None:
    pull_wire._check_status({":status": "200", "grpc-status": "0"})
    with pytest.raises(pull_wire.PullError) as info:
        pull_wire._check_status(
            {
                ":status": "200",
                "grpc-status": "5",
                "grpc-message": "image %22x%22 not found: 100%25",
            }
        )
    assert (info.value.message, info.value.status) == ('image "x" not found: 100%', 5)
    with pytest.raises(pull_wire.PullError) as info:
        pull_wire._check_status({":status": "200", "grpc-status": "13"})
    assert info.value.message == "INTERNAL"
    for headers in ({":status": "200"}, {":status": "503", "grpc-status": "0"}):
        with pytest.raises(pull_wire.PullError):
            pull_wire._check_status(headers)
