"""Image graph walking, gc.ref labels, chain IDs and distribution-source labels."""

from __future__ import annotations

import json

import pytest

from core.descriptor import Descriptor
from core.errors import FailedPrecondition, InvalidArgument, NotFound
from core.images import handlers, mediatypes, platforms
from core.images.platforms import Platform
from core.images.reference import parse

D = "sha256:" + "d" * 64


def digest(c: str) -> str:
    return "sha256:" + c * 64


def test_chain_ids_match_what_containerd_computes() -> None:
    # Diff and chain IDs of tests/registry.py's layered image, as containerd unpacked it.
    diff_ids = [
        "sha256:306bdc305c4bcbf6d0f90a1ff12dd781ece7aa146b356748cf6ba04c455f08b6",
        "sha256:e20012f423ea0386921ee43ec3bcd3aa281df499ea714d44ff4a593ca65b49a7",
        "sha256:2480ebf13ae1920329e1f31828a5af1f2789375b32f16ab66f3268ad65e36f1d",
    ]
    assert handlers.chain_ids(diff_ids) == [
        diff_ids[0],
        "sha256:88aa763393edfafcd61f77592ad26241f623765f717edaa4b5fa0a42f7a119b4",
        "sha256:fba53daec7962cf5c46f0355cb4859a68fc2a9ebc992bc0e254498237cb7c6f2",
    ]
    assert handlers.chain_ids([]) == []


def test_gc_labels_number_manifests_and_layers_but_not_the_config() -> None:
    kids = [
        handlers.Child(Descriptor(mediatypes.OCI_CONFIG, digest("c"), 1)),
        handlers.Child(Descriptor(mediatypes.OCI_LAYER_GZIP, digest("1"), 1)),
        handlers.Child(Descriptor(mediatypes.DOCKER_LAYER_GZIP, digest("2"), 1)),
    ]
    assert handlers.gc_labels(kids) == {
        "containerd.io/gc.ref.content.config": digest("c"),
        "containerd.io/gc.ref.content.l.0": digest("1"),
        "containerd.io/gc.ref.content.l.1": digest("2"),
    }
    index = [
        handlers.Child(Descriptor(mediatypes.OCI_MANIFEST, digest("a"), 1)),
        handlers.Child(Descriptor(mediatypes.DOCKER_MANIFEST, digest("b"), 1)),
    ]
    assert handlers.gc_labels(index) == {
        "containerd.io/gc.ref.content.m.0": digest("a"),
        "containerd.io/gc.ref.content.m.1": digest("b"),
    }


def test_distribution_source_drops_the_port_and_merges_sorted() -> None:
    assert handlers.source_label(parse("127.0.0.1:5000/test/img:1")) == (
        "containerd.io/distribution.source.127.0.0.1",
        "test/img",
    )
    assert handlers.source_label(parse("busybox")) == (
        "containerd.io/distribution.source.docker.io",
        "library/busybox",
    )
    assert handlers.merge_source("", "b/x") == "b/x"
    assert handlers.merge_source("b/x", "a/y") == "a/y,b/x"
    assert handlers.merge_source("a/y,b/x", "b/x") == "a/y,b/x"


def index_doc() -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": mediatypes.OCI_MANIFEST, "digest": digest("a"), "size": 10,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": mediatypes.OCI_MANIFEST, "digest": digest("b"), "size": 11,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": mediatypes.OCI_MANIFEST, "digest": digest("c"), "size": 12},
            ],
        }
    ).encode()  # fmt: skip


def test_select_manifests_ranks_by_platform_and_keeps_unplatformed_last() -> None:
    entries = handlers.index_entries(index_doc())
    amd64 = platforms.only(Platform("linux", "amd64"))
    assert [d.digest for d in handlers.select_manifests(entries, amd64)] == [
        digest("b"),
        digest("c"),
    ]
    arm64 = platforms.only(platforms.parse("linux/arm64"))
    assert handlers.select_manifests(entries, arm64, 1)[0].digest == digest("a")
    assert len(handlers.select_manifests(entries, None)) == 3
    with pytest.raises(NotFound):
        handlers.select_manifests(entries[:2], platforms.only(platforms.parse("linux/s390x")))


def test_walk_goes_parents_first_and_narrows_indexes() -> None:
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": digest("e"), "size": 2},
            "layers": [{"mediaType": mediatypes.OCI_LAYER, "digest": digest("f"), "size": 3}],
        }
    ).encode()
    docs = {digest("9"): index_doc(), digest("b"): manifest}
    root = Descriptor(mediatypes.OCI_INDEX, digest("9"), len(index_doc()))
    seen = [
        d.digest
        for d, _ in handlers.walk(
            root, lambda d: docs[d.digest], platforms.only(Platform("linux", "amd64")), limit=1
        )
    ]
    assert seen == [digest("9"), digest("b"), digest("e"), digest("f")]


def test_documents_that_are_wrong_are_refused_with_the_reason() -> None:
    with pytest.raises(FailedPrecondition, match="not valid JSON"):
        handlers.read_manifest(b"{nope")
    with pytest.raises(InvalidArgument, match="schema 1"):
        handlers.read_manifest(b'{"schemaVersion": 1}')
    with pytest.raises(FailedPrecondition, match="no layers"):
        handlers.read_manifest(b'{"schemaVersion": 2, "config": {}}')
    with pytest.raises(FailedPrecondition, match="diff_ids"):
        handlers.read_config(b'{"rootfs": {}}')
    with pytest.raises(FailedPrecondition, match="invalid digest"):
        handlers.read_config(b'{"rootfs": {"diff_ids": ["md5:x"]}}')
    bad_size = {"mediaType": mediatypes.OCI_CONFIG, "digest": D, "size": -1}
    with pytest.raises(FailedPrecondition, match="valid size"):
        handlers.descriptor_from_json(bad_size, "config")


def test_media_type_is_taken_from_the_document_when_the_descriptor_has_none() -> None:
    blank = Descriptor("", D, 1)
    assert handlers.media_type_of(blank, index_doc()) == mediatypes.OCI_INDEX
    assert handlers.media_type_of(blank, b'{"config": {}, "layers": []}') == (
        mediatypes.OCI_MANIFEST
    )
    docker = json.dumps({"mediaType": mediatypes.DOCKER_MANIFEST}).encode()
    assert handlers.media_type_of(blank, docker) == mediatypes.DOCKER_MANIFEST
