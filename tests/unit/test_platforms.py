"""Platform specifiers, normalisation and containerd's default matching order."""

from __future__ import annotations

import pytest

from core.errors import InvalidArgument
from core.images import platforms
from core.images.platforms import Platform, normalize, only, only_strict, parse


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("Linux/X86-64", "linux/amd64"),
        ("linux/aarch64", "linux/arm64/v8"),
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/arm64/v8", "linux/arm64/v8"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/6", "linux/arm/v6"),
        ("linux/i386", "linux/386"),
        ("windows/amd64", "windows/amd64"),
        ("macos/arm64", "darwin/arm64/v8"),
        ("linux/s390x", "linux/s390x"),
    ],
)
def test_parse(spec: str, want: str) -> None:
    assert str(parse(spec)) == want


def test_single_component_uses_host() -> None:
    host = platforms.host()
    assert parse("linux") == Platform("linux", host.architecture, host.variant)
    assert parse("arm64") == Platform(host.os, "arm64", "v8")
    assert parse("x86_64") == Platform(host.os, "amd64")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "component ''"),
        ("linux/*", "wildcards"),
        ("plan10", "unknown operating system or architecture"),
        ("beos/amd64", "unknown operating system"),
        ("linux/vax", "unknown architecture"),
        ("linux/amd64/v2/extra", "want <os>/<arch>"),
        ("linux//amd64", "component ''"),
    ],
)
def test_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse(spec)


def test_normalize_makes_arm64_v8_and_bare_equal() -> None:
    assert normalize(Platform("linux", "aarch64", "v8")) == normalize(Platform("linux", "arm64"))
    assert normalize(Platform("linux", "amd64", "v1")).variant == ""
    assert normalize(Platform("", "amd64")).os == platforms.host().os


def test_host_is_normalised_and_known() -> None:
    host = platforms.host()
    assert host.os == "linux"
    assert host.architecture in ("amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64")


def _order(want: str, candidates: list[str]) -> list[str]:
    items = [parse(c) if c.count("/") else Platform("linux", c) for c in candidates]
    return [str(p) for p in only(parse(want)).select(items, key=lambda p: p)]


def test_amd64_prefers_itself_then_386() -> None:
    got = _order("linux/amd64", ["linux/386", "linux/arm64", "linux/amd64", "windows/amd64"])
    assert got == ["linux/amd64", "linux/386"]


def test_amd64_levels_fall_back_downwards() -> None:
    got = _order("linux/amd64/v3", ["linux/amd64", "linux/amd64/v2", "linux/amd64/v4"])
    assert got == ["linux/amd64/v2", "linux/amd64"]


def test_arm64_accepts_missing_variant_then_arm() -> None:
    items = [
        Platform("linux", "arm", "v7"),
        Platform("linux", "arm64"),
        Platform("linux", "arm", "v8"),
        Platform("linux", "amd64"),
        Platform("linux", "arm", "v5"),
    ]
    got = only(parse("linux/arm64")).select(items, key=lambda p: p)
    assert got == [items[1], items[2], items[0], items[4]]
    assert only(parse("linux/arm64")).match(Platform("linux", "aarch64", "v8"))


def test_arm_variants_only_downwards() -> None:
    assert _order("linux/arm/v7", ["linux/arm/v8", "linux/arm/v6", "linux/arm/v7"]) == [
        "linux/arm/v7",
        "linux/arm/v6",
    ]


def test_arm64_v9_runs_v8_levels() -> None:
    matcher = only(parse("linux/arm64/v9"))
    assert matcher.match(Platform("linux", "arm64", "v8.2"))
    assert matcher.match(Platform("linux", "arm64"))
    assert matcher.rank(Platform("linux", "arm64", "v9")) == 0


def test_strict_and_stable_ties() -> None:
    strict = only_strict(parse("linux/amd64"))
    assert not strict.match(Platform("linux", "386"))
    a, b = ("first", Platform("linux", "amd64")), ("second", Platform("linux", "x86_64"))
    assert only(parse("linux/amd64")).select([a, b], key=lambda t: t[1]) == [a, b]


def test_oci_round_trip() -> None:
    data = {"architecture": "arm64", "os": "linux", "variant": "v8", "os.features": ["x"]}
    p = Platform.from_oci(data)
    assert p == Platform("linux", "arm64", "v8", "", ("x",))
    assert p.to_oci() == data
