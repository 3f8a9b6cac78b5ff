"""Platforms: parsing `os/arch[/variant]`, normalising them, the host's, and matching.

This module owns containerd's platform vocabulary: specifier strings as `ctr --platform` takes
them (`linux`, `arm64`, `linux/arm/v7`), normalisation of architecture aliases (`x86_64` is
`amd64`, `aarch64` is `arm64`, `armhf` is `arm/v7`), the platform of this host, and the default
matcher that picks a manifest from an index the way containerd's `platforms.Only` does: the
exact platform first, then the ones the host also runs (older arm variants, arm on arm64,
older amd64 levels, 386 on amd64). It is pure apart from reading `/proc/cpuinfo` once.
"""

from __future__ import annotations

import functools
import platform as _pyplatform
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from core.errors import InvalidArgument

T = TypeVar("T")

_KNOWN_OS = frozenset(
    [
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "hurd",
        "illumos",
        "ios",
        "js",
        "linux",
        "nacl",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "windows",
        "zos",
    ]
)
_KNOWN_ARCH = frozenset(
    [
        "386",
        "amd64",
        "amd64p32",
        "arm",
        "armbe",
        "arm64",
        "arm64be",
        "ppc64",
        "ppc64le",
        "loong64",
        "mips",
        "mipsle",
        "mips64",
        "mips64le",
        "mips64p32",
        "mips64p32le",
        "ppc",
        "riscv",
        "riscv64",
        "s390",
        "s390x",
        "sparc",
        "sparc64",
        "wasm",
    ]
)
_COMPONENT = re.compile(r"[A-Za-z0-9_.-]+")
_ARM64_LEVELS = {"v8": [8], "v9": [9, 8]}


@dataclass(frozen=True, slots=True)
class Platform:
    """An OCI platform; compare normalised platforms (see `normalize`)."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        parts = [self.os or "unknown", self.architecture or "unknown"]
        if self.variant:
            parts.append(self.variant)
        return "/".join(parts)

    @classmethod
    def from_oci(cls, data: Mapping[str, Any]) -> Platform:
        """Read an OCI `platform` object (from an index entry or an image config)."""
        return cls(
            os=str(data.get("os", "")),
            architecture=str(data.get("architecture", "")),
            variant=str(data.get("variant", "")),
            os_version=str(data.get("os.version", "")),
            os_features=tuple(str(f) for f in data.get("os.features", ()) or ()),
        )

    def to_oci(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        return out


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd's architecture aliases; arm64 `v8` normalises to no variant."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            variant = ""
        elif variant in ("9", "9.0", "v9.0"):
            variant = "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
        return "arm", variant
    return arch, variant


def normalize(p: Platform) -> Platform:
    """The canonical form two platforms are compared in (lowercase, aliases resolved)."""
    os_name = p.os.lower() or host().os
    if os_name == "macos":
        os_name = "darwin"
    arch, variant = normalize_arch(p.architecture, p.variant)
    return Platform(os_name, arch, variant, p.os_version, p.os_features)


def parse(spec: str) -> Platform:
    """Parse a specifier: `<os>`, `<arch>`, `<os>/<arch>` or `<os>/<arch>/<variant>`.

    A lone OS takes the host's architecture, a lone architecture the host's OS. arm64 without
    a variant is reported as `v8`, as containerd's parser does. Raises InvalidArgument.
    """
    if "*" in spec:
        raise InvalidArgument(f"invalid platform {spec!r}: wildcards are not supported")
    parts = spec.split("/")
    for part in parts:
        if not _COMPONENT.fullmatch(part):
            raise InvalidArgument(
                f"invalid platform {spec!r}: component {part!r} must be letters, digits, '_', "
                "'.' or '-'"
            )
    if len(parts) == 1:
        word = parts[0].lower()
        if word in _KNOWN_OS or word == "macos":
            h = host()
            return Platform(normalize(Platform(word, "")).os, h.architecture, h.variant)
        arch, variant = normalize_arch(word, "")
        if arch in _KNOWN_ARCH:
            return Platform(host().os, arch, _default_variant(arch, variant))
        raise InvalidArgument(
            f"invalid platform {spec!r}: unknown operating system or architecture"
        )
    if len(parts) > 3:
        raise InvalidArgument(f"invalid platform {spec!r}: want <os>/<arch>[/<variant>]")
    os_name = normalize(Platform(parts[0], "")).os
    if os_name not in _KNOWN_OS:
        raise InvalidArgument(f"invalid platform {spec!r}: unknown operating system {parts[0]!r}")
    arch, variant = normalize_arch(parts[1], parts[2] if len(parts) == 3 else "")
    if arch not in _KNOWN_ARCH:
        raise InvalidArgument(f"invalid platform {spec!r}: unknown architecture {parts[1]!r}")
    return Platform(os_name, arch, _default_variant(arch, variant))


def _default_variant(arch: str, variant: str) -> str:
    return "v8" if arch == "arm64" and not variant else variant


@functools.cache
def host() -> Platform:
    """This machine's platform, e.g. `linux/amd64` or `linux/arm64/v8`."""
    os_name = _pyplatform.system().lower() or "linux"
    arch, variant = normalize_arch(_pyplatform.machine() or "amd64", "")
    if arch == "arm":
        variant = _arm_cpu_variant() or variant
    return Platform(os_name, arch, _default_variant(arch, variant))


