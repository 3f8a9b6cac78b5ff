"""Docker-style image references: parsing, validation and docker.io normalisation.

This module owns the grammar of `[domain[:port]/]path[:tag][@digest]` as Docker and containerd
read it, the normalisation containerd applies before storing an image name (`busybox` becomes
`docker.io/library/busybox:latest`; a reference with both a tag and a digest is stored by its
digest alone), and the mapping from a reference's domain to the registry host that serves it
(`docker.io` is served by `registry-1.docker.io`). It is pure: no I/O, safe to import from the
console.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from core.descriptor import validate_digest
from core.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
DOCKER_REGISTRY_HOST = "registry-1.docker.io"
_LEGACY_DOMAIN = "index.docker.io"
_OFFICIAL_PREFIX = "library/"
_MAX_NAME = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_HEX64 = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed, normalised reference; `tag` and `digest` may both be set (or one is)."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """`domain/path`, the repository's full name."""
        return f"{self.domain}/{self.path}"

    @property
    def registry_host(self) -> str:
        """The host to contact when no hosts directory says otherwise."""
        return DOCKER_REGISTRY_HOST if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def object(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        if not _TAG.fullmatch(tag):
            raise InvalidArgument(f"invalid tag {tag!r}: want [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
        return replace(self, tag=tag, digest="")

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=validate_digest(digest))

    def familiar(self) -> str:
        """The short form Docker prints (`busybox:latest`, `127.0.0.1:5000/app:v1`)."""
        path = self.path
        if self.domain == DEFAULT_DOMAIN:
            name = path.removeprefix(_OFFICIAL_PREFIX) if path.count("/") == 1 else path
        else:
            name = self.name
        return name + _suffix(self.tag, self.digest)

    def __str__(self) -> str:
        """The name containerd stores: a digest, when present, replaces the tag."""
        return self.name + _suffix("" if self.digest else self.tag, self.digest)


def _suffix(tag: str, digest: str) -> str:
    return (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def parse(text: str, *, default_tag: str = DEFAULT_TAG) -> Reference:
    """Parse and normalise `text`; a reference without tag or digest gets `default_tag`.

    Raises InvalidArgument naming the offending part, as Docker's parser does.
    """
    if not text:
        raise InvalidArgument("invalid reference format: reference is empty")
    if text != text.strip():
        raise InvalidArgument(f"invalid reference format {text!r}: surrounding whitespace")
    if _HEX64.fullmatch(text):
        raise InvalidArgument(
            f"invalid repository name {text!r}: cannot specify 64-byte hexadecimal strings"
        )
    remainder, at, digest = text.partition("@")
    if at:
        try:
            validate_digest(digest)
        except InvalidArgument as exc:
            raise InvalidArgument(f"invalid reference format {text!r}: {exc.message}") from None
    name, tag = _split_tag(remainder)
    if (tag or remainder.endswith(":")) and not _TAG.fullmatch(tag):
        raise InvalidArgument(
            f"invalid reference format {text!r}: invalid tag {tag!r} "
            "(want [A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"
        )
    domain, path = _split_domain(name)
    if not _DOMAIN.fullmatch(domain):
        raise InvalidArgument(f"invalid reference format {text!r}: invalid domain {domain!r}")
    for component in path.split("/"):
        if _PATH_COMPONENT.fullmatch(component):
            continue
        if _PATH_COMPONENT.fullmatch(component.lower()):
            raise InvalidArgument(
                f"invalid reference format {text!r}: repository name must be lowercase"
            )
        raise InvalidArgument(
            f"invalid reference format {text!r}: invalid path component {component!r} "
            "(want lowercase letters and digits, separated by '.', '_', '__' or '-')"
        )
    if len(domain) + 1 + len(path) > _MAX_NAME:
        raise InvalidArgument(
            f"invalid reference format {text!r}: repository name must not be more than "
            f"{_MAX_NAME} characters"
        )
    if not tag and not digest:
        tag = default_tag
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def normalize(text: str) -> str:
    """The image name containerd would store for `text` (see `Reference.__str__`)."""
    return str(parse(text))


def _split_tag(name: str) -> tuple[str, str]:
    # A colon after the last slash starts a tag; one before it belongs to a domain's port.
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        return name[:colon], name[colon + 1 :]
    return name, ""


def _split_domain(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    # Docker treats the first component as a registry only when it cannot be a path component:
    # it has a dot or a port, is localhost, or has upper case letters.
    if slash and (any(c in first for c in ".:") or first == "localhost" or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == _LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = _OFFICIAL_PREFIX + path
    if not path:
        raise InvalidArgument(f"invalid reference format {name!r}: repository name is empty")
    return domain, path
