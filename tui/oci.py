"""Reading an image the way `ctr` does: walking its blobs through the Content service.

From an image's target descriptor this module reads the index (if any), picks
the manifest for a platform, reads the config and lists the layers, and works
out the chain ID of the top layer (what a container's snapshot grows from).
Media types, platforms (the host's, and which manifest it runs) and chain IDs
are core's (`core.images`), so the console picks what a pull unpacked; only
`read_blob` and `walk` talk to the engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from core.api.containerd.services.content import v1 as content_api
from core.api.containerd.types import Descriptor
from core.client import Client
from core.images import mediatypes
from core.images.handlers import chain_ids
from core.images.platforms import Platform, host, only

MAX_JSON_BLOB = 8 << 20


class ImageWalkError(Exception):
    """The image's blobs could not be read or parsed; the message says which and why."""


@dataclass(frozen=True)
class Layer:
    digest: str
    media_type: str
    size: int
    diff_id: str = ""


@dataclass
class ImageDetail:
    """What inspect shows and what `run` needs."""

    target: Descriptor
    index: dict[str, Any] | None = None
    manifest_descriptor: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    layers: list[Layer] = field(default_factory=list)
    platforms: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Bytes of the manifest, config and layers for the chosen platform, as ctr sums them."""
        total = self.target.size
        if self.manifest_descriptor is not None:
            total += int(self.manifest_descriptor.get("size", 0))
        if self.manifest is not None:
            total += int((self.manifest.get("config") or {}).get("size", 0))
        return total + sum(layer.size for layer in self.layers)

    @property
    def chain_id(self) -> str:
        """The snapshot name of the top layer; empty for an image without layers."""
        chain = chain_ids([layer.diff_id for layer in self.layers])
        return chain[-1] if chain else ""


def platform_of(data: Any, what: str) -> Platform:
    """The platform an index entry or an image config names; ImageWalkError if malformed."""
    try:
        return Platform.from_oci(data)
    except (AttributeError, TypeError):
        raise ImageWalkError(f"the {what} names a platform that is not an OCI platform") from None


def choose_manifest(index: dict[str, Any], wanted: Platform) -> dict[str, Any]:
    """The manifest descriptor of `index` a `wanted` host runs, as a pull chooses it.

    The exact platform first, then the ones it also runs (containerd's default
    matcher); an entry without a platform matches any host.
    """
    manifests = [
        m for m in index.get("manifests", []) if mediatypes.is_manifest(str(m.get("mediaType", "")))
    ]
    if not manifests:
        raise ImageWalkError("the image index lists no manifests")
    placed = [m for m in manifests if m.get("platform")]
    ranked = only(wanted).select(placed, lambda m: platform_of(m["platform"], "image index"))
    chosen = [*ranked, *(m for m in manifests if not m.get("platform"))]
    if not chosen:
        have = ", ".join(str(platform_of(m["platform"], "image index")) for m in placed)
        raise ImageWalkError(f"the image has no manifest for {wanted} (it has {have})")
    return chosen[0]


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ImageWalkError(f"the {what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ImageWalkError(f"the {what} is not a JSON object")
    return value


async def read_blob(client: Client, digest: str, limit: int = MAX_JSON_BLOB) -> bytes:
    chunks: list[bytes] = []
    total = 0
    async for resp in client.content.read(content_api.ReadContentRequest(digest=digest)):
        chunks.append(resp.data)
        total += len(resp.data)
        if total > limit:
            raise ImageWalkError(f"blob {digest} is larger than {limit} bytes; not reading it")
    return b"".join(chunks)


async def walk(client: Client, target: Descriptor, wanted: Platform | None = None) -> ImageDetail:
    """Read index, manifest and config of an image for one platform (the host's by default)."""
    wanted = wanted or host()
    detail = ImageDetail(target=target)
    root = parse_json(await read_blob(client, target.digest), "image's root blob")
    media_type = target.media_type or root.get("mediaType", "")
    if mediatypes.is_index(str(media_type)) or "manifests" in root:
        detail.index = root
        detail.platforms = [
            str(platform_of(m["platform"], "image index"))
            for m in root.get("manifests", [])
            if m.get("platform")
        ]
        chosen = choose_manifest(root, wanted)
        detail.manifest_descriptor = chosen
        detail.manifest = parse_json(await read_blob(client, chosen["digest"]), "manifest")
    else:
        detail.manifest = root
    config_desc = detail.manifest.get("config") or {}
    if config_desc.get("digest"):
        detail.config = parse_json(await read_blob(client, config_desc["digest"]), "config")
    diff_ids = list(((detail.config or {}).get("rootfs") or {}).get("diff_ids") or [])
    for i, layer in enumerate(detail.manifest.get("layers") or []):
        detail.layers.append(
            Layer(
                digest=layer.get("digest", ""),
                media_type=layer.get("mediaType", ""),
                size=int(layer.get("size", 0)),
                diff_id=diff_ids[i] if i < len(diff_ids) else "",
            )
        )
    if not detail.platforms and detail.config:
        detail.platforms = [str(platform_of(detail.config, "image config"))]
    return detail