def _arm_cpu_variant() -> str:
    # A 32-bit userland on a v8 core still reports its real level in cpuinfo.
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    match = re.search(r"^CPU architecture\s*:\s*(\d+)", text, re.MULTILINE)
    if not match:
        return ""
    level = int(match.group(1))
    return f"v{min(max(level, 5), 8)}"


def compatible(p: Platform) -> list[Platform]:
    """Platforms a host of platform `p` runs, best first (containerd's platform vector)."""
    n = normalize(p)
    vector = [n]
    if n.architecture == "amd64":
        level = _level(n.variant)
        if level > 1:
            vector += [
                Platform(n.os, "amd64", "" if v == 1 else f"v{v}") for v in range(level - 1, 0, -1)
            ]
        vector.append(Platform(n.os, "386"))
    elif n.architecture == "arm":
        level = _level(n.variant)
        if level > 5:
            vector += [Platform(n.os, "arm", f"v{v}") for v in range(level - 1, 4, -1)]
    elif n.architecture == "arm64":
        vector = _arm64_vector(n)
    return vector


def _level(variant: str) -> int:
    digits = variant.removeprefix("v")
    return int(digits) if digits.isdigit() else 0


def _arm64_vector(n: Platform) -> list[Platform]:
    variant = n.variant or "v8"
    major, _, minor_text = variant.removeprefix("v").partition(".")
    levels = _ARM64_LEVELS.get(f"v{major}")
    if levels is None or not (minor_text == "" or minor_text.isdigit()):
        return [n]
    minor = int(minor_text or 0)
    vector: list[Platform] = []
    for i, m in enumerate(levels):
        # arm64 v9.x implies v8.(x+5), capped at v8.9.
        top = minor if i == 0 else min(minor + 5, 9)
        for sub in range(top, -1, -1):
            name = f"v{m}" if sub == 0 else f"v{m}.{sub}"
            vector.append(normalize(Platform(n.os, "arm64", name)))
    vector += compatible(Platform(n.os, "arm", "v8"))
    return vector


class Matcher:
    """Matches and orders candidate platforms against an ordered list of wanted ones."""

    def __init__(self, wanted: Iterable[Platform]) -> None:
        self.wanted = [normalize(w) for w in wanted]

    def rank(self, candidate: Platform) -> int | None:
        """Position of the first wanted platform `candidate` satisfies; None if none."""
        c = normalize(candidate)
        for i, w in enumerate(self.wanted):
            if (w.os, w.architecture, w.variant) == (c.os, c.architecture, c.variant):
                return i
        return None

    def match(self, candidate: Platform) -> bool:
        return self.rank(candidate) is not None

    def select(self, items: Iterable[T], key: Callable[[T], Platform]) -> list[T]:
        """The items whose platform matches, best first; ties keep their input order."""
        ranked = [
            (r, i, item) for i, item in enumerate(items) if (r := self.rank(key(item))) is not None
        ]
        ranked.sort(key=lambda t: (t[0], t[1]))
        return [item for _, _, item in ranked]


def only(p: Platform) -> Matcher:
    """containerd's default matcher for `p`: `p` first, then what it also runs."""
    return Matcher(compatible(p))


def only_strict(p: Platform) -> Matcher:
    """Only `p` itself (normalised), without the platforms it could also run."""
    return Matcher([p])


def default_matcher() -> Matcher:
    return only(host())
