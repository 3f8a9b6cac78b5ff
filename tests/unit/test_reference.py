"""Reference parsing and docker.io normalisation."""

from __future__ import annotations

import pytest

from core.errors import InvalidArgument
from core.images.reference import Reference, normalize, parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox:1.36", "docker.io/library/busybox:1.36"),
        ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("user/app", "docker.io/user/app:latest"),
        ("127.0.0.1:5000/test/img:v1", "127.0.0.1:5000/test/img:v1"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app:v-1.2_3", "localhost:5000/app:v-1.2_3"),
        ("quay.io/org/sub/app", "quay.io/org/sub/app:latest"),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}"),
        (f"busybox:1.36@{DIGEST}", f"docker.io/library/busybox@{DIGEST}"),
        ("a.b/c__d/e-f.g:TAG", "a.b/c__d/e-f.g:TAG"),
    ],
)
def test_normalised_names(text: str, stored: str) -> None:
    assert normalize(text) == stored
    assert normalize(stored) == stored


def test_parts_and_registry_host() -> None:
    ref = parse(f"busybox:1.36@{DIGEST}")
    assert ref == Reference("docker.io", "library/busybox", "1.36", DIGEST)
    assert ref.registry_host == "registry-1.docker.io"
    assert ref.object == DIGEST
    assert ref.name == "docker.io/library/busybox"
    assert ref.familiar() == f"busybox:1.36@{DIGEST}"

    local = parse("127.0.0.1:5000/test/img")
    assert (local.domain, local.path, local.tag, local.digest) == (
        "127.0.0.1:5000",
        "test/img",
        "latest",
        "",
    )
    assert local.registry_host == "127.0.0.1:5000"
    assert local.object == "latest"
    assert parse("user/app").familiar() == "user/app:latest"
    assert str(local.with_digest(DIGEST)) == f"127.0.0.1:5000/test/img@{DIGEST}"
    assert str(local.with_tag("v2")) == "127.0.0.1:5000/test/img:v2"


def test_default_tag_can_be_empty() -> None:
    assert parse("busybox", default_tag="").tag == ""
    assert str(parse("busybox", default_tag="")) == "docker.io/library/busybox"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        (" busybox", "whitespace"),
        ("quay.io/Org/app", "must be lowercase"),
        ("BusyBox", "must be lowercase"),
        ("busybox:", "invalid tag"),
        ("busybox:-bad", "invalid tag"),
        ("busybox:" + "x" * 129, "invalid tag"),
        ("busybox@sha256:123", "invalid digest"),
        ("busybox@md5:" + "a" * 32, "invalid digest"),
        ("a//b", "invalid path component ''"),
        ("foo/bar-/baz", "invalid path component 'bar-'"),
        ("-host.io/app", "invalid domain"),
        ("ab" * 32, "64-byte hexadecimal"),
        ("quay.io/" + "a" * 250, "more than 255"),
    ],
)
def test_invalid_references(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse(text)


def test_with_tag_validates() -> None:
    with pytest.raises(InvalidArgument, match="invalid tag"):
        parse("busybox").with_tag("no/slash")
