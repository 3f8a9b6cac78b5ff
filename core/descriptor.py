"""Descriptors and digests: how the engine names a blob.

A descriptor is an OCI content descriptor (media type, digest, size,
annotations); a digest is `sha256:<64 hex>`. Only sha256 is accepted, as in
containerd's default configuration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.errors import InvalidArgument

_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


def validate_digest(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise InvalidArgument(f"invalid digest {digest!r}: must be sha256:<64 lowercase hex>")
    return digest


@dataclass
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
